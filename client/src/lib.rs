//! tiermesh client (in progress).

pub mod transport;
