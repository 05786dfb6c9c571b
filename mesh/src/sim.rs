//! A deterministic simulation of the mesh: many [`Node`]s in one process, message delivery
//! with per-link latency on virtual time (a priority queue of events), broadcasts published
//! at random relays, subscribers whose upstream subscriptions follow the routes, and relays
//! failing and returning.
//!
//! Topology: `regions` regions placed at seeded positions on a 10,000 km square. In each
//! region the first `hubs_per_region` relays are hubs, fully meshed with each other; every
//! other relay (a leaf, `transit = false`) peers with two hubs of its region. Each region
//! links to its `neighbour_regions` nearest regions, and to the next region in a ring so the
//! mesh is connected, through two hub-to-hub links per region pair. Latency is 1 to 4 ms
//! inside a region and distance / (200 km/ms) + 2 ms between regions.
//!
//! [`Sim::check`] verifies, after a phase has converged, that every live relay has a route
//! to every live broadcast, that following next hops from every relay to every origin reaches
//! it without revisiting a relay and through live relays only, that no route to a dead relay
//! survives, and that every relay holds at most one upstream subscription per track, along
//! its current best route, mirrored by the upstream relay's downstream set.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tiermesh_proto::types::{FullTrackName, TrackNamespace};

use crate::node::{Event, Hop, Node, NodeConfig, PeerInfo};
use crate::upstream::Upstream;
use crate::wire::{RelayName, RouteMessage};

/// Parameters of a simulation.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of relays.
    pub relays: usize,
    /// Number of regions.
    pub regions: usize,
    /// Hubs per region (fully meshed; they carry transit traffic).
    pub hubs_per_region: usize,
    /// Nearest regions each region links to (besides its ring neighbour).
    pub neighbour_regions: usize,
    /// Broadcasts, each published at a random relay.
    pub broadcasts: usize,
    /// Subscribers, each at a random relay for a random broadcast's track.
    pub subscribers: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Encode and decode every message (checks the codec at the cost of speed and memory).
    pub wire_roundtrip: bool,
    /// Virtual time each phase runs for.
    pub window: Duration,
    /// Origins besides the changed relays towards which loops are sampled.
    pub bystander_probes: usize,
}

impl Default for SimConfig {
    /// The small simulation `cargo test` runs: 100 relays, 5 regions, 500 broadcasts.
    fn default() -> Self {
        SimConfig {
            relays: 100,
            regions: 5,
            hubs_per_region: 4,
            neighbour_regions: 3,
            broadcasts: 500,
            subscribers: 300,
            seed: 1,
            wire_roundtrip: true,
            window: Duration::from_secs(20),
            bystander_probes: 20,
        }
    }
}

impl SimConfig {
    /// The full-scale simulation: 1,000 relays, 20 regions, 10,000 broadcasts.
    pub fn full() -> Self {
        SimConfig {
            relays: 1000,
            regions: 20,
            broadcasts: 10_000,
            subscribers: 5_000,
            wire_roundtrip: false,
            bystander_probes: 4,
            ..SimConfig::default()
        }
    }
}

/// Figures of one phase.
#[derive(Debug, Clone, Default)]
pub struct PhaseReport {
    /// What happened.
    pub name: String,
    /// Relays alive during the phase.
    pub live_relays: usize,
    /// Virtual time from the phase's start to the last change of any route, namespace
    /// record or membership record at any live relay.
    pub convergence: Duration,
    /// Control messages sent by all relays during the phase (periodic announcements
    /// included).
    pub messages: u64,
    /// Bytes of those messages in their wire encoding.
    pub bytes: u64,
    /// Most messages one relay sent.
    pub max_messages_per_relay: u64,
    /// Most bytes one relay sent.
    pub max_bytes_per_relay: u64,
    /// Upstream subscriptions moved to another hop.
    pub moves: u64,
    /// Moves that carried NEW GROUP REQUEST.
    pub new_group_requests: u64,
    /// Sampling instants at which the next hops towards a live sampled origin formed a
    /// loop. Sampled every 5 ms of virtual time during the phase, towards up to eight of the
    /// relays that failed or returned and [`SimConfig::bystander_probes`] others.
    pub loops_live: u64,
    /// The same, towards a sampled origin that is dead (a loop there carries no media: no
    /// publisher is behind it).
    pub loops_dead: u64,
    /// Loop samples taken.
    pub loop_samples: u64,
}

impl PhaseReport {
    /// Mean control messages per live relay.
    pub fn messages_per_relay(&self) -> f64 {
        self.messages as f64 / self.live_relays.max(1) as f64
    }

    /// Mean bytes per live relay.
    pub fn bytes_per_relay(&self) -> f64 {
        self.bytes as f64 / self.live_relays.max(1) as f64
    }
}

/// What [`Sim::check`] verified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// (relay, origin) pairs whose next-hop chain was followed to the origin.
    pub origin_walks: u64,
    /// (relay, broadcast) pairs whose route was looked up.
    pub namespace_lookups: u64,
    /// Upstream subscriptions verified.
    pub upstream_subscriptions: u64,
    /// Longest next-hop chain seen.
    pub max_hops: usize,
    /// (relay, live origin) pairs the failures cut apart (correctly without a route).
    pub cut_off: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Local,
    Peer(usize),
}

struct SimNode {
    node: Node,
    upstream: Upstream,
    downstream: BTreeMap<FullTrackName, BTreeSet<Source>>,
    armed: Option<Instant>,
}

enum Ev {
    Deliver { from: usize, to: usize, generation: u64, msg: Box<RouteMessage> },
    Timer { node: usize, at: Instant },
    Subscribe { from: usize, to: usize, generation: u64, track: FullTrackName, on: bool },
}

/// The simulated mesh.
pub struct Sim {
    cfg: SimConfig,
    base: Instant,
    now: Instant,
    seq: u64,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: HashMap<u64, Ev>,
    names: Vec<RelayName>,
    index: HashMap<RelayName, usize>,
    region: Vec<usize>,
    hub: Vec<bool>,
    adj: Vec<Vec<(usize, Duration)>>,
    generation: HashMap<(usize, usize), u64>,
    epoch: Vec<u64>,
    nodes: Vec<Option<SimNode>>,
    broadcasts: Vec<(Arc<TrackNamespace>, usize)>,
    subscribers: Vec<(usize, FullTrackName)>,
    sent_messages: Vec<u64>,
    sent_bytes: Vec<u64>,
    moves: u64,
    new_group_requests: u64,
    rng: Rng,
}

/// SplitMix64: a tiny seeded generator, the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn key(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Sim {
    /// Builds the topology; no relay runs yet (see [`Sim::start`]).
    pub fn new(cfg: SimConfig) -> Result<Self, crate::MeshError> {
        if cfg.regions == 0 || cfg.relays < cfg.regions || cfg.hubs_per_region < 2 {
            return Err(crate::MeshError::Config(
                "need at least one region, one relay per region and two hubs per region".into(),
            ));
        }
        let mut rng = Rng(cfg.seed);
        let base = Instant::now();
        let pos: Vec<(f64, f64)> = (0..cfg.regions)
            .map(|_| ((rng.next() % 10_000) as f64, (rng.next() % 10_000) as f64))
            .collect();
        let mut names = Vec::new();
        let mut region = Vec::new();
        let mut hub = Vec::new();
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); cfg.regions];
        for (r, m) in members.iter_mut().enumerate() {
            let count = cfg.relays / cfg.regions + usize::from(r < cfg.relays % cfg.regions);
            for i in 0..count {
                let id = names.len();
                names.push(RelayName::from(format!("r{r:02}-{i:03}")));
                region.push(r);
                hub.push(i < cfg.hubs_per_region);
                m.push(id);
            }
        }
        let index = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        let n = names.len();
        let mut adj: Vec<Vec<(usize, Duration)>> = vec![Vec::new(); n];
        let mut linked = HashSet::new();
        let mut link = |a: usize, b: usize, ms: f64, adj: &mut Vec<Vec<(usize, Duration)>>| {
            if a != b && linked.insert(key(a, b)) {
                let d = Duration::from_micros((ms * 1000.0) as u64);
                adj[a].push((b, d));
                adj[b].push((a, d));
            }
        };
        for m in &members {
            let hubs: Vec<usize> = m.iter().copied().filter(|&i| hub[i]).collect();
            for (x, &a) in hubs.iter().enumerate() {
                for &b in &hubs[x + 1..] {
                    let ms = 1.0 + rng.below(3) as f64;
                    link(a, b, ms, &mut adj);
                }
            }
            for (i, &leaf) in m.iter().enumerate().filter(|(_, l)| !hub[**l]) {
                for k in 0..2.min(hubs.len()) {
                    let ms = 1.0 + rng.below(4) as f64;
                    link(leaf, hubs[(i + k) % hubs.len()], ms, &mut adj);
                }
            }
        }
        let dist = |a: usize, b: usize| {
            let (dx, dy) = (pos[a].0 - pos[b].0, pos[a].1 - pos[b].1);
            (dx * dx + dy * dy).sqrt()
        };
        let mut pairs = BTreeSet::new();
        for a in 0..cfg.regions {
            let mut others: Vec<usize> = (0..cfg.regions).filter(|&b| b != a).collect();
            others.sort_by(|&x, &y| dist(a, x).total_cmp(&dist(a, y)));
            for &b in others.iter().take(cfg.neighbour_regions) {
                pairs.insert(key(a, b));
            }
        }
        let mut ring: Vec<usize> = (0..cfg.regions).collect();
        ring.sort_by(|&x, &y| pos[x].0.total_cmp(&pos[y].0));
        for w in ring.windows(2) {
            pairs.insert(key(w[0], w[1]));
        }
        if cfg.regions > 2 {
            pairs.insert(key(ring[0], ring[cfg.regions - 1]));
        }
        for (k, &(a, b)) in pairs.iter().enumerate() {
            let ha: Vec<usize> = members[a].iter().copied().filter(|&i| hub[i]).collect();
            let hb: Vec<usize> = members[b].iter().copied().filter(|&i| hub[i]).collect();
            let ms = dist(a, b) / 200.0 + 2.0;
            link(ha[k % ha.len()], hb[(k + 1) % hb.len()], ms, &mut adj);
            link(ha[(k + 1) % ha.len()], hb[k % hb.len()], ms, &mut adj);
        }
        for a in &mut adj {
            a.sort();
        }
        let mut broadcasts = Vec::with_capacity(cfg.broadcasts);
        for b in 0..cfg.broadcasts {
            let at = rng.below(n);
            let ns = TrackNamespace::from_path(&format!("clinic-{}/room-{b}/cam", b % 97))
                .map_err(|e| crate::MeshError::Config(e.to_string()))?;
            broadcasts.push((Arc::new(ns), at));
        }
        let mut subscribers = BTreeSet::new();
        for _ in 0..cfg.subscribers {
            let at = rng.below(n);
            let b = rng.below(broadcasts.len().max(1));
            if let Some((ns, _)) = broadcasts.get(b) {
                let track = FullTrackName::new((**ns).clone(), "video/360p")
                    .map_err(|e| crate::MeshError::Config(e.to_string()))?;
                subscribers.insert((at, track));
            }
        }
        let subscribers: Vec<_> = subscribers.into_iter().collect();
        let sim = Sim {
            base,
            now: base,
            seq: 0,
            queue: BinaryHeap::new(),
            pending: HashMap::new(),
            region,
            hub,
            adj,
            generation: HashMap::new(),
            epoch: vec![0; n],
            nodes: (0..n).map(|_| None).collect(),
            broadcasts,
            subscribers,
            sent_messages: vec![0; n],
            sent_bytes: vec![0; n],
            moves: 0,
            new_group_requests: 0,
            rng,
            index,
            names,
            cfg,
        };
        if !sim.connected() {
            return Err(crate::MeshError::Config("generated topology is not connected".into()));
        }
        Ok(sim)
    }

    /// Relay names, by index.
    pub fn names(&self) -> &[RelayName] {
        &self.names
    }

    /// Indices of the hub relays.
    pub fn hubs(&self) -> Vec<usize> {
        (0..self.names.len()).filter(|&i| self.hub[i]).collect()
    }

    /// Number of mesh links.
    pub fn links(&self) -> usize {
        self.adj.iter().map(Vec::len).sum::<usize>() / 2
    }

    /// The node of relay `i`, if it is alive.
    pub fn node(&self, i: usize) -> Option<&Node> {
        self.nodes[i].as_ref().map(|s| &s.node)
    }

    /// `count` distinct random live relay indices (seeded).
    pub fn pick(&mut self, count: usize, hubs_only: bool) -> Vec<usize> {
        let pool: Vec<usize> = (0..self.names.len())
            .filter(|&i| (!hubs_only || self.hub[i]) && self.nodes[i].is_some())
            .collect();
        let mut chosen = BTreeSet::new();
        while chosen.len() < count.min(pool.len()) {
            chosen.insert(pool[self.rng.below(pool.len())]);
        }
        chosen.into_iter().collect()
    }

    fn connected(&self) -> bool {
        let mut seen = vec![false; self.names.len()];
        let mut stack = vec![0];
        seen[0] = true;
        while let Some(a) = stack.pop() {
            for &(b, _) in &self.adj[a] {
                if !seen[b] {
                    seen[b] = true;
                    stack.push(b);
                }
            }
        }
        seen.iter().all(|s| *s)
    }

    /// Starts every relay, publishes every broadcast, adds every subscriber and runs one
    /// window.
    pub fn start(&mut self) -> PhaseReport {
        let all: Vec<usize> = (0..self.names.len()).collect();
        let probes = self.bystanders();
        self.run_phase("initial convergence", &probes, |sim| {
            for &i in &all {
                sim.boot(i);
            }
            for &i in &all {
                sim.links_up(i);
            }
            let subs = std::mem::take(&mut sim.subscribers);
            for (at, track) in &subs {
                sim.local_subscribe(*at, track);
            }
            sim.subscribers = subs;
        })
    }

    /// Stops the live relays of `which` at once (crash: their peers see the sessions drop) and runs one
    /// window.
    pub fn fail(&mut self, name: &str, which: &[usize]) -> PhaseReport {
        let mut which: Vec<usize> =
            which.iter().copied().filter(|&i| self.nodes[i].is_some()).collect();
        which.sort();
        which.dedup();
        // Loops are looked for towards the first few relays that change (the origins whose
        // routes are in flux) and evenly spread bystanders.
        let mut probes: Vec<usize> = which.iter().copied().take(8).collect();
        probes.extend(self.bystanders());
        self.run_phase(name, &probes, |sim| {
            for &i in &which {
                sim.nodes[i] = None;
            }
            for &i in &which {
                let peers: Vec<usize> = sim.adj[i].iter().map(|l| l.0).collect();
                for p in peers {
                    let g = sim.generation.entry(key(i, p)).or_default();
                    if g.is_multiple_of(2) {
                        continue;
                    }
                    *g += 1;
                    if sim.nodes[p].is_some() {
                        let now = sim.now;
                        let name = sim.names[i].clone();
                        sim.with_node(p, |n| n.handle_peer_down(now, name.as_str()));
                        sim.drop_downstream_of(p, i);
                        sim.after_step(p);
                    }
                }
            }
        })
    }

    /// Restarts the dead relays of `which` with a new epoch (their publishers and subscribers come back
    /// with them) and runs one window.
    pub fn restore(&mut self, name: &str, which: &[usize]) -> PhaseReport {
        let mut which: Vec<usize> =
            which.iter().copied().filter(|&i| self.nodes[i].is_none()).collect();
        which.sort();
        which.dedup();
        // Loops are looked for towards the first few relays that change (the origins whose
        // routes are in flux) and evenly spread bystanders.
        let mut probes: Vec<usize> = which.iter().copied().take(8).collect();
        probes.extend(self.bystanders());
        self.run_phase(name, &probes, |sim| {
            for &i in &which {
                sim.boot(i);
            }
            for &i in &which {
                sim.links_up(i);
            }
            let subs: Vec<_> =
                sim.subscribers.iter().filter(|(at, _)| which.contains(at)).cloned().collect();
            for (at, track) in &subs {
                sim.local_subscribe(*at, track);
            }
        })
    }

    fn boot(&mut self, i: usize) {
        self.epoch[i] += 1;
        let name = self.names[i].clone();
        let region = format!("region-{:02}", self.region[i]);
        let cfg = NodeConfig::new(name.clone(), &region, &format!("https://{name}.example:4443"))
            .epoch(self.epoch[i])
            .transit(self.hub[i]);
        let mut node = Node::new(self.now, cfg);
        for (ns, at) in &self.broadcasts {
            if *at == i {
                node.local_publish(self.now, (**ns).clone());
            }
        }
        self.nodes[i] = Some(SimNode {
            node,
            upstream: Upstream::new(),
            downstream: BTreeMap::new(),
            armed: None,
        });
        self.after_step(i);
    }

    fn links_up(&mut self, i: usize) {
        let links: Vec<usize> = self.adj[i].iter().map(|l| l.0).collect();
        for p in links {
            if self.nodes[p].is_none() {
                continue;
            }
            let g = self.generation.entry(key(i, p)).or_default();
            if g.is_multiple_of(2) {
                // Even generation: the link is down; make it up (odd).
                *g += 1;
            } else {
                continue;
            }
            let now = self.now;
            for (a, b) in [(i, p), (p, i)] {
                let info = PeerInfo { region: format!("region-{:02}", self.region[b]) };
                let name = self.names[b].clone();
                self.with_node(a, |n| n.handle_peer_up(now, name.as_str(), info));
                self.after_step(a);
            }
        }
    }

    fn with_node<T>(&mut self, i: usize, f: impl FnOnce(&mut Node) -> T) -> Option<T> {
        self.nodes[i].as_mut().map(|s| f(&mut s.node))
    }

    fn latency(&self, a: usize, b: usize) -> Option<Duration> {
        self.adj[a].iter().find(|l| l.0 == b).map(|l| l.1)
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.pending.insert(self.seq, ev);
    }

    /// Drains a node's outputs after any input: messages onto links, events into upstream
    /// moves, the timer into the queue.
    fn after_step(&mut self, i: usize) {
        let now = self.now;
        let Some(s) = self.nodes[i].as_mut() else { return };
        let mut out = Vec::new();
        while let Some(m) = s.node.poll_send() {
            out.push(m);
        }
        let mut reroute = false;
        while let Some(e) = s.node.poll_event() {
            reroute |=
                matches!(e, Event::RouteChanged { .. } | Event::Namespace { available: true, .. });
        }
        let moves = if reroute { s.upstream.reroute(&s.node) } else { Vec::new() };
        let timer = s.node.poll_timeout();
        if timer != s.armed {
            s.armed = timer;
            if let Some(at) = timer {
                self.push(at.max(now), Ev::Timer { node: i, at });
            }
        }
        for (peer, msg) in out {
            let Some(&(p, lat)) = self.adj[i].iter().find(|l| self.names[l.0] == peer) else {
                continue;
            };
            let (len, msg) = if self.cfg.wire_roundtrip {
                let bytes = msg.encode();
                let back = RouteMessage::decode(&bytes).expect("own encoding decodes");
                (bytes.len(), back)
            } else {
                (msg.encoded_len(), msg)
            };
            self.sent_messages[i] += 1;
            self.sent_bytes[i] += len as u64;
            let generation = self.generation.get(&key(i, p)).copied().unwrap_or(0);
            self.push(now + lat, Ev::Deliver { from: i, to: p, generation, msg: Box::new(msg) });
        }
        for m in moves {
            self.moves += 1;
            if m.new_group_request() {
                self.new_group_requests += 1;
            }
            if let Some(Hop::Peer(p)) = &m.to {
                self.send_sub(i, p, m.track.clone(), true);
            }
            if let Some(Hop::Peer(p)) = &m.from {
                self.send_sub(i, p, m.track.clone(), false);
            }
        }
    }

    fn index_of(&self, name: &RelayName) -> Option<usize> {
        self.index.get(name).copied()
    }

    fn send_sub(&mut self, from: usize, to: &RelayName, track: FullTrackName, on: bool) {
        let Some(to) = self.index_of(to) else { return };
        let Some(lat) = self.latency(from, to) else { return };
        let generation = self.generation.get(&key(from, to)).copied().unwrap_or(0);
        self.push(self.now + lat, Ev::Subscribe { from, to, generation, track, on });
    }

    fn local_subscribe(&mut self, at: usize, track: &FullTrackName) {
        self.add_downstream(at, Source::Local, track);
    }

    fn add_downstream(&mut self, i: usize, src: Source, track: &FullTrackName) {
        let Some(s) = self.nodes[i].as_mut() else { return };
        if !s.downstream.entry(track.clone()).or_default().insert(src) {
            return;
        }
        if let Some(Hop::Peer(p)) = s.upstream.subscribe(track, &s.node) {
            self.send_sub(i, &p, track.clone(), true);
        }
    }

    fn remove_downstream(&mut self, i: usize, src: Source, track: &FullTrackName) {
        let Some(s) = self.nodes[i].as_mut() else { return };
        let Some(set) = s.downstream.get_mut(track) else { return };
        if !set.remove(&src) {
            return;
        }
        if set.is_empty() {
            s.downstream.remove(track);
        }
        if let Some(Hop::Peer(p)) = s.upstream.unsubscribe(track) {
            self.send_sub(i, &p, track.clone(), false);
        }
    }

    /// The session to `gone` closed: its subscriptions at `i` end.
    fn drop_downstream_of(&mut self, i: usize, gone: usize) {
        let Some(s) = self.nodes[i].as_ref() else { return };
        let tracks: Vec<FullTrackName> = s
            .downstream
            .iter()
            .filter(|(_, set)| set.contains(&Source::Peer(gone)))
            .map(|(t, _)| t.clone())
            .collect();
        for t in tracks {
            self.remove_downstream(i, Source::Peer(gone), &t);
        }
    }

    fn step(&mut self) -> bool {
        let Some(Reverse((at, seq))) = self.queue.pop() else { return false };
        let ev = self.pending.remove(&seq).expect("every queued event is pending");
        self.now = self.now.max(at);
        let now = self.now;
        match ev {
            Ev::Timer { node, at } => {
                if self.nodes[node].as_ref().is_some_and(|s| s.armed == Some(at)) {
                    if let Some(s) = self.nodes[node].as_mut() {
                        s.armed = None;
                    }
                    self.with_node(node, |n| n.handle_timeout(now));
                    self.after_step(node);
                }
            }
            Ev::Deliver { from, to, generation, msg } => {
                if self.generation.get(&key(from, to)).copied().unwrap_or(0) == generation {
                    let name = self.names[from].clone();
                    // An error means the session is gone; the message is dropped.
                    let _ = self.with_node(to, |n| n.handle_message(now, name.as_str(), *msg));
                    self.after_step(to);
                }
            }
            Ev::Subscribe { from, to, generation, track, on } => {
                if self.generation.get(&key(from, to)).copied().unwrap_or(0) == generation {
                    if on {
                        self.add_downstream(to, Source::Peer(from), &track);
                    } else {
                        self.remove_downstream(to, Source::Peer(from), &track);
                    }
                }
            }
        }
        true
    }

    fn run_phase(
        &mut self,
        name: &str,
        probes: &[usize],
        action: impl FnOnce(&mut Sim),
    ) -> PhaseReport {
        let t0 = self.now;
        let msgs0 = self.sent_messages.clone();
        let bytes0 = self.sent_bytes.clone();
        let (moves0, ngr0) = (self.moves, self.new_group_requests);
        action(self);
        let end = t0 + self.cfg.window;
        let sample_every = Duration::from_millis(5);
        let mut next_sample = t0;
        let (mut loops_live, mut loops_dead, mut loop_samples) = (0, 0, 0);
        while let Some(Reverse((at, _))) = self.queue.peek() {
            if *at > end {
                break;
            }
            if *at >= next_sample {
                // Sampled: do next hops towards one origin form a loop right now?
                loop_samples += 1;
                let looped = |live: bool| {
                    probes
                        .iter()
                        .filter(|&&p| self.nodes[p].is_some() == live)
                        .any(|&p| self.has_loop_towards(p))
                };
                loops_live += u64::from(looped(true));
                if std::env::var_os("MESH_SIM_DEBUG").is_some() && looped(true) {
                    for &p in probes.iter().filter(|&&p| self.nodes[p].is_some()) {
                        if self.has_loop_towards(p) {
                            self.debug_loop(p);
                        }
                    }
                }
                loops_dead += u64::from(looped(false));
                next_sample = *at + sample_every;
            }
            self.step();
        }
        self.now = end;
        let live: Vec<usize> = (0..self.names.len()).filter(|&i| self.nodes[i].is_some()).collect();
        let convergence = live
            .iter()
            .filter_map(|&i| self.nodes[i].as_ref().and_then(|s| s.node.last_change()))
            .filter(|&t| t >= t0)
            .max()
            .map_or(Duration::ZERO, |t| t - t0);
        let per: Vec<(u64, u64)> = (0..self.names.len())
            .map(|i| (self.sent_messages[i] - msgs0[i], self.sent_bytes[i] - bytes0[i]))
            .collect();
        PhaseReport {
            name: name.to_owned(),
            live_relays: live.len(),
            convergence,
            messages: per.iter().map(|p| p.0).sum(),
            bytes: per.iter().map(|p| p.1).sum(),
            max_messages_per_relay: per.iter().map(|p| p.0).max().unwrap_or(0),
            max_bytes_per_relay: per.iter().map(|p| p.1).max().unwrap_or(0),
            moves: self.moves - moves0,
            new_group_requests: self.new_group_requests - ngr0,
            loops_live,
            loops_dead,
            loop_samples,
        }
    }

    /// Runs `d` of virtual time with no changes: the steady-state cost of the mesh.
    pub fn idle(&mut self, name: &str, d: Duration) -> PhaseReport {
        let window = self.cfg.window;
        self.cfg.window = d;
        let probes = self.bystanders();
        let r = self.run_phase(name, &probes, |_| {});
        self.cfg.window = window;
        r
    }

    fn debug_loop(&self, origin: usize) {
        let target = self.names[origin].as_str();
        eprintln!("t={:?} loop towards {target}", self.now - self.base);
        for i in 0..self.names.len() {
            if let Some(s) = self.nodes[i].as_ref()
                && let Some(r) = s.node.route_to(target)
            {
                let path: Vec<&str> = r.path.iter().map(|p| p.as_str()).collect();
                // Print only relays whose next hop points back into a relay that points at them.
                if let Hop::Peer(p) = &r.next_hop {
                    let j = self.index_of(p).unwrap();
                    let back = self.nodes[j].as_ref().and_then(|s| s.node.next_hop_to(target));
                    if back == Some(Hop::Peer(self.names[i].clone())) {
                        eprintln!("  {} -> {:?} cost {}", self.names[i], path, r.cost);
                    }
                }
            }
        }
    }

    /// Evenly spread relays whose routes loops are sampled towards.
    fn bystanders(&self) -> Vec<usize> {
        let n = self.names.len();
        let k = self.cfg.bystander_probes.min(n);
        (0..k).map(|i| (i * n / k.max(1) + n / (2 * k.max(1))) % n).collect()
    }

    fn has_loop_towards(&self, origin: usize) -> bool {
        let target = &self.names[origin];
        let mut state = vec![0u8; self.names.len()]; // 0 new, 1 on the current walk, 2 done
        for start in 0..self.names.len() {
            let mut walk = Vec::new();
            let mut cur = start;
            loop {
                if state[cur] == 2 {
                    break;
                }
                if state[cur] == 1 {
                    return true;
                }
                state[cur] = 1;
                walk.push(cur);
                let next = self.nodes[cur]
                    .as_ref()
                    .and_then(|s| s.node.next_hop_to(target.as_str()))
                    .and_then(|h| match h {
                        Hop::Peer(p) => self.index_of(&p),
                        Hop::Local => None,
                    });
                match next {
                    Some(n) => cur = n,
                    None => break,
                }
            }
            for w in walk {
                state[w] = 2;
            }
        }
        false
    }

    /// For every live relay, the components of the live hub graph it touches: two relays can
    /// reach each other through the mesh (leaves never transit) iff these intersect.
    fn hub_components(&self) -> Vec<Vec<usize>> {
        let n = self.names.len();
        let live_hub = |i: usize| self.hub[i] && self.nodes[i].is_some();
        let mut comp = vec![usize::MAX; n];
        let mut next = 0;
        for h in 0..n {
            if !live_hub(h) || comp[h] != usize::MAX {
                continue;
            }
            comp[h] = next;
            let mut stack = vec![h];
            while let Some(a) = stack.pop() {
                for &(b, _) in &self.adj[a] {
                    if live_hub(b) && comp[b] == usize::MAX {
                        comp[b] = next;
                        stack.push(b);
                    }
                }
            }
            next += 1;
        }
        (0..n)
            .map(|i| {
                if self.nodes[i].is_none() {
                    return Vec::new();
                }
                if self.hub[i] {
                    return vec![comp[i]];
                }
                let mut c: Vec<usize> =
                    self.adj[i].iter().filter(|l| live_hub(l.0)).map(|l| comp[l.0]).collect();
                c.sort();
                c.dedup();
                c
            })
            .collect()
    }

    /// Verifies the converged state (see the module documentation). A relay cut off from
    /// an origin by the failures (every hub it peers with dead) must have no route to it.
    pub fn check(&self) -> Result<CheckReport, String> {
        let n = self.names.len();
        let live = |i: usize| self.nodes[i].is_some();
        let comps = self.hub_components();
        let reach = |a: usize, b: usize| a == b || comps[a].iter().any(|c| comps[b].contains(c));
        let mut rep = CheckReport::default();
        for o in 0..n {
            for start in 0..n {
                let Some(s) = self.nodes[start].as_ref() else { continue };
                let route = s.node.route_to(self.names[o].as_str());
                if !live(o) || !reach(start, o) {
                    rep.cut_off += u64::from(live(o));
                    if route.is_some() {
                        return Err(format!(
                            "{} keeps a route to unreachable {}",
                            self.names[start], self.names[o]
                        ));
                    }
                    continue;
                }
                let route = route.ok_or_else(|| {
                    format!("{} has no route to {}", self.names[start], self.names[o])
                })?;
                for hop in &route.path {
                    let i = self.index_of(hop).ok_or("unknown relay in a path")?;
                    if !live(i) {
                        return Err(format!(
                            "{} routes to {} via dead {hop}",
                            self.names[start], self.names[o]
                        ));
                    }
                }
                let mut seen = HashSet::new();
                let mut cur = start;
                loop {
                    if !seen.insert(cur) {
                        return Err(format!(
                            "loop from {} towards {}",
                            self.names[start], self.names[o]
                        ));
                    }
                    let hop = self.nodes[cur]
                        .as_ref()
                        .and_then(|s| s.node.next_hop_to(self.names[o].as_str()))
                        .ok_or_else(|| {
                            format!("{} has no route to {}", self.names[cur], self.names[o])
                        })?;
                    match hop {
                        Hop::Local if cur == o => break,
                        Hop::Local => {
                            return Err(format!(
                                "{} claims to be {}",
                                self.names[cur], self.names[o]
                            ));
                        }
                        Hop::Peer(p) => {
                            let next = self.index_of(&p).ok_or("unknown next hop")?;
                            if !live(next) || self.latency(cur, next).is_none() {
                                return Err(format!(
                                    "{} forwards to {p}, not a live peer",
                                    self.names[cur]
                                ));
                            }
                            cur = next;
                        }
                    }
                }
                rep.max_hops = rep.max_hops.max(seen.len() - 1);
                rep.origin_walks += 1;
            }
        }
        for (ns, at) in &self.broadcasts {
            for i in 0..n {
                let Some(s) = self.nodes[i].as_ref() else { continue };
                let got = s.node.origin_for(ns).cloned();
                let want = (live(*at) && reach(i, *at)).then(|| self.names[*at].clone());
                if got != want {
                    return Err(format!(
                        "{} routes {ns} to {got:?}, expected {want:?}",
                        self.names[i]
                    ));
                }
                rep.namespace_lookups += 1;
            }
        }
        for i in 0..n {
            let Some(s) = self.nodes[i].as_ref() else { continue };
            for (track, via) in s.upstream.iter() {
                let want = s.node.next_hop(&track.namespace);
                if via != want.as_ref() {
                    return Err(format!(
                        "{} subscribes {track} via {via:?}, best is {want:?}",
                        self.names[i]
                    ));
                }
                if let Some(Hop::Peer(p)) = via {
                    let p = self.index_of(p).ok_or("unknown upstream")?;
                    let mirrored = self.nodes[p]
                        .as_ref()
                        .and_then(|u| u.downstream.get(track))
                        .is_some_and(|set| set.contains(&Source::Peer(i)));
                    if !mirrored {
                        return Err(format!(
                            "{}'s upstream {track} not known at {}",
                            self.names[i], self.names[p]
                        ));
                    }
                }
                let down = s.downstream.get(track).map_or(0, BTreeSet::len);
                if down == 0 || down != s.upstream.downstream(track) {
                    return Err(format!(
                        "{}: {track} has {down} downstream, upstream counts {}",
                        self.names[i],
                        s.upstream.downstream(track)
                    ));
                }
                rep.upstream_subscriptions += 1;
            }
            for (track, set) in &s.downstream {
                for src in set {
                    if let Source::Peer(d) = src {
                        let back = self.nodes[*d]
                            .as_ref()
                            .and_then(|ds| ds.upstream.upstream_for(track))
                            .is_some_and(|h| *h == Hop::Peer(self.names[i].clone()));
                        if !back {
                            return Err(format!(
                                "{} serves {track} to {} which does not subscribe here",
                                self.names[i], self.names[*d]
                            ));
                        }
                    }
                }
            }
        }
        Ok(rep)
    }

    /// Virtual time since the simulation was built.
    pub fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    /// Relays alive now.
    pub fn live_relays(&self) -> usize {
        self.nodes.iter().filter(|n| n.is_some()).count()
    }
}
