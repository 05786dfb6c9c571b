//! Media over QUIC Transport (draft-ietf-moq-transport-16) without I/O.
//!
//! This crate holds the wire format and the session state machines. It opens no sockets,
//! reads no clock and spawns nothing: time is passed in through `handle_*(now, …)` and
//! outputs are drained through `poll_*`.

pub mod catalog;
pub mod coding;
pub mod data;
pub mod ext;
pub mod kvp;
pub mod loc;
pub mod message;
pub mod priority;
pub mod session;
pub mod types;

pub use coding::{Decode, DecodeError, Encode, TerminationCode};

/// The one MoQT version this crate speaks. On raw QUIC it is the ALPN; over WebTransport it
/// is offered as the WebTransport protocol. Keep every mention of the version here.
pub const ALPN: &str = "moqt-16";
