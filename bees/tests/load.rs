//! Guards `tiermesh bees` end to end: a small load against a real relay (in this process,
//! on loopback) with a synthetic publisher connects every subscriber, delivers objects on
//! every track with nothing missing, and its JSON report round-trips, merges across shards
//! with counts that add up, and renders as HTML with SVG plots.

use std::time::Duration;

use tiermesh_bees::cli::merge_files;
use tiermesh_bees::load::{self, LoadConfig};
use tiermesh_bees::report::Report;
use tiermesh_client::cli::BroadcastUrl;
use tiermesh_client::moq::{self, ClientOptions};
use tiermesh_client::publish::{Publisher, now_us};
use tiermesh_client::synthetic::BroadcastSpec;
use tiermesh_client::transport::ClientTls;
use tiermesh_relay::config::RelayConfig;
use tiermesh_relay::{Relay, RelayHandle};

/// One load at a time: two at once on a two-core machine measure each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn relay() -> RelayHandle {
    let mut config = RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ops: "127.0.0.1:0".parse().unwrap(),
        ..RelayConfig::default()
    };
    config.tls.generate = true;
    config.auth.public = vec!["bench".parse().unwrap()];
    config.auth.public_publish = config.auth.public.clone();
    Relay::start(config).await.unwrap()
}

fn config(relay: &RelayHandle, path: &str, subscribers: u64, publishers: u64) -> LoadConfig {
    LoadConfig {
        targets: vec![
            BroadcastUrl::parse(&format!("moqt://{}/{path}", relay.local_addr())).unwrap(),
        ],
        tls: ClientTls::pinned(relay.cert_hash()),
        token: None,
        subscribers,
        publishers,
        rate: 40.0,
        duration: Duration::from_secs(5),
        tracks: vec!["audio".into(), "video/180p".into()],
        stall: Duration::from_millis(200),
        shard: (0, 1),
        relay_pid: Some(std::process::id()),
        progress: false,
        object_bytes: None,
    }
}

/// SUBSCRIBEs (with their joining FETCH) the relay may leave unanswered (bees gives up
/// after 5 s: "no answer in time"): none since the relay's join race was fixed, so any is a
/// regression. A joining subscriber's miss of the object at its join point stays bounded
/// below (at most one per subscription).
const UNANSWERED_MAX: u64 = 0;

fn assert_clean(report: &Report, subscribers: u64) {
    let s = &report.subscribers;
    assert_eq!(
        (s.started, s.connected, s.failed),
        (subscribers, subscribers, 0),
        "{}",
        report.to_table()
    );
    assert!(s.subscribed + UNANSWERED_MAX >= subscribers, "{}", report.to_table());
    for e in report.errors.keys() {
        assert!(e.ends_with("no answer in time"), "{}", report.to_table());
    }
    for name in ["audio", "video/180p"] {
        let t = &report.tracks[name];
        assert!(t.subscriptions + UNANSWERED_MAX >= subscribers, "{name}");
        // 5 s minus a 0.5 s ramp: well over 100 audio frames and 60 video frames each.
        assert!(t.objects > t.subscriptions * 60, "{name}: {t:?}");
        // At most the join-point object of each subscription (issue 2 above).
        assert!(t.missing_objects <= t.subscriptions, "{name}: {t:?}");
        // A group is only lost when the relay expires it (audio's delivery timeout is
        // 400 ms): on loopback that happens only if the shared test machine starves the
        // relay of CPU for that long. Allow 2 % of audio's 50 groups a second for that.
        assert!(t.missing_groups * 50 <= t.objects, "{name}: {t:?}");
        let l = tiermesh_bees::report::quantiles_ms(&t.latency_us).unwrap();
        assert!(l.p50 < 500.0, "{name}: {l:?}");
        assert_eq!(t.first_object_us.count(), t.subscriptions, "{name}");
    }
    assert_eq!(report.connect_us.count(), subscribers);
    assert!(report.timeline.len() >= 4, "{:?}", report.timeline.keys());
}

fn assert_clean_merged(report: &Report, subscribers: u64) {
    assert_clean(report, subscribers);
    assert_eq!(report.relays.len(), 2, "each shard measured the relay");
}

/// 20 subscribers and the publisher run by bees itself, on one relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_run_connects_everyone_and_loses_nothing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let _one = ONE_AT_A_TIME.lock().await;
    let relay = relay().await;
    let report = load::run(config(&relay, "bench/one", 20, 1)).await.unwrap();
    println!("{}", report.to_table());
    assert_clean(&report, 20);
    assert_eq!(report.relays.len(), 1);
    assert_eq!(report.shards[0].publishers, 1);
    let peak = report.timeline.values().map(|p| p.subscribers).max().unwrap();
    assert!(peak + UNANSWERED_MAX >= 20 && peak <= 20, "{peak}");

    // Counts survive JSON exactly; floats to within serde_json's last-digit parsing.
    let back: Report = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(back.subscribers, report.subscribers);
    assert_eq!(back.connect_us, report.connect_us);
    for (name, t) in &report.tracks {
        assert_eq!((back.tracks[name].objects, back.tracks[name].bytes), (t.objects, t.bytes));
        assert_eq!(back.tracks[name].latency_us, t.latency_us);
    }
    assert_eq!(back.timeline.len(), report.timeline.len());
    let page = tiermesh_bees::html::render(&report);
    assert!(page.matches("<svg").count() >= 3, "latency, subscribers, bit rate");
    assert!(page.contains("Latency") && page.contains("video/180p"));
    assert!(!page.contains("<script"));
    relay.shutdown().await;
}

/// Two shards of 10 against one publisher merge into the report of 20.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_merge_into_one_report() {
    let _one = ONE_AT_A_TIME.lock().await;
    let relay = relay().await;
    let url: BroadcastUrl = format!("moqt://{}/bench/shared", relay.local_addr()).parse().unwrap();
    let (conn, driver) =
        moq::connect(url.url(), ClientOptions::new(ClientTls::pinned(relay.cert_hash())))
            .await
            .unwrap();
    tokio::spawn(driver.run());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let publisher = tokio::spawn(async move {
        let mut p = Publisher::new(url.namespace, BroadcastSpec::default(), now_us(), None);
        let _ = p
            .serve(&conn, tokio::time::sleep(Duration::from_secs(20)), || {
                let _ = tx.send(());
            })
            .await;
    });
    tokio::time::timeout(Duration::from_secs(10), rx).await.unwrap().unwrap();

    let mut a = config(&relay, "bench/shared", 20, 0);
    a.shard = (0, 2);
    let mut b = a.clone();
    b.shard = (1, 2);
    let (a, b) = tokio::join!(load::run(a), load::run(b));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!((a.subscribers.started, b.subscribers.started), (10, 10));

    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.json"), dir.path().join("b.json"));
    std::fs::write(&pa, a.to_json()).unwrap();
    std::fs::write(&pb, b.to_json()).unwrap();
    let all = merge_files(&[pa, pb]).unwrap();
    println!("{}", all.to_table());
    assert_clean_merged(&all, 20);
    assert_eq!(all.shards.len(), 2);
    for name in ["audio", "video/180p"] {
        assert_eq!(all.tracks[name].objects, a.tracks[name].objects + b.tracks[name].objects);
        assert_eq!(all.tracks[name].bytes, a.tracks[name].bytes + b.tracks[name].bytes);
    }
    let objects = |r: &Report| r.timeline.values().map(|p| p.objects).sum::<u64>();
    assert_eq!(objects(&all), objects(&a) + objects(&b));
    assert!(all.to_table().contains("2 shards"));
    assert!(tiermesh_bees::html::render(&all).contains("<polyline"));

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{}").unwrap();
    let e = format!("{:#}", merge_files(&[bad]).unwrap_err());
    assert!(e.contains("not a tiermesh bees JSON report"), "{e}");
    publisher.abort();
    relay.shutdown().await;
}
