//! What a session is told at construction: its role, what the transport negotiated, and the
//! limits and timeouts it enforces.

use std::time::Duration;

/// Which end of the transport this session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Opened the connection, sends CLIENT_SETUP first, uses even request IDs.
    Client,
    /// Accepted the connection, answers with SERVER_SETUP, uses odd request IDs.
    Server,
}

/// The transport under the session (draft-16 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Raw QUIC with the MoQT ALPN: PATH and AUTHORITY travel in CLIENT_SETUP.
    Quic,
    /// WebTransport over HTTP/3: the URL travels in the CONNECT request, so PATH and
    /// AUTHORITY must not appear in CLIENT_SETUP.
    WebTransport,
}

/// Session settings: `Default` plus chained setters.
///
/// In draft-16 the MoQT version is not in SETUP: the transport negotiates it (the QUIC ALPN
/// or the WebTransport protocol), so the I/O layer passes what it negotiated here.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub(crate) transport: Transport,
    pub(crate) protocol: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) authority: Option<String>,
    pub(crate) allowed_paths: Option<Vec<String>>,
    pub(crate) allowed_authorities: Option<Vec<String>>,
    pub(crate) max_requests: u64,
    pub(crate) implementation: Option<String>,
    pub(crate) control_message_timeout: Option<Duration>,
    pub(crate) goaway_timeout: Option<Duration>,
    pub(crate) publish_done_linger: Duration,
    pub(crate) reject_requests_after_goaway: bool,
    pub(crate) max_auth_token_cache_size: u64,
    pub(crate) setup_auth_tokens: Vec<crate::message::AuthToken>,
    pub(crate) extension_setup_params: Vec<crate::kvp::KeyValue>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            transport: Transport::Quic,
            protocol: None,
            path: None,
            authority: None,
            allowed_paths: None,
            allowed_authorities: None,
            // A relay edge session carries a handful of tracks per broadcast (catalog, audio,
            // three video tiers) plus a joining fetch each and namespace requests: 100 open
            // requests leaves room for a dozen broadcasts without a MAX_REQUEST_ID round trip.
            max_requests: 100,
            implementation: Some(concat!("tiermesh/", env!("CARGO_PKG_VERSION")).to_owned()),
            // Long enough for a relay to chain an upstream SUBSCRIBE across a few mesh hops on
            // poor links; short enough that a stuck peer does not hold state for minutes.
            control_message_timeout: Some(Duration::from_secs(30)),
            // Draft-16 §3.5 leaves the value open; ten seconds lets a client reconnect to the
            // new URI and move its subscriptions at a human-imperceptible pace.
            goaway_timeout: Some(Duration::from_secs(10)),
            // After PUBLISH_DONE, objects still in flight on late streams are expected for
            // about one delivery timeout (§9.12); two seconds covers the budgets tiermesh uses.
            publish_done_linger: Duration::from_secs(2),
            reject_requests_after_goaway: true,
            // Room for a dozen registered tokens of about a kilobyte (a signed JWT) each.
            max_auth_token_cache_size: 16 * 1024,
            setup_auth_tokens: Vec::new(),
            extension_setup_params: Vec::new(),
        }
    }
}

impl SessionConfig {
    /// AUTHORIZATION TOKEN parameters a client sends in CLIENT_SETUP (ignored for a server).
    pub fn setup_auth_tokens(mut self, tokens: Vec<crate::message::AuthToken>) -> Self {
        self.setup_auth_tokens = tokens;
        self
    }

    /// Extra setup parameters this endpoint sends in its CLIENT_SETUP or SERVER_SETUP, for
    /// Extension Negotiation (draft-16 §3.3): types the draft does not define, which a peer
    /// that does not know them ignores (§9.3).
    pub fn extension_setup_params(mut self, params: Vec<crate::kvp::KeyValue>) -> Self {
        self.extension_setup_params = params;
        self
    }

    /// Defaults for the given transport.
    pub fn new(transport: Transport) -> Self {
        SessionConfig { transport, ..Default::default() }
    }

    /// The transport under the session.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// The protocol the transport negotiated (the ALPN, or the WebTransport protocol).
    /// Anything but [`crate::ALPN`] closes the session at once with
    /// VERSION_NEGOTIATION_FAILED. Unset means the transport guaranteed the version.
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = Some(protocol.into());
        self
    }

    /// Client on raw QUIC: the PATH setup parameter (`path-abempty` plus `?query`).
    /// Never sent over WebTransport.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Client on raw QUIC: the AUTHORITY setup parameter. Never sent over WebTransport.
    pub fn authority(mut self, authority: impl Into<String>) -> Self {
        self.authority = Some(authority.into());
        self
    }

    /// Server: the PATH values it serves; any other closes the session with INVALID_PATH.
    /// Unset accepts every path.
    pub fn allowed_paths(mut self, paths: Vec<String>) -> Self {
        self.allowed_paths = Some(paths);
        self
    }

    /// Server: the AUTHORITY values it serves; any other closes the session with
    /// INVALID_AUTHORITY. Unset accepts every authority.
    pub fn allowed_authorities(mut self, authorities: Vec<String>) -> Self {
        self.allowed_authorities = Some(authorities);
        self
    }

    /// How many requests the peer may have open at once. The initial MAX_REQUEST_ID allows
    /// this many, and more are granted as the peer's requests finish. Zero forbids requests.
    pub fn max_requests(mut self, n: u64) -> Self {
        self.max_requests = n;
        self
    }

    /// The MOQT_IMPLEMENTATION setup parameter (`None` to omit it).
    pub fn implementation(mut self, name: Option<String>) -> Self {
        self.implementation = name;
        self
    }

    /// How long the peer may take to answer SETUP or any of this endpoint's requests before
    /// the session closes with CONTROL_MESSAGE_TIMEOUT. `None` waits forever.
    pub fn control_message_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.control_message_timeout = timeout;
        self
    }

    /// How long after this endpoint's GOAWAY the peer may keep the session open before it is
    /// closed with GOAWAY_TIMEOUT. `None` waits forever.
    pub fn goaway_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.goaway_timeout = timeout;
        self
    }

    /// How long a subscription's track alias keeps resolving after PUBLISH_DONE, so that
    /// late objects are recognised and dropped rather than treated as unknown.
    pub fn publish_done_linger(mut self, linger: Duration) -> Self {
        self.publish_done_linger = linger;
        self
    }

    /// The MAX_AUTH_TOKEN_CACHE_SIZE this endpoint advertises: bytes of authorization
    /// tokens the peer may register (each counts 16 bytes plus its value). A registration
    /// beyond it closes the session with AUTH_TOKEN_CACHE_OVERFLOW. Zero forbids aliases.
    pub fn max_auth_token_cache_size(mut self, bytes: u64) -> Self {
        self.max_auth_token_cache_size = bytes;
        self
    }

    /// Whether new requests received after this endpoint sent GOAWAY are refused at once
    /// with REQUEST_ERROR (draft-16 §9.3 allows it). On by default.
    pub fn reject_requests_after_goaway(mut self, reject: bool) -> Self {
        self.reject_requests_after_goaway = reject;
        self
    }
}
