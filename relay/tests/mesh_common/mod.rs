//! Shared by the mesh tests (`tests/mesh_*.rs`, `tests/relay_publisher_streams.rs`): a
//! mesh relay's config, node certificates from a mesh CA, two relays in different regions
//! with a subscriber routed directly and a better route appearing, a subscription that waits
//! for the route, a publisher that writes one object per group every 10 ms, and the
//! subscriber's arrivals of those objects.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tiermesh_certs::ca::Ca;
use tiermesh_client::moq::{self, SubscribeOptions, TrackReader, TrackWriter};
use tiermesh_proto::data::ObjectStatus;
use tiermesh_relay::RelayHandle;
use tiermesh_relay::config::{MeshConfig, MeshPeer, RelayConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::common::*;

/// A mesh relay `name` in `region` with its node certificate in `dir`: the mesh listens on
/// any loopback port and links to `peers` (name, region, `moqt://` address, see
/// [`mesh_url`]); links within the region cost 10, to other regions `inter_cost`.
pub fn mesh_config(
    name: &str,
    region: &str,
    dir: PathBuf,
    peers: &[(&str, &str, String)],
    inter_cost: u64,
) -> RelayConfig {
    let mut c = config();
    c.mesh = Some(MeshConfig {
        name: name.into(),
        region: region.into(),
        url: format!("moqt://{name}.example:4443"),
        listen: "127.0.0.1:0".parse().unwrap(),
        dir,
        peers: peers
            .iter()
            .map(|(n, r, addr)| MeshPeer {
                name: (*n).into(),
                region: (*r).into(),
                addr: addr.clone(),
            })
            .collect(),
        intra_cost: 10,
        inter_cost,
        seeds: Vec::new(),
        advertise: None,
        discover: Default::default(),
        client_regions: Default::default(),
    });
    c
}

/// The `moqt://` address of `relay`'s mesh listener, for a peer's config.
pub fn mesh_url(relay: &RelayHandle) -> String {
    format!("moqt://127.0.0.1:{}", relay.mesh_addr().unwrap().port())
}

/// A in region r1 and C in r2, C's only link the direct one to A at cost 300, and the
/// session of a subscriber at C.
pub struct DirectRoute {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub a: RelayHandle,
    pub c: RelayHandle,
    pub sub: moq::Connection,
}

/// The [`DirectRoute`] mesh, a publisher at A and a subscriber at C whose subscription took
/// the direct route: the mesh, the publisher, the subscriber's reader and the writer of A's
/// subscription at the publisher.
pub async fn direct_route() -> (DirectRoute, Publisher, TrackReader, TrackWriter) {
    let dir = tempfile::tempdir().unwrap();
    let ca = tiermesh_certs::ca::generate("test mesh").unwrap();
    let a = relay(mesh_config("a", "r1", node_dir(&ca, dir.path(), "a"), &[], 100)).await;
    // C's only link is the direct one to A, at cost 300.
    let c_peers = [("a", "r1", mesh_url(&a))];
    let c = relay(mesh_config("c", "r2", node_dir(&ca, dir.path(), "c"), &c_peers, 300)).await;
    let mut publisher = publisher(&a, "moqt", None).await;
    let direct = Some(vec!["c".to_owned(), "a".to_owned()]);
    eventually("C routes directly", || c.mesh_route(&ns()) == direct).await;
    let sub = connect(&c, "moqt").await;
    let reader = subscribe_when_routed(&c, &sub).await;
    let writer = within("upstream", publisher.writers.recv()).await.unwrap();
    (DirectRoute { dir, ca, a, c, sub }, publisher, reader, writer)
}

impl DirectRoute {
    /// B appears in C's region and links to both: C - B - A costs 110, less than 300.
    /// Returns B once C routes through it and the track moved there (B carries it and A
    /// serves only B).
    pub async fn better_route_through_b(&self) -> RelayHandle {
        let (a, c) = (&self.a, &self.c);
        let b_peers = [("a", "r1", mesh_url(a)), ("c", "r2", mesh_url(c))];
        let b_dir = node_dir(&self.ca, self.dir.path(), "b");
        let b = relay(mesh_config("b", "r2", b_dir, &b_peers, 100)).await;
        let via_b = Some(vec!["c".to_owned(), "b".to_owned(), "a".to_owned()]);
        eventually("C routes through B", || c.mesh_route(&ns()) == via_b).await;
        eventually("track moved to B", || {
            b.upstream_subscriptions() == 1 && a.metrics().subscriptions.get() == 1
        })
        .await;
        b
    }
}

/// A node certificate for `name` from `ca`, saved in `root/name`.
pub fn node_dir(ca: &Ca, root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    ca.issue_node(name, &["127.0.0.1".to_owned()]).unwrap().save(&dir).unwrap();
    dir
}

/// Subscribes at `relay` until the mesh has a route for the track (bounded by `within`).
pub async fn subscribe_when_routed(relay: &RelayHandle, conn: &moq::Connection) -> TrackReader {
    let _ = relay;
    within("routed subscribe", async {
        loop {
            match conn.subscribe(track("video"), SubscribeOptions::default()).await {
                Ok(r) => return r,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
}

/// One object per group every 10 ms (at most 10 s) on `first` and on every writer the
/// publisher gets later (each SUBSCRIBE the relay sends, a re-routed one included), until
/// the sender is used; the task hands the publisher back.
pub fn publish_every_10ms(
    mut publisher: Publisher,
    first: TrackWriter,
) -> (oneshot::Sender<()>, JoinHandle<Publisher>) {
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let mut writers = vec![first];
    let task = tokio::spawn(async move {
        for g in 0..1000u64 {
            while let Ok(w) = publisher.writers.try_recv() {
                writers.push(w);
            }
            for w in writers.iter().filter(|w| !w.is_closed()) {
                let mut s = w.open_subgroup(g, 0, None);
                let _ = s.write(0, &ext(g, 0), ObjectStatus::Normal, payload(g, 0));
                s.finish();
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                _ = &mut stop_rx => break,
            }
        }
        publisher
    });
    (stop_tx, task)
}

/// Reads `count` more objects from `r` (one per group, as [`publish_every_10ms`] sends them)
/// and notes each one's group and arrival time in `seen`; `what` names the step in a
/// failure (a deadline passed, or the track ended).
pub async fn note_arrivals(
    r: &mut TrackReader,
    seen: &mut Vec<(u64, Instant)>,
    count: usize,
    what: &str,
) {
    let until = seen.len() + count;
    while seen.len() < until {
        let o =
            within(what, r.next_object()).await.unwrap_or_else(|| panic!("{what}: track ended"));
        seen.push((o.group_id, Instant::now()));
    }
}

/// The longest time between two arrivals noted by [`note_arrivals`]: the subscriber's
/// longest frozen stretch.
pub fn longest_gap(seen: &[(u64, Instant)]) -> Duration {
    seen.windows(2).map(|p| p[1].1 - p[0].1).max().unwrap_or_default()
}
