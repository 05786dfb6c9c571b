//! tiermesh relay: access control, configuration, metrics and the ops listener (sessions,
//! track registry, cache and fan-out are being added beside them).

pub mod auth;
pub mod config;
pub mod metrics;
pub mod ops;
pub mod token_cli;
