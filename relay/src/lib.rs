//! tiermesh relay: one UDP port serving MoQT draft-16 over raw QUIC and WebTransport,
//! namespace and track routing, one upstream subscription per track, a cache of the newest
//! groups, fan-out of the same bytes to every subscriber, linger for publishers that
//! reconnect, access control, limits, GOAWAY on drain, and the ops listener.
//!
//! Start one with [`Relay::start`]; `tiermesh relay` ([`cli`]) is a thin wrapper.

pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod ingest;
pub mod mesh;
pub mod metrics;
pub mod ops;
mod registry;
mod server;
mod session;
pub mod token_cli;
mod track;
pub mod web;

use std::net::SocketAddr;

pub use server::{Relay, RelayHandle};

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(#[from] config::ConfigError),
    /// A token key could not be loaded.
    #[error("token keys: {0}")]
    Key(#[from] auth::KeyError),
    /// The certificate could not be loaded or generated.
    #[error("certificate: {0}")]
    Certs(#[from] tiermesh_certs::Error),
    /// The MoQT port could not be bound or its TLS set up.
    #[error("listener: {0}")]
    Transport(#[from] tiermesh_client::transport::Error),
    /// The mesh could not start.
    #[error("mesh: {0}")]
    Mesh(#[from] mesh::MeshError),
    /// The ops listener could not be bound.
    #[error("ops listener on {addr}: {source}")]
    Ops {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}
