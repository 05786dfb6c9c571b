//! Guards the relay's linger period as subscribers see it: a publisher process that is
//! killed and replaced within the linger period continues its subscribers' tracks (same
//! subscription, later groups keep arriving, nothing ends), and one that is not replaced
//! ends them (PUBLISH_DONE reaches the subscriber, which stops early).

use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tiermesh_tests::{Proc, Relay, Report, metric, start_pub, sub_json, wait_metrics};

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

/// A relay with `--linger linger`, `tiermesh pub` publishing `broadcast` on it and
/// `tiermesh sub` reading its audio for `sub_for` (in a thread), once the relay has sent 25
/// objects.
struct Watched {
    relay: Relay,
    url: String,
    publisher: Proc,
    watcher: JoinHandle<(Option<Report>, bool, Proc)>,
}

fn watched(linger: &str, broadcast: &str, sub_for: &str) -> Watched {
    let relay =
        Relay::start(&["--public", "e2e", "--public-publish", "e2e", "--linger", linger]).unwrap();
    let url = relay.url("moqt", broadcast);
    let publisher = start_pub("pub1", &url, &relay.pin()).unwrap();
    let mut args =
        vec![url.clone(), "--track".into(), "audio".into(), "--duration".into(), sub_for.into()];
    args.extend(relay.pin());
    let watcher =
        std::thread::spawn(move || sub_json("sub", &args, Duration::from_secs(60)).unwrap());
    wait_metrics(&relay, Duration::from_secs(20), |m| {
        metric(m, "tiermesh_objects_sent_total").unwrap_or(0.0) >= 25.0
    })
    .unwrap();
    Watched { relay, url, publisher, watcher }
}

#[test]
fn publisher_back_within_linger_continues_the_tracks() {
    let Watched { relay, url, publisher: mut first, watcher } =
        watched("10s", "e2e/reconnect", "7s");
    first.kill();
    let killed_us = now_us();
    let _second = start_pub("pub2", &url, &relay.pin()).unwrap();
    let (report, ok, p) = watcher.join().unwrap();
    assert!(ok, "{}", p.dump());
    let audio = &report.unwrap().tracks[0];
    assert_eq!((audio.ended.as_deref(), audio.error.as_deref()), (None, None), "{audio:?}");
    // Audio group IDs are capture time / 20 ms: groups from after the restart arrived.
    let last_us = audio.last_group.unwrap() * 20_000;
    assert!(last_us > killed_us + 1_000_000, "no audio after the restart: {audio:?}");
    assert!(audio.objects >= 150, "{audio:?}");
}

#[test]
fn publisher_gone_past_linger_ends_the_tracks() {
    let Watched { relay: _relay, mut publisher, watcher, .. } = watched("1s", "e2e/gone", "30s");
    publisher.kill();
    let (report, ok, p) = watcher.join().unwrap();
    assert!(ok, "{}", p.dump());
    let report = report.unwrap();
    assert!(report.duration_s < 20.0, "the subscriber stops when its tracks end: {report:?}");
    let audio = &report.tracks[0];
    assert!(audio.ended.is_some(), "PUBLISH_DONE expected: {audio:?}");
    assert!(audio.objects > 0, "{audio:?}");
}
