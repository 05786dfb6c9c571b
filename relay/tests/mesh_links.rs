//! The regional mesh on loopback with real QUIC and mutual TLS from a generated mesh CA:
//! A in region r1, B and C in region r2, links A–B, B–C and A–C (C's inter-region links cost
//! 300, so C's best route to A goes through B).
//!
//! - a publisher at A reaches subscribers at C through the mesh, with one upstream
//!   subscription per track at every relay however many subscribers C has;
//! - a relay whose certificate comes from another CA, or a client without a certificate,
//!   is refused on the mesh port;
//! - when B dies, C's subscription moves to the direct link without the subscriber doing
//!   anything, with no object duplicated or reordered (the freeze is printed).

mod common;
mod mesh_common;

use std::time::{Duration, Instant};

use common::*;
use mesh_common::{
    direct_route, longest_gap, mesh_config, mesh_url, node_dir, note_arrivals, publish_every_10ms,
    subscribe_when_routed,
};
use tiermesh_client::moq::{self, ClientOptions, SubscribeOptions};
use tiermesh_client::transport::{ClientTls, Url};
use tiermesh_relay::RelayHandle;

struct Mesh3 {
    a: RelayHandle,
    b: RelayHandle,
    c: RelayHandle,
    _dir: tempfile::TempDir,
}

async fn mesh3() -> Mesh3 {
    let dir = tempfile::tempdir().unwrap();
    let ca = tiermesh_certs::ca::generate("test mesh").unwrap();
    let a = relay(mesh_config("a", "r1", node_dir(&ca, dir.path(), "a"), &[], 100)).await;
    let b = relay(mesh_config(
        "b",
        "r2",
        node_dir(&ca, dir.path(), "b"),
        &[("a", "r1", mesh_url(&a))],
        100,
    ))
    .await;
    let c = relay(mesh_config(
        "c",
        "r2",
        node_dir(&ca, dir.path(), "c"),
        &[("b", "r2", mesh_url(&b)), ("a", "r1", mesh_url(&a))],
        300,
    ))
    .await;
    eventually("links up", || c.mesh_peers().len() == 2 && b.mesh_peers().len() == 2).await;
    Mesh3 { a, b, c, _dir: dir }
}

/// Waits until C's best route to the broadcast goes through B (the routes converged).
async fn routed_through_b(m: &Mesh3) {
    let want = Some(vec!["c".to_owned(), "b".to_owned(), "a".to_owned()]);
    eventually("C routes through B", || m.c.mesh_route(&ns()) == want).await;
}

#[tokio::test]
async fn publisher_at_a_reaches_subscribers_at_c_once_per_link() {
    let m = mesh3().await;
    let mut publisher = publisher(&m.a, "moqt", None).await;
    routed_through_b(&m).await;
    let mut readers = Vec::new();
    for scheme in ["moqt", "https", "moqt"] {
        let sub = connect(&m.c, scheme).await;
        let r = subscribe_when_routed(&m.c, &sub).await;
        readers.push((sub, r));
    }
    let w = within("upstream at the publisher", publisher.writers.recv()).await.unwrap();
    for g in 0..3 {
        write_group(&w, g, 0..20, false);
    }
    for (_, r) in readers.iter_mut() {
        assert_eq!(expect_objects(r, 60).await.len(), 60);
    }
    assert!(publisher.writers.try_recv().is_err(), "a second SUBSCRIBE reached the publisher");
    // One upstream subscription per track at each relay on the path, none at the others.
    assert_eq!(m.c.upstream_subscriptions(), 1, "C subscribes upstream once for 3 subscribers");
    assert_eq!(m.b.upstream_subscriptions(), 1, "B carries the track once");
    assert_eq!(m.a.upstream_subscriptions(), 1);
    assert_eq!(m.c.metrics().subscriptions.get(), 3);
    assert_eq!(m.b.metrics().subscriptions.get(), 1, "B has one downstream: C");
    assert_eq!(m.a.metrics().subscriptions.get(), 1, "A has one downstream: B");
    // Clients never see the routes track.
    let sub = connect(&m.c, "moqt").await;
    let routes = tiermesh_proto::types::FullTrackName::new(
        tiermesh_proto::types::TrackNamespace::from_path(".tiermesh").unwrap(),
        "routes",
    )
    .unwrap();
    assert!(within("routes", sub.subscribe(routes, SubscribeOptions::default())).await.is_err());
    m.c.shutdown().await;
    m.b.shutdown().await;
    m.a.shutdown().await;
}

#[tokio::test]
async fn a_relay_from_another_ca_is_refused() {
    let m = mesh3().await;
    let dir = tempfile::tempdir().unwrap();
    let other = tiermesh_certs::ca::generate("another mesh").unwrap();
    let foreign = node_dir(&other, dir.path(), "x");
    let url: Url =
        format!("moqt://127.0.0.1:{}/.tiermesh?name=x&region=r1", m.a.mesh_addr().unwrap().port())
            .parse()
            .unwrap();
    // Trusting the right CA but presenting a certificate of another CA.
    let good_ca = tiermesh_certs::pem::load_chain(m_dir_ca(&m)).unwrap();
    let identity = tiermesh_certs::mesh::Identity::load(&foreign).unwrap();
    let tls = ClientTls::ca_der(good_ca.iter().map(|c| c.to_vec()).collect())
        .unwrap()
        .with_client_cert_resolver(identity.certs().clone());
    assert!(refused(&url, tls).await, "a certificate from another CA joined the mesh");
    // No certificate at all (what a client has).
    let tls = ClientTls::ca_der(good_ca.iter().map(|c| c.to_vec()).collect()).unwrap();
    assert!(refused(&url, tls).await, "a session without a certificate joined the mesh");
    // The foreign relay itself, configured to dial A, never becomes A's peer.
    let x = relay(mesh_config("x", "r1", foreign, &[("a", "r1", mesh_url(&m.a))], 100)).await;
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        assert!(!m.a.mesh_peers().contains(&"x".to_owned()), "A linked with a foreign relay");
        assert!(x.mesh_peers().is_empty());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    x.shutdown().await;
    m.c.shutdown().await;
    m.b.shutdown().await;
    m.a.shutdown().await;
}

fn m_dir_ca(m: &Mesh3) -> std::path::PathBuf {
    m._dir.path().join("a").join("ca.pem")
}

/// True if a MoQT session to `url` with `tls` fails to set up.
async fn refused(url: &Url, tls: ClientTls) -> bool {
    let result = within("mesh dial", async {
        let (conn, driver) = moq::connect(url, ClientOptions::new(tls)).await?;
        tokio::spawn(driver.run());
        conn.ready().await.map(|_| ())
    })
    .await;
    result.is_err()
}

#[tokio::test]
async fn subscriber_at_c_survives_the_loss_of_b() {
    let m = mesh3().await;
    let mut publisher = publisher(&m.a, "moqt", None).await;
    routed_through_b(&m).await;
    let sub = connect(&m.c, "moqt").await;
    let mut r = subscribe_when_routed(&m.c, &sub).await;
    let w = within("upstream", publisher.writers.recv()).await.unwrap();
    // Each SUBSCRIBE the relay A receives (the re-routed one) gets the stream continued.
    let (stop_tx, pub_task) = publish_every_10ms(publisher, w);
    let mut seen = Vec::new();
    note_arrivals(&mut r, &mut seen, 20, "object before").await;
    let killed = Instant::now();
    m.b.shutdown().await;
    let before = seen.len();
    note_arrivals(&mut r, &mut seen, 30, "object after B died").await;
    let _ = stop_tx.send(());
    let _publisher = pub_task.await.unwrap();
    for pair in seen.windows(2) {
        assert!(
            pair[1].0 > pair[0].0,
            "group {} after group {}: duplicated or reordered",
            pair[1].0,
            pair[0].0
        );
    }
    let freeze = longest_gap(&seen);
    let first_after = seen[before].1 - killed;
    println!(
        "mesh failover: longest gap between objects {freeze:?}, first object after the kill {first_after:?}"
    );
    assert!(freeze < Duration::from_secs(2), "freeze {freeze:?}");
    assert_eq!(m.c.upstream_subscriptions(), 1);
    assert_eq!(m.c.mesh_peers(), vec!["a".to_owned()]);
    m.c.shutdown().await;
    m.a.shutdown().await;
}

/// `GET path` on the ops listener; (status, body).
async fn http_get(relay: &RelayHandle, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(relay.ops_addr()).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: ops\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test]
async fn routing_api_picks_a_relay_by_region() {
    let m = mesh3().await;
    let _publisher = publisher(&m.a, "moqt", None).await;
    let q = |region: &str| format!("/route?broadcast=clinic/room-42/dr-lee&region={region}");
    // Every relay answers alike once the broadcast's and the relays' records reached it.
    for relay in [&m.a, &m.b, &m.c] {
        let body = within("route known", async {
            loop {
                // Until the membership of r2 has reached this relay, r1's relay is the
                // only healthy one it knows.
                let (status, body) = http_get(relay, &q("r2")).await;
                if status == 200 && body.contains("\"region\":\"r2\"") {
                    return body;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["relay"], "b", "{body}");
        assert_eq!(v["region"], "r2");
        assert_eq!(v["url"], "moqt://b.example:4443");
        assert_eq!(v["origin"], "a");
        let (status, body) = http_get(relay, &q("r1")).await;
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["relay"], "a", "{body}");
        assert_eq!(v["url"], "moqt://a.example:4443");
    }
    let (status, body) = http_get(&m.c, "/route?broadcast=nobody/here&region=r2").await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = http_get(&m.c, "/route?region=r2").await;
    assert_eq!(status, 400);
    // Without B, clients of r2 go to C.
    m.b.shutdown().await;
    let body = within("route moves to c", async {
        loop {
            let (_, body) = http_get(&m.a, &q("r2")).await;
            if body.contains("\"relay\":\"c\"") {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(body.contains("moqt://c.example:4443"), "{body}");
    m.c.shutdown().await;
    m.a.shutdown().await;
}

#[tokio::test]
async fn routing_api_maps_client_addresses_to_regions() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tiermesh_certs::ca::generate("test mesh").unwrap();
    let b = relay(mesh_config("b", "r2", node_dir(&ca, dir.path(), "b"), &[], 100)).await;
    let mut config =
        mesh_config("a", "r1", node_dir(&ca, dir.path(), "a"), &[("b", "r2", mesh_url(&b))], 100);
    let regions = &mut config.mesh.as_mut().unwrap().client_regions;
    // Loopback clients (this test) are in r2; 10.9.0.0/16 in r1, except 10.9.7.0/24.
    regions.insert("127.0.0.0/8".into(), "r2".into());
    regions.insert("10.9.0.0/16".into(), "r1".into());
    regions.insert("10.9.7.0/24".into(), "r2".into());
    let a = relay(config).await;
    eventually("linked", || a.mesh_peers().len() == 1).await;
    let _publisher = publisher(&a, "moqt", None).await;
    let route = |q: &str| format!("/route?broadcast=clinic/room-42/dr-lee{q}");
    // No region given: the HTTP client's own address (127.0.0.1) maps to r2, so b.
    let body = within("b known", async {
        loop {
            let (status, body) = http_get(&a, &route("")).await;
            if status == 200 && body.contains("\"relay\":\"b\"") {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["client_region"].as_str(), v["region"].as_str()), (Some("r2"), Some("r2")));
    assert_eq!(v["client_region_from"], "source address");
    // An address given in the query (a front end asking for its client): longest prefix.
    let (status, body) = http_get(&a, &route("&addr=10.9.1.2")).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["relay"].as_str(), v["client_region_from"].as_str()), (Some("a"), Some("addr")));
    let (_, body) = http_get(&a, &route("&addr=10.9.7.20")).await;
    assert!(body.contains("\"relay\":\"b\""), "{body}");
    // An explicit region wins over any address.
    let (_, body) = http_get(&a, &route("&region=r1&addr=10.9.7.20")).await;
    assert!(body.contains("\"relay\":\"a\""), "{body}");
    // Addresses no prefix covers, and bad addresses, are refused with the reason.
    let (status, body) = http_get(&a, &route("&addr=192.168.1.1")).await;
    assert_eq!(status, 400);
    assert!(body.contains("does not cover"), "{body}");
    let (status, body) = http_get(&a, &route("&addr=not-an-ip")).await;
    assert_eq!(status, 400);
    assert!(body.contains("not an IP address"), "{body}");
    // B has no map: a loopback client must name its region.
    let (status, body) = http_get(&b, &route("")).await;
    assert_eq!(status, 400, "{body}");
    a.shutdown().await;
    b.shutdown().await;
    // A prefix that is not one stops the relay at start-up, naming the key.
    let mut bad = mesh_config("c", "r1", node_dir(&ca, dir.path(), "c"), &[], 100);
    bad.mesh.as_mut().unwrap().client_regions.insert("10.0.0.0/40".into(), "r1".into());
    let Err(err) = tiermesh_relay::Relay::start(bad).await else {
        panic!("a bad prefix is refused");
    };
    assert!(err.to_string().contains("mesh.client_regions"), "{err}");
}

#[tokio::test]
async fn a_better_route_takes_over_without_a_gap() {
    let (m, publisher, mut r, w) = direct_route().await;
    let (stop_tx, pub_task) = publish_every_10ms(publisher, w);
    let mut seen = Vec::new();
    note_arrivals(&mut r, &mut seen, 20, "object before").await;
    let b = m.better_route_through_b().await;
    note_arrivals(&mut r, &mut seen, 30, "object after the move").await;
    let _ = stop_tx.send(());
    let _publisher = pub_task.await.unwrap();
    for pair in seen.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "every group once, in order: {pair:?}");
    }
    let gap = longest_gap(&seen);
    println!("make-before-break move to a better route: longest gap between objects {gap:?}");
    assert!(gap < Duration::from_millis(500), "gap {gap:?}");
    assert_eq!(m.c.upstream_subscriptions(), 1);
    m.c.shutdown().await;
    b.shutdown().await;
    m.a.shutdown().await;
}
