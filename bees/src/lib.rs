//! tiermesh bees: load for relays. Many virtual subscribers (and optionally synthetic
//! publishers), each on its own raw QUIC or WebTransport connection, started at a fixed
//! rate and stopped at a deadline; per-track counts, missing objects, stalls and latency
//! quantiles; the relay's CPU time and memory read from `/proc` when it runs on the same
//! host. Results print as a table, a JSON [`report::Report`] that shards (`--shard i/n`)
//! merge, and a self-contained HTML page with SVG plots ([`html`]).
//!
//! `tiermesh bees` ([`cli`]) is the command; [`load::run`] is what it runs.

pub mod cli;
pub mod html;
pub mod load;
pub mod procfs;
pub mod report;

/// Why a load run could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is out of range or a URL is unusable.
    #[error("{0}")]
    Config(String),
    /// A target is not on this host and `--allow-remote` was not given.
    #[error(
        "{0} is not a loopback address: bees only loads relays on this host unless \
         --allow-remote is given"
    )]
    Remote(String),
    /// The relay process could not be read from `/proc`.
    #[error("relay process: {0}")]
    Proc(#[from] procfs::ProcError),
    /// A publisher could not publish its broadcast.
    #[error("publisher: {0}")]
    Publish(String),
}
