//! tiermesh client (in progress).

pub mod moq;
pub mod report;
pub mod scheduler;
pub mod synthetic;
pub mod transport;
