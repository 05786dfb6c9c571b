//! The tiermesh regional mesh without I/O: membership, load, namespace routing between
//! relays, upstream deduplication and the routing API that picks a relay for a client.
//!
//! Like `tiermesh-proto`, this crate opens no sockets, reads no clock and spawns nothing.
//! A relay feeds a [`Node`] with `handle_*(now, …)` calls (peer up and down, received
//! [`RouteMessage`]s, timeouts), publishes its local namespaces, and drains
//! [`Node::poll_send`], [`Node::poll_event`] and [`Node::poll_timeout`]. The same `Node`
//! runs a thousand times over in one process in [`sim`], on virtual time.
//!
//! See the crate README for the protocol, its loop-freedom argument and how one upstream
//! subscription per track squares with the draft's multiple-publisher rules.

pub mod node;
pub mod routing_api;
pub mod sim;
pub mod upstream;
pub mod wire;

pub use node::{Event, Hop, Node, NodeConfig, NodeStats, PeerInfo, Route};
pub use routing_api::{LoadWeights, NodeState, RegionCosts, RegionMap};
pub use upstream::{Move, Upstream};
pub use wire::{
    LoadReport, NamespaceRecord, NodeAnnouncement, PeerHello, RelayName, RouteAdvert, RouteMessage,
};

/// Errors of the mesh crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeshError {
    /// A varint or length-prefixed field of a mesh message was cut short or out of range.
    #[error("mesh message does not decode: {0}")]
    Decode(#[from] tiermesh_proto::DecodeError),
    /// A mesh message decoded field by field but breaks a rule of the mesh format.
    #[error("malformed mesh message: {0}")]
    Malformed(&'static str),
    /// A message or call named a peer that is not up.
    #[error("no mesh peer named {0}")]
    UnknownPeer(String),
    /// A configuration value is unusable.
    #[error("invalid mesh configuration: {0}")]
    Config(String),
}
