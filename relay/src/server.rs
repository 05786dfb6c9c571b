//! Start-up and shutdown: one UDP port for raw QUIC and WebTransport, the ops listener,
//! certificate reload, the session limit, and GOAWAY on drain.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tiermesh_certs::CertHash;
use tiermesh_certs::reload::ReloadingResolver;
use tiermesh_client::moq::Connection;
use tiermesh_client::transport::{Server, ServerTls, TransportConfig};
use tiermesh_proto::TerminationCode;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Error;
use crate::auth::Authorizer;
use crate::config::RelayConfig;
use crate::metrics::Metrics;
use crate::ops::{self, Health, HealthState};
use crate::registry::Registry;
use crate::track::SessionId;

/// How often the certificate files are checked for a change. A renewed certificate is
/// picked up within this; checking is a `stat` of two files.
const CERT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Validity of a generated development certificate: below the 14 days browsers accept for
/// hash-pinned certificates, long enough for a working week of tests.
const DEV_CERT_VALIDITY: Duration = Duration::from_secs(10 * 24 * 3600);

/// HTTP status that refuses a session when the relay is full or draining (raw QUIC gets it
/// as the close code): "Service Unavailable", try elsewhere or later.
const REFUSED_STATUS: u16 = 503;

/// What every session of the relay shares.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) config: RelayConfig,
    pub(crate) authorizer: Authorizer,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) registry: Registry,
    pub(crate) sessions: Mutex<HashMap<SessionId, Connection>>,
    pub(crate) upstreams: AtomicUsize,
    /// Notified whenever a session ends.
    pub(crate) session_gone: tokio::sync::Notify,
    /// The regional mesh, when `[mesh]` is configured.
    pub(crate) mesh: Option<Arc<crate::mesh::Mesh>>,
    next_session: AtomicU64,
    draining: AtomicBool,
}

/// A relay: call [`Relay::start`].
#[derive(Debug)]
pub struct Relay;

impl Relay {
    /// Binds the MoQT port and the ops listener and starts serving. Must be called inside
    /// a tokio runtime.
    pub async fn start(config: RelayConfig) -> Result<RelayHandle, Error> {
        config.validate()?;
        let (authorizer, ingest_key) = crate::ingest::authorizer(&config)?;
        let (tls, cert_hash, resolver) = if config.tls.generate {
            let dev = tiermesh_certs::dev::generate(&[], DEV_CERT_VALIDITY)?;
            let tls =
                ServerTls::from_der(vec![dev.cert.to_vec()], dev.key.secret_pkcs8_der().to_vec())?;
            (tls, dev.sha256, None)
        } else {
            let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) else {
                return Err(Error::Config(crate::config::ConfigError::Invalid {
                    key: "tls",
                    reason: "no certificate".into(),
                }));
            };
            let resolver = Arc::new(ReloadingResolver::load(cert, key)?);
            let hash = resolver.sha256();
            (ServerTls::from_resolver(resolver.clone()), hash, Some(resolver))
        };
        let transport = TransportConfig::default()
            .idle_timeout(config.limits.idle_timeout)
            .congestion(config.congestion)
            .driver(config.transport_driver);
        let mut server = Server::bind_with(config.listen, tls, transport)?;
        let local_addr = server.local_addr();
        let mesh = match &config.mesh {
            Some(m) => Some(crate::mesh::Mesh::bind(m.clone(), config.congestion)?),
            None => None,
        };
        let metrics = Arc::new(Metrics::new());
        let health = Health::new();
        let route_hook = mesh.as_ref().map(|m| m.route_hook());
        let ops = ops::serve_with(
            config.ops,
            metrics.clone(),
            health.clone(),
            route_hook,
            config.web.as_deref(),
        )
        .await
        .map_err(|source| Error::Ops { addr: config.ops, source })?;
        tracing::info!(%local_addr, ops = %ops.local_addr(), cert_sha256 = %cert_hash.hex(), "relay started");
        let ctx = Arc::new(Ctx {
            config,
            authorizer,
            metrics: metrics.clone(),
            registry: Registry::default(),
            sessions: Mutex::new(HashMap::new()),
            upstreams: AtomicUsize::new(0),
            session_gone: tokio::sync::Notify::new(),
            mesh,
            next_session: AtomicU64::new(1),
            draining: AtomicBool::new(false),
        });
        let (stop_tx, mut stop_rx) = watch::channel(false);
        if let Some(m) = &ctx.mesh {
            m.spawn(ctx.clone(), stop_rx.clone());
        }
        let reload_resolver = resolver.clone();
        let ingest_stop = stop_rx.clone();
        let accept_ctx = ctx.clone();
        let task = tokio::spawn(async move {
            let mut reload = tokio::time::interval(CERT_RELOAD_INTERVAL);
            loop {
                tokio::select! {
                    request = server.accept() => {
                        let Some(request) = request else { break };
                        let ctx = &accept_ctx;
                        let full = ctx.metrics.sessions.get() >= ctx.config.limits.max_sessions as i64;
                        if full || ctx.draining.load(Ordering::Relaxed) {
                            ctx.metrics.sessions_refused.inc();
                            tracing::warn!(peer = %request.peer(), full, "session refused: {}", if full { "max_sessions reached" } else { "draining" });
                            tokio::spawn(async move { let _ = request.reject(REFUSED_STATUS).await; });
                            continue;
                        }
                        // Counted now, so that a burst of handshakes cannot pass the limit.
                        ctx.metrics.sessions.inc();
                        let ctx = ctx.clone();
                        // The handshake's future is boxed and freed once it is done: held
                        // inline, its size (and the request's) would stay in every
                        // session's task for the session's whole life.
                        let accept = Box::pin(request.accept());
                        tokio::spawn(async move {
                            let id = ctx.next_session.fetch_add(1, Ordering::Relaxed);
                            match accept.await {
                                Ok(session) => crate::session::run(ctx.clone(), session, id).await,
                                Err(e) => tracing::info!(error = %e, "session not accepted"),
                            }
                            ctx.metrics.sessions.dec();
                        });
                    }
                    _ = reload.tick() => {
                        if let Some(r) = &resolver {
                            match r.reload_if_changed() {
                                Ok(true) => tracing::info!(cert_sha256 = %r.sha256().hex(), "certificate reloaded"),
                                Ok(false) => {}
                                Err(e) => tracing::warn!(error = %e, "certificate not reloaded; the previous one stays in service"),
                            }
                        }
                    }
                    _ = stop_rx.changed() => break,
                }
            }
            server.close(TerminationCode::NoError.code() as u32, "relay shutting down");
        });
        let ingest = ctx.config.ingest.clone().map(|c| {
            let r = reload_resolver.clone();
            let cert = Arc::new(move || r.as_ref().map_or(cert_hash, |r| r.sha256()));
            crate::ingest::spawn(c, local_addr, cert, ingest_key, ingest_stop)
        });
        if let Some(ingest) = ingest.clone() {
            ctx.metrics.extra.add(Arc::new(move |out: &mut String| ingest.render_metrics(out)));
        }
        Ok(RelayHandle {
            local_addr,
            cert_hash,
            resolver: reload_resolver,
            ctx,
            health,
            ops: Some(ops),
            stop: stop_tx,
            task: Some(task),
            ingest,
        })
    }
}

/// A running relay.
#[derive(Debug)]
pub struct RelayHandle {
    local_addr: SocketAddr,
    cert_hash: CertHash,
    resolver: Option<Arc<ReloadingResolver>>,
    ctx: Arc<Ctx>,
    health: Health,
    ops: Option<ops::Handle>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    ingest: Option<crate::ingest::Ingest>,
}

impl RelayHandle {
    /// The UDP address serving raw QUIC and WebTransport.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The TCP address of the ops listener.
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops.as_ref().map_or(self.ctx.config.ops, |o| o.local_addr())
    }

    /// SHA-256 of the certificate in service at start.
    pub fn cert_hash(&self) -> CertHash {
        self.cert_hash
    }

    /// SHA-256 of the certificate in service now (it changes when the files are replaced).
    pub fn current_cert_hash(&self) -> CertHash {
        self.resolver.as_ref().map_or(self.cert_hash, |r| r.sha256())
    }

    /// Checks the certificate files now instead of at the next interval; true if a new
    /// certificate is in service. A generated certificate never changes.
    pub fn reload_tls(&self) -> Result<bool, Error> {
        match &self.resolver {
            Some(r) => Ok(r.reload_if_changed()?),
            None => Ok(false),
        }
    }

    /// What the ingest did so far (`None` without `[ingest]`).
    pub fn ingest_stats(&self) -> Option<crate::ingest::IngestStats> {
        self.ingest.as_ref().map(crate::ingest::Ingest::stats)
    }

    /// The relay's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.ctx.metrics.clone()
    }

    /// How many upstream subscriptions (the relay's own SUBSCRIBEs and accepted PUBLISHes)
    /// are established now.
    pub fn upstream_subscriptions(&self) -> usize {
        self.ctx.upstreams.load(Ordering::Relaxed)
    }

    /// The mesh listener's address, when the mesh is on.
    pub fn mesh_addr(&self) -> Option<SocketAddr> {
        self.ctx.mesh.as_ref().map(|m| m.local_addr())
    }

    /// The mesh peers whose links are up now (empty without a mesh).
    pub fn mesh_peers(&self) -> Vec<String> {
        self.ctx.mesh.as_ref().map(|m| m.peers()).unwrap_or_default()
    }

    /// The mesh route this relay would subscribe along for `namespace`: relay names from
    /// this one to the origin (just this one for a local publisher); `None` without a route.
    pub fn mesh_route(
        &self,
        namespace: &tiermesh_proto::types::TrackNamespace,
    ) -> Option<Vec<String>> {
        self.ctx.mesh.as_ref().and_then(|m| m.route_path(namespace))
    }

    /// How many tracks the relay holds.
    pub fn tracks(&self) -> usize {
        self.ctx.registry.lock().tracks.len()
    }

    /// Open sessions.
    pub fn sessions(&self) -> usize {
        self.ctx.sessions.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Drains: refuses new sessions, sends GOAWAY on every session (no new URI: clients
    /// reconnect to the same one, which another instance serves), waits up to the
    /// configured grace period for them to leave, closes the rest and stops.
    pub async fn drain(self) {
        self.drain_to("").await
    }

    /// [`Self::drain`] naming the URI sessions should move to (every session of a relay is
    /// one it accepted, so the draft allows a URI on all of them).
    pub async fn drain_to(mut self, uri: &str) {
        self.ctx.draining.store(true, Ordering::Relaxed);
        self.health.set(HealthState::Draining);
        if let Some(m) = &self.ctx.mesh {
            m.goaway_links().await;
        }
        let conns: Vec<Connection> =
            self.ctx.sessions.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        tracing::info!(sessions = conns.len(), grace = ?self.ctx.config.goaway_grace, "draining: GOAWAY");
        for c in &conns {
            if let Err(e) = c.goaway(uri).await {
                tracing::debug!(error = %e, "GOAWAY not sent");
            }
        }
        drop(conns);
        let deadline = tokio::time::Instant::now() + self.ctx.config.goaway_grace;
        loop {
            let gone = self.ctx.session_gone.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            if self.sessions() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, gone).await.is_err() {
                break;
            }
        }
        if let Some(m) = &self.ctx.mesh {
            m.links_gone(deadline).await;
        }
        for c in self.ctx.sessions.lock().unwrap_or_else(|e| e.into_inner()).values() {
            c.close(TerminationCode::GoawayTimeout, "relay shutting down");
        }
        self.stop_now().await;
    }

    /// Stops at once: closes every session and the listeners.
    pub async fn shutdown(mut self) {
        for c in self.ctx.sessions.lock().unwrap_or_else(|e| e.into_inner()).values() {
            c.close(TerminationCode::NoError, "relay shutting down");
        }
        self.stop_now().await;
    }

    async fn stop_now(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        if let Some(o) = self.ops.take() {
            o.shutdown().await;
        }
    }
}
