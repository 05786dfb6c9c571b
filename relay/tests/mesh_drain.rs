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
use mesh_common::{
    longest_gap, mesh_config, mesh_url, node_dir, note_arrivals, publish_every_10ms,
    subscribe_when_routed,
};

#[tokio::test]
async fn a_peer_sent_away_links_to_the_named_relay_and_keeps_its_route() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tiermesh_certs::ca::generate("drain mesh").unwrap();
    let x1 = relay(mesh_config("x1", "r2", node_dir(&ca, dir.path(), "x1"), &[], 100)).await;
    let to_x1 = [("x1", "r2", mesh_url(&x1))];
    // x2 advertises its mesh address, so it needs its port before it binds.
    let x2_port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut x2_config = mesh_config("x2", "r2", node_dir(&ca, dir.path(), "x2"), &to_x1, 100);
    let x2_mesh = x2_config.mesh.as_mut().unwrap();
    x2_mesh.listen = format!("127.0.0.1:{x2_port}").parse().unwrap();
    x2_mesh.advertise = Some(format!("moqt://127.0.0.1:{x2_port}"));
    let x2 = relay(x2_config).await;
    let p = relay(mesh_config("p", "r1", node_dir(&ca, dir.path(), "p"), &to_x1, 100)).await;
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
    note_arrivals(&mut r, &mut seen, 20, "object before").await;

    let drained = Instant::now();
    let drain = tokio::spawn(x1.drain());
    note_arrivals(&mut r, &mut seen, 50, "object after the drain").await;
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
    let freeze = longest_gap(&seen);
    println!("drain of x1: longest gap at p's subscriber {freeze:?}, drain took {drain_took:?}");
    assert!(freeze < Duration::from_secs(2), "freeze {freeze:?}");
    p.shutdown().await;
    x2.shutdown().await;
}
