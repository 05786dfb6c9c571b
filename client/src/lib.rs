//! tiermesh client (in progress).

pub mod abr;
pub mod cli;
pub mod decode;
pub mod media;
pub mod moq;
pub mod publish;
pub mod report;
pub mod scheduler;
pub mod subscribe;
pub mod synthetic;
pub mod transport;
pub mod uplink;
