//! tiermesh client (in progress).

pub mod scheduler;
pub mod transport;
