//! Guards the ops listener as a scraper and a load balancer see it: real HTTP over loopback,
//! `/metrics` in valid Prometheus text format with the relay's counters in it, and `/healthz`
//! that turns 503 while the relay drains.

use std::sync::Arc;
use std::time::Duration;

use tiermesh_relay::auth::Action;
use tiermesh_relay::metrics::{DropReason, Metrics, TrackClass};
use tiermesh_relay::ops::{self, Health, HealthState};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const DEADLINE: Duration = Duration::from_secs(10);

/// One HTTP/1.1 GET; returns (status code, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    tokio::time::timeout(DEADLINE, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response.split(' ').nth(1).unwrap().parse().unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.to_ascii_lowercase().contains("content-type: text/plain"), "{head}");
        (status, body.to_owned())
    })
    .await
    .expect("ops listener answered within the deadline")
}

#[tokio::test]
async fn metrics_and_healthz_over_loopback() {
    let metrics = Arc::new(Metrics::new());
    let health = Health::new();
    let server =
        ops::serve("127.0.0.1:0".parse().unwrap(), metrics.clone(), health.clone()).await.unwrap();
    let addr = server.local_addr();

    metrics.sessions.inc();
    metrics.object_in(TrackClass::Video(1), 1200);
    metrics.object_out(TrackClass::Audio, 160);
    metrics.dropped(TrackClass::Video(2), DropReason::Congestion);
    metrics.observe_forward_delay(Duration::from_micros(300));
    metrics.auth_refused(Action::Subscribe);

    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("tiermesh_sessions 1\n"), "{body}");
    assert!(body.contains("tiermesh_bytes_received_total{class=\"video1\"} 1200\n"));
    assert!(body.contains("tiermesh_objects_sent_total{class=\"audio\"} 1\n"));
    assert!(
        body.contains("tiermesh_objects_dropped_total{class=\"video2\",reason=\"congestion\"} 1\n")
    );
    assert!(body.contains("tiermesh_forward_delay_seconds_bucket{le=\"0.0005\"} 1\n"));
    assert!(body.contains("tiermesh_auth_refused_total{action=\"subscribe\"} 1\n"));

    let (status, body) = get(addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    health.set(HealthState::Draining);
    let (status, body) = get(addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (503, "draining\n"));

    let (status, _) = get(addr, "/nope").await;
    assert_eq!(status, 404);

    server.shutdown().await;
    // After shutdown the port no longer answers.
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "listener still accepting after shutdown");
}

#[tokio::test]
async fn a_silent_connection_does_not_block_others() {
    let server =
        ops::serve("127.0.0.1:0".parse().unwrap(), Arc::new(Metrics::new()), Health::new())
            .await
            .unwrap();
    let _silent = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    let (status, _) = get(server.local_addr(), "/healthz").await;
    assert_eq!(status, 200);
}
