//! The transport's one error type.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::CloseReason;

/// Everything the transport can fail with. Messages say what went wrong in words a user of
/// the command line can act on; URLs in them never include the query (it may hold a token).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A URL is not a usable `moqt://` or `https://` server URL.
    #[error("invalid URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL, its query replaced by `?…`.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server's host name did not resolve to an address.
    #[error("cannot resolve host `{host}`: {reason}")]
    Resolve {
        /// The host name.
        host: String,
        /// Why resolution failed.
        reason: String,
    },
    /// The UDP socket could not be bound.
    #[error("cannot bind UDP socket on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Certificates, keys or TLS settings are unusable.
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// A CA file could not be read or holds no certificate.
    #[error("CA file {}: {reason}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate hash is not a SHA-256 in hex.
    #[error(
        "invalid certificate hash `{input}`: expected 64 hex digits (a SHA-256), optionally in \
         colon-separated pairs"
    )]
    InvalidCertHash {
        /// The text given.
        input: String,
    },
    /// The server's certificate was not trusted, so the TLS handshake was abandoned.
    #[error("the certificate of {server} is not trusted: {reason}")]
    UntrustedCertificate {
        /// The server URL.
        server: String,
        /// Why it was refused.
        reason: String,
    },
    /// The server speaks none of the offered protocols (ALPN refused, or a WebTransport
    /// server that selected none of the offered MoQT versions).
    #[error("{server} speaks none of the offered protocols ({offered}): {detail}")]
    ProtocolRefused {
        /// The server URL.
        server: String,
        /// The protocols offered, comma-separated.
        offered: String,
        /// How the refusal showed.
        detail: String,
    },
    /// The server answered the WebTransport CONNECT with an HTTP status other than 200.
    #[error("{server} refused the WebTransport session with HTTP status {status}")]
    Rejected {
        /// The server URL.
        server: String,
        /// The HTTP status.
        status: u16,
    },
    /// The connection or its handshake failed for another reason.
    #[error("cannot connect to {server}: {reason}")]
    Connect {
        /// The server URL.
        server: String,
        /// What happened.
        reason: String,
    },
    /// The QUIC handshake (plus, over WebTransport, the CONNECT exchange) did not finish in
    /// time.
    #[error(
        "no session with {server} within {after:?}: the server did not answer (wrong port, firewall, or not running?)"
    )]
    HandshakeTimeout {
        /// The server URL.
        server: String,
        /// The deadline.
        after: Duration,
    },
    /// The session has ended.
    #[error("session {0}")]
    Closed(CloseReason),
    /// The peer broke the WebTransport or HTTP/3 framing.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The peer reset the stream being read.
    #[error("the peer reset the stream with code {code}")]
    Reset {
        /// The peer's code.
        code: u32,
    },
    /// The peer asked us to stop sending on the stream.
    #[error("the peer stopped the stream with code {code}")]
    Stopped {
        /// The peer's code.
        code: u32,
    },
    /// The stream was already finished, reset or stopped by this side.
    #[error("the stream is already closed")]
    StreamClosed,
    /// A stream was longer than the limit given to `read_to_end`.
    #[error("the stream is longer than the {limit}-byte limit")]
    TooLong {
        /// The limit.
        limit: usize,
    },
    /// A datagram is larger than the path allows now.
    #[error("a datagram of {size} bytes exceeds the current maximum of {max} bytes")]
    DatagramTooLarge {
        /// The datagram's size.
        size: usize,
        /// The maximum now.
        max: usize,
    },
    /// The peer does not accept datagrams.
    #[error("the peer does not accept datagrams")]
    DatagramsUnsupported,
}
