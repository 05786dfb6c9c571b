//! Guards the whole path through real processes on loopback: `tiermesh pub` → `tiermesh
//! relay` → three `tiermesh sub --json`, once over raw QUIC (moqt://) and once over
//! WebTransport (https://). Every subscriber finds all five tracks in the catalog, receives
//! them without holes in group IDs and with low latency, and the relay's metrics count at
//! least the objects the subscribers received.

use std::time::Duration;

use tiermesh_tests::{Relay, Report, metric, start_pub, sub_json, subscribed_objects};

const VIDEO_FPS: u64 = 30;

fn fan_out(scheme: &str) {
    let relay = Relay::start(&["--public", "e2e", "--public-publish", "e2e"]).unwrap();
    let url = relay.url(scheme, "e2e/fanout");
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
            if t.name == "audio" {
                // 50 frames a second for about 4 s.
                assert!(t.objects >= 150, "{t:?}");
                assert_eq!(t.missing_objects, 0, "{t:?}");
            }
            if t.name == "video/180p" {
                assert!(t.objects >= 75, "{t:?}");
            }
            if t.name.starts_with("video/") {
                // The upper rungs start at their next group (`sub`'s joins): a fresh
                // publisher's first group runs to the end of the next second, so up to 2 s
                // of the 4 s watch can pass before it; at 30 frames a second, at least 45.
                assert!(t.objects >= 45, "{t:?}");
                // Only the head of the first group can be missing: a relay that had just
                // subscribed upstream has nothing older to serve the joining fetch from.
                assert!(t.missing_objects < VIDEO_FPS, "{t:?}");
            }
            if t.name != "catalog" {
                let l = t.latency_ms.unwrap();
                assert!(l.p50 < 100.0 && l.p99 < 500.0, "{}: {l:?}", t.name);
            }
        }
    }
    let received: u64 = reports.iter().map(subscribed_objects).sum();
    let text = relay.metrics().unwrap();
    let sent = metric(&text, "tiermesh_objects_sent_total").unwrap();
    assert!(sent >= received as f64, "relay sent {sent} objects, subscribers got {received}");
    // Objects sent after a subscriber stopped counting are few: a fraction of a second.
    assert!(sent <= received as f64 * 1.2 + 300.0, "relay sent {sent}, subscribers got {received}");
    let bytes = metric(&text, "tiermesh_bytes_sent_total").unwrap();
    let got: u64 = reports.iter().flat_map(|r| &r.tracks).map(|t| t.bytes).sum();
    assert!(bytes > 0.5 * got as f64, "relay sent {bytes} bytes, subscribers got {got}");
}

#[test]
fn three_subscribers_over_raw_quic() {
    fan_out("moqt");
}

#[test]
fn three_subscribers_over_webtransport() {
    fan_out("https");
}
