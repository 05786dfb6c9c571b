//! tiermesh link emulator: a userspace UDP relay that gives a path the rate, delay, jitter,
//! loss and changes over time of a real link, independently in each direction and seeded so a
//! run repeats. It stands in for the `netem` qdisc these machines lack.
//!
//! - [`Pipe`]: one direction, without I/O: `handle_packet(now, …)`, `poll_transmit(now)`,
//!   `poll_timeout()`, driven by any clock (tests use virtual time).
//! - [`LinkParams`], [`Schedule`], [`Profile`]: what a direction does, how it changes, and the
//!   named links (`fiber`, `rural`, `congested`, `satellite`, `step`).
//! - [`Emulator`]: the tokio UDP proxy that runs two pipes between clients and an upstream.
//! - [`cli`]: the `tiermesh link` subcommand.
//!
//! ```
//! use std::time::Duration;
//! use tiermesh_link::{Emulator, EmulatorConfig, Profile};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
//! // The rural profile both ways, seed 7, stopping by itself after 30 s.
//! let config = EmulatorConfig::default()
//!     .both(Profile::Rural.schedule(None))
//!     .seed(7)
//!     .duration(Duration::from_secs(30));
//! let emulator =
//!     Emulator::bind_with("127.0.0.1:0".parse()?, server.local_addr()?, config).await?;
//!
//! let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
//! client.send_to(b"hello", emulator.local_addr()).await?;
//! let mut buf = [0; 16];
//! let (n, _via) = server.recv_from(&mut buf).await?; // 60 ms later (if not among the 1% lost)
//! assert_eq!(&buf[..n], b"hello");
//!
//! let stats = emulator.shutdown().await?;
//! assert_eq!(stats.up.packets_in, 1);
//! # Ok(())
//! # }
//! ```

mod emulator;
mod params;
mod pipe;
mod profile;
mod schedule;

pub mod cli;

pub use emulator::{
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CLIENTS, Emulator, EmulatorConfig, LinkStats,
};
pub use params::{
    BurstLoss, DEFAULT_QUEUE_TIME, LinkParams, MIN_QUEUE_BYTES, Overrides, QueueLimit,
    format_bits_per_second, format_rate, parse_burst, parse_duration, parse_percent, parse_queue,
    parse_rate,
};
pub use pipe::{Packet, Pipe, PipeStats};
pub use profile::{Profile, STEP_CUT, STEP_DEFAULT_START};
pub use schedule::Schedule;

use std::net::SocketAddr;

/// Everything that can go wrong in the link emulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A link parameter is out of range (a probability above 100%, a zero rate, reordering
    /// without jitter).
    #[error("invalid link parameters: {0}")]
    InvalidParams(String),
    /// A value typed by a user (rate, duration, percentage, spec) could not be read.
    #[error("cannot read {what} `{input}`: {reason}")]
    Parse {
        /// What was being read ("rate", "duration", …).
        what: &'static str,
        /// The text as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No profile has this name.
    #[error("unknown link profile `{0}`: use fiber, rural, congested, satellite or step")]
    UnknownProfile(String),
    /// A UDP socket (the listening one or a per-client one) could not be bound.
    #[error("cannot bind UDP socket on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The emulator's task ended abnormally (it panicked or was cancelled).
    #[error("link emulator task failed: {0}")]
    Task(String),
}
