//! The server side: one UDP port, raw QUIC and WebTransport told apart by the ALPN.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tracing::Instrument;
use url::Url;
use web_transport_quinn as wt;

use super::driver;
use super::{ClientTls, Error, Kind, ServerTls, Session, Target, TransportConfig, TransportDriver};

/// The receive buffer asked for on a server's UDP socket. A relay's one socket takes the
/// ACKs of every subscriber and its publishers' media; while its runtime works through one
/// object's fan-out (10-20 ms of one core for 1000 subscribers) they wait in the kernel.
/// Linux's default (212 KiB, about 200 small datagrams at their in-kernel size) overflowed
/// there: with 1000 bees subscribers of 4 KB objects the kernel dropped 45 000-64 000
/// datagrams in a 30 s run (ACKs, publisher media and new clients' handshakes alike) and
/// connections failed. A deeper queue delays what waits in it, the publisher's media too:
/// at 1000 subscribers the 99th percentile of capture to arrival at the relay was 250-1000
/// ms with 4 MiB, 100-500 ms with 1 MiB, 250-2000 ms with the default (dropped media is sent
/// again), and neither larger buffer made the kernel drop datagrams there. The kernel caps it
/// at `net.core.rmem_max`.
const RECEIVE_BUFFER: usize = 1 << 20;

/// Asks for [`RECEIVE_BUFFER`] on `socket`; what the kernel grants is logged, a refusal
/// leaves the default.
fn enlarge_receive_buffer(socket: &std::net::UdpSocket) {
    let state = match quinn::udp::UdpSocketState::new(socket.into()) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "UDP socket options not read");
            return;
        }
    };
    if let Err(e) = state.set_recv_buffer_size(socket.into(), RECEIVE_BUFFER) {
        tracing::warn!(error = %e, "UDP receive buffer not enlarged");
    }
    match state.recv_buffer_size(socket.into()) {
        Ok(granted) => tracing::debug!(asked = RECEIVE_BUFFER, granted, "UDP receive buffer"),
        Err(e) => tracing::debug!(error = %e, "UDP receive buffer size not read"),
    }
}

/// A listening endpoint. Every connection offers ALPN `moqt-16` (raw QUIC) and `h3`
/// (WebTransport); [`accept`](Self::accept) tells them apart and hands out
/// [`Request`]s once the handshake (and, for WebTransport, the CONNECT request) is in.
///
/// The same endpoint can also dial out ([`connect`](Self::connect)), so a relay's links to
/// other relays leave from its public port.
///
/// With [`TransportDriver::Batched`] (see [`TransportConfig::driver`]) one task drives every
/// connection through quinn-proto instead: raw QUIC only (WebTransport clients are refused
/// after the handshake with a reason saying so), and [`connect`](Self::connect) is refused.
pub struct Server {
    backend: Backend,
    local_addr: SocketAddr,
    config: TransportConfig,
    pending: FuturesUnordered<BoxFuture<'static, Option<Request>>>,
}

enum Backend {
    Quinn(quinn::Endpoint),
    Batched(driver::Endpoint),
}

impl Server {
    /// Binds a UDP socket on `addr` with the default [`TransportConfig`]. Must be called
    /// inside a tokio runtime.
    pub fn bind(addr: SocketAddr, tls: ServerTls) -> Result<Self, Error> {
        Self::bind_with(addr, tls, TransportConfig::default())
    }

    /// [`bind`](Self::bind) with a chosen transport configuration.
    pub fn bind_with(
        addr: SocketAddr,
        tls: ServerTls,
        config: TransportConfig,
    ) -> Result<Self, Error> {
        let server_config = server_config(&tls, &config)?;
        let socket =
            std::net::UdpSocket::bind(addr).map_err(|source| Error::Bind { addr, source })?;
        enlarge_receive_buffer(&socket);
        if config.get_driver() == TransportDriver::Batched {
            let protocols: Arc<[String]> = config.get_protocols().into();
            let endpoint = driver::Endpoint::new(socket, server_config, protocols)
                .map_err(|source| Error::Bind { addr, source })?;
            let local_addr = endpoint.local_addr();
            tracing::info!(%local_addr, protocols = ?config.get_protocols(), "listening (raw QUIC only, batched transport driver)");
            return Ok(Self {
                backend: Backend::Batched(endpoint),
                local_addr,
                config,
                pending: FuturesUnordered::new(),
            });
        }
        let runtime = quinn::default_runtime().ok_or_else(|| Error::Bind {
            addr,
            source: std::io::Error::other("no async runtime found"),
        })?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_config),
            socket,
            runtime,
        )
        .map_err(|source| Error::Bind { addr, source })?;
        let local_addr = endpoint.local_addr().map_err(|source| Error::Bind { addr, source })?;
        tracing::info!(%local_addr, protocols = ?config.get_protocols(), "listening (raw QUIC and WebTransport)");
        Ok(Self {
            backend: Backend::Quinn(endpoint),
            local_addr,
            config,
            pending: FuturesUnordered::new(),
        })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Replaces the certificates for new connections; established ones keep theirs.
    pub fn set_tls(&self, tls: ServerTls) -> Result<(), Error> {
        let config = server_config(&tls, &self.config)?;
        match &self.backend {
            Backend::Quinn(e) => e.set_server_config(Some(config)),
            Backend::Batched(e) => e.set_server_config(config),
        }
        Ok(())
    }

    /// Waits for the next client whose handshake has completed; `None` once the endpoint is
    /// closed. Handshakes run concurrently inside this call (nothing is spawned), so keep
    /// calling it; dropping the future loses no client.
    ///
    /// Clients that fail the handshake (wrong ALPN, a TLS alert, no CONNECT within the
    /// handshake timeout) are logged and skipped.
    pub async fn accept(&mut self) -> Option<Request> {
        let endpoint = match &self.backend {
            Backend::Quinn(e) => e,
            Backend::Batched(e) => {
                let conn = e.accept().await?;
                let alpn = conn.alpn().unwrap_or_default();
                return Some(Request {
                    peer: conn.remote_address(),
                    protocols: self.config.get_protocols().into(),
                    limits: self.config.stream_limits(),
                    inner: Inner::Batched { conn, alpn },
                });
            }
        };
        loop {
            tokio::select! {
                // Finished handshakes first: they are bounded by the clients already taken,
                // while a flood of new arrivals must not starve them.
                biased;
                Some(done) = self.pending.next(), if !self.pending.is_empty() => {
                    if let Some(request) = done {
                        return Some(request);
                    }
                }
                incoming = endpoint.accept() => {
                    let incoming = incoming?;
                    let protocols: Arc<[String]> = self.config.get_protocols().into();
                    let timeout = self.config.get_handshake_timeout();
                    let limits = self.config.stream_limits();
                    self.pending.push(Box::pin(handshake(incoming, protocols, limits, timeout)));
                }
            }
        }
    }

    /// Dials a server from this endpoint's port (a mesh link, for example).
    pub async fn connect(&self, url: &Url, tls: &ClientTls) -> Result<Session, Error> {
        let endpoint = match &self.backend {
            Backend::Quinn(e) => e,
            Backend::Batched(_) => {
                return Err(Error::Connect {
                    server: url.to_string(),
                    reason: "this endpoint runs the batched transport driver, which does not \
                             dial out"
                        .into(),
                });
            }
        };
        let target = Target::from_url(url)?;
        let addr = super::client::resolve(&target).await?;
        super::client::dial(endpoint, &target, addr, tls, &self.config).await
    }

    /// Closes every connection with `code` and `reason` and stops accepting.
    pub fn close(&self, code: u32, reason: &str) {
        match &self.backend {
            Backend::Quinn(e) => e.close(code.into(), reason.as_bytes()),
            Backend::Batched(e) => e.close(code.into(), reason.as_bytes()),
        }
    }

    /// Waits until every connection has finished closing (call after [`close`](Self::close)
    /// so that peers receive the close).
    pub async fn wait_idle(&self) {
        match &self.backend {
            Backend::Quinn(e) => e.wait_idle().await,
            Backend::Batched(e) => e.wait_idle().await,
        }
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("handshaking", &self.pending.len())
            .finish()
    }
}

fn server_config(tls: &ServerTls, config: &TransportConfig) -> Result<quinn::ServerConfig, Error> {
    let mut alpn: Vec<&str> = config.get_protocols().iter().map(String::as_str).collect();
    alpn.push(wt::ALPN);
    let rustls = tls.rustls(&alpn)?;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(rustls)
        .map_err(|e| Error::TlsConfig(e.to_string()))?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    server_config.transport_config(config.quinn());
    Ok(server_config)
}

/// The ALPN the handshake settled on.
fn negotiated_alpn(conn: &quinn::Connection) -> Option<String> {
    let data = conn.handshake_data()?.downcast::<quinn::crypto::rustls::HandshakeData>().ok()?;
    String::from_utf8(data.protocol?).ok()
}

/// Runs one client's handshake to the point where the application decides: the QUIC
/// handshake, and over WebTransport the HTTP/3 SETTINGS and CONNECT request.
async fn handshake(
    incoming: quinn::Incoming,
    protocols: Arc<[String]>,
    limits: super::session::StreamLimits,
    timeout: Duration,
) -> Option<Request> {
    let peer = incoming.remote_address();
    let work = async {
        let conn = incoming.await.map_err(|e| format!("QUIC handshake failed: {e}"))?;
        match negotiated_alpn(&conn).as_deref() {
            Some(wt::ALPN) => {
                let request = wt::Request::accept(conn)
                    .await
                    .map_err(|e| format!("WebTransport CONNECT not received: {e}"))?;
                let url = request.url.clone();
                Ok(Request {
                    peer,
                    protocols,
                    limits,
                    inner: Inner::WebTransport { request: Box::new(request), url },
                })
            }
            Some(p) if protocols.iter().any(|ours| ours == p) => {
                let alpn = p.to_owned();
                Ok(Request { peer, protocols, limits, inner: Inner::Raw { conn, alpn } })
            }
            other => {
                // rustls refuses a client whose ALPN list shares nothing with ours, but one
                // that offers no ALPN at all is let through: tell it what we speak.
                let reason = format!(
                    "no usable ALPN ({other:?}): offer {} or {}",
                    protocols.join(", "),
                    wt::ALPN
                );
                conn.close(0u32.into(), reason.as_bytes());
                Err(reason)
            }
        }
    };
    let span = tracing::debug_span!("handshake", %peer);
    match tokio::time::timeout(timeout, work).instrument(span).await {
        Ok(Ok(request)) => {
            tracing::debug!(%peer, kind = ?request.kind(), "handshake complete");
            Some(request)
        }
        Ok(Err(reason)) => {
            tracing::info!(%peer, %reason, "client refused");
            None
        }
        Err(_) => {
            tracing::info!(%peer, ?timeout, "client refused: handshake timed out");
            None
        }
    }
}

/// A client whose handshake is done, waiting to be accepted or rejected.
pub struct Request {
    peer: SocketAddr,
    protocols: Arc<[String]>,
    limits: super::session::StreamLimits,
    inner: Inner,
}

enum Inner {
    Raw {
        conn: quinn::Connection,
        alpn: String,
    },
    /// A raw QUIC connection of the batched driver.
    Batched {
        conn: driver::Connection,
        alpn: String,
    },
    // Boxed: the CONNECT request (headers and all) is far larger than a raw connection.
    WebTransport {
        request: Box<wt::Request>,
        url: Url,
    },
}

impl Request {
    /// Raw QUIC or WebTransport.
    pub fn kind(&self) -> Kind {
        match self.inner {
            Inner::Raw { .. } | Inner::Batched { .. } => Kind::RawQuic,
            Inner::WebTransport { .. } => Kind::WebTransport,
        }
    }

    /// The client's UDP address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The WebTransport CONNECT path; `None` on raw QUIC (the path comes in SETUP there).
    pub fn path(&self) -> Option<&str> {
        match &self.inner {
            Inner::WebTransport { url, .. } => Some(url.path()),
            Inner::Raw { .. } | Inner::Batched { .. } => None,
        }
    }

    /// The WebTransport CONNECT query without `?`. It may hold a token: do not log it.
    pub fn query(&self) -> Option<&str> {
        match &self.inner {
            Inner::WebTransport { url, .. } => url.query(),
            Inner::Raw { .. } | Inner::Batched { .. } => None,
        }
    }

    /// A header of the WebTransport CONNECT request (`origin`, `authorization`, …).
    pub fn header(&self, name: &str) -> Option<&str> {
        match &self.inner {
            Inner::WebTransport { request, .. } => request.headers.get(name)?.to_str().ok(),
            Inner::Raw { .. } | Inner::Batched { .. } => None,
        }
    }

    /// What the client offered: its ALPN on raw QUIC (already one of ours), its
    /// `WT-Available-Protocols` over WebTransport (possibly empty).
    pub fn offered_protocols(&self) -> Vec<String> {
        match &self.inner {
            Inner::Raw { alpn, .. } | Inner::Batched { alpn, .. } => vec![alpn.clone()],
            Inner::WebTransport { request, .. } => request.protocols.clone(),
        }
    }

    /// Accepts the client. Over WebTransport this answers the CONNECT with 200 and selects
    /// (in `WT-Protocol`) our most preferred MoQT version among those offered. A client that
    /// offered protocols, none of them ours, is refused with HTTP 400 and
    /// [`Error::ProtocolRefused`]; one that offered none is accepted and its session's
    /// [`protocol`](Session::protocol) is `None`.
    pub async fn accept(self) -> Result<Session, Error> {
        match self.inner {
            Inner::Raw { conn, .. } => {
                Ok(Session::new(wt::Session::raw(conn), Kind::RawQuic, None, None, self.limits))
            }
            Inner::Batched { conn, .. } => Ok(Session::batched(conn, self.limits)),
            Inner::WebTransport { request, url } => {
                let offered = request.protocols.clone();
                let chosen = self.protocols.iter().find(|ours| offered.contains(ours)).cloned();
                let response = wt::proto::ConnectResponse::OK;
                let response = match chosen {
                    Some(p) => response.with_protocol(p),
                    None if offered.is_empty() => response,
                    None => {
                        reject_and_linger(*request, wt::http::StatusCode::BAD_REQUEST).await;
                        return Err(Error::ProtocolRefused {
                            server: format!("client {}", self.peer),
                            offered: offered.join(", "),
                            detail: format!(
                                "this server speaks {}; the CONNECT was refused with HTTP 400",
                                self.protocols.join(", ")
                            ),
                        });
                    }
                };
                let session = request.respond(response).await.map_err(|e| Error::Connect {
                    server: format!("client {}", self.peer),
                    reason: format!("answering the WebTransport CONNECT: {e}"),
                })?;
                Ok(Session::new(session, Kind::WebTransport, Some(&url), None, self.limits))
            }
        }
    }

    /// Refuses the client. Over WebTransport the CONNECT is answered with the HTTP `status`
    /// (e.g. 401, 403, 404), and the connection is kept until the client has closed it (at
    /// most 2 s), so the status reaches it. Raw QUIC has no HTTP exchange, so the connection is closed with
    /// application code `status` and the reason "rejected with HTTP status N".
    pub async fn reject(self, status: u16) -> Result<(), Error> {
        match self.inner {
            Inner::Raw { conn, .. } => {
                let reason = format!("rejected with HTTP status {status}");
                conn.close(u32::from(status).into(), reason.as_bytes());
                Ok(())
            }
            Inner::Batched { conn, .. } => {
                let reason = format!("rejected with HTTP status {status}");
                conn.close(u32::from(status).into(), reason.as_bytes());
                Ok(())
            }
            Inner::WebTransport { request, .. } => {
                let status = wt::http::StatusCode::from_u16(status)
                    .map_err(|_| Error::Protocol(format!("{status} is not an HTTP status")))?;
                reject_and_linger(*request, status).await;
                Ok(())
            }
        }
    }
}

/// How long a rejected WebTransport client is given to read the status and close. Closing
/// at once would discard the response before it is delivered; a well-behaved client closes
/// within an RTT, and 2 s bounds what one that does not can hold.
const REJECT_LINGER: Duration = Duration::from_secs(2);

/// Answers a CONNECT with an error status, then keeps the connection until the client closes
/// it (or [`REJECT_LINGER`] passes), so the status reaches it.
async fn reject_and_linger(request: wt::Request, status: wt::http::StatusCode) {
    let conn = request.conn().clone();
    if let Err(e) = request.reject(status).await {
        tracing::debug!(peer = %conn.remote_address(), error = %e, "answering a refused CONNECT");
    }
    let _ = tokio::time::timeout(REJECT_LINGER, conn.closed()).await;
    conn.close(0u32.into(), b"session refused");
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("kind", &self.kind())
            .field("peer", &self.peer)
            .field("path", &self.path())
            .field("offered", &self.offered_protocols())
            .finish()
    }
}
