//! Guards how drops reach the ops listener: objects a send scheduler drops (a real
//! `scheduler::Scheduler` past an audio object's delivery timeout) are counted in
//! `/metrics` under their track class and reason, and only the new ones each time a
//! snapshot of the scheduler's stats is added.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use tiermesh_client::scheduler::{
    Object, Scheduler, SchedulerConfig, SendBudget, StreamKey, StreamSpec, TrackClass, TrackKey,
};
use tiermesh_relay::RelayHandle;

/// `GET /metrics` on the ops listener.
async fn scrape(relay: &RelayHandle) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(relay.ops_addr()).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: ops\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()
}

fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn scheduler_drops_show_in_metrics_by_class_and_reason() {
    let relay = relay(config()).await;
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let mut before = s.stats().clone();
    // Two audio objects with a 400 ms delivery timeout and no room to send them in time.
    let spec = StreamSpec::new(TrackKey(1), TrackClass::Audio, 9, 0)
        .priority(128, 16)
        .delivery_timeout(Some(Duration::from_millis(400)))
        .header(Bytes::from_static(b"hdr"));
    s.open_stream(StreamKey(1), spec).unwrap();
    for _ in 0..2 {
        let o = Object::new(t0, Bytes::from_static(&[0xAA; 4]), Bytes::from(vec![7u8; 100]));
        s.push_object(StreamKey(1), o).unwrap();
    }
    let mut room =
        SendBudget { cwnd: 1 << 30, cwnd_available: 1 << 30, buffered: 0, send_rate_bps: 0 };
    let late = t0 + Duration::from_millis(400);
    while s.poll_send(late, &mut room).is_some() {}

    let m = relay.metrics();
    m.add_scheduler_drops(&before, s.stats());
    let series = "tiermesh_objects_dropped_total{class=\"audio\",reason=\"delivery_timeout\"}";
    let text = scrape(&relay).await;
    // The first is dropped for its delivery timeout, the second with its reset subgroup.
    assert_eq!(value(&text, series), Some(1.0), "{text}");
    let reset = "tiermesh_objects_dropped_total{class=\"audio\",reason=\"reset\"}";
    assert_eq!(value(&text, reset), Some(1.0), "{text}");
    let video = "tiermesh_objects_dropped_total{class=\"video0\",reason=\"delivery_timeout\"}";
    assert_eq!(value(&text, video), Some(0.0), "other classes untouched");
    // The same snapshot again adds nothing.
    before = s.stats().clone();
    m.add_scheduler_drops(&before, s.stats());
    assert_eq!(value(&scrape(&relay).await, series), Some(1.0));
    relay.shutdown().await;
}
