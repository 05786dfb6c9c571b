//! A mesh link runs the relay's own `congestion` controller at each end, like its client
//! sessions, and keeps the mesh's 64 kB initial window with a controller that takes one.
//!
//! Two relays on loopback with mutual TLS from a generated mesh CA: A in region r1, B in r2
//! dialling A. A is set to `delay`, B to `newreno`, so each end of the one link must show
//! its own relay's setting (A's end is the listener's connection, B's the dialer's), and
//! both start above their controllers' own initial windows. Media from a publisher at A
//! reaches a subscriber at B over that link. A pair left at the default shows the default
//! controller (`cubic`).

mod common;
mod mesh_common;

use common::*;
use mesh_common::{mesh_config, mesh_url, node_dir, publish_every_10ms, subscribe_when_routed};
use tiermesh_client::transport::CongestionControl;
use tiermesh_relay::RelayHandle;
use tiermesh_relay::config::RelayConfig;

/// A mesh relay named `name` in `region` with `congestion`, linking to `peers`.
fn node_config(
    name: &str,
    region: &str,
    dir: std::path::PathBuf,
    peers: &[(&str, &str, String)],
    congestion: Option<CongestionControl>,
) -> RelayConfig {
    let mut c = mesh_config(name, region, dir, peers, 100);
    if let Some(cc) = congestion {
        c.congestion = cc;
    }
    c
}

/// Relays A and B, B linked to A, with the given controllers; waits for the link.
async fn pair(
    dir: &std::path::Path,
    a_cc: Option<CongestionControl>,
    b_cc: Option<CongestionControl>,
) -> (RelayHandle, RelayHandle) {
    let ca = tiermesh_certs::ca::generate("test mesh").unwrap();
    let a = relay(node_config("a", "r1", node_dir(&ca, dir, "a"), &[], a_cc)).await;
    let b_peers = [("a", "r1", mesh_url(&a))];
    let b = relay(node_config("b", "r2", node_dir(&ca, dir, "b"), &b_peers, b_cc)).await;
    eventually("link up", || a.mesh_peers().len() == 1 && b.mesh_peers().len() == 1).await;
    (a, b)
}

/// The labels and value of `name{peer="<peer>",...}` in the relay's `/metrics` text.
fn link_metric(relay: &RelayHandle, name: &str, peer: &str) -> Option<(String, f64)> {
    let text = relay.metrics().render();
    let prefix = format!("{name}{{peer=\"{peer}\"");
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(&prefix)?;
        let (labels, value) = rest.split_once("} ")?;
        Some((labels.to_owned(), value.trim().parse().ok()?))
    })
}

/// The controller label of the relay's link to `peer`.
fn controller(relay: &RelayHandle, peer: &str) -> Option<String> {
    let (labels, up) = link_metric(relay, "tiermesh_mesh_link_congestion_controller", peer)?;
    assert_eq!(up, 1.0);
    let name = labels.strip_prefix(",controller=\"")?.strip_suffix('"')?;
    Some(name.to_owned())
}

#[tokio::test]
async fn each_end_of_a_mesh_link_runs_its_relays_controller() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) =
        pair(dir.path(), Some(CongestionControl::Delay), Some(CongestionControl::NewReno)).await;
    assert_eq!(controller(&a, "b").as_deref(), Some("delay"), "A's end (the listener's)");
    assert_eq!(controller(&b, "a").as_deref(), Some("newreno"), "B's end (the dialer's)");
    // NewReno takes the mesh's initial window: quinn's own is 12 000 bytes, and an idle
    // link on loopback neither grows nor cuts it.
    let (_, window) =
        link_metric(&b, "tiermesh_mesh_link_congestion_window_bytes", "a").expect("B's window");
    assert!(window >= 64_000.0, "B's end starts at the 64 kB mesh window, not {window} bytes");
    let (_, a_window) =
        link_metric(&a, "tiermesh_mesh_link_congestion_window_bytes", "b").expect("A's window");
    eprintln!("idle link's congestion window: A (delay) {a_window}, B (newreno) {window}");
    // `delay` takes it too: it starts above its own 14 720 bytes (a slow-start exit on a
    // loopback RTT spike may halve the 64 kB, never bring it back to 14 720).
    assert!(a_window > 14_720.0, "A's delay end did not get the mesh window: {a_window} bytes");

    // Media crosses the link, sent by A's delay controller.
    let mut publisher = publisher(&a, "moqt", None).await;
    let sub = connect(&b, "moqt").await;
    let mut reader = subscribe_when_routed(&b, &sub).await;
    let first = within("upstream at the publisher", publisher.writers.recv()).await.unwrap();
    let (stop, task) = publish_every_10ms(publisher, first);
    let seen = expect_objects(&mut reader, 50).await;
    assert_eq!(seen.len(), 50, "objects from A reach B's subscriber over the delay link");
    let _ = stop.send(());
    let _ = task.await;
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test]
async fn mesh_links_run_the_default_controller_when_none_is_set() {
    use clap::ValueEnum as _;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(dir.path(), None, None).await;
    let default = RelayConfig::default().congestion.to_possible_value().unwrap();
    assert_eq!(controller(&a, "b").as_deref(), Some(default.get_name()));
    assert_eq!(controller(&b, "a").as_deref(), Some(default.get_name()));
    b.shutdown().await;
    a.shutdown().await;
}
