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

/// Through a real session: objects captured long ago (past the relay's 800 ms end-to-end
/// capture-age budget) on a subscription with a delivery timeout are dropped by the
/// relay's send scheduler toward that subscriber, and `/metrics` counts them under the
/// track's class (audio, from DEFAULT PUBLISHER PRIORITY 16) and `capture_age`.
#[tokio::test]
async fn capture_age_drops_toward_a_subscriber_reach_metrics() {
    use tiermesh_client::moq::{Event, SubscribeOptions};
    use tiermesh_proto::data::ObjectStatus;
    use tiermesh_proto::ext::Extensions;

    let relay = relay(config()).await;
    let publisher = connect(&relay, "moqt").await;
    within("publish_namespace", publisher.publish_namespace(ns(), None)).await.unwrap();
    let (tx, mut writers) = tokio::sync::mpsc::unbounded_channel();
    let p = publisher.clone();
    tokio::spawn(async move {
        while let Some(e) = p.next_event().await {
            if let Event::Subscribe(r) = e {
                let audio =
                    Extensions { default_publisher_priority: Some(16), ..Default::default() };
                if let Ok(w) = r.accept(audio, None).await {
                    let _ = tx.send(w);
                }
            }
        }
    });
    let sub = connect(&relay, "moqt").await;
    let options =
        SubscribeOptions { delivery_timeout: Some(Duration::from_secs(2)), ..Default::default() };
    let _r = within("subscribe", sub.subscribe(track("audio"), options)).await.unwrap();
    let w = within("upstream", writers.recv()).await.unwrap();
    let long_ago =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros()
            as u64
            - 5_000_000;
    for g in 0..3 {
        let mut e = Extensions::default();
        tiermesh_proto::loc::set_capture_timestamp_us(&mut e, long_ago + g);
        let mut s = w.open_subgroup(g, 0, None);
        s.write(0, &e, ObjectStatus::Normal, payload(g, 0)).unwrap();
        s.finish();
    }
    let series = "tiermesh_objects_dropped_total{class=\"audio\",reason=\"capture_age\"}";
    within_for("drops in /metrics", Duration::from_secs(15), async {
        loop {
            if value(&scrape(&relay).await, series).is_some_and(|v| v >= 1.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    relay.shutdown().await;
}
