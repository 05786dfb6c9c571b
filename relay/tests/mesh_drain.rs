//! Draining a relay of the mesh: its GOAWAY names another relay of its region to the peers
//! that dialled it, and they link there and keep their routes.
//!
//! x1 and x2 in region r2 (x2 advertises its mesh address), p in region r1 linked to x1
//! only. A publisher at x2, a subscriber at p: the track crosses p - x1 - x2. Draining x1
//! sends p a GOAWAY naming x2; p dials x2, its route moves to p - x2 and the subscriber's
//! objects keep coming, none duplicated or reordered; x1's drain ends once its links went.

mod common;
mod mesh_common;

use std::time::{Duration, Instant};

use common::*;
use mesh_common::{node_dir, publish_every_10ms, subscribe_when_routed};
use tiermesh_relay::config::{MeshConfig, MeshPeer, RelayConfig};

/// A relay of region `region` whose mesh listens on `port` (0: any) and links to `peers`
/// (name, region, mesh port).
fn mesh_config(
    name: &str,
    region: &str,
    dir: std::path::PathBuf,
    port: u16,
    advertise: bool,
    peers: &[(&str, &str, u16)],
) -> RelayConfig {
    let mut c = config();
    c.mesh = Some(MeshConfig {
        name: name.into(),
        region: region.into(),
        url: format!("moqt://{name}.example:4443"),
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        dir,
        peers: peers
            .iter()
            .map(|(n, r, p)| MeshPeer {
                name: (*n).into(),
                region: (*r).into(),
                addr: format!("moqt://127.0.0.1:{p}"),
            })
            .collect(),
        intra_cost: 10,
        inter_cost: 100,
        seeds: Vec::new(),
        advertise: advertise.then(|| format!("moqt://127.0.0.1:{port}")),
        discover: Default::default(),
        client_regions: Default::default(),
    });
    c
}

#[tokio::test]
async fn a_peer_sent_away_links_to_the_named_relay_and_keeps_its_route() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tiermesh_certs::ca::generate("drain mesh").unwrap();
    let x1 = relay(mesh_config("x1", "r2", node_dir(&ca, dir.path(), "x1"), 0, false, &[])).await;
    let x1_port = x1.mesh_addr().unwrap().port();
    // x2 advertises its mesh address, so it needs its port before it binds.
    let x2_port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let x2_dir = node_dir(&ca, dir.path(), "x2");
    let x2 = relay(mesh_config("x2", "r2", x2_dir, x2_port, true, &[("x1", "r2", x1_port)])).await;
    let p_dir = node_dir(&ca, dir.path(), "p");
    let p = relay(mesh_config("p", "r1", p_dir, 0, false, &[("x1", "r2", x1_port)])).await;
    eventually("links up", || x1.mesh_peers().len() == 2).await;

    let mut publisher = publisher(&x2, "moqt", None).await;
    let through_x1 = Some(vec!["p".to_owned(), "x1".to_owned(), "x2".to_owned()]);
    eventually("p routes through x1", || p.mesh_route(&ns()) == through_x1).await;
    let sub = connect(&p, "moqt").await;
    let mut r = subscribe_when_routed(&p, &sub).await;
    let w = within("upstream", publisher.writers.recv()).await.unwrap();
    // On every subscription x2 gets.
    let (stop_tx, pub_task) = publish_every_10ms(publisher, w);
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let o = within("object before", r.next_object()).await.unwrap();
        seen.push((o.group_id, Instant::now()));
    }

    let drained = Instant::now();
    let drain = tokio::spawn(x1.drain());
    let before = seen.len();
    while seen.len() < before + 50 {
        let o = within("object after the drain", r.next_object()).await.expect("track ended");
        seen.push((o.group_id, Instant::now()));
    }
    within("x1's drain ends", drain).await.unwrap();
    let drain_took = drained.elapsed();
    let through_x2 = Some(vec!["p".to_owned(), "x2".to_owned()]);
    eventually("p routes through x2", || p.mesh_route(&ns()) == through_x2).await;
    assert_eq!(p.mesh_peers(), vec!["x2".to_owned()], "p linked to the relay GOAWAY named");
    assert_eq!(p.upstream_subscriptions(), 1);
    let _ = stop_tx.send(());
    let _publisher = pub_task.await.unwrap();
    for pair in seen.windows(2) {
        assert!(pair[1].0 > pair[0].0, "group {} after {}: repeated", pair[1].0, pair[0].0);
    }
    let freeze = seen.windows(2).map(|w| w[1].1 - w[0].1).max().unwrap();
    println!("drain of x1: longest gap at p's subscriber {freeze:?}, drain took {drain_took:?}");
    assert!(freeze < Duration::from_secs(2), "freeze {freeze:?}");
    p.shutdown().await;
    x2.shutdown().await;
}
