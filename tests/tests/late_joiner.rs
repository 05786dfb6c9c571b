//! Guards joining at a key frame at once: while one subscriber keeps a track flowing
//! through the relay, a second one that joins later receives, within a fraction of a
//! second, the current group from its first object (the key frame) by the joining FETCH
//! served from the relay's cache, and then the live objects, with nothing missing.

use std::time::Duration;

use tiermesh_tests::{Relay, metric, start_pub, sub_json, wait_metrics};

#[test]
fn late_joiner_starts_at_a_key_frame_at_once() {
    let relay = Relay::start(&["--public", "e2e", "--public-publish", "e2e"]).unwrap();
    let url = relay.url("moqt", "e2e/late");
    let _publisher = start_pub("pub", &url, &relay.pin()).unwrap();
    let mut first_args =
        vec![url.clone(), "--track".into(), "video/180p".into(), "--duration".into(), "8s".into()];
    first_args.extend(relay.pin());
    let first = std::thread::spawn(move || {
        sub_json("first", &first_args, Duration::from_secs(60)).unwrap()
    });
    // Only video/180p flows through the relay: 31 objects received guarantee that a group
    // has started since the relay subscribed, so its cache holds a whole group's head.
    wait_metrics(&relay, Duration::from_secs(20), |m| {
        metric(m, "tiermesh_objects_received_total").unwrap_or(0.0) >= 31.0
    })
    .unwrap();
    let mut args =
        vec![url, "--track".into(), "video/180p".into(), "--duration".into(), "2s".into()];
    args.extend(relay.pin());
    let (report, ok, late) = sub_json("late", &args, Duration::from_secs(60)).unwrap();
    assert!(ok, "{}", late.dump());
    let t = &report.unwrap().tracks[0];
    assert_eq!(t.name, "video/180p");
    assert_eq!(t.first_object, Some(0), "starts at the key frame: {t:?}");
    assert!(t.fetched_objects >= 1, "the group's head came by the joining FETCH: {t:?}");
    assert!(t.first_object_ms.unwrap() < 500.0, "at once: {t:?}");
    assert_eq!((t.missing_objects, t.missing_groups), (0, 0), "{t:?}");
    assert!(t.objects >= 45, "{t:?}");
    let (report, ok, p) = first.join().unwrap();
    assert!(ok, "{}", p.dump());
    assert!(report.unwrap().tracks[0].objects > 0);
}
