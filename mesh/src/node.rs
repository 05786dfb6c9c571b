//! One relay's view of the mesh: a sans-IO state machine.
//!
//! Three things travel between mesh peers, all batched in [`RouteMessage`]s:
//! - **membership and load**: every relay floods a [`NodeAnnouncement`] every
//!   [`NodeConfig::announce_interval`]; a copy expires [`NodeConfig::node_ttl`] after its
//!   origin made it (its age travels with it), so dead relays age out everywhere.
//! - **routes to relays**: a path vector. Each relay advertises its best route to every
//!   origin relay, with the path of relay names and the accumulated cost; a relay discards
//!   a route whose path holds its own name (so no loop can form), picks the least
//!   (cost, path length, next-hop name), never advertises a route back to its next hop,
//!   and withdraws what it loses.
//! - **namespaces**: each relay floods a [`NamespaceRecord`] per published namespace,
//!   versioned by (epoch, sequence) of its origin. The route to a namespace is the route to
//!   its origin relay: route state grows with relays × peers, not namespaces × relays.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tiermesh_proto::types::TrackNamespace;

use crate::wire::{
    LinkRecord, LoadReport, NamespaceRecord, NodeAnnouncement, RelayName, RouteAdvert, RouteMessage,
};

/// Deterministic hashing (SipHash with fixed keys): the same inputs give the same iteration
/// order, so a simulation run can be repeated exactly.
type Map<K, V> = HashMap<K, V, BuildHasherDefault<DefaultHasher>>;

/// A relay index local to one [`Node`]; 0 is the node itself.
type Id = u32;
const ME: Id = 0;

/// Configuration of one mesh node. `Default`-like construction through [`NodeConfig::new`]
/// plus chained setters.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This relay's name, unique in the mesh.
    pub name: RelayName,
    /// This relay's region.
    pub region: String,
    /// The URL clients use to reach this relay.
    pub url: String,
    /// Where other relays dial this relay's mesh listener, announced to the whole mesh so
    /// relays that learn of this one through a seed can link to it. `None`: not announced.
    pub mesh_addr: Option<String>,
    /// Incarnation number: must grow at every restart (the relay uses its start time in
    /// milliseconds since the Unix epoch), so records of a previous run are replaced.
    pub epoch: u64,
    /// Cost of a link to a peer of the same region.
    pub intra_region_cost: u64,
    /// Cost of a link to a peer of another region.
    pub inter_region_cost: u64,
    /// Per-peer cost overrides (by peer name).
    pub peer_costs: HashMap<RelayName, u64>,
    /// False for a leaf relay: it offers routes only to itself and does not pass on other
    /// relays' floods, so traffic never transits through it.
    pub transit: bool,
    /// How long updates wait to be coalesced into one message per peer.
    pub batch_delay: Duration,
    /// How often this relay re-announces itself (membership refresh and load).
    pub announce_interval: Duration,
    /// How long a relay's announcement stays valid without a refresh.
    pub node_ttl: Duration,
    /// A changed load is announced at once, but no more often than this; the periodic
    /// announcement carries it otherwise.
    pub load_interval: Duration,
    /// Most records in one message; larger batches are split.
    pub max_items_per_message: usize,
    /// After the session to a peer drops, or a link to a relay is reported down, how long
    /// this relay takes no new path through that relay (its other neighbours may not have
    /// noticed yet that it died).
    pub suspect_hold: Duration,
}

impl NodeConfig {
    /// A configuration with the default costs and timers.
    pub fn new(name: impl Into<RelayName>, region: &str, url: &str) -> Self {
        NodeConfig {
            name: name.into(),
            region: region.to_owned(),
            url: url.to_owned(),
            mesh_addr: None,
            epoch: 0,
            // Within a region links are short and cheap; crossing regions costs ten times
            // more so that a route stays inside a region whenever it can.
            intra_region_cost: 10,
            inter_region_cost: 100,
            peer_costs: HashMap::new(),
            transit: true,
            // 10 ms: under the one-way delay of most inter-region links, so it adds little
            // to convergence, yet long enough to fold a burst (a peer's full table, or the
            // path exploration after a failure) into one message per peer.
            batch_delay: Duration::from_millis(10),
            // 10 s refresh with a 35 s lifetime: three refreshes can be lost or late before
            // a live relay is taken for dead; a dead relay's routes go at once anyway (its
            // links drop), only its membership record lingers up to 35 s.
            announce_interval: Duration::from_secs(10),
            node_ttl: Duration::from_secs(35),
            // 1 s: the routing API sees a relay fill up within about a second (a burst of
            // clients sent to one relay is the case that matters), while a relay whose load
            // changes constantly floods at most one announcement a second.
            load_interval: Duration::from_secs(1),
            // 1024 records keep one message around 30 to 60 KB: a few QUIC packets' worth
            // of head-of-line blocking on the routes track.
            max_items_per_message: 1024,
            // 100 ms: long enough for the link reports of the dead relay's other
            // neighbours to arrive (they lose their sessions at about the same time), so two
            // of them never point at each other for the dead relay; short enough that, when
            // only the link died, the relay behind it is reachable again almost at once.
            suspect_hold: Duration::from_millis(100),
        }
    }

    /// Sets the epoch.
    pub fn epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    /// Sets the mesh address announced to other relays (`moqt://host:port`).
    pub fn mesh_addr(mut self, addr: impl Into<String>) -> Self {
        self.mesh_addr = Some(addr.into());
        self
    }

    /// Sets the intra- and inter-region link costs.
    pub fn costs(mut self, intra_region: u64, inter_region: u64) -> Self {
        self.intra_region_cost = intra_region;
        self.inter_region_cost = inter_region;
        self
    }

    /// Overrides the cost of the link to one peer.
    pub fn peer_cost(mut self, peer: impl Into<RelayName>, cost: u64) -> Self {
        self.peer_costs.insert(peer.into(), cost);
        self
    }

    /// Sets whether other relays' traffic may pass through this relay.
    pub fn transit(mut self, transit: bool) -> Self {
        self.transit = transit;
        self
    }

    /// Sets the coalescing delay.
    pub fn batch_delay(mut self, d: Duration) -> Self {
        self.batch_delay = d;
        self
    }

    /// Sets the shortest interval between announcements of a changed load.
    pub fn load_interval(mut self, d: Duration) -> Self {
        self.load_interval = d;
        self
    }

    /// Sets the announcement interval and lifetime.
    pub fn announce(mut self, interval: Duration, ttl: Duration) -> Self {
        self.announce_interval = interval;
        self.node_ttl = ttl;
        self
    }
}

/// What the relay learned about a peer when the mesh session came up (from the peer's
/// [`crate::PeerHello`] setup parameter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's region.
    pub region: String,
}

/// Where a request for a namespace goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hop {
    /// The publisher is connected to this relay.
    Local,
    /// Subscribe upstream to this mesh peer.
    Peer(RelayName),
}

/// A route to an origin relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The origin relay.
    pub origin: RelayName,
    /// The next hop.
    pub next_hop: Hop,
    /// The accumulated link cost.
    pub cost: u64,
    /// Relays from this one to the origin, both included.
    pub path: Vec<RelayName>,
}

/// Something the relay must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The next hop towards `origin` changed (`None`: unreachable). Upstream subscriptions
    /// for namespaces published there may have to move ([`crate::Upstream::reroute`]).
    RouteChanged {
        /// The origin relay.
        origin: RelayName,
        /// The new next hop.
        next_hop: Option<Hop>,
    },
    /// A namespace became published somewhere in the mesh (`available`) or is published
    /// nowhere any more.
    Namespace {
        /// The namespace.
        namespace: Arc<TrackNamespace>,
        /// Whether some relay publishes it now.
        available: bool,
    },
    /// A relay joined the membership (first announcement of an epoch).
    NodeUp(RelayName),
    /// A relay's announcement expired.
    NodeDown(RelayName),
}

/// Counters of one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Messages handed out by `poll_send`.
    pub messages_sent: u64,
    /// Records in those messages.
    pub items_sent: u64,
    /// Messages received from peers.
    pub messages_received: u64,
    /// Route advertisements discarded because their path held this relay.
    pub loops_rejected: u64,
    /// Records discarded as invalid (a path not starting at the sender, an unknown origin).
    pub invalid_records: u64,
    /// Requests for an origin's namespace records sent to repair a gap.
    pub wants_sent: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Best {
    /// None: the origin is this node.
    via: Option<Id>,
    cost: u64,
    len: u32,
}

struct Member {
    ann: NodeAnnouncement,
    expires: Instant,
}

struct Origin {
    member: Option<Member>,
    best: Option<Best>,
    /// Epoch of the namespace records held for this origin.
    ns_epoch: u64,
    /// Highest namespace sequence received in that epoch.
    ns_have: u64,
    last_want: Option<Instant>,
    /// Feasibility distance: the least cost this relay has had to the origin since it last
    /// lost every route to it. A new next hop must advertise less, or wait (see `recompute`).
    fd: u64,
    /// Set while only "uphill" routes exist: none learnt before the loss is taken before
    /// this instant.
    starved_until: Option<Instant>,
    /// The input count when the relay started waiting.
    starved_at: u32,
}

impl Default for Origin {
    fn default() -> Self {
        Origin {
            member: None,
            best: None,
            ns_epoch: 0,
            ns_have: 0,
            last_want: None,
            fd: u64::MAX,
            starved_until: None,
            starved_at: 0,
        }
    }
}

struct RibEntry {
    /// Cost through this peer (the peer's cost plus the link's).
    cost: u64,
    /// The peer's path: the peer first, the origin last.
    path: Box<[Id]>,
    /// The input count (`Node::inputs`) when it arrived.
    at: u32,
}

#[derive(Default)]
struct Peer {
    cost: u64,
    rib: Vec<Option<RibEntry>>,
    /// Per origin: 0 if nothing is advertised to this peer, else a hash of what was.
    sent: Vec<u64>,
    dirty_routes: Vec<Id>,
    route_flag: Vec<bool>,
    dirty_nodes: Vec<Id>,
    node_flag: Vec<bool>,
    dirty_ns: Vec<(Arc<TrackNamespace>, Id)>,
    dirty_links: Vec<(Id, Id)>,
    wants: Vec<Id>,
}

impl Peer {
    fn mark_route(&mut self, o: Id) {
        let i = o as usize;
        if self.route_flag.len() <= i {
            self.route_flag.resize(i + 1, false);
        }
        if !self.route_flag[i] {
            self.route_flag[i] = true;
            self.dirty_routes.push(o);
        }
    }

    fn mark_node(&mut self, o: Id) {
        let i = o as usize;
        if self.node_flag.len() <= i {
            self.node_flag.resize(i + 1, false);
        }
        if !self.node_flag[i] {
            self.node_flag[i] = true;
            self.dirty_nodes.push(o);
        }
    }

    fn rib(&self, o: Id) -> Option<&RibEntry> {
        self.rib.get(o as usize).and_then(Option::as_ref)
    }

    fn has_pending(&self) -> bool {
        !self.dirty_routes.is_empty()
            || !self.dirty_nodes.is_empty()
            || !self.dirty_ns.is_empty()
            || !self.dirty_links.is_empty()
            || !self.wants.is_empty()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct LinkState {
    epoch: u64,
    seq: u64,
    up: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct NsOrigin {
    origin: Id,
    present: bool,
    seq: u64,
}

/// The origins of one namespace; almost always one, so it is stored inline.
struct NsEntry {
    first: NsOrigin,
    more: Vec<NsOrigin>,
}

impl NsEntry {
    fn iter(&self) -> impl Iterator<Item = &NsOrigin> {
        std::iter::once(&self.first).chain(self.more.iter())
    }

    fn any_present(&self) -> bool {
        self.iter().any(|o| o.present)
    }

    fn get_mut(&mut self, origin: Id) -> Option<&mut NsOrigin> {
        if self.first.origin == origin {
            return Some(&mut self.first);
        }
        self.more.iter_mut().find(|o| o.origin == origin)
    }

    /// Drops `origin`'s record; false if nothing is left.
    fn remove(&mut self, origin: Id) -> bool {
        if self.first.origin == origin {
            match self.more.pop() {
                Some(o) => self.first = o,
                None => return false,
            }
        } else {
            self.more.retain(|o| o.origin != origin);
        }
        true
    }
}

/// One relay's mesh state machine. See the module documentation.
pub struct Node {
    cfg: NodeConfig,
    names: Vec<RelayName>,
    ids: Map<RelayName, Id>,
    origins: Vec<Origin>,
    peers: BTreeMap<Id, Peer>,
    namespaces: Map<Arc<TrackNamespace>, NsEntry>,
    ns_seq: u64,
    ann_seq: u64,
    /// Link records by (reporter, peer).
    links: Map<(Id, Id), LinkState>,
    /// Per relay: how many down links touch it (a cheap pre-check before `links`).
    down_touch: Vec<u32>,
    link_seq: u64,
    /// Relays possibly dead: no new path through them until the instant.
    suspects: Vec<(Id, Instant)>,
    /// The same, indexed by relay, for the per-path check.
    suspect_until: Vec<Option<Instant>>,
    /// Origins waiting out a starvation hold, with its end.
    starved: Vec<(Id, Instant)>,
    load: LoadReport,
    outbox: VecDeque<(RelayName, RouteMessage)>,
    events: VecDeque<Event>,
    next_flush: Option<Instant>,
    next_announce: Instant,
    /// When a changed load is announced early (see [`NodeConfig::load_interval`]).
    load_due: Option<Instant>,
    /// When the load was last announced early.
    last_load_flood: Option<Instant>,
    stats: NodeStats,
    last_change: Option<Instant>,
    last_member_change: Option<Instant>,
    /// Inputs handled so far (messages, peer changes, timeouts): tells routes learnt after
    /// a loss from routes learnt before it.
    inputs: u32,
}

impl Node {
    /// A node that knows only itself. Its first announcement goes out to each peer as the
    /// peer comes up.
    pub fn new(now: Instant, cfg: NodeConfig) -> Self {
        let mut node = Node {
            names: Vec::new(),
            ids: Map::default(),
            origins: Vec::new(),
            peers: BTreeMap::new(),
            namespaces: Map::default(),
            ns_seq: 0,
            ann_seq: 0,
            links: Map::default(),
            down_touch: Vec::new(),
            link_seq: 0,
            suspects: Vec::new(),
            suspect_until: Vec::new(),
            starved: Vec::new(),
            load: LoadReport { healthy: true, ..LoadReport::default() },
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            next_flush: None,
            next_announce: now + cfg.announce_interval,
            load_due: None,
            last_load_flood: None,
            stats: NodeStats::default(),
            last_change: None,
            last_member_change: None,
            inputs: 0,
            cfg,
        };
        let me = node.intern(&node.cfg.name.clone());
        debug_assert_eq!(me, ME);
        node.origins[0].best = Some(Best { via: None, cost: 0, len: 1 });
        node.origins[0].ns_epoch = node.cfg.epoch;
        node.refresh_own_announcement(now);
        node
    }

    /// This relay's name.
    pub fn name(&self) -> &RelayName {
        &self.cfg.name
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> NodeStats {
        self.stats
    }

    /// When a route, a link record or a live relay's namespace record last changed here.
    /// The simulation measures routing convergence with it.
    pub fn last_change(&self) -> Option<Instant> {
        self.last_change
    }

    /// When a relay last joined or aged out of this node's membership view (refreshes of
    /// known announcements do not count).
    pub fn last_membership_change(&self) -> Option<Instant> {
        self.last_member_change
    }

    /// A mesh session to `peer` is established (both sides sent the mesh setup parameter).
    /// The node sends the peer everything it knows at the next flush.
    pub fn handle_peer_up(&mut self, now: Instant, peer: &str, info: PeerInfo) {
        if peer == self.cfg.name.as_str() {
            return;
        }
        let name = RelayName::from(peer);
        let id = self.intern(&name);
        if self.peers.contains_key(&id) {
            self.handle_peer_down(now, peer);
        }
        let cost = match self.cfg.peer_costs.get(peer) {
            Some(c) => *c,
            None if info.region == self.cfg.region => self.cfg.intra_region_cost,
            None => self.cfg.inter_region_cost,
        };
        let mut p = Peer { cost, ..Peer::default() };
        // Full table: announcements first, so the receiver knows each origin's epoch before
        // its namespace records arrive (messages on one link arrive in order).
        let transit = self.cfg.transit;
        for (o, origin) in self.origins.iter().enumerate() {
            let o = o as Id;
            if origin.member.is_some() && (transit || o == ME) {
                p.mark_node(o);
            }
            if origin.best.is_some() && (transit || o == ME) {
                p.mark_route(o);
            }
        }
        for (ns, e) in &self.namespaces {
            for rec in e.iter() {
                if (transit || rec.origin == ME) && self.is_current(rec.origin) {
                    p.dirty_ns.push((ns.clone(), rec.origin));
                }
            }
        }
        for (&(a, b), l) in &self.links {
            if (transit || a == ME) && self.is_current_epoch(a, l.epoch) {
                p.dirty_links.push((a, b));
            }
        }
        self.peers.insert(id, p);
        self.unsuspect(id);
        if self.links.get(&(ME, id)).is_some_and(|l| !l.up) {
            self.report_link(now, id, true);
        }
        self.schedule_flush(now);
    }

    /// The mesh session to `peer` ended: every route through it is withdrawn and the next
    /// best takes over.
    pub fn handle_peer_down(&mut self, now: Instant, peer: &str) {
        self.inputs = self.inputs.wrapping_add(1);
        let Some(&id) = self.ids.get(peer) else { return };
        let Some(p) = self.peers.remove(&id) else { return };
        // Tell the mesh first: the report travels in the same message as the withdrawals it
        // causes, so no relay tries a path over this link in the meantime.
        self.report_link(now, id, false);
        self.suspect(id, now);
        for (o, e) in p.rib.iter().enumerate() {
            if e.is_some() {
                self.recompute(now, o as Id, None);
            }
        }
    }

    /// A message from mesh peer `from`. Records that break the rules are skipped and
    /// counted; a message from a relay that is not an up peer is an error.
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: &str,
        msg: RouteMessage,
    ) -> Result<(), crate::MeshError> {
        let Some(&from_id) = self.ids.get(from).filter(|id| self.peers.contains_key(id)) else {
            return Err(crate::MeshError::UnknownPeer(from.to_owned()));
        };
        self.stats.messages_received += 1;
        self.inputs = self.inputs.wrapping_add(1);
        for ann in msg.nodes {
            self.receive_announcement(now, from_id, ann);
        }
        let (mut went_down, mut came_up) = (Vec::new(), false);
        for l in msg.links {
            match self.receive_link(now, from_id, l) {
                Some((a, b, false)) => went_down.push((a, b)),
                Some((_, _, true)) => came_up = true,
                None => {}
            }
        }
        if came_up {
            // A link is back: paths over it are usable again; any origin may improve.
            for o in 1..self.origins.len() as Id {
                self.recompute(now, o, None);
            }
        } else if !went_down.is_empty() {
            // Only an origin whose best path crosses a dead link can change.
            for o in 1..self.origins.len() as Id {
                if self.best_crosses(o, &went_down) {
                    self.recompute(now, o, None);
                }
            }
        }
        for w in &msg.withdrawn {
            if let Some(&o) = self.ids.get(w) {
                self.set_rib(now, from_id, o, None);
            }
        }
        for r in msg.routes {
            self.receive_route(now, from_id, r);
        }
        for rec in msg.namespaces {
            self.receive_namespace(now, from_id, rec);
        }
        for w in &msg.wants {
            if let Some(&o) = self.ids.get(w) {
                let recs: Vec<_> = self
                    .namespaces
                    .iter()
                    .filter(|(_, e)| e.iter().any(|r| r.origin == o))
                    .map(|(ns, _)| (ns.clone(), o))
                    .collect();
                if let Some(p) = self.peers.get_mut(&from_id) {
                    p.dirty_ns.extend(recs);
                }
                self.schedule_flush(now);
            }
        }
        Ok(())
    }

    /// Timers: flushes coalesced updates, re-announces this relay, expires dead relays and
    /// repairs gaps in namespace records. A call with nothing due does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_announce {
            while self.next_announce <= now {
                self.next_announce += self.cfg.announce_interval;
            }
            self.refresh_own_announcement(now);
            self.mark_node_all(ME, None);
            self.expire(now);
            self.repair(now);
            self.schedule_flush(now);
        }
        if self.load_due.is_some_and(|t| t <= now) {
            self.flood_load(now);
        }
        if self.suspects.iter().any(|s| s.1 <= now) {
            let done: Vec<Id> = self.suspects.iter().filter(|s| s.1 <= now).map(|s| s.0).collect();
            for id in done {
                self.unsuspect(id);
            }
            // Paths through those relays are usable again: any origin may improve.
            for o in 1..self.origins.len() as Id {
                self.recompute(now, o, None);
            }
        }
        if self.starved.iter().any(|s| s.1 <= now) {
            let done: Vec<Id> = self.starved.iter().filter(|s| s.1 <= now).map(|s| s.0).collect();
            self.starved.retain(|s| s.1 > now);
            for o in done {
                self.recompute(now, o, None);
            }
        }
        if self.next_flush.is_some_and(|t| t <= now) {
            self.next_flush = None;
            self.flush(now);
        }
    }

    /// The next instant [`Self::handle_timeout`] has work, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_announce;
        if let Some(d) = self.load_due {
            t = t.min(d);
        }
        for s in self.suspects.iter().chain(&self.starved) {
            t = t.min(s.1);
        }
        Some(self.next_flush.map_or(t, |f| f.min(t)))
    }

    /// The next message to send, with the peer it goes to.
    pub fn poll_send(&mut self) -> Option<(RelayName, RouteMessage)> {
        self.outbox.pop_front()
    }

    /// The next event for the relay.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A publisher connected to this relay published `namespace`.
    pub fn local_publish(&mut self, now: Instant, namespace: TrackNamespace) {
        self.local_record(now, namespace, true);
    }

    /// The publisher of `namespace` on this relay is gone.
    pub fn local_unpublish(&mut self, now: Instant, namespace: &TrackNamespace) {
        if self.namespaces.get(namespace).is_some_and(|e| e.iter().any(|r| r.origin == ME)) {
            self.local_record(now, namespace.clone(), false);
        }
    }

    /// This relay's current load; it travels with the next announcement, at once if the
    /// relay's health changed.
    pub fn set_load(&mut self, now: Instant, load: LoadReport) {
        let health_changed = load.healthy != self.load.healthy;
        let changed = load != self.load;
        self.load = load;
        if health_changed {
            self.flood_load(now);
        } else if changed && self.load_due.is_none() {
            let earliest = self.last_load_flood.map_or(now, |t| t + self.cfg.load_interval);
            if earliest < self.next_announce {
                self.load_due = Some(earliest.max(now));
            }
        }
    }

    fn flood_load(&mut self, now: Instant) {
        self.load_due = None;
        self.last_load_flood = Some(now);
        self.refresh_own_announcement(now);
        self.mark_node_all(ME, None);
        self.schedule_flush(now);
    }

    /// Where a request for a track of `namespace` goes: the best route to any relay that
    /// publishes the namespace or, failing that, the longest published prefix of it.
    pub fn next_hop(&self, namespace: &TrackNamespace) -> Option<Hop> {
        self.route(namespace).map(|r| r.next_hop)
    }

    /// The best route for `namespace` (see [`Self::next_hop`]).
    pub fn route(&self, namespace: &TrackNamespace) -> Option<Route> {
        self.best_origin(namespace).and_then(|o| self.route_to_id(o))
    }

    /// Every reachable relay other than this one that publishes exactly `namespace`.
    pub fn remote_origins(&self, namespace: &TrackNamespace) -> Vec<RelayName> {
        let Some(e) = self.namespaces.get(namespace) else { return Vec::new() };
        e.iter()
            .filter(|r| r.present && r.origin != ME)
            .filter(|r| self.origins[r.origin as usize].best.is_some())
            .map(|r| self.names[r.origin as usize].clone())
            .collect()
    }

    /// The origin relay [`Self::route`] would take for `namespace`, without building the
    /// path.
    pub fn origin_for(&self, namespace: &TrackNamespace) -> Option<&RelayName> {
        self.best_origin(namespace).map(|o| &self.names[o as usize])
    }

    fn best_origin(&self, namespace: &TrackNamespace) -> Option<Id> {
        let fields = namespace.fields();
        for n in (1..=fields.len()).rev() {
            let found = if n == fields.len() {
                self.namespaces.get(namespace)
            } else {
                let prefix = TrackNamespace::new(fields[..n].iter().cloned()).ok()?;
                self.namespaces.get(&prefix)
            };
            if let Some(e) = found {
                let best = e
                    .iter()
                    .filter(|r| r.present)
                    .filter_map(|r| self.origins[r.origin as usize].best.map(|b| (r.origin, b)))
                    .min_by(|a, b| self.cmp_best(a.1, b.1).then(a.0.cmp(&b.0)));
                if let Some((o, _)) = best {
                    return Some(o);
                }
            }
        }
        None
    }

    /// The next hop towards relay `origin` (cheaper than [`Self::route_to`]).
    pub fn next_hop_to(&self, origin: &str) -> Option<Hop> {
        let &o = self.ids.get(origin)?;
        let b = self.origins[o as usize].best?;
        Some(match b.via {
            None => Hop::Local,
            Some(v) => Hop::Peer(self.names[v as usize].clone()),
        })
    }

    /// The best route to relay `origin`.
    pub fn route_to(&self, origin: &str) -> Option<Route> {
        self.ids.get(origin).and_then(|&o| self.route_to_id(o))
    }

    /// The relays this node knows as live members, with their load and whether a route to
    /// them exists (the input of [`crate::routing_api::choose`]).
    pub fn members(&self) -> Vec<crate::NodeState> {
        self.origins
            .iter()
            .filter_map(|o| {
                let m = o.member.as_ref()?;
                Some(crate::NodeState {
                    name: m.ann.name.clone(),
                    region: m.ann.region.clone(),
                    url: m.ann.url.clone(),
                    load: m.ann.load,
                    reachable: o.best.is_some(),
                    mesh_addr: m.ann.mesh_addr.clone(),
                })
            })
            .collect()
    }

    /// The namespaces published somewhere in the mesh that this node knows of.
    pub fn namespace_count(&self) -> usize {
        self.namespaces.values().filter(|e| e.any_present()).count()
    }

    /// The names of the peers that are up.
    pub fn peers(&self) -> Vec<RelayName> {
        self.peers.keys().map(|&id| self.names[id as usize].clone()).collect()
    }

    // ---- internals ----

    fn intern(&mut self, name: &RelayName) -> Id {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as Id;
        self.names.push(name.clone());
        self.ids.insert(name.clone(), id);
        self.origins.push(Origin::default());
        id
    }

    fn changed(&mut self, now: Instant) {
        self.last_change = Some(now);
    }

    fn cmp_best(&self, a: Best, b: Best) -> std::cmp::Ordering {
        let name = |b: Best| b.via.map(|v| &self.names[v as usize]);
        a.cost.cmp(&b.cost).then(a.len.cmp(&b.len)).then_with(|| name(a).cmp(&name(b)))
    }

    fn route_to_id(&self, o: Id) -> Option<Route> {
        let b = self.origins[o as usize].best?;
        let mut path = vec![self.cfg.name.clone()];
        let next_hop = match b.via {
            None => Hop::Local,
            Some(v) => {
                let e = self.peers.get(&v)?.rib(o)?;
                path.extend(e.path.iter().map(|&i| self.names[i as usize].clone()));
                Hop::Peer(self.names[v as usize].clone())
            }
        };
        Some(Route { origin: self.names[o as usize].clone(), next_hop, cost: b.cost, path })
    }

    /// Whether namespace records of `o` belong to its current membership epoch.
    fn is_current(&self, o: Id) -> bool {
        let origin = &self.origins[o as usize];
        o == ME || origin.member.as_ref().is_some_and(|m| m.ann.epoch == origin.ns_epoch)
    }

    fn schedule_flush(&mut self, now: Instant) {
        if self.next_flush.is_none() {
            self.next_flush = Some(now + self.cfg.batch_delay);
        }
    }

    fn mark_node_all(&mut self, o: Id, except: Option<Id>) {
        for (&id, p) in self.peers.iter_mut() {
            if Some(id) != except {
                p.mark_node(o);
            }
        }
    }

    fn refresh_own_announcement(&mut self, now: Instant) {
        self.ann_seq += 1;
        let ann = NodeAnnouncement {
            name: self.cfg.name.clone(),
            region: Arc::from(self.cfg.region.as_str()),
            url: Arc::from(self.cfg.url.as_str()),
            epoch: self.cfg.epoch,
            seq: self.ann_seq,
            age_ms: 0,
            ns_seq: self.ns_seq,
            transit: self.cfg.transit,
            load: self.load,
            mesh_addr: self.cfg.mesh_addr.as_deref().map(Arc::from),
        };
        self.origins[ME as usize].member = Some(Member { ann, expires: now + self.cfg.node_ttl });
    }

    fn local_record(&mut self, now: Instant, namespace: TrackNamespace, present: bool) {
        self.ns_seq += 1;
        let seq = self.ns_seq;
        self.origins[ME as usize].ns_have = seq;
        let rec = NsOrigin { origin: ME, present, seq };
        let ns = match self.namespaces.get_key_value(&namespace) {
            Some((k, _)) => k.clone(),
            None => Arc::new(namespace),
        };
        self.store_record(now, ns.clone(), rec);
        for p in self.peers.values_mut() {
            p.dirty_ns.push((ns.clone(), ME));
        }
        self.schedule_flush(now);
    }

    /// Stores a record that is newer than what is held; emits availability events.
    fn store_record(&mut self, now: Instant, ns: Arc<TrackNamespace>, rec: NsOrigin) {
        self.changed(now);
        match self.namespaces.get_mut(&ns) {
            Some(e) => {
                let before = e.any_present();
                match e.get_mut(rec.origin) {
                    Some(r) => *r = rec,
                    None => e.more.push(rec),
                }
                let after = e.any_present();
                if before != after {
                    self.events.push_back(Event::Namespace { namespace: ns, available: after });
                }
            }
            None => {
                if rec.present {
                    self.events
                        .push_back(Event::Namespace { namespace: ns.clone(), available: true });
                }
                self.namespaces.insert(ns, NsEntry { first: rec, more: Vec::new() });
            }
        }
    }

    /// Drops every namespace record of origin `o`.
    fn purge_records(&mut self, now: Instant, o: Id, counts_as_change: bool) {
        let mut gone = Vec::new();
        self.namespaces.retain(|ns, e| {
            if !e.iter().any(|r| r.origin == o) {
                return true;
            }
            let before = e.any_present();
            let keep = e.remove(o);
            let after = keep && e.any_present();
            if before && !after {
                gone.push(ns.clone());
            }
            keep
        });
        if counts_as_change && !gone.is_empty() {
            self.changed(now);
        }
        for namespace in gone {
            self.events.push_back(Event::Namespace { namespace, available: false });
        }
        let origin = &mut self.origins[o as usize];
        origin.ns_have = 0;
    }

    fn receive_announcement(&mut self, now: Instant, from: Id, ann: NodeAnnouncement) {
        if ann.name == self.cfg.name {
            return;
        }
        let ttl_ms = self.cfg.node_ttl.as_millis() as u64;
        if ann.age_ms >= ttl_ms {
            return;
        }
        let o = self.intern(&ann.name);
        let newer = match &self.origins[o as usize].member {
            Some(m) => (ann.epoch, ann.seq) > (m.ann.epoch, m.ann.seq),
            None => true,
        };
        if !newer {
            return;
        }
        let fresh =
            self.origins[o as usize].member.as_ref().is_none_or(|m| m.ann.epoch != ann.epoch);
        if fresh {
            self.last_member_change = Some(now);
            self.events.push_back(Event::NodeUp(ann.name.clone()));
        }
        if ann.epoch > self.origins[o as usize].ns_epoch {
            self.purge_links(o);
            self.purge_records(now, o, true);
            self.origins[o as usize].ns_epoch = ann.epoch;
        }
        let expires = now + Duration::from_millis(ttl_ms - ann.age_ms);
        self.origins[o as usize].member = Some(Member { ann, expires });
        if self.cfg.transit {
            self.mark_node_all(o, Some(from));
            self.schedule_flush(now);
        }
    }

    fn receive_route(&mut self, now: Instant, from: Id, r: RouteAdvert) {
        if r.path.first().map(RelayName::as_str) != Some(self.names[from as usize].as_str()) {
            self.stats.invalid_records += 1;
            return;
        }
        let Some(origin) = r.origin() else { return };
        let o = self.intern(&origin.clone());
        if r.path.contains(&self.cfg.name) {
            // A path through this relay: using it would form a loop. It also replaces
            // what the peer advertised before, so it acts as a withdrawal.
            self.stats.loops_rejected += 1;
            self.set_rib(now, from, o, None);
            return;
        }
        let path: Box<[Id]> = r.path.iter().map(|n| self.intern(n)).collect();
        // A path naming a relay twice cannot come from a correct peer.
        let mut seen = HashSet::with_capacity(path.len());
        if !path.iter().all(|id| seen.insert(*id)) {
            self.stats.invalid_records += 1;
            self.set_rib(now, from, o, None);
            return;
        }
        let link = self.peers.get(&from).map_or(u64::MAX, |p| p.cost);
        let cost = r.cost.saturating_add(link);
        let at = self.inputs;
        self.set_rib(now, from, o, Some(RibEntry { cost, path, at }));
    }

    fn set_rib(&mut self, now: Instant, from: Id, o: Id, e: Option<RibEntry>) {
        let Some(p) = self.peers.get_mut(&from) else { return };
        let i = o as usize;
        if p.rib.len() <= i {
            if e.is_none() {
                return;
            }
            p.rib.resize_with(i + 1, || None);
        }
        let same = match (&p.rib[i], &e) {
            (None, None) => true,
            (Some(a), Some(b)) => a.cost == b.cost && a.path == b.path,
            _ => false,
        };
        if same {
            return;
        }
        p.rib[i] = e;
        self.recompute(now, o, Some(from));
    }

    /// Picks the best route to `o` again after the routes from `touched` (or a lost peer)
    /// changed; re-advertises and reports changes.
    fn recompute(&mut self, now: Instant, o: Id, touched: Option<Id>) {
        if o == ME {
            return;
        }
        // A path through a relay suspected dead is taken only if it is the current next
        // hop's: the others may cross links whose loss is not reported yet.
        let old_via = self.origins[o as usize].best.and_then(|b| b.via);
        let fd = self.origins[o as usize].fd;
        let starved_at = self.origins[o as usize].starved_at;
        let waiting = self.origins[o as usize].starved_until.is_some();
        let (mut feasible, mut any, mut fresh): (Option<Best>, Option<Best>, Option<Best>) =
            (None, None, None);
        for (&id, p) in &self.peers {
            let usable = |e: &&RibEntry| {
                !self.crosses_down_link(&e.path)
                    && (Some(id) == old_via || !self.through_suspect(&e.path, now))
            };
            if let Some(e) = p.rib(o).filter(usable) {
                let cand = Best { via: Some(id), cost: e.cost, len: e.path.len() as u32 + 1 };
                if any.is_none_or(|b| self.cmp_best(cand, b).is_lt()) {
                    any = Some(cand);
                }
                // Learnt after the relay started waiting: the neighbour chose it knowing of
                // the loss, and split horizon means it does not route through this relay.
                if waiting
                    && e.at.wrapping_sub(starved_at) as i32 > 0
                    && fresh.is_none_or(|b| self.cmp_best(cand, b).is_lt())
                {
                    fresh = Some(cand);
                }
                // Feasible (as in Babel and DUAL): the neighbour advertises less than this
                // relay ever had since it last lost the origin, so it cannot be routing
                // through this relay on stale information.
                let advertised = e.cost.saturating_sub(p.cost);
                if (Some(id) == old_via || advertised < fd)
                    && feasible.is_none_or(|b| self.cmp_best(cand, b).is_lt())
                {
                    feasible = Some(cand);
                }
            }
        }
        let hold = self.cfg.suspect_hold;
        let inputs = self.inputs;
        let origin = &mut self.origins[o as usize];
        let best = if feasible.is_some() {
            origin.starved_until = None;
            feasible
        } else if any.is_none() {
            origin.starved_until = None;
            origin.fd = u64::MAX;
            None
        } else {
            // Only uphill routes: one learnt before the loss may lead back here through a
            // relay that has not heard of it yet. Take one learnt since (the neighbour
            // re-advertised knowing of the loss), or wait the suspect hold for the news to
            // spread; then start a new feasibility distance.
            match origin.starved_until {
                Some(t) if now >= t => {
                    origin.starved_until = None;
                    origin.fd = u64::MAX;
                    any
                }
                Some(_) if fresh.is_some() => {
                    origin.starved_until = None;
                    origin.fd = u64::MAX;
                    fresh
                }
                Some(_) => None,
                None => {
                    origin.starved_until = Some(now + hold);
                    origin.starved_at = inputs;
                    self.starved.push((o, now + hold));
                    None
                }
            }
        };
        let origin = &mut self.origins[o as usize];
        if let Some(b) = best {
            origin.fd = origin.fd.min(b.cost);
        }
        let old = origin.best;
        origin.best = best;
        let path_changed = best.is_some_and(|b| b.via.is_some() && b.via == touched);
        if old == best && !path_changed {
            return;
        }
        self.changed(now);
        if self.cfg.transit {
            for p in self.peers.values_mut() {
                p.mark_route(o);
            }
            self.schedule_flush(now);
        }
        if old.map(|b| b.via) != best.map(|b| b.via) {
            let next_hop = best.map(|b| match b.via {
                None => Hop::Local,
                Some(v) => Hop::Peer(self.names[v as usize].clone()),
            });
            self.events.push_back(Event::RouteChanged {
                origin: self.names[o as usize].clone(),
                next_hop,
            });
        }
    }

    /// Whether records of reporter `a` with `epoch` belong to its current membership.
    fn is_current_epoch(&self, a: Id, epoch: u64) -> bool {
        if a == ME {
            return epoch == self.cfg.epoch;
        }
        self.origins[a as usize].member.as_ref().is_some_and(|m| m.ann.epoch == epoch)
    }

    fn is_down(&self, x: Id, y: Id) -> bool {
        let touched = |i: Id| self.down_touch.get(i as usize).is_some_and(|c| *c > 0);
        if !touched(x) || !touched(y) {
            return false;
        }
        let down = |k: (Id, Id)| self.links.get(&k).is_some_and(|l| !l.up);
        down((x, y)) || down((y, x))
    }

    fn suspect(&mut self, id: Id, now: Instant) {
        let until = now + self.cfg.suspect_hold;
        self.suspects.retain(|s| s.0 != id);
        self.suspects.push((id, until));
        if self.suspect_until.len() <= id as usize {
            self.suspect_until.resize(id as usize + 1, None);
        }
        self.suspect_until[id as usize] = Some(until);
    }

    fn unsuspect(&mut self, id: Id) {
        self.suspects.retain(|s| s.0 != id);
        if let Some(s) = self.suspect_until.get_mut(id as usize) {
            *s = None;
        }
    }

    fn through_suspect(&self, path: &[Id], now: Instant) -> bool {
        !self.suspects.is_empty()
            && path.iter().any(|&x| {
                self.suspect_until.get(x as usize).copied().flatten().is_some_and(|t| now < t)
            })
    }

    /// Whether a peer's path crosses a link reported down.
    fn crosses_down_link(&self, path: &[Id]) -> bool {
        path.windows(2).any(|w| self.is_down(w[0], w[1]))
    }

    fn best_crosses(&self, o: Id, links: &[(Id, Id)]) -> bool {
        let Some(via) = self.origins[o as usize].best.and_then(|b| b.via) else { return false };
        let Some(e) = self.peers.get(&via).and_then(|p| p.rib(o)) else { return false };
        e.path.windows(2).any(|w| {
            links.iter().any(|&(a, b)| (w[0] == a && w[1] == b) || (w[0] == b && w[1] == a))
        })
    }

    /// Stores a link record; returns (reporter, peer, up) when the link's state changed.
    fn set_link(&mut self, a: Id, b: Id, st: LinkState) -> Option<(Id, Id, bool)> {
        let was_down = self.links.get(&(a, b)).is_some_and(|l| !l.up);
        self.links.insert((a, b), st);
        let need = (a.max(b) as usize) + 1;
        if self.down_touch.len() < need {
            self.down_touch.resize(need, 0);
        }
        match (was_down, st.up) {
            (false, false) => {
                self.down_touch[a as usize] += 1;
                self.down_touch[b as usize] += 1;
            }
            (true, true) => {
                self.down_touch[a as usize] -= 1;
                self.down_touch[b as usize] -= 1;
            }
            _ => return None,
        }
        Some((a, b, st.up))
    }

    /// This relay's own link to `peer` went down or came back.
    fn report_link(&mut self, now: Instant, peer: Id, up: bool) {
        self.link_seq += 1;
        let st = LinkState { epoch: self.cfg.epoch, seq: self.link_seq, up };
        self.set_link(ME, peer, st);
        self.changed(now);
        for p in self.peers.values_mut() {
            p.dirty_links.push((ME, peer));
        }
        self.schedule_flush(now);
    }

    fn receive_link(&mut self, now: Instant, from: Id, l: LinkRecord) -> Option<(Id, Id, bool)> {
        let a = *self.ids.get(&l.reporter)?;
        if a == ME || !self.is_current_epoch(a, l.epoch) {
            return None;
        }
        let b = self.intern(&l.peer);
        if self.links.get(&(a, b)).is_some_and(|h| (h.epoch, h.seq) >= (l.epoch, l.seq)) {
            return None;
        }
        let changed = self.set_link(a, b, LinkState { epoch: l.epoch, seq: l.seq, up: l.up });
        if !l.up && b != ME && self.suspect_until.get(b as usize).is_none_or(Option::is_none) {
            self.suspect(b, now);
        }
        self.changed(now);
        if self.cfg.transit {
            for (&id, p) in self.peers.iter_mut() {
                if id != from {
                    p.dirty_links.push((a, b));
                }
            }
            self.schedule_flush(now);
        }
        changed
    }

    /// Drops the link records reported by `a` (expired, or restarted with a new epoch).
    fn purge_links(&mut self, a: Id) {
        let keys: Vec<(Id, Id)> = self.links.keys().filter(|k| k.0 == a).copied().collect();
        for k in keys {
            if let Some(l) = self.links.remove(&k)
                && !l.up
            {
                self.down_touch[k.0 as usize] -= 1;
                self.down_touch[k.1 as usize] -= 1;
            }
        }
    }

    fn receive_namespace(&mut self, now: Instant, from: Id, rec: NamespaceRecord) {
        let Some(&o) = self.ids.get(&rec.origin) else {
            self.stats.invalid_records += 1;
            return;
        };
        if o == ME {
            return;
        }
        let origin = &self.origins[o as usize];
        // Only records of the origin's current membership epoch: a record of a relay that
        // expired, or of an earlier run, cannot come back through a late resync.
        let member_epoch = origin.member.as_ref().map(|m| m.ann.epoch);
        if member_epoch != Some(rec.epoch) || rec.epoch != origin.ns_epoch {
            self.stats.invalid_records += 1;
            return;
        }
        let held = self
            .namespaces
            .get(&rec.namespace)
            .and_then(|e| e.iter().find(|r| r.origin == o).copied());
        if held.is_some_and(|h| h.seq >= rec.seq) {
            return;
        }
        let origin = &mut self.origins[o as usize];
        origin.ns_have = origin.ns_have.max(rec.seq);
        let ns = match self.namespaces.get_key_value(&rec.namespace) {
            Some((k, _)) => k.clone(),
            None => rec.namespace,
        };
        self.store_record(
            now,
            ns.clone(),
            NsOrigin { origin: o, present: rec.present, seq: rec.seq },
        );
        if self.cfg.transit {
            for (&id, p) in self.peers.iter_mut() {
                if id != from {
                    p.dirty_ns.push((ns.clone(), o));
                }
            }
            self.schedule_flush(now);
        }
    }

    fn expire(&mut self, now: Instant) {
        for o in 1..self.origins.len() {
            let expired = self.origins[o].member.as_ref().is_some_and(|m| m.expires <= now);
            if expired {
                let name = self.origins[o].member.take().map(|m| m.ann.name);
                // Routes to it went when its sessions dropped; this is only cleanup.
                self.purge_records(now, o as Id, false);
                self.purge_links(o as Id);
                self.last_member_change = Some(now);
                if let Some(name) = name {
                    self.events.push_back(Event::NodeDown(name));
                }
            }
        }
    }

    /// Asks for the namespace records of origins whose announcement says there are newer
    /// ones than held (records lost while the origin was unreachable from here).
    fn repair(&mut self, now: Instant) {
        for o in 1..self.origins.len() {
            let origin = &self.origins[o];
            let Some(m) = &origin.member else { continue };
            if m.ann.ns_seq <= origin.ns_have || m.ann.epoch != origin.ns_epoch {
                continue;
            }
            if origin.last_want.is_some_and(|t| now < t + self.cfg.announce_interval) {
                continue;
            }
            let ask = origin.best.and_then(|b| b.via).or_else(|| self.peers.keys().next().copied());
            if let Some(p) = ask.and_then(|a| self.peers.get_mut(&a)) {
                p.wants.push(o as Id);
                self.origins[o].last_want = Some(now);
                self.stats.wants_sent += 1;
            }
        }
    }

    fn flush(&mut self, now: Instant) {
        let max = self.cfg.max_items_per_message.max(1);
        let ids: Vec<Id> = self.peers.keys().copied().collect();
        for pid in ids {
            let mut p = self.peers.remove(&pid).expect("peer listed above");
            if p.has_pending() {
                let msgs = self.build(now, pid, &mut p, max);
                for m in msgs {
                    self.stats.messages_sent += 1;
                    self.stats.items_sent += m.items() as u64;
                    self.outbox.push_back((self.names[pid as usize].clone(), m));
                }
            }
            self.peers.insert(pid, p);
        }
    }

    fn build(&self, now: Instant, pid: Id, p: &mut Peer, max: usize) -> Vec<RouteMessage> {
        let mut out = Vec::new();
        let mut cur = RouteMessage::default();
        let push = |cur: &mut RouteMessage, out: &mut Vec<RouteMessage>| {
            if cur.items() >= max {
                out.push(std::mem::take(cur));
            }
        };
        for o in std::mem::take(&mut p.dirty_nodes) {
            p.node_flag[o as usize] = false;
            if let Some(m) = &self.origins[o as usize].member {
                let mut ann = m.ann.clone();
                let left = m.expires.saturating_duration_since(now);
                ann.age_ms = (self.cfg.node_ttl.saturating_sub(left)).as_millis() as u64;
                cur.nodes.push(ann);
                push(&mut cur, &mut out);
            }
        }
        let mut seen_links = HashSet::new();
        for (a, b) in std::mem::take(&mut p.dirty_links) {
            let Some(l) = self.links.get(&(a, b)) else { continue };
            if !seen_links.insert((a, b)) || !self.is_current_epoch(a, l.epoch) {
                continue;
            }
            cur.links.push(LinkRecord {
                reporter: self.names[a as usize].clone(),
                peer: self.names[b as usize].clone(),
                epoch: l.epoch,
                seq: l.seq,
                up: l.up,
            });
            push(&mut cur, &mut out);
        }
        for o in std::mem::take(&mut p.dirty_routes) {
            p.route_flag[o as usize] = false;
            let i = o as usize;
            if p.sent.len() <= i {
                p.sent.resize(i + 1, 0);
            }
            let advert = self.advert_for(pid, o);
            match advert {
                Some((cost, path)) => {
                    let mut h = DefaultHasher::new();
                    cost.hash(&mut h);
                    path.hash(&mut h);
                    let h = h.finish() | 1;
                    if p.sent[i] != h {
                        p.sent[i] = h;
                        let path = path.iter().map(|&id| self.names[id as usize].clone()).collect();
                        cur.routes.push(RouteAdvert { cost, path });
                        push(&mut cur, &mut out);
                    }
                }
                None => {
                    if p.sent[i] != 0 {
                        p.sent[i] = 0;
                        cur.withdrawn.push(self.names[i].clone());
                        push(&mut cur, &mut out);
                    }
                }
            }
        }
        let mut seen = HashSet::new();
        for (ns, o) in std::mem::take(&mut p.dirty_ns) {
            if !self.is_current(o) {
                continue;
            }
            let Some(rec) =
                self.namespaces.get(&ns).and_then(|e| e.iter().find(|r| r.origin == o).copied())
            else {
                continue;
            };
            if !seen.insert((Arc::as_ptr(&ns), o)) {
                continue;
            }
            cur.namespaces.push(NamespaceRecord {
                origin: self.names[o as usize].clone(),
                epoch: self.origins[o as usize].ns_epoch,
                seq: rec.seq,
                present: rec.present,
                namespace: ns,
            });
            push(&mut cur, &mut out);
        }
        for o in std::mem::take(&mut p.wants) {
            cur.wants.push(self.names[o as usize].clone());
            push(&mut cur, &mut out);
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }

    /// What to advertise to peer `pid` for origin `o`: (cost, path from this relay).
    fn advert_for(&self, pid: Id, o: Id) -> Option<(u64, Vec<Id>)> {
        if o == ME {
            return Some((0, vec![ME]));
        }
        if !self.cfg.transit {
            return None;
        }
        let b = self.origins[o as usize].best?;
        let via = b.via?;
        if via == pid {
            // Split horizon: never offer a route back to the peer it came from.
            return None;
        }
        let e = self.peers.get(&via)?.rib(o)?;
        if e.path.contains(&pid) {
            // The peer would discard it as a loop.
            return None;
        }
        let mut path = Vec::with_capacity(e.path.len() + 1);
        path.push(ME);
        path.extend_from_slice(&e.path);
        Some((b.cost, path))
    }
}
