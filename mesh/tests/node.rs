//! Guards one mesh node's rules on small hand-built meshes: best-route choice by cost then
//! length, split horizon, loop rejection, failover with NEW GROUP REQUEST, replacement of a
//! restarted relay's records, membership ageing and one upstream subscription per track.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tiermesh_mesh::{
    Event, Hop, LoadReport, MeshError, Node, NodeConfig, PeerInfo, RouteAdvert, RouteMessage,
    Upstream,
};
use tiermesh_proto::types::{FullTrackName, TrackNamespace};

/// Nodes joined by zero-latency links, driven on virtual time.
struct Net {
    now: Instant,
    nodes: BTreeMap<String, Node>,
    links: Vec<(String, String)>,
    /// Messages delivered, by (from, to).
    log: Vec<(String, String, RouteMessage)>,
}

impl Net {
    fn new() -> Self {
        Net { now: Instant::now(), nodes: BTreeMap::new(), links: Vec::new(), log: Vec::new() }
    }

    fn add(&mut self, name: &str, region: &str) {
        self.add_cfg(NodeConfig::new(name, region, &format!("https://{name}.example")).epoch(1));
    }

    fn add_cfg(&mut self, cfg: NodeConfig) {
        let name = cfg.name.to_string();
        self.nodes.insert(name, Node::new(self.now, cfg));
    }

    fn region(&self, n: &str) -> String {
        self.nodes[n].config().region.clone()
    }

    fn link(&mut self, a: &str, b: &str) {
        self.links.push((a.into(), b.into()));
        let (ra, rb) = (self.region(a), self.region(b));
        let now = self.now;
        self.nodes.get_mut(a).unwrap().handle_peer_up(now, b, PeerInfo { region: rb });
        self.nodes.get_mut(b).unwrap().handle_peer_up(now, a, PeerInfo { region: ra });
    }

    fn unlink(&mut self, a: &str, b: &str) {
        self.links
            .retain(|l| *l != (a.to_owned(), b.to_owned()) && *l != (b.to_owned(), a.to_owned()));
        let now = self.now;
        if let Some(n) = self.nodes.get_mut(a) {
            n.handle_peer_down(now, b);
        }
        if let Some(n) = self.nodes.get_mut(b) {
            n.handle_peer_down(now, a);
        }
    }

    fn kill(&mut self, a: &str) {
        let peers: Vec<String> = self
            .links
            .iter()
            .filter_map(|(x, y)| {
                if x == a {
                    Some(y.clone())
                } else if y == a {
                    Some(x.clone())
                } else {
                    None
                }
            })
            .collect();
        for p in peers {
            self.unlink(a, &p);
        }
        self.nodes.remove(a);
    }

    /// Runs timers and deliveries until `d` of virtual time has passed.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let mut moved = true;
            while moved {
                moved = false;
                let names: Vec<String> = self.nodes.keys().cloned().collect();
                for n in &names {
                    while let Some((to, msg)) = self.nodes.get_mut(n).unwrap().poll_send() {
                        moved = true;
                        self.log.push((n.clone(), to.to_string(), msg.clone()));
                        let now = self.now;
                        if let Some(t) = self.nodes.get_mut(to.as_str()) {
                            let _ = t.handle_message(now, n, msg);
                        }
                    }
                }
            }
            let next = self.nodes.values().filter_map(Node::poll_timeout).min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    for n in self.nodes.values_mut() {
                        n.handle_timeout(now);
                    }
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn node(&mut self, n: &str) -> &mut Node {
        self.nodes.get_mut(n).unwrap()
    }

    fn events(&mut self, n: &str) -> Vec<Event> {
        let node = self.node(n);
        std::iter::from_fn(|| node.poll_event()).collect()
    }
}

fn ns(p: &str) -> TrackNamespace {
    TrackNamespace::from_path(p).unwrap()
}

fn peer(name: &str) -> Option<Hop> {
    Some(Hop::Peer(name.into()))
}

const SETTLE: Duration = Duration::from_millis(500);

#[test]
fn line_routes_with_costs_and_split_horizon() {
    let mut net = Net::new();
    net.add("a", "eu");
    net.add("b", "eu");
    net.add("c", "us");
    net.link("a", "b");
    net.link("b", "c");
    let now = net.now;
    net.node("c").local_publish(now, ns("clinic/room-1"));
    net.run(SETTLE);

    let r = net.node("a").route(&ns("clinic/room-1")).unwrap();
    assert_eq!(r.origin.as_str(), "c");
    assert_eq!(r.next_hop, Hop::Peer("b".into()));
    assert_eq!(r.cost, 10 + 100, "one intra-region link and one inter-region link");
    let path: Vec<&str> = r.path.iter().map(|p| p.as_str()).collect();
    assert_eq!(path, ["a", "b", "c"]);
    // A track in the namespace, and a deeper namespace, resolve through the published prefix.
    assert_eq!(net.node("a").next_hop(&ns("clinic/room-1/dr-lee")), peer("b"));
    assert_eq!(net.node("c").next_hop(&ns("clinic/room-1")), Some(Hop::Local));
    assert_eq!(net.node("a").next_hop(&ns("clinic/room-2")), None);

    // Split horizon: b never offered c's route back to c.
    for (from, to, m) in &net.log {
        if from == "b" && to == "c" {
            assert!(m.routes.iter().all(|r| r.origin().unwrap().as_str() != "c"));
        }
    }
    // Every relay knows every member.
    assert_eq!(net.node("a").members().len(), 3);
}

#[test]
fn cheaper_path_wins_over_shorter_and_ties_break_by_name() {
    // a-x-d is two links but a-x costs 100; a-b-c-d is three links of 10.
    let mut net = Net::new();
    net.add_cfg(NodeConfig::new("a", "eu", "https://a.example").epoch(1).peer_cost("x", 100));
    for n in ["b", "c", "d", "x"] {
        net.add(n, "eu");
    }
    net.link("a", "b");
    net.link("b", "c");
    net.link("c", "d");
    net.link("a", "x");
    net.link("x", "d");
    net.run(SETTLE);
    let r = net.node("a").route_to("d").unwrap();
    assert_eq!(r.cost, 30);
    assert_eq!(r.next_hop, Hop::Peer("b".into()));

    // Equal cost and length: the next hop with the smaller name wins, on every run.
    let mut net = Net::new();
    for n in ["s", "p", "q", "t"] {
        net.add(n, "eu");
    }
    net.link("s", "q");
    net.link("s", "p");
    net.link("p", "t");
    net.link("q", "t");
    net.run(SETTLE);
    assert_eq!(net.node("s").next_hop_to("t"), peer("p"));
}

#[test]
fn paths_through_self_are_rejected() {
    let t = Instant::now();
    let mut a = Node::new(t, NodeConfig::new("a", "eu", "https://a.example"));
    a.handle_peer_up(t, "b", PeerInfo { region: "eu".into() });
    let looped = RouteMessage {
        routes: vec![RouteAdvert { cost: 20, path: vec!["b".into(), "a".into(), "z".into()] }],
        ..RouteMessage::default()
    };
    a.handle_message(t, "b", looped).unwrap();
    assert_eq!(a.route_to("z"), None);
    assert_eq!(a.stats().loops_rejected, 1);
    // A path that does not start at the sender is refused too.
    let forged = RouteMessage {
        routes: vec![RouteAdvert { cost: 0, path: vec!["z".into()] }],
        ..RouteMessage::default()
    };
    a.handle_message(t, "b", forged).unwrap();
    assert_eq!(a.route_to("z"), None);
    assert_eq!(a.stats().invalid_records, 1);
    // A message from a relay that is not a peer is an error, not a panic.
    assert_eq!(
        a.handle_message(t, "nobody", RouteMessage::default()),
        Err(MeshError::UnknownPeer("nobody".into()))
    );
    // A timeout call with nothing due does nothing; the table for b goes out after the
    // batch delay.
    a.handle_timeout(t);
    assert!(a.poll_send().is_none());
    a.handle_timeout(t + Duration::from_millis(10));
    let (to, m) = a.poll_send().unwrap();
    assert_eq!(to.as_str(), "b");
    assert_eq!(m.routes.len(), 1, "only its own route: the looped one was dropped");
}

#[test]
fn failover_moves_upstream_with_new_group_request() {
    // edge peers with two hubs; both reach the ingest relay.
    let mut net = Net::new();
    for n in ["edge", "hub1", "hub2", "ingest"] {
        net.add(n, "eu");
    }
    net.link("edge", "hub1");
    net.link("edge", "hub2");
    net.link("hub1", "ingest");
    net.link("hub2", "ingest");
    let now = net.now;
    net.node("ingest").local_publish(now, ns("clinic/room-9"));
    net.run(SETTLE);
    net.events("edge");

    let track = FullTrackName::new(ns("clinic/room-9"), "video/720p").unwrap();
    let mut up = Upstream::new();
    assert_eq!(up.subscribe(&track, net.node("edge")), peer("hub1"));
    // More subscribers share the one upstream subscription.
    assert_eq!(up.subscribe(&track, net.node("edge")), None);
    assert_eq!(up.subscribe(&track, net.node("edge")), None);
    assert_eq!(up.len(), 1);
    assert_eq!(up.downstream(&track), 3);

    net.kill("hub1");
    net.run(SETTLE);
    let events = net.events("edge");
    assert!(
        events.contains(&Event::RouteChanged { origin: "ingest".into(), next_hop: peer("hub2") })
    );
    let moves = up.reroute(net.node("edge"));
    assert_eq!(moves.len(), 1);
    assert_eq!(moves[0].from, peer("hub1"));
    assert_eq!(moves[0].to, peer("hub2"));
    assert!(moves[0].new_group_request());
    assert_eq!(up.upstream_for(&track), peer("hub2").as_ref());
    assert!(up.reroute(net.node("edge")).is_empty(), "nothing moves twice");

    // The last subscriber leaving ends the upstream subscription.
    assert_eq!(up.unsubscribe(&track), None);
    assert_eq!(up.unsubscribe(&track), None);
    assert_eq!(up.unsubscribe(&track), peer("hub2"));
    assert!(up.is_empty());
}

#[test]
fn restarted_relay_replaces_its_records_and_dead_relays_age_out() {
    let mut net = Net::new();
    net.add("a", "eu");
    net.add("b", "eu");
    net.link("a", "b");
    let now = net.now;
    net.node("b").local_publish(now, ns("old/one"));
    net.node("b").local_publish(now, ns("old/two"));
    net.run(SETTLE);
    assert_eq!(net.node("a").namespace_count(), 2);

    // b restarts (new epoch) with one different namespace.
    net.kill("b");
    net.add_cfg(NodeConfig::new("b", "eu", "https://b.example").epoch(2));
    let now = net.now;
    net.node("b").local_publish(now, ns("new/one"));
    net.link("a", "b");
    net.run(SETTLE);
    assert_eq!(net.node("a").next_hop(&ns("old/one")), None);
    assert_eq!(net.node("a").next_hop(&ns("new/one")), peer("b"));
    assert_eq!(net.node("a").namespace_count(), 1);

    // Unpublishing withdraws the namespace everywhere.
    let now = net.now;
    net.node("b").local_unpublish(now, &ns("new/one"));
    net.run(SETTLE);
    assert_eq!(net.node("a").next_hop(&ns("new/one")), None);
    let ev = net.events("a");
    assert!(ev.iter().any(|e| matches!(e, Event::Namespace { available: false, .. })));

    // A changed load is announced at once, then no more than once a second.
    let now = net.now;
    let load = LoadReport { sessions: 12, egress_bps: 3_000_000, cpu_permille: 250, healthy: true };
    net.node("b").set_load(now, load);
    net.run(SETTLE);
    let b = net.node("a").members().into_iter().find(|m| m.name.as_str() == "b").unwrap();
    assert_eq!(b.load, load);
    let now = net.now;
    let busier = LoadReport { sessions: 13, ..load };
    net.node("b").set_load(now, busier);
    net.run(SETTLE);
    let b = net.node("a").members().into_iter().find(|m| m.name.as_str() == "b").unwrap();
    assert_eq!(b.load, load, "a second change within 1 s waits");
    net.run(Duration::from_secs(1));
    let b = net.node("a").members().into_iter().find(|m| m.name.as_str() == "b").unwrap();
    assert_eq!(b.load, busier);

    // b dies: its route goes at once, its membership after the TTL.
    net.kill("b");
    net.run(SETTLE);
    assert_eq!(net.node("a").route_to("b"), None);
    assert_eq!(net.node("a").members().len(), 2, "membership lingers until the TTL");
    net.run(Duration::from_secs(46));
    assert_eq!(net.node("a").members().len(), 1);
    assert!(net.events("a").contains(&Event::NodeDown("b".into())));
}

#[test]
fn leaves_do_not_carry_transit() {
    // hub1 - leaf - hub2: without transit, hub1 cannot reach hub2 through the leaf.
    let mut net = Net::new();
    net.add("hub1", "eu");
    net.add("hub2", "eu");
    net.add_cfg(NodeConfig::new("leaf", "eu", "https://leaf.example").epoch(1).transit(false));
    net.link("hub1", "leaf");
    net.link("leaf", "hub2");
    net.run(SETTLE);
    assert_eq!(net.node("hub1").route_to("hub2"), None);
    assert_eq!(net.node("hub1").route_to("leaf").unwrap().cost, 10);
    assert_eq!(net.node("leaf").next_hop_to("hub2"), peer("hub2"));
}
