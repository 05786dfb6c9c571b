//! `tiermesh sub --abr` when a video tier stops arriving while the rest of the broadcast
//! flows, as when a publisher drops its top rung (`tiermesh pub` does while its uplink cannot
//! carry it) or a relay keeps holding it back. On loopback: `tiermesh relay` and `tiermesh
//! sub --abr` are processes; the publisher is tiermesh's `Publisher` in this test, sending the
//! synthetic broadcast of `tiermesh pub` except 720p from a given group on (its subscriptions
//! stay open and bring nothing).
//!
//! The player climbs to 720p, which stops 14 s into the watch. Asserted:
//! - it leaves 720p one step down, to 360p (which flows), never to 180p (the ABR used to go
//!   straight to the lowest tier for a tier that went silent: nothing it measured said what
//!   the link carries);
//! - a later step up into the silent 720p is given up and 360p comes back (it used to wait
//!   for 720p for good: the picture froze for the rest of the watch);
//! - the picture plays to the end, on 360p, and the audio flowed throughout.

use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tiermesh_client::moq::{self, ClientOptions};
use tiermesh_client::publish::{Publisher, Source, now_us};
use tiermesh_client::subscribe::{AbrReport, SubOutput};
use tiermesh_client::synthetic::{self, BroadcastSpec, Generator, TrackKind};
use tiermesh_client::transport::ClientTls;
use tiermesh_proto::types::TrackNamespace;
use tiermesh_tests::{Proc, Relay};

/// The synthetic broadcast with one track that sends nothing from group `stop` on.
struct Stopping {
    inner: Generator,
    track: usize,
    stop: u64,
}

impl Source for Stopping {
    fn spec(&self) -> &BroadcastSpec {
        self.inner.spec()
    }
    fn poll_object(&mut self, now_us: u64) -> Option<synthetic::Object> {
        loop {
            let o = self.inner.poll_object(now_us)?;
            if o.track != self.track || o.group_id < self.stop {
                return Some(o);
            }
        }
    }
    fn poll_timeout(&self) -> Option<u64> {
        self.inner.poll_timeout()
    }
    fn catalog_object(&self, group_id: u64, now_us: u64) -> Option<synthetic::Object> {
        self.inner.catalog_object(group_id, now_us)
    }
    fn request_key_frame(&mut self) {
        self.inner.request_new_group();
    }
    fn ends_group(&self, _kind: TrackKind, object: &synthetic::Object) -> bool {
        self.inner.ends_group(object)
    }
}

/// Publishes `e2e/silent` to `relay` from a thread of its own for `run`, 720p stopping at
/// group `stop`; returns once the relay accepted the namespace.
fn publish(relay: &Relay, stop: u64, run: Duration) -> std::thread::JoinHandle<()> {
    let url: tiermesh_client::transport::Url =
        relay.url("moqt", "e2e/silent").parse().expect("relay URL");
    let tls = ClientTls::pinned_hex(&relay.cert_hash).expect("certificate hash");
    let (ready, published) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let (conn, driver) =
                moq::connect(&url, ClientOptions::new(tls)).await.expect("connect to the relay");
            tokio::spawn(driver.run());
            let spec = BroadcastSpec::default();
            let track = spec.tracks.iter().position(|t| t.name == "video/720p").expect("720p");
            let source = Stopping { inner: Generator::new(spec, now_us()), track, stop };
            let namespace = TrackNamespace::from_path("e2e/silent").expect("namespace");
            let mut publisher = Publisher::with_source(namespace, source, None);
            let served = publisher
                .serve(&conn, tokio::time::sleep(run), || {
                    let _ = ready.send(());
                })
                .await;
            served.expect("publishing");
        });
    });
    published.recv_timeout(Duration::from_secs(20)).expect("the relay accepted the broadcast");
    handle
}

fn wall_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[test]
fn abr_leaves_a_silent_tier_one_step_down_and_gives_up_a_switch_to_it() {
    const WATCH: Duration = Duration::from_secs(36);
    let relay = Relay::start(&["--public", "e2e", "--public-publish", "e2e"]).expect("relay");
    let start_s = wall_s();
    // Group IDs of the synthetic broadcast are capture seconds.
    let stop = start_s + 14;
    let publisher = publish(&relay, stop, WATCH + Duration::from_secs(3));
    let mut args = vec![
        "sub".to_owned(),
        relay.url("moqt", "e2e/silent"),
        "--abr".to_owned(),
        "--json".to_owned(),
        "--duration".to_owned(),
        format!("{}s", WATCH.as_secs()),
    ];
    args.extend(relay.pin());
    let mut sub = Proc::tiermesh("sub", &args).expect("sub");
    let status = sub.wait_exit(WATCH + Duration::from_secs(30)).expect("sub ends");
    let stdout = sub.stdout();
    let Some(line) = stdout.lines().find(|l| l.starts_with('{')) else {
        panic!("no report ({status})\n{}\n{}", sub.dump(), relay.proc.dump())
    };
    let out: SubOutput = serde_json::from_str(line).expect("report JSON");
    let abr: AbrReport = out.abr.clone().expect("abr section");
    eprintln!(
        "720p stops at group {stop} (start {start_s})\nswitches {:?}\nplayed {:?}\nstalls {} longest gap {:.0} ms",
        abr.switches
            .iter()
            .map(|s| format!(
                "{:.0} ms -> {:?} g{:?} {}->{} ({})",
                s.decided_ms,
                s.at_ms.map(|a| a.round()),
                s.group.map(|g| g.saturating_sub(start_s)),
                s.from,
                s.to,
                s.reason.as_deref().unwrap_or("?")
            ))
            .collect::<Vec<_>>(),
        abr.played
            .iter()
            .map(|p| format!("{}:{}", p.group.saturating_sub(start_s), p.tier))
            .collect::<Vec<_>>(),
        abr.stalls,
        abr.longest_gap_ms
    );

    // It got to 720p before the stop.
    assert!(
        abr.played.iter().any(|p| p.tier == "video/720p" && p.group < stop),
        "never on 720p before it stopped: {abr:?}"
    );
    // Left one step down: 180p is never played once 720p has stopped.
    assert!(
        abr.played.iter().filter(|p| p.group >= stop).all(|p| p.tier != "video/180p"),
        "went below 360p: {abr:?}"
    );
    let left =
        abr.switches.iter().find(|s| s.from == "video/720p" && s.to == "video/360p").expect("left");
    assert_eq!(left.reason.as_deref(), Some("starved"), "{abr:?}");
    // A switch into the silent 720p is given up: 360p again. Every other switch took effect.
    for (i, s) in abr.switches.iter().enumerate() {
        let given_up = abr.switches.get(i + 1).is_some_and(|n| n.from == s.to);
        let last = i + 1 == abr.switches.len();
        assert!(s.group.is_some() || given_up || last, "switch {i} never took effect: {abr:?}");
    }
    let tried = abr.switches.iter().filter(|s| s.from == "video/720p" && s.group.is_some());
    for s in tried.filter(|s| s.decided_ms > left.decided_ms) {
        assert_eq!(s.to, "video/360p", "{abr:?}");
        assert_eq!(s.reason.as_deref(), Some("failed step up"), "{abr:?}");
    }
    // The picture plays to the end, on 360p.
    assert_eq!(abr.final_tier.as_deref(), Some("video/360p"), "{abr:?}");
    let last = abr.played.last().map_or(0, |p| p.group);
    assert!(last + 3 >= start_s + WATCH.as_secs(), "no picture since group {last}: {abr:?}");
    let audio = out.report.tracks.iter().find(|t| t.name == "audio").expect("audio");
    assert!(audio.objects as f64 >= 0.95 * 50.0 * (WATCH.as_secs() - 2) as f64, "audio {audio:?}");
    publisher.join().expect("publisher thread");
}
