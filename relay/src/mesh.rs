//! The relay's side of the regional mesh: the mesh listener (mutual TLS with the mesh CA),
//! links to the configured peers, the internal routes track `.tiermesh/routes` that carries
//! `tiermesh_mesh` route messages between peers, and the hook that sends a SUBSCRIBE for a
//! track no local publisher has to the next hop of the best mesh route.
//!
//! - A mesh link is a MoQT draft-16 session on the mesh port. The listener requires a client
//!   certificate chaining to the mesh CA; the dialer trusts only servers with a mesh-CA
//!   certificate. Clients never reach the mesh port, so they never see the routes track;
//!   on the client port a SUBSCRIBE for it is refused as if the track did not exist.
//! - Both sides name themselves with the setup parameter `SETUP_PARAM_MESH_PEER` (draft-16
//!   Extension Negotiation; other implementations ignore it) holding a `PeerHello` (mesh
//!   version, relay name, region). The name must be one the peer's mesh-CA certificate was
//!   issued for (its common name or a DNS name), and, for a relay dialled from the
//!   configuration, the name configured; otherwise the link is closed. The mesh listener
//!   always answers with the parameter: only holders of a mesh-CA certificate get that far.
//! - Seeds: a relay dials its configured seeds (name learned from their hello), learns every
//!   relay of the mesh from the flooded membership, and links to those the `discover` policy
//!   picks (its region, and the first relays by name of each other region); both ends make
//!   the same choice and only the smaller name dials, so a pair gets one link.
//! - Per-link metrics (`tiermesh_mesh_link_*{peer=…}` on `/metrics`): link up, tracks this
//!   relay subscribes to over the link, and tracks and subscriptions the peer holds here, so
//!   "one copy per link" can be read from any relay.
//! - Each side subscribes to the other's routes track; every route message is one object
//!   (its own group).
//! - A track with no local publisher is subscribed at the next hop towards its namespace's
//!   origin, through the relay's ordinary track table, so a relay holds at most one upstream
//!   subscription per track and a link carries a track once. When a link dies its
//!   subscriptions linger (the relay's `linger`), and as soon as the mesh has a new route the
//!   relay subscribes again through it, with NEW GROUP REQUEST so players get a key frame
//!   at once.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tiermesh_client::moq::{
    self, ClientOptions, Connection, Event, ServerOptions, SubscribeOptions, SubscribeRequest,
    TrackEvent, TrackWriter,
};
use tiermesh_client::transport::{
    ClientTls, CongestionControl, Server, ServerTls, TransportConfig, Url,
};
use tiermesh_mesh::wire::{MESH_VERSION, PeerHello, SETUP_PARAM_MESH_PEER};
use tiermesh_mesh::{Hop, Node, NodeConfig, PeerInfo, RelayName, RouteMessage};
use tiermesh_proto::TerminationCode;
use tiermesh_proto::data::ObjectStatus;
use tiermesh_proto::ext::Extensions;
use tiermesh_proto::kvp::{KeyValue, Value};
use tiermesh_proto::message::RequestErrorCode;
use tiermesh_proto::types::{FullTrackName, TrackNamespace};
use tokio::sync::{Notify, watch};

use crate::auth::{Grant, Prefix};
use crate::config::MeshConfig;
use crate::server::Ctx;
use crate::track::{SessionId, Upstream};

/// Session numbers of mesh links start here, apart from client sessions.
const MESH_SESSION_BASE: u64 = 1 << 62;

/// Wait before dialing a peer again after its link failed or could not be set up.
const REDIAL_DELAY: Duration = Duration::from_millis(500);

/// Longest wait between dials of a peer that keeps failing: the wait doubles from
/// [`REDIAL_DELAY`] after each failed attempt, so a refused or absent peer costs a dial and
/// a log line every 8 s, while a peer that restarts is found again within that.
const MAX_REDIAL_DELAY: Duration = Duration::from_secs(8);

/// A mesh link with no packet for this long is dead (QUIC idle timeout; both ends use the
/// smaller of their values, so the dialer's setting holds for the link). A relay killed
/// without closing, or a link that drops everything, is noticed after this long, and its
/// tracks move to another route: 1 s keeps the subscriber's freeze under 2 s, and with a
/// PING every 250 ms four in a row must be lost before a live link is taken for dead.
const LINK_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// PING interval on mesh links (see [`LINK_IDLE_TIMEOUT`]).
const LINK_KEEP_ALIVE: Duration = Duration::from_millis(250);

/// The congestion window a mesh link starts with, both ends (the dialer's and the
/// listener's connections), in bytes, with any controller that takes an initial window
/// (`TransportConfig::initial_window`). A link is idle from its handshake until the first
/// subscription crosses it, then carries every track of a broadcast at once: with quinn's
/// 12 000 bytes, doubling per round trip, a 180 ms inter-region link took about 0.9 s to
/// reach a 2.2 Mbit/s broadcast's rate, and the upper tiers' first live objects arrived
/// 300-700 ms late across two hops (docs/BENCHMARKS.md, the two-hop start-up tail). 64 kB
/// removed that tail, and the 1 Mbit/s mesh link of `mesh_regions` (a 12.5 kB queue)
/// still kept its bounds with it; 150 kB overflowed that queue and failed them once in 5
/// runs. Client connections keep quinn's window: an access link's queue may hold only a
/// few packets (`congested`: 7.5 kB).
const LINK_INITIAL_WINDOW: u64 = 64_000;

/// How often the relay's load (client sessions) is read for the mesh: a change reaches the
/// routing API of every relay within this plus the mesh's own `load_interval` (1 s).
const LOAD_SAMPLE: Duration = Duration::from_millis(500);

/// How long a mesh peer may take to complete SETUP: one round trip on a healthy link; 10 s
/// only bounds what a stuck peer costs.
const SETUP_WAIT: Duration = Duration::from_secs(10);

/// How often a link's send-scheduler drops are added to the relay's counters (as for
/// client sessions: `/metrics` is read every few seconds at most).
const DROP_TALLY: Duration = Duration::from_secs(1);

/// How long a make-before-break move to a better route may take before it is tried again
/// (the new route refused, or did not answer): twice the relay's wait for an upstream
/// SUBSCRIBE, so a move in progress is never started twice.
const MOVE_RETRY: Duration = Duration::from_secs(10);

/// Route messages queued for a peer whose routes subscription is not set up yet.
const MAX_QUEUED: usize = 1024;

/// Why the mesh could not start.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The node directory could not be read.
    #[error("mesh identity in {dir}: {source}")]
    Identity {
        /// The directory.
        dir: std::path::PathBuf,
        /// What went wrong.
        source: tiermesh_certs::Error,
    },
    /// The mesh TLS configuration could not be built.
    #[error("mesh TLS: {0}")]
    Tls(String),
    /// The mesh listener could not be bound.
    #[error("mesh listener: {0}")]
    Listen(#[from] tiermesh_client::transport::Error),
    /// A seed's or the advertised mesh address is not a URL.
    #[error("mesh {what}: {addr:?} is not a moqt:// URL")]
    Addr {
        /// Which setting.
        what: &'static str,
        /// The address given.
        addr: String,
    },
    /// A `[mesh.client_regions]` entry is not an address prefix.
    #[error("mesh.client_regions: {0}")]
    ClientRegions(tiermesh_mesh::MeshError),
    /// A peer's address is not a URL.
    #[error("mesh peer {name}: address {addr:?} is not a URL")]
    PeerAddr {
        /// The peer.
        name: String,
        /// The address given.
        addr: String,
    },
}

/// The full name of the internal routes track.
pub(crate) fn routes_track() -> FullTrackName {
    let (ns, name) =
        tiermesh_mesh::wire::ROUTES_TRACK.split_once('/').unwrap_or((".tiermesh", "routes"));
    let ns = TrackNamespace::from_path(ns).unwrap_or_default();
    FullTrackName::new(ns.clone(), name)
        .unwrap_or(FullTrackName { namespace: ns, name: Default::default() })
}

/// One mesh link that is up.
struct Link {
    session: SessionId,
    conn: Connection,
    /// True if the peer dialled this relay (GOAWAY then names where to go).
    accepted: bool,
    writer: Option<TrackWriter>,
    queue: Vec<Bytes>,
    group: u64,
}

struct State {
    node: Node,
    links: HashMap<RelayName, Link>,
    published: BTreeSet<TrackNamespace>,
    /// Client sessions last reported in the mesh load.
    sessions: Option<u64>,
    /// Learned relays a dial task is running for.
    dialing: HashSet<RelayName>,
    /// Mesh addresses a draining peer's GOAWAY sent this relay to, with a dial task running.
    redirects: HashSet<String>,
    /// Tracks being moved to a better route (make-before-break): the link session they
    /// move to and when the move started.
    moving: HashMap<FullTrackName, (SessionId, Instant)>,
    /// For each namespace a local session publishes, the other relays that publish it too.
    remote_origins: HashMap<TrackNamespace, HashSet<RelayName>>,
}

/// The relay's mesh: its routing node and its links.
pub(crate) struct Mesh {
    config: MeshConfig,
    state: Mutex<State>,
    wake: Notify,
    /// Notified when a link has ended.
    link_gone: Notify,
    /// Set when the relay drains: no new mesh links.
    draining: std::sync::atomic::AtomicBool,
    next_session: AtomicU64,
    server: Mutex<Option<Server>>,
    /// The relay's stop signal, kept for dial tasks started later (GOAWAY redirects).
    stop: Mutex<Option<watch::Receiver<bool>>>,
    local_addr: SocketAddr,
    client_tls: ClientTls,
    /// The transport settings of both ends of every mesh link: the relay's `congestion`
    /// controller, with [`LINK_INITIAL_WINDOW`].
    transport: TransportConfig,
    /// Our `PeerHello`, sent in SETUP.
    hello: KeyValue,
    /// Client address prefixes to regions, for the routing API.
    client_regions: tiermesh_mesh::RegionMap,
    /// The grant mesh peers act under: they may subscribe to anything (they are relays of
    /// this operator, authenticated by the mesh CA).
    grant: Arc<Grant>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("name", &self.config.name)
            .field("listen", &self.local_addr)
            .finish()
    }
}

impl Mesh {
    /// Loads the identity and binds the mesh listener. Mesh links use `congestion`, the
    /// relay's congestion controller, like its client sessions.
    pub(crate) fn bind(
        config: MeshConfig,
        congestion: CongestionControl,
    ) -> Result<Arc<Self>, MeshError> {
        let identity = tiermesh_certs::mesh::Identity::load(&config.dir)
            .map_err(|source| MeshError::Identity { dir: config.dir.clone(), source })?;
        let ca = tiermesh_certs::pem::load_chain(config.dir.join(tiermesh_certs::ca::CA_CERT_FILE))
            .map_err(|source| MeshError::Identity { dir: config.dir.clone(), source })?;
        let mut roots = rustls::RootCertStore::empty();
        for c in &ca {
            roots.add(c.clone()).map_err(|e| MeshError::Tls(e.to_string()))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            tiermesh_certs::provider(),
        )
        .build()
        .map_err(|e| MeshError::Tls(e.to_string()))?;
        let server_tls =
            ServerTls::from_resolver(identity.certs().clone()).client_verifier(verifier);
        let transport = TransportConfig::default()
            .congestion(congestion)
            .initial_window(Some(LINK_INITIAL_WINDOW));
        let server = Server::bind_with(config.listen, server_tls, transport.clone())?;
        let local_addr = server.local_addr();
        let client_tls = ClientTls::ca_der(ca.iter().map(|c| c.to_vec()).collect())?
            .with_client_cert_resolver(identity.certs().clone());
        for p in &config.peers {
            if p.addr.parse::<Url>().is_err() {
                return Err(MeshError::PeerAddr { name: p.name.clone(), addr: p.addr.clone() });
            }
        }
        for s in &config.seeds {
            if s.parse::<Url>().is_err() {
                return Err(MeshError::Addr { what: "seed", addr: s.clone() });
            }
        }
        if let Some(a) = &config.advertise
            && a.parse::<Url>().is_err()
        {
            return Err(MeshError::Addr { what: "advertise", addr: a.clone() });
        }
        let mut client_regions = tiermesh_mesh::RegionMap::new();
        for (prefix, region) in &config.client_regions {
            client_regions.add(prefix, region).map_err(MeshError::ClientRegions)?;
        }
        let hello = KeyValue::bytes(
            SETUP_PARAM_MESH_PEER,
            PeerHello {
                version: MESH_VERSION,
                name: RelayName::from(config.name.as_str()),
                region: config.region.clone(),
            }
            .encode(),
        );
        let epoch =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_millis() as u64);
        let mut node_config = NodeConfig::new(config.name.as_str(), &config.region, &config.url)
            .epoch(epoch)
            .costs(config.intra_cost, config.inter_cost);
        if let Some(a) = &config.advertise {
            node_config = node_config.mesh_addr(a.as_str());
        }
        let node = Node::new(Instant::now(), node_config);
        tracing::info!(name = %config.name, region = %config.region, %local_addr, congestion = %controller_name(congestion), ca_sha256 = %identity.ca_sha256().hex(), "mesh listener bound");
        Ok(Arc::new(Self {
            state: Mutex::new(State {
                node,
                links: HashMap::new(),
                published: BTreeSet::new(),
                sessions: None,
                dialing: HashSet::new(),
                redirects: HashSet::new(),
                moving: HashMap::new(),
                remote_origins: HashMap::new(),
            }),
            wake: Notify::new(),
            link_gone: Notify::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            next_session: AtomicU64::new(MESH_SESSION_BASE),
            server: Mutex::new(Some(server)),
            stop: Mutex::new(None),
            local_addr,
            client_tls,
            transport,
            hello,
            client_regions,
            grant: Arc::new(Grant {
                subject: None,
                publish: vec![Prefix::root()],
                subscribe: vec![Prefix::root()],
                expires_at: SystemTime::now() + Duration::from_secs(100 * 365 * 24 * 3600),
            }),
            config,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The mesh listener's address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Asks the mesh task to look at the relay's state again (a namespace was published or
    /// left, an upstream was lost).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// The mesh peer to subscribe at for a track in `namespace`, if the best route leads to
    /// a peer whose link is up. A link whose connection has closed (a GOAWAY closes it at
    /// once) is not, though it stays listed until its task has seen the close: a SUBSCRIBE
    /// there fails at once, and a lingering track would be subscribed there again and again
    /// until then (84 times in 22 ms after a drain, each a new linger timer).
    pub(crate) fn next_hop(&self, namespace: &TrackNamespace) -> Option<(SessionId, Connection)> {
        let st = self.lock();
        match st.node.next_hop(namespace)? {
            Hop::Local => None,
            Hop::Peer(p) => st
                .links
                .get(&p)
                .filter(|l| l.conn.close_reason().is_none())
                .map(|l| (l.session, l.conn.clone())),
        }
    }

    /// A make-before-break move of `track` ended without an upstream while the track had
    /// lost its old one meanwhile (`session::take_over`): the track is subscribed again
    /// along the best route at once, rather than after [`MOVE_RETRY`].
    pub(crate) fn move_failed(&self, track: &FullTrackName) {
        self.lock().moving.remove(track);
        self.wake();
    }

    /// The best route's path for `namespace`, from this relay to the origin.
    pub(crate) fn route_path(&self, namespace: &TrackNamespace) -> Option<Vec<String>> {
        let route = self.lock().node.route(namespace)?;
        Some(route.path.iter().map(|r| r.as_str().to_owned()).collect())
    }

    /// Mesh peers that are up now.
    pub(crate) fn peers(&self) -> Vec<String> {
        self.lock().links.keys().map(|k| k.as_str().to_owned()).collect()
    }

    /// The routing API: `broadcast=<namespace path>` and the client's region → the relay
    /// the client should use: healthy, reachable over the mesh, in the nearest region,
    /// least loaded. The region is `region=<name>`, else the region `[mesh.client_regions]`
    /// maps `addr=<ip>` to, else the one it maps the HTTP client's own address to (a
    /// client asking for itself). 404 if no relay of the mesh publishes the broadcast; 400
    /// if no region is given or mapped.
    pub(crate) fn route_hook(self: &Arc<Self>) -> crate::ops::RouteHook {
        let mesh = Arc::downgrade(self);
        crate::ops::RouteHook(Arc::new(move |query: &str, client: std::net::IpAddr| {
            let Some(mesh) = mesh.upgrade() else { return (503, error_json("mesh stopped")) };
            mesh.answer_route(query, client)
        }))
    }

    fn answer_route(&self, query: &str, client: std::net::IpAddr) -> (u16, String) {
        let mut broadcast = None;
        let mut region = None;
        let mut addr = None;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "broadcast" => broadcast = Some(v.into_owned()),
                "region" => region = Some(v.into_owned()),
                "addr" => addr = Some(v.into_owned()),
                _ => {}
            }
        }
        let Some(broadcast) = broadcast else {
            return (
                400,
                error_json("give broadcast=<namespace> and region=<region> or addr=<ip>"),
            );
        };
        let (region, region_from) = match (region, addr) {
            (Some(r), _) => (r, "region"),
            (None, Some(a)) => {
                let Ok(ip) = a.parse::<std::net::IpAddr>() else {
                    return (400, error_json("addr is not an IP address"));
                };
                match self.client_regions.region_of(ip) {
                    Some(r) => (r.to_owned(), "addr"),
                    None => {
                        return (
                            400,
                            error_json("no region for addr: mesh.client_regions does not cover it"),
                        );
                    }
                }
            }
            (None, None) => match self.client_regions.region_of(client) {
                Some(r) => (r.to_owned(), "source address"),
                None => {
                    return (
                        400,
                        error_json(
                            "give region=<region> or addr=<ip>: mesh.client_regions does not cover this client's address",
                        ),
                    );
                }
            },
        };
        let Ok(ns) = TrackNamespace::from_path(&broadcast) else {
            return (400, error_json("broadcast is not a namespace path"));
        };
        let st = self.lock();
        let Some(route) = st.node.route(&ns) else {
            return (404, error_json("no relay of the mesh publishes this broadcast"));
        };
        let members = st.node.members();
        drop(st);
        let chosen = tiermesh_mesh::routing_api::choose(
            &members,
            &region,
            &tiermesh_mesh::RegionCosts::default(),
            &tiermesh_mesh::LoadWeights::default(),
        );
        match chosen {
            Some(n) => (
                200,
                serde_json::json!({
                    "broadcast": broadcast,
                    "client_region": region,
                    "client_region_from": region_from,
                    "relay": n.name.as_str(),
                    "region": &*n.region,
                    "url": &*n.url,
                    "origin": route.origin.as_str(),
                })
                .to_string(),
            ),
            None => (503, error_json("no healthy relay reachable")),
        }
    }

    /// A SUBSCRIBE for the routes track: accepted from a mesh link, refused otherwise.
    /// False if `req` is not for the routes track (the caller handles it).
    pub(crate) fn routes_subscribe(self: &Arc<Self>, req: &SubscribeRequest) -> bool {
        req.track == routes_track()
    }

    fn accept_routes(self: &Arc<Self>, req: SubscribeRequest, peer: RelayName, session: SessionId) {
        let mesh = self.clone();
        tokio::spawn(async move {
            let writer = match req.accept(Extensions::default(), None).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::debug!(error = %e, "routes subscription not accepted");
                    return;
                }
            };
            let mut st = mesh.lock();
            if let Some(link) = st.links.get_mut(&peer).filter(|l| l.session == session) {
                let queued = std::mem::take(&mut link.queue);
                link.writer = Some(writer);
                for m in queued {
                    write_message(link, m);
                }
            }
        });
    }

    /// Starts the mesh: the listener, the dialers and the routing loop.
    pub(crate) fn spawn(self: &Arc<Self>, ctx: Arc<Ctx>, stop: watch::Receiver<bool>) {
        let Some(mut server) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        self.register_metrics(&ctx);
        *self.stop.lock().unwrap_or_else(|e| e.into_inner()) = Some(stop.clone());
        let mesh = self.clone();
        let accept_ctx = ctx.clone();
        let mut accept_stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    request = server.accept() => {
                        let Some(request) = request else { break };
                        let mesh = mesh.clone();
                        let ctx = accept_ctx.clone();
                        tokio::spawn(async move {
                            let peer = request.peer();
                            let session = match request.accept().await {
                                Ok(s) => s,
                                Err(e) => {
                                    tracing::warn!(%peer, error = %e, "mesh peer refused (TLS)");
                                    return;
                                }
                            };
                            let options = ServerOptions::default().setup_param(mesh.hello.clone());
                            let (conn, driver) = match moq::accept(session, options).await {
                                Ok(x) => x,
                                Err(e) => {
                                    tracing::info!(%peer, error = %e, "mesh session not started");
                                    return;
                                }
                            };
                            tokio::spawn(driver.run());
                            let Some(hello) = mesh.identify(&conn, None).await else { return };
                            if mesh.draining.load(Ordering::Relaxed) {
                                conn.close(TerminationCode::NoError, "relay draining");
                                return;
                            }
                            mesh.run_link(ctx, conn, hello.name.as_str().to_owned(), hello.region, true).await;
                        });
                    }
                    _ = accept_stop.changed() => break,
                }
            }
            server.close(TerminationCode::NoError.code() as u32, "relay shutting down");
        });
        for peer in self.config.peers.clone() {
            let mesh = self.clone();
            let (ctx, stop) = (ctx.clone(), stop.clone());
            tokio::spawn(async move {
                mesh.dial_loop(ctx, stop, &peer.addr, Some(peer.name.clone()), || true).await;
            });
        }
        for seed in self.config.seeds.clone() {
            let mesh = self.clone();
            let (ctx, stop) = (ctx.clone(), stop.clone());
            tokio::spawn(async move { mesh.dial_loop(ctx, stop, &seed, None, || true).await });
        }
        let mesh = self.clone();
        let discover_stop = stop.clone();
        let mut stop = stop;
        tokio::spawn(async move {
            loop {
                mesh.step(&ctx);
                mesh.discover(&ctx, &discover_stop);
                let sample = Instant::now() + LOAD_SAMPLE;
                let deadline = mesh.lock().node.poll_timeout().map_or(sample, |d| d.min(sample));
                let sleep = tokio::time::sleep_until(deadline.into());
                tokio::select! {
                    _ = mesh.wake.notified() => {}
                    _ = sleep => {}
                    _ = stop.changed() => break,
                }
            }
            let conns: Vec<Connection> =
                mesh.lock().links.values().map(|l| l.conn.clone()).collect();
            for c in conns {
                c.close(TerminationCode::NoError, "relay shutting down");
            }
        });
    }

    /// Dials the mesh listener at `addr` and runs the link, again after each failure, until
    /// the relay stops or `wanted` says the link is no longer wanted. `expected`: the name
    /// the peer must have (from the configuration); `None` for a seed.
    async fn dial_loop(
        self: &Arc<Self>,
        ctx: Arc<Ctx>,
        mut stop: watch::Receiver<bool>,
        addr: &str,
        expected: Option<String>,
        wanted: impl Fn() -> bool,
    ) {
        let Ok(mut url) = addr.parse::<Url>() else { return };
        url.set_path("/.tiermesh");
        let label = expected.clone().unwrap_or_else(|| addr.to_owned());
        let mut delay = REDIAL_DELAY;
        loop {
            let dial = async {
                let options = ClientOptions::new(self.client_tls.clone())
                    .setup_param(self.hello.clone())
                    .transport(
                        self.transport
                            .clone()
                            .idle_timeout(LINK_IDLE_TIMEOUT)
                            .keep_alive(Some(LINK_KEEP_ALIVE)),
                    );
                match moq::connect(&url, options).await {
                    Ok((conn, driver)) => {
                        tokio::spawn(driver.run());
                        if let Some(hello) = self.identify(&conn, expected.as_deref()).await {
                            delay = REDIAL_DELAY;
                            self.run_link(
                                ctx.clone(),
                                conn,
                                hello.name.as_str().to_owned(),
                                hello.region,
                                false,
                            )
                            .await
                        }
                    }
                    Err(e) => {
                        tracing::warn!(peer = %label, error = %e, "mesh peer not reached")
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_REDIAL_DELAY);
            };
            tokio::select! {
                _ = dial => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() || !wanted() || self.draining.load(Ordering::Relaxed) {
                break;
            }
        }
    }

    /// Waits for SETUP and checks the peer's identity: its `PeerHello` (right version), its
    /// name named by its mesh-CA certificate, and equal to `expected` when given. Closes the
    /// session and returns `None` if anything is wrong.
    async fn identify(&self, conn: &Connection, expected: Option<&str>) -> Option<PeerHello> {
        let setup = match tokio::time::timeout(SETUP_WAIT, conn.ready()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(peer = %conn.peer(), error = %e, "mesh link SETUP failed");
                return None;
            }
            Err(_) => {
                conn.close(TerminationCode::ControlMessageTimeout, "mesh SETUP not completed");
                return None;
            }
        };
        let checked = check_hello(
            setup.params.unknown_of(SETUP_PARAM_MESH_PEER).next(),
            conn.peer_certificates(),
            expected,
            &self.config.name,
        );
        match checked {
            Ok(hello) => Some(hello),
            Err(reason) => {
                tracing::warn!(peer = %conn.peer(), %reason, "mesh peer refused (identity)");
                conn.close(TerminationCode::ProtocolViolation, &reason);
                None
            }
        }
    }

    /// Links to the relays learned through the mesh that the `discover` policy picks and
    /// that this relay (the smaller name of the pair) should dial.
    fn discover(self: &Arc<Self>, ctx: &Arc<Ctx>, stop: &watch::Receiver<bool>) {
        if self.config.seeds.is_empty() && self.config.advertise.is_none() {
            return;
        }
        let targets = {
            let st = self.lock();
            let members = st.node.members();
            let me = self.config.name.as_str();
            members
                .iter()
                .filter(|m| m.name.as_str() != me && m.mesh_addr.is_some())
                .filter(|m| !st.links.contains_key(&m.name) && !st.dialing.contains(&m.name))
                .filter(|m| !self.config.peers.iter().any(|p| p.name == m.name.as_str()))
                .filter(|m| me < m.name.as_str() && self.wants_link(&members, m))
                .map(|m| (m.name.clone(), m.mesh_addr.clone().unwrap_or_default()))
                .collect::<Vec<_>>()
        };
        for (name, addr) in targets {
            self.lock().dialing.insert(name.clone());
            tracing::info!(peer = %name, %addr, "mesh: linking to a relay learned from the mesh");
            let mesh = self.clone();
            let (ctx, stop) = (ctx.clone(), stop.clone());
            tokio::spawn(async move {
                let check = mesh.clone();
                let peer = name.clone();
                let wanted = move || {
                    let st = check.lock();
                    let members = st.node.members();
                    members
                        .iter()
                        .find(|m| m.name == peer)
                        .is_some_and(|m| check.wants_link(&members, m))
                };
                mesh.dial_loop(ctx, stop, &addr, Some(name.as_str().to_owned()), wanted).await;
                mesh.lock().dialing.remove(&name);
            });
        }
    }

    /// Whether the `discover` policy links this relay and `other` (symmetric: both ends
    /// decide alike from the same membership).
    fn wants_link(
        &self,
        members: &[tiermesh_mesh::NodeState],
        other: &tiermesh_mesh::NodeState,
    ) -> bool {
        let d = &self.config.discover;
        if *other.region == *self.config.region {
            return d.same_region;
        }
        let first_of = |region: &str| -> Vec<&str> {
            let mut names: Vec<&str> =
                members.iter().filter(|m| &*m.region == region).map(|m| m.name.as_str()).collect();
            names.sort_unstable();
            names.truncate(d.per_other_region);
            names
        };
        first_of(&other.region).contains(&other.name.as_str())
            || first_of(&self.config.region).contains(&self.config.name.as_str())
    }

    /// Adds the per-link figures to the relay's `/metrics`.
    fn register_metrics(self: &Arc<Self>, ctx: &Arc<Ctx>) {
        let mesh = Arc::downgrade(self);
        let weak_ctx = Arc::downgrade(ctx);
        ctx.metrics.extra.add(Arc::new(move |out: &mut String| {
            let (Some(mesh), Some(ctx)) = (mesh.upgrade(), weak_ctx.upgrade()) else { return };
            mesh.render_metrics(&ctx, out);
        }));
    }

    fn render_metrics(&self, ctx: &Ctx, out: &mut String) {
        use std::fmt::Write as _;
        let (links, conns): (Vec<(String, SessionId)>, Vec<Connection>) = self
            .lock()
            .links
            .iter()
            .map(|(n, l)| ((n.as_str().to_owned(), l.session), l.conn.clone()))
            .unzip();
        // Read outside the mesh's lock: each reading locks the QUIC connection.
        let windows: HashMap<SessionId, u64> = links
            .iter()
            .zip(&conns)
            .filter_map(|((_, session), c)| Some((*session, c.transport_stats()?.cwnd)))
            .collect();
        let mut up: HashMap<SessionId, u64> = HashMap::new();
        let mut down_tracks: HashMap<SessionId, u64> = HashMap::new();
        let mut down_subs: HashMap<SessionId, u64> = HashMap::new();
        let tracks: Vec<_> = ctx.registry.lock().tracks.values().cloned().collect();
        for t in tracks {
            let st = t.lock();
            match &st.upstream {
                Upstream::Active { session, pushed: false, .. } | Upstream::Pending { session } => {
                    *up.entry(*session).or_default() += 1;
                }
                _ => {}
            }
            let mut seen = HashSet::new();
            for d in st.downstream.values() {
                *down_subs.entry(d.session).or_default() += 1;
                if seen.insert(d.session) {
                    *down_tracks.entry(d.session).or_default() += 1;
                }
            }
        }
        let family = |out: &mut String, name: &str, help: &str, get: &dyn Fn(SessionId) -> u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (peer, session) in &links {
                let _ =
                    writeln!(out, "{name}{{peer=\"{}\"}} {}", label_escape(peer), get(*session));
            }
        };
        let _ = writeln!(
            out,
            "# HELP tiermesh_mesh_links Mesh links up.\n# TYPE tiermesh_mesh_links gauge\ntiermesh_mesh_links {}",
            links.len()
        );
        family(out, "tiermesh_mesh_link_up", "1 for each mesh link that is up.", &|_| 1);
        family(
            out,
            "tiermesh_mesh_link_upstream_tracks",
            "Tracks this relay subscribes to over the link (one upstream subscription each).",
            &|s| up.get(&s).copied().unwrap_or(0),
        );
        family(
            out,
            "tiermesh_mesh_link_downstream_tracks",
            "Tracks the peer receives from this relay over the link.",
            &|s| down_tracks.get(&s).copied().unwrap_or(0),
        );
        family(
            out,
            "tiermesh_mesh_link_downstream_subscriptions",
            "Subscriptions the peer holds at this relay (equal to the tracks when each track crosses the link once).",
            &|s| down_subs.get(&s).copied().unwrap_or(0),
        );
        family(
            out,
            "tiermesh_mesh_link_congestion_window_bytes",
            "The QUIC congestion window of the link's connection at this end.",
            &|s| windows.get(&s).copied().unwrap_or(0),
        );
        let name = "tiermesh_mesh_link_congestion_controller";
        let controller = controller_name(self.transport.get_congestion());
        let _ = writeln!(
            out,
            "# HELP {name} 1 for each mesh link, labelled with its QUIC congestion controller (the relay's `congestion` setting).\n# TYPE {name} gauge"
        );
        for (peer, _) in &links {
            let _ = writeln!(
                out,
                "{name}{{peer=\"{}\",controller=\"{controller}\"}} 1",
                label_escape(peer)
            );
        }
    }

    /// Runs one mesh link until it ends.
    async fn run_link(
        self: &Arc<Self>,
        ctx: Arc<Ctx>,
        conn: Connection,
        name: String,
        region: String,
        accepted: bool,
    ) {
        let peer = RelayName::from(name.as_str());
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        {
            let mut st = self.lock();
            if st.links.contains_key(&peer) {
                drop(st);
                tracing::info!(peer = %name, "second link to a peer already linked: closed");
                conn.close(TerminationCode::NoError, "already linked");
                return;
            }
            st.links.insert(
                peer.clone(),
                Link {
                    session,
                    conn: conn.clone(),
                    accepted,
                    writer: None,
                    queue: Vec::new(),
                    group: 0,
                },
            );
            st.node.handle_peer_up(
                Instant::now(),
                peer.as_str(),
                PeerInfo { region: region.clone() },
            );
        }
        tracing::info!(peer = %name, %region, congestion = %controller_name(self.transport.get_congestion()), "mesh link up");
        self.wake();
        // The peer's routes.
        let mesh = self.clone();
        let routes_conn = conn.clone();
        let routes_peer = peer.clone();
        let routes = tokio::spawn(async move {
            let mut reader = match routes_conn
                .subscribe(routes_track(), SubscribeOptions::default())
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(peer = %routes_peer, error = %e, "routes subscription refused: closing link");
                    routes_conn.close(TerminationCode::ProtocolViolation, "routes track refused");
                    return;
                }
            };
            while let Some(e) = reader.next().await {
                let TrackEvent::Object(o) = e else { continue };
                match RouteMessage::decode(&o.payload) {
                    Ok(m) => {
                        let r = mesh.lock().node.handle_message(
                            Instant::now(),
                            routes_peer.as_str(),
                            m,
                        );
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "route message not taken");
                        }
                        mesh.wake();
                    }
                    Err(e) => tracing::warn!(peer = %routes_peer, error = %e, "bad route message"),
                }
            }
        });
        // The send scheduler's drops on this link join the relay's drop counters, as a
        // client session's do.
        let mut drops = tiermesh_client::scheduler::Stats::default();
        let mut tally = tokio::time::interval(DROP_TALLY);
        let mut redirect = None;
        loop {
            tokio::select! {
                _ = tally.tick() => {
                    let now = conn.send_stats();
                    ctx.metrics.add_scheduler_drops(&drops, &now);
                    drops = now;
                }
                event = conn.next_event() => match event {
                    Some(Event::Subscribe(req)) if self.routes_subscribe(&req) => {
                        self.accept_routes(req, peer.clone(), session);
                    }
                    Some(Event::Goaway { uri }) => {
                        // The peer drains: its routes go now, and the tracks it carried
                        // move to the next best route at once (see `reroute`). A new URI
                        // (only a relay this one dialled may name one) is another relay
                        // to link to instead.
                        tracing::info!(peer = %name, %uri, "mesh peer going away: link closed");
                        conn.close(TerminationCode::NoError, "peer going away");
                        if !uri.is_empty() && !accepted {
                            redirect = Some(uri);
                        }
                        break;
                    }
                    Some(e) => crate::session::handle(&ctx, &conn, session, Some(self.grant.clone()), e),
                    None => break,
                },
                _ = conn.closed() => break,
            }
        }
        routes.abort();
        ctx.metrics.add_scheduler_drops(&drops, &conn.send_stats());
        {
            let mut st = self.lock();
            if st.links.get(&peer).is_some_and(|l| l.session == session) {
                st.links.remove(&peer);
                st.node.handle_peer_down(Instant::now(), peer.as_str());
            }
        }
        if let Some(uri) = redirect {
            self.follow_goaway(&ctx, uri);
        }
        let reason = conn.closed().await;
        tracing::info!(peer = %name, %reason, "mesh link down");
        self.link_gone.notify_waiters();
        self.wake();
    }

    /// Links to the mesh address a draining peer's GOAWAY named (draft-16 §9.4: the client
    /// of a session that receives a new URI connects there), unless this relay is draining
    /// too, the address is its own, or it already links to (or dials) that relay. The dial
    /// is retried like a seed's while this relay has no other link to the relay found there.
    fn follow_goaway(self: &Arc<Self>, ctx: &Arc<Ctx>, uri: String) {
        if self.draining.load(Ordering::Relaxed) || self.config.advertise.as_deref() == Some(&uri) {
            return;
        }
        let Some(stop) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return;
        };
        if uri.parse::<Url>().is_err() {
            tracing::warn!(%uri, "mesh GOAWAY names an address that is not a URL: ignored");
            return;
        }
        {
            let mut st = self.lock();
            let known = st
                .node
                .members()
                .into_iter()
                .find(|m| m.mesh_addr.as_deref() == Some(uri.as_str()))
                .map(|m| m.name);
            if known.is_some_and(|n| st.links.contains_key(&n) || st.dialing.contains(&n))
                || !st.redirects.insert(uri.clone())
            {
                tracing::info!(%uri, "mesh GOAWAY: already linked to the relay it names");
                return;
            }
        }
        tracing::info!(%uri, "mesh GOAWAY: linking to the relay it names");
        let mesh = self.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let check = mesh.clone();
            let addr = uri.clone();
            // Wanted until another link (the discover policy's, say) reaches that relay.
            let wanted = move || {
                let st = check.lock();
                let linked_elsewhere = st
                    .node
                    .members()
                    .into_iter()
                    .find(|m| m.mesh_addr.as_deref() == Some(addr.as_str()))
                    .is_some_and(|m| st.links.contains_key(&m.name));
                !linked_elsewhere
            };
            mesh.dial_loop(ctx, stop, &uri, None, wanted).await;
            mesh.lock().redirects.remove(&uri);
        });
    }

    /// Starts draining the mesh side of the relay: refuses new mesh links and sends GOAWAY
    /// on every link; a peer that dialled this relay is told the mesh address of another
    /// relay of this region (empty if none is known), a peer this relay dialled gets an
    /// empty URI (draft-16 §9.4: only a server names a new URI). Peers close their links
    /// and re-route the tracks they received through this relay.
    pub(crate) async fn goaway_links(&self) {
        self.draining.store(true, Ordering::Relaxed);
        let links: Vec<(Connection, String)> = {
            let st = self.lock();
            let mut other: Vec<_> = st
                .node
                .members()
                .into_iter()
                .filter(|m| m.name.as_str() != self.config.name && *m.region == *self.config.region)
                .filter(|m| m.reachable && m.load.healthy)
                .filter_map(|m| m.mesh_addr.map(|a| (m.name, a)))
                .collect();
            other.sort();
            st.links
                .iter()
                .map(|(peer, l)| {
                    // Never the peer itself: a relay of this region that dialled this one
                    // is sent to the next one.
                    let next = other
                        .iter()
                        .find(|(n, _)| n != peer)
                        .filter(|_| l.accepted)
                        .map(|(_, a)| a.to_string())
                        .unwrap_or_default();
                    (l.conn.clone(), next)
                })
                .collect()
        };
        tracing::info!(links = links.len(), "mesh draining: GOAWAY on mesh links");
        for (conn, next) in links {
            tracing::info!(peer = %conn.peer(), %next, "mesh GOAWAY");
            if let Err(e) = conn.goaway(&next).await {
                tracing::debug!(error = %e, "mesh GOAWAY not sent");
            }
        }
    }

    /// Waits until every mesh link has closed, or `deadline`.
    pub(crate) async fn links_gone(&self, deadline: tokio::time::Instant) {
        loop {
            let gone = self.link_gone.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            if self.lock().links.is_empty() {
                return;
            }
            if tokio::time::timeout_at(deadline, gone).await.is_err() {
                return;
            }
        }
    }

    /// Feeds the node what changed, sends its messages and re-routes lingering tracks.
    fn step(&self, ctx: &Arc<Ctx>) {
        let now = Instant::now();
        let published: BTreeSet<TrackNamespace> = ctx
            .registry
            .lock()
            .announcements
            .iter()
            .filter(|a| a.session < MESH_SESSION_BASE)
            .map(|a| a.namespace.clone())
            .collect();
        let mut st = self.lock();
        let added: Vec<_> = published.difference(&st.published).cloned().collect();
        let removed: Vec<_> = st.published.difference(&published).cloned().collect();
        for ns in added {
            st.node.local_publish(now, ns);
        }
        for ns in &removed {
            st.node.local_unpublish(now, ns);
        }
        st.published = published;
        let sessions = ctx.metrics.sessions.get().max(0) as u64;
        if st.sessions != Some(sessions) {
            st.sessions = Some(sessions);
            st.node.set_load(
                now,
                tiermesh_mesh::LoadReport { sessions, healthy: true, ..Default::default() },
            );
        }
        if st.node.poll_timeout().is_some_and(|t| t <= now) {
            st.node.handle_timeout(now);
        }
        while let Some((peer, msg)) = st.node.poll_send() {
            let bytes = msg.encode();
            if let Some(link) = st.links.get_mut(&peer) {
                if link.writer.is_some() {
                    write_message(link, bytes);
                } else if link.queue.len() < MAX_QUEUED {
                    link.queue.push(bytes);
                }
            }
        }
        while st.node.poll_event().is_some() {}
        let newer = newer_remote_publishers(&mut st);
        drop(st);
        for (ns, origin) in newer {
            self.follow_newer_publisher(ctx, &ns, &origin);
        }
        self.reroute(ctx);
    }

    /// A relay began publishing `namespace` after a local session had: the publisher most
    /// likely moved there (its old connection here died silently and lives on until its
    /// idle timeout). As a relay does for a namespace published again by a new local session
    /// (draft-16 §8.5), the tracks held from the local publisher are subscribed from the
    /// newer one, at the next hop towards `origin` (make-before-break).
    fn follow_newer_publisher(&self, ctx: &Arc<Ctx>, ns: &TrackNamespace, origin: &RelayName) {
        let hop = {
            let st = self.lock();
            match st.node.next_hop_to(origin.as_str()) {
                Some(Hop::Peer(p)) => st.links.get(&p).map(|l| (l.session, l.conn.clone())),
                _ => None,
            }
        };
        let Some((session, conn)) = hop else { return };
        let tracks: Vec<_> = ctx
            .registry
            .lock()
            .tracks
            .values()
            .filter(|t| &t.name.namespace == ns)
            .filter(|t| {
                matches!(t.lock().upstream, Upstream::Active { session, pushed: false, .. } if session < MESH_SESSION_BASE)
            })
            .cloned()
            .collect();
        for track in tracks {
            tracing::info!(track = %track.name, origin = %origin.as_str(), "mesh: the namespace is published anew at another relay: subscribing there");
            tokio::spawn(crate::session::take_over(ctx.clone(), track, session, conn.clone()));
        }
    }

    /// Subscribes again, along the current best route, every track whose upstream was lost
    /// and that no local publisher serves; moves a track subscribed over a mesh link to a
    /// better route that appeared (see [`Self::move_to_better_route`]).
    fn reroute(&self, ctx: &Arc<Ctx>) {
        let tracks: Vec<_> = ctx.registry.lock().tracks.values().cloned().collect();
        for track in tracks {
            let current = match track.lock().upstream {
                Upstream::Lingering => None,
                Upstream::Active { session, pushed: false, .. } if session >= MESH_SESSION_BASE => {
                    Some(session)
                }
                _ => continue,
            };
            if let Some(current) = current {
                self.move_to_better_route(ctx, &track, current);
                continue;
            }
            if ctx.registry.lock().publisher_for(&track.name).is_some() {
                continue;
            }
            let Some((session, conn)) = self.next_hop(&track.name.namespace) else { continue };
            // A make-before-break move to this very peer is on its way (the old upstream was
            // lost while it waited, a dead peer's link timing out): it becomes the upstream
            // once established. A second SUBSCRIBE for the track on that session would be
            // refused at once (draft-16 §5.1: one subscription per track and role), and the
            // track subscribed again and again, each refusal finishing the subscribers'
            // streams while the move's joining fetch forwards its objects: one group's objects
            // on several streams, which a subscriber may read out of order.
            if self
                .lock()
                .moving
                .get(&track.name)
                .is_some_and(|(to, at)| *to == session && at.elapsed() < MOVE_RETRY)
            {
                continue;
            }
            {
                let mut st = track.lock();
                if !matches!(st.upstream, Upstream::Lingering) || st.removed {
                    continue;
                }
                st.upstream = Upstream::Pending { session };
                st.generation += 1;
            }
            // NEW GROUP REQUEST on the new route's SUBSCRIBE (value 0: "a new group
            // now"), so the subscribers' players get a key frame at once instead of
            // waiting for the next one; it rides on the SUBSCRIBE since none is established.
            track.request_new_group(0);
            tracing::info!(track = %track.name, "mesh: subscribing again along the new route");
            tokio::spawn(crate::session::upstream(ctx.clone(), track, session, conn));
        }
    }
}

impl Mesh {
    /// Make-before-break: when the best route for a track subscribed over the mesh link
    /// `current` now leads through another link, the relay subscribes along the new route
    /// and, once that subscription is established, releases the old one
    /// (`session::take_over`, as for a publisher that reconnected). Subscribers see no
    /// gap: the new subscription starts after the largest object (the joining FETCH fills
    /// the current group; objects already cached are not forwarded twice). If the new route
    /// refuses, the old subscription carries on and the move is tried again after
    /// [`MOVE_RETRY`].
    fn move_to_better_route(
        &self,
        ctx: &Arc<Ctx>,
        track: &Arc<crate::track::Track>,
        current: SessionId,
    ) {
        let Some((session, conn)) = self.next_hop(&track.name.namespace) else { return };
        let now = Instant::now();
        {
            let mut st = self.lock();
            if session == current {
                st.moving.remove(&track.name);
                return;
            }
            if st
                .moving
                .get(&track.name)
                .is_some_and(|(to, at)| *to == session && now.duration_since(*at) < MOVE_RETRY)
            {
                return;
            }
            st.moving.insert(track.name.clone(), (session, now));
        }
        if ctx.registry.lock().publisher_for(&track.name).is_some() {
            return;
        }
        tracing::info!(track = %track.name, "mesh: a better route appeared: moving the upstream subscription (make-before-break)");
        tokio::spawn(crate::session::take_over(ctx.clone(), track.clone(), session, conn));
    }
}

/// Records, for each locally published namespace, the other relays publishing it; returns
/// those that appeared since the last call (not those already there when the local
/// session published it).
fn newer_remote_publishers(st: &mut State) -> Vec<(TrackNamespace, RelayName)> {
    let mut newer = Vec::new();
    let published = st.published.clone();
    st.remote_origins.retain(|ns, _| published.contains(ns));
    for ns in published {
        let now: HashSet<RelayName> = st.node.remote_origins(&ns).into_iter().collect();
        if let Some(before) = st.remote_origins.get(&ns) {
            newer.extend(now.difference(before).map(|o| (ns.clone(), o.clone())));
        }
        st.remote_origins.insert(ns, now);
    }
    newer
}

fn error_json(reason: &str) -> String {
    serde_json::json!({ "error": reason }).to_string()
}

/// Writes one route message as its own group on the peer's routes subscription.
fn write_message(link: &mut Link, bytes: Bytes) {
    let Some(writer) = &link.writer else { return };
    let mut stream = writer.open_subgroup(link.group, 0, Some(0));
    link.group += 1;
    if let Err(e) = stream.write(0, &Extensions::default(), ObjectStatus::Normal, bytes) {
        tracing::debug!(error = %e, "route message not sent");
    }
    stream.finish();
}

/// Checks a peer's `PeerHello` against its certificate chain (leaf first) and, when given,
/// the name configured for it. The error is the reason sent to the peer.
fn check_hello(
    param: Option<&KeyValue>,
    certs: Option<&[Vec<u8>]>,
    expected: Option<&str>,
    own_name: &str,
) -> Result<PeerHello, String> {
    let Some(KeyValue { value: Value::Bytes(bytes), .. }) = param else {
        return Err("not a tiermesh mesh peer: no mesh setup parameter".to_owned());
    };
    let hello = PeerHello::decode(bytes).map_err(|e| format!("bad mesh setup parameter: {e}"))?;
    if hello.version != MESH_VERSION {
        return Err(format!("mesh version {} (this relay speaks {MESH_VERSION})", hello.version));
    }
    let name = hello.name.as_str();
    if name == own_name {
        return Err(format!("the peer claims this relay's own name {name:?}"));
    }
    if let Some(want) = expected
        && want != name
    {
        return Err(format!("the peer names itself {name:?}, configured as {want:?}"));
    }
    let leaf = certs.and_then(|c| c.first()).ok_or("no certificate presented")?;
    let names = cert_names(leaf)?;
    if !names.iter().any(|n| n == name) {
        return Err(format!("the peer names itself {name:?} but its certificate is for {names:?}"));
    }
    Ok(hello)
}

/// The common names and DNS names a certificate was issued for.
fn cert_names(der: &[u8]) -> Result<Vec<String>, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("unreadable certificate: {e}"))?;
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push((*d).to_owned());
            }
        }
    }
    names.dedup();
    Ok(names)
}

/// A congestion controller's name as the relay's configuration spells it (`cubic`, `delay`).
fn controller_name(c: CongestionControl) -> String {
    use clap::ValueEnum as _;
    c.to_possible_value().map_or_else(|| format!("{c:?}"), |v| v.get_name().to_owned())
}

fn label_escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Refuses a SUBSCRIBE for the routes track on a client session: clients never see it.
pub(crate) fn refuse_routes(req: SubscribeRequest) -> Option<SubscribeRequest> {
    if req.track == routes_track() {
        req.reject(RequestErrorCode::DoesNotExist, "no publisher for this track");
        None
    } else {
        Some(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(name: &str) -> KeyValue {
        let h = PeerHello { version: MESH_VERSION, name: name.into(), region: "r1".into() };
        KeyValue::bytes(SETUP_PARAM_MESH_PEER, h.encode())
    }

    #[test]
    fn hello_must_match_the_certificate_and_the_configuration() {
        let ca = tiermesh_certs::ca::generate("unit").unwrap();
        let b1 = ca.issue_node("b1", &["127.0.0.1".to_owned()]).unwrap();
        let chain = vec![b1.cert.to_vec()];
        let ok = check_hello(Some(&hello("b1")), Some(&chain), None, "a1").unwrap();
        assert_eq!((ok.name.as_str(), ok.region.as_str()), ("b1", "r1"));
        assert!(check_hello(Some(&hello("b1")), Some(&chain), Some("b1"), "a1").is_ok());
        let e = check_hello(Some(&hello("c1")), Some(&chain), None, "a1").unwrap_err();
        assert!(e.contains("certificate is for"), "{e}");
        let e = check_hello(Some(&hello("b1")), Some(&chain), Some("b2"), "a1").unwrap_err();
        assert!(e.contains("configured as"), "{e}");
        let e = check_hello(None, Some(&chain), None, "a1").unwrap_err();
        assert!(e.contains("no mesh setup parameter"), "{e}");
        let e = check_hello(Some(&hello("b1")), None, None, "a1").unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
        let e = check_hello(Some(&hello("a1")), Some(&chain), None, "a1").unwrap_err();
        assert!(e.contains("own name"), "{e}");
        let bad = KeyValue::bytes(SETUP_PARAM_MESH_PEER, bytes::Bytes::from_static(&[0x40]));
        assert!(check_hello(Some(&bad), Some(&chain), None, "a1").is_err());
    }

    #[test]
    fn routes_track_is_the_mesh_crates() {
        let t = routes_track();
        assert_eq!(t.namespace, TrackNamespace::from_path(".tiermesh").unwrap());
    }
}
