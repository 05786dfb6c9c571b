//! Guards the relay on the batched transport driver (`tiermesh relay --transport-driver
//! batched`) through real processes on loopback: `tiermesh pub` and three `tiermesh sub`
//! over raw QUIC get every track in full and in order with low latency; a WebTransport
//! subscriber is refused with a reason naming the driver (code 0x10b); a subscriber killed
//! without a word is timed out and its session freed; a subscriber over the session limit
//! learns the refusal's status from the close (code 0x1f7, "rejected with HTTP status 503").

use std::time::Duration;

use tiermesh_tests::{
    Proc, Relay, Report, all_output, metric, start_pub, sub_json, subscribed_objects, wait_metrics,
};

const VIDEO_FPS: u64 = 30;

fn relay(extra: &[&str]) -> Relay {
    let mut args =
        vec!["--public", "e2e", "--public-publish", "e2e", "--transport-driver", "batched"];
    args.extend_from_slice(extra);
    let relay = Relay::start(&args).unwrap();
    assert!(
        relay.proc.stderr().contains("batched transport driver")
            || relay.proc.stdout().contains("batched transport driver"),
        "the relay did not say it runs the batched driver\n{}",
        relay.proc.dump()
    );
    relay
}

fn sessions(text: &str) -> f64 {
    metric(text, "tiermesh_sessions").unwrap_or(-1.0)
}

#[test]
fn three_raw_quic_subscribers_get_every_track_in_full_and_in_order() {
    let relay = relay(&[]);
    let url = relay.url("moqt", "e2e/batched");
    let _publisher = start_pub("pub", &url, &relay.pin()).unwrap();
    let subs: Vec<_> = (0..3)
        .map(|i| {
            let url = url.clone();
            let pin = relay.pin();
            std::thread::spawn(move || {
                let mut args = vec![url, "--duration".to_owned(), "4s".to_owned()];
                args.extend(pin);
                sub_json(&format!("sub{i}"), &args, Duration::from_secs(60)).unwrap()
            })
        })
        .collect();
    let mut reports: Vec<Report> = Vec::new();
    for s in subs {
        let (report, ok, proc) = s.join().unwrap();
        assert!(ok, "sub failed\n{}", proc.dump());
        reports.push(report.unwrap());
    }
    for r in &reports {
        let names: Vec<&str> = r.tracks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["catalog", "audio", "video/180p", "video/360p", "video/720p"]);
        for t in &r.tracks {
            assert_eq!((t.error.as_deref(), t.ended.as_deref()), (None, None), "{t:?}");
            assert_eq!(t.missing_groups, 0, "{t:?}");
            assert_eq!(t.duplicate_objects, 0, "{t:?}");
            if t.name == "audio" {
                assert!(t.objects >= 150, "{t:?}");
                assert_eq!(t.missing_objects, 0, "{t:?}");
            }
            if t.name.starts_with("video/") {
                assert!(t.objects >= 45, "{t:?}");
                // Only the head of the first group can be missing (see relay_fanout.rs).
                assert!(t.missing_objects < VIDEO_FPS, "{t:?}");
            }
            if t.name != "catalog" {
                let l = t.latency_ms.unwrap();
                assert!(l.p50 < 100.0 && l.p99 < 500.0, "{}: {l:?}", t.name);
            }
        }
    }
    let received: u64 = reports.iter().map(subscribed_objects).sum();
    let sent = metric(&relay.metrics().unwrap(), "tiermesh_objects_sent_total").unwrap();
    assert!(sent >= received as f64, "relay sent {sent} objects, subscribers got {received}");
}

#[test]
fn a_webtransport_subscriber_is_refused_with_a_reason() {
    let relay = relay(&[]);
    let mut args =
        vec![relay.url("https", "e2e/batched"), "--duration".to_owned(), "2s".to_owned()];
    args.extend(relay.pin());
    let (_, ok, proc) = sub_json("sub-wt", &args, Duration::from_secs(30)).unwrap();
    assert!(!ok, "a WebTransport subscriber must fail\n{}", proc.dump());
    let out = all_output(&proc);
    assert!(out.contains("0x10b") && out.contains("batched transport driver"), "{out}");
    let log = all_output(&relay.proc);
    assert!(log.contains("WebTransport is not served on this port"), "{log}");
}

#[test]
fn a_vanished_subscriber_is_timed_out_and_a_refused_one_learns_the_status() {
    let relay = relay(&["--idle-timeout", "1s", "--max-sessions", "2"]);
    let url = relay.url("moqt", "e2e/batched");
    let publisher = start_pub("pub", &url, &relay.pin()).unwrap();
    let mut args = vec!["sub".to_owned(), url.clone(), "--duration".to_owned(), "60s".to_owned()];
    args.extend(relay.pin());
    let mut sub = Proc::tiermesh("sub-killed", &args).unwrap();
    wait_metrics(&relay, Duration::from_secs(20), |t| sessions(t) == 2.0).unwrap();

    // The session limit is reached: a third client is closed with the refusal's status.
    let mut third = vec![url.clone(), "--duration".to_owned(), "2s".to_owned()];
    third.extend(relay.pin());
    let (_, ok, proc) = sub_json("sub-refused", &third, Duration::from_secs(30)).unwrap();
    assert!(!ok, "{}", proc.dump());
    let out = all_output(&proc);
    assert!(
        out.contains("0x1f7") && out.contains("rejected with HTTP status 503"),
        "the refusal's code and reason did not come through\n{out}"
    );

    // SIGKILL: no CONNECTION_CLOSE is sent. The relay's idle timeout (1 s) frees it.
    sub.kill();
    wait_metrics(&relay, Duration::from_secs(10), |t| sessions(t) == 1.0).unwrap();
    let log = all_output(&relay.proc);
    assert!(log.contains("the peer went silent (idle timeout)"), "{log}");
    // The publisher's session, busy all along, is still there.
    assert!(publisher.dump().contains("published "), "{}", publisher.dump());
}
