//! The regional mesh as separate `tiermesh relay` processes on loopback: three regions (A, B,
//! C) of two relays each, mutual TLS from a mesh CA made with `tiermesh cert`, a `tiermesh
//! pub` publisher in region A and subscribers in regions B and C.
//!
//! - `seeds_build_the_mesh_and_each_link_carries_a_track_once`: relays configured with one
//!   seed learn the others and link per the discover policy (link counts from `/metrics`);
//!   two `tiermesh sub --json` in B and two in C receive every track while each mesh link
//!   carries each track once (the per-link metrics of every relay); the routing API sends a
//!   client to the nearest region's least loaded relay.
//! - `sigkill_and_drain_on_the_path_move_subscribers`: the relay the subscribers' tracks
//!   cross is killed with SIGKILL, then another is drained with SIGTERM; the subscribers'
//!   video keeps arriving with the largest gap under 2 s, no object duplicated or out of
//!   order and each subgroup on one stream (the relay that changes upstream mid-group goes
//!   on with the subscriber's open stream), and the drained relay exits once its links
//!   moved.
//! - `a_move_waiting_on_a_slow_relay_is_not_subscribed_twice`: after the same SIGKILL, b2
//!   moves its track to b1 (make-before-break) before its own link to the dead relay times
//!   out; b1 is held (SIGSTOP) until that link has timed out, so the old upstream is lost
//!   while the move waits. b2 waits for the move rather than subscribing to b1 a second time
//!   (which b2's session refuses at once, draft-16 §5.1: thousands of refusals in a few
//!   hundred ms, each finishing the subscriber's streams while the move's joining fetch
//!   forwarded a group), and the video resumes in order.
//! - `blackholed_link_moves_subscribers`: the link the subscriber's track crosses goes
//!   through `tiermesh link`, which is then cut (SIGUSR1: the emulator drops every packet
//!   both ways, nothing tells either relay); the track moves to the other route within the
//!   same bound.
//! - `relays_without_the_right_identity_are_refused`: a relay whose certificate comes from
//!   another CA, and one whose certificate names another relay than it claims, never join.
//!
//! - `two_mesh_hops_add_little_to_the_links_delays`: a chain A - B - C whose inter-region
//!   links go through `tiermesh link` with 40 ms and 90 ms one-way: the median latency of
//!   every media track stays within 60 ms above the 130 ms of the links, and 720p's p95
//!   under 450 ms (the mesh links' start-up window). It also prints
//!   each video tier's start-up (`--groups`): when its first key frame came and how late
//!   each whole group ended, whether its objects came by the joining fetch or by the
//!   subscription (the latency figures count only the subscription's).
//! - `a_congested_inter_region_link_drops_the_high_tier_first`: B - C limited to 1 Mbit/s;
//!   the subscriber in C keeps audio (at least 99% of its frames) and the whole base tier,
//!   while the highest tier gets under 500 kbit/s of its 1.5 Mbit/s.
//!
//! The tests share the machine's two cores with up to six relays each, so they run one at a
//! time. With the binary built, the whole file takes about 45-85 s here (seven tests).

mod mesh_common;

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mesh_common::{
    Env, MeshRelay, Spec, StreamEnds, WAIT, cli, decoded_freeze, free_udp_port, late_objects,
    link_metric, one_stream_per_subgroup, path, peer, plain_metric, record, subscribe_when_routed,
};
use tiermesh_tests::{Proc, http_get, start_pub, sub_json};

const BROADCAST: &str = "e2e/mesh";
/// The longest a subscriber's video may stop when a relay or link on its path fails.
const FREEZE_BOUND: Duration = Duration::from_secs(2);

/// One test at a time: each runs six relays on a two-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// Prints how long a test has run at each phase (the wall time these tests cost).
fn phase(start: Instant, what: &str) {
    println!("[{:6.1} s] {what}", start.elapsed().as_secs_f64());
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

impl MeshRelay {
    /// Waits until this relay has a route to the broadcast (its routing API answers 200).
    fn wait_routed(&self) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        let q = format!("/route?broadcast={BROADCAST}&region=A");
        while http_get(self.ops, &q).is_err() {
            if Instant::now() >= deadline {
                bail!("{} has no route to {BROADCAST}\n{}", self.name, self.proc.dump());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The routing API's answer for a client of `region`.
    fn route(&self, region: &str) -> Result<serde_json::Value> {
        let body = http_get(self.ops, &format!("/route?broadcast={BROADCAST}&region={region}"))?;
        Ok(serde_json::from_str(&body)?)
    }
}

/// Every `name{peer=…}` sample: (peer, value).
fn link_metrics(text: &str, name: &str) -> Vec<(String, f64)> {
    let prefix = format!("{name}{{peer=\"");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (peer, value) = rest.split_once("\"} ")?;
            Some((peer.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Six relays: a1, a2 in A; b1, b2 in B; c1, c2 in C. a1 is everyone's only seed.
fn seeded_mesh(env: &Env) -> Result<Vec<MeshRelay>> {
    let a1 = MeshRelay::start(env, Spec::new("a1", "A", env.node("a1", None)?))?;
    let mut relays = vec![];
    for (name, region) in [("a2", "A"), ("b1", "B"), ("b2", "B"), ("c1", "C"), ("c2", "C")] {
        let mut spec = Spec::new(name, region, env.node(name, None)?);
        spec.seeds = vec![a1.mesh_port];
        relays.push(MeshRelay::start(env, spec)?);
    }
    relays.insert(0, a1);
    Ok(relays)
}

fn by_name<'a>(relays: &'a [MeshRelay], name: &str) -> &'a MeshRelay {
    relays.iter().find(|r| r.name == name).unwrap()
}

#[test]
fn seeds_build_the_mesh_and_each_link_carries_a_track_once() -> Result<()> {
    let _serial = serial();
    let t0 = Instant::now();
    let env = Env::new("mesh-seeds")?;
    let relays = seeded_mesh(&env)?;
    // Discover policy: every relay of its region, and the first relay (by name) of each
    // other region. a1, b1, c1 link to everyone (5 links); a2, b2, c2 to their region's
    // first and the two other firsts (3) — though each was configured with a1 only.
    for r in &relays {
        let want = if r.name.ends_with('1') { 5.0 } else { 3.0 };
        r.wait_metrics("links", |t| plain_metric(t, "tiermesh_mesh_links") == Some(want))?;
    }
    let a2 = by_name(&relays, "a2");
    let _publisher = start_pub("pub", &a2.url(BROADCAST), &env.pin())?;
    let (b1, c2) = (by_name(&relays, "b1"), by_name(&relays, "c2"));
    b1.wait_routed()?;
    c2.wait_routed()?;
    phase(t0, "links up, routed");
    // Two subscribers at b1 (region B), two at c2 (region C).
    let subs: Vec<_> = [b1, b1, c2, c2]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut args = vec![r.url(BROADCAST), "--duration".to_owned(), "8s".to_owned()];
            args.extend(env.pin());
            std::thread::spawn(move || sub_json(&format!("sub{i}"), &args, WAIT))
        })
        .collect();
    // While they watch: every track crosses each link once. a2 (the origin) sends the five
    // tracks once to b1 (B's subscribers) and once to a1 (on C's path: c2 - a1 - a2 wins
    // the tie with c2 - c1 - a2 by name); a1 sends them once to c2.
    let a2_text = a2.wait_metrics("five tracks to b1 and a1", |t| {
        link_metric(t, "tiermesh_mesh_link_downstream_tracks", "b1") == Some(5.0)
            && link_metric(t, "tiermesh_mesh_link_downstream_tracks", "a1") == Some(5.0)
    })?;
    let a1 = by_name(&relays, "a1");
    a1.wait_metrics("five tracks to c2", |t| {
        link_metric(t, "tiermesh_mesh_link_downstream_tracks", "c2") == Some(5.0)
    })?;
    let mut table = String::new();
    for r in &relays {
        let text = r.metrics()?;
        let tracks = link_metrics(&text, "tiermesh_mesh_link_downstream_tracks");
        let subs = link_metrics(&text, "tiermesh_mesh_link_downstream_subscriptions");
        assert_eq!(tracks.len(), subs.len());
        for ((peer, t), (_, s)) in tracks.iter().zip(&subs) {
            table.push_str(&format!("{} -> {peer}: {t} tracks, {s} subscriptions\n", r.name));
            assert_eq!(t, s, "{} sends a track twice to {peer}\n{text}", r.name);
        }
        let up = link_metrics(&text, "tiermesh_mesh_link_upstream_tracks");
        assert!(up.iter().all(|(_, n)| *n <= 5.0), "{}: {up:?}", r.name);
    }
    println!("per-link tracks while 2 subscribers watch at b1 and 2 at c2:\n{table}");
    let sum: f64 = link_metrics(&a2_text, "tiermesh_mesh_link_downstream_subscriptions")
        .iter()
        .map(|x| x.1)
        .sum();
    assert_eq!(sum, 10.0, "a2 sends each track once per link, to b1 and a1\n{a2_text}");
    for (r, peer) in [(b1, "a2"), (c2, "a1")] {
        let text = r.metrics()?;
        assert_eq!(
            link_metric(&text, "tiermesh_mesh_link_upstream_tracks", peer),
            Some(5.0),
            "{} subscribes once per track for its two subscribers\n{text}",
            r.name
        );
    }
    phase(t0, "one copy per link checked");
    // The routing API: nearest region, then least load. b1 and c2 have two subscriber
    // sessions each, so clients of B go to b2 and of C to c1; a2 has the publisher, so A's
    // clients go to a1. Every relay answers alike once the load has spread (about 1 s).
    let deadline = Instant::now() + WAIT;
    for r in &relays {
        loop {
            let got: Vec<String> = ["A", "B", "C"]
                .iter()
                .map(|reg| r.route(reg).map(|v| v["relay"].as_str().unwrap_or("").to_owned()))
                .collect::<Result<_>>()?;
            if got == ["a1", "b2", "c1"] {
                break;
            }
            assert!(Instant::now() < deadline, "{} routes clients of A, B, C to {got:?}", r.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let v = c2.route("B")?;
    let b2_url = format!("moqt://127.0.0.1:{}", by_name(&relays, "b2").port);
    assert_eq!(v["url"], b2_url);
    assert_eq!(v["origin"], "a2");
    // `tiermesh sub --route` starts from the routing API: a client of B lands on b2.
    let mut args = vec![
        BROADCAST.to_owned(),
        "--route".to_owned(),
        format!("http://{}/route?region=B", c2.ops),
        "--duration".to_owned(),
        "2s".to_owned(),
    ];
    args.extend(env.pin());
    let (report, ok, proc) = sub_json("sub-route", &args, WAIT)?;
    assert!(ok, "sub --route failed\n{}", proc.dump());
    proc.wait_line(Duration::from_secs(1), |l| {
        l.text.contains("routing API chose the relay") && l.text.contains(&b2_url)
    })?;
    let report = report.context("no report")?;
    assert!(report.tracks.iter().any(|t| t.name == "audio" && t.objects > 50), "{report:?}");
    phase(t0, "routing API checked");
    for s in subs {
        let (report, ok, proc) = s.join().unwrap()?;
        assert!(ok, "sub failed\n{}", proc.dump());
        let report = report.context("no report")?;
        let names: Vec<&str> = report.tracks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["catalog", "audio", "video/180p", "video/360p", "video/720p"]);
        for t in &report.tracks {
            assert_eq!((t.error.as_deref(), t.ended.as_deref()), (None, None), "{t:?}");
            assert_eq!(t.duplicate_objects, 0, "{t:?}");
            if t.name == "audio" {
                assert!(t.objects >= 150, "{t:?}");
            }
            if t.name.starts_with("video/") {
                assert!(t.objects >= 90, "{t:?}");
                assert_eq!(t.missing_groups, 0, "{t:?}");
            }
            if t.name != "catalog" {
                let l = t.latency_ms.as_ref().context("latency")?;
                assert!(l.p99 < 500.0, "{}: {l:?}", t.name);
            }
        }
    }
    Ok(())
}

/// Video objects one subscriber received: (group, object, arrival), and its subgroup
/// streams' ends.
#[derive(Default)]
struct Arrivals {
    seen: Mutex<Vec<(u64, u64, Instant)>>,
    ends: Mutex<StreamEnds>,
    cond: Condvar,
}

impl Arrivals {
    fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Waits until `n` objects have arrived.
    fn wait_for(&self, n: usize, what: &str) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        let mut seen = self.seen.lock().unwrap();
        while seen.len() < n {
            let now = Instant::now();
            if now >= deadline {
                bail!("{what}: {} of {n} objects within {WAIT:?}", seen.len());
            }
            seen = self.cond.wait_timeout(seen, deadline - now).unwrap().0;
        }
        Ok(())
    }

    /// The largest gap between arrivals after `from` (the one spanning `from` included).
    /// Fails if an object came twice or out of order within its group, or a subgroup on
    /// more than one stream; an object of an
    /// older group that arrives after a newer group has started is counted in `late` (the
    /// tracks' group order is newest first, so a relay sends a new group ahead of the tail
    /// of the old one; a player drops such objects).
    fn freeze_after(&self, from: Instant) -> Result<Freeze> {
        one_stream_per_subgroup(&self.ends.lock().unwrap())?;
        let seen = self.seen.lock().unwrap();
        let late = late_objects(&seen).map_err(|e| {
            // Every arrival of the groups around the failure, in arrival order, ms after
            // `from`: which objects came twice or late, and when.
            let bad: Option<u64> = e
                .to_string()
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.split('/').next())
                .and_then(|g| g.parse().ok());
            let list: Vec<String> = seen
                .iter()
                .filter(|s| bad.is_some_and(|g| s.0 + 1 >= g && s.0 <= g + 1))
                .map(|s| {
                    let ms = if s.2 >= from {
                        (s.2 - from).as_secs_f64() * 1e3
                    } else {
                        -(from - s.2).as_secs_f64() * 1e3
                    };
                    format!("{}/{}@{ms:.0}", s.0, s.1)
                })
                .collect();
            e.context(format!("arrivals (group/object@ms after the event): {}", list.join(" ")))
        })?;
        let start = seen.iter().rposition(|s| s.2 <= from).unwrap_or(0);
        let after = &seen[start..];

        let (gap, resumed) = after
            .windows(2)
            .map(|w| (w[1].2 - w[0].2, w[1].2))
            .max()
            .unwrap_or((Duration::ZERO, from));
        // The first object 0 (a group start: a key frame) once objects flow again.
        let key_frame = after.iter().find(|s| s.2 >= resumed && s.1 == 0).map(|s| s.2 - resumed);
        let decoded = decoded_freeze(&seen, from);
        Ok(Freeze { gap, decoded, late, key_frame })
    }
}

/// What a subscriber saw around a failure.
#[derive(Debug)]
struct Freeze {
    /// The largest gap between two objects' arrivals.
    gap: Duration,
    /// The largest gap between two frames a player can decode (the decoded video's
    /// freeze): objects after a hole in their group do not count until the next group.
    decoded: Duration,
    /// Objects of an older group that arrived after a newer group had started.
    late: usize,
    /// From the first object after the gap to the first group start (with NEW GROUP
    /// REQUEST on the re-routed SUBSCRIBE, close to zero; without, up to a group).
    key_frame: Option<Duration>,
}

/// Subscribes to the broadcast's `video/180p` at `relay_port` and records every object.
fn watch_video(
    rt: &tokio::runtime::Runtime,
    relay_port: u16,
    dev_hash: &str,
) -> Result<Arc<Arrivals>> {
    let arrivals = Arc::new(Arrivals::default());
    let out = arrivals.clone();
    let mut reader = subscribe_when_routed(rt, relay_port, dev_hash, BROADCAST, "video/180p")?;
    rt.spawn(async move {
        let _conn = &reader.1;
        while record(reader.0.next().await, &out.seen, &out.ends) {
            out.cond.notify_all();
        }
    });
    Ok(arrivals)
}

/// Prints what the relays logged about the watched track and their links (for a failure).
fn track_logs(relays: &[MeshRelay], event: std::time::SystemTime) {
    let at = event.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    println!("event at {:.3} s since the epoch", at.as_secs_f64());
    for r in relays {
        for l in r.proc.lines() {
            if l.text.contains("180p") || l.text.contains("mesh link") || l.text.contains("GOAWAY")
            {
                println!("{}: {}", r.name, l.text);
            }
        }
    }
}

/// The seeded mesh, the publisher at a2 and a `video/180p` watcher at b2 and at c2, whose
/// tracks both cross a1 (b2 - a1 - a2 and c2 - a1 - a2 win their ties by name).
struct Watched {
    relays: Vec<MeshRelay>,
    _publisher: Proc,
    rt: tokio::runtime::Runtime,
    at_b2: Arc<Arrivals>,
    at_c2: Arc<Arrivals>,
}

fn watched_mesh(env: &Env, t0: Instant) -> Result<Watched> {
    let relays = seeded_mesh(env)?;
    phase(t0, "relays started");
    for r in &relays {
        let want = if r.name.ends_with('1') { 5.0 } else { 3.0 };
        r.wait_metrics("links", |t| plain_metric(t, "tiermesh_mesh_links") == Some(want))?;
    }
    phase(t0, "links up");
    let a2 = by_name(&relays, "a2");
    let publisher = start_pub("pub", &a2.url(BROADCAST), &env.pin())?;
    let (b2, c2) = (by_name(&relays, "b2"), by_name(&relays, "c2"));
    b2.wait_routed()?;
    c2.wait_routed()?;
    let rt = tokio::runtime::Runtime::new()?;
    let at_b2 = watch_video(&rt, b2.port, &env.dev_hash)?;
    let at_c2 = watch_video(&rt, c2.port, &env.dev_hash)?;
    let a1 = by_name(&relays, "a1");
    a1.wait_metrics("a1 on both paths", |t| {
        link_metric(t, "tiermesh_mesh_link_downstream_tracks", "b2") == Some(1.0)
            && link_metric(t, "tiermesh_mesh_link_downstream_tracks", "c2") == Some(1.0)
    })?;
    phase(t0, "subscribed");
    Ok(Watched { relays, _publisher: publisher, rt, at_b2, at_c2 })
}

#[test]
fn sigkill_and_drain_on_the_path_move_subscribers() -> Result<()> {
    let _serial = serial();
    let t0 = Instant::now();
    let env = Env::new("mesh-failover")?;
    let Watched { mut relays, _publisher, rt, at_b2, at_c2 } = watched_mesh(&env, t0)?;
    at_b2.wait_for(30, "b2 before the kill")?;
    at_c2.wait_for(30, "c2 before the kill")?;
    let (nb, nc) = (at_b2.len(), at_c2.len());
    let killed = Instant::now();
    let killed_at = std::time::SystemTime::now();
    let i = relays.iter().position(|r| r.name == "a1").unwrap();
    let mut a1 = relays.remove(i);
    a1.proc.kill();
    // 2 s of video (30 objects a second) after the kill, through b1 and c1.
    at_b2.wait_for(nb + 60, "b2 after the kill")?;
    at_c2.wait_for(nc + 60, "c2 after the kill")?;
    phase(t0, "moved after the kill");
    let fb = at_b2.freeze_after(killed).inspect_err(|_| track_logs(&relays, killed_at))?;
    let fc = at_c2.freeze_after(killed).inspect_err(|_| track_logs(&relays, killed_at))?;
    println!(
        "SIGKILL a1: decoded video/180p froze {:?} at b2 (arrival gap {:?}, {} late, next group start {:?} later), {:?} at c2 (arrival gap {:?}, {} late, next group start {:?} later)",
        fb.decoded, fb.gap, fb.late, fb.key_frame, fc.decoded, fc.gap, fc.late, fc.key_frame
    );
    assert!(fb.decoded < FREEZE_BOUND && fc.decoded < FREEZE_BOUND, "freeze b2 {fb:?}, c2 {fc:?}");
    // The re-routed SUBSCRIBE carries NEW GROUP REQUEST: video resumes with a group start
    // (a key frame), not in the middle of a group the player cannot decode.
    for f in [&fb, &fc] {
        assert!(f.key_frame.is_some_and(|d| d < Duration::from_millis(300)), "{f:?}");
    }
    // Drain b1, now on b2's path (b2 - b1 - a2): SIGTERM, GOAWAY on its links; b2 moves to
    // c1 (b2 - c1 - a2) and b1 exits when its links are gone.
    let b1 = by_name(&relays, "b1");
    b1.wait_metrics("b1 on b2's path", |t| {
        link_metric(t, "tiermesh_mesh_link_downstream_tracks", "b2") == Some(1.0)
    })?;
    let nb = at_b2.len();
    let drained = Instant::now();
    let drained_at = std::time::SystemTime::now();
    let status =
        std::process::Command::new("kill").args(["-TERM", &b1.proc.pid().to_string()]).status()?;
    assert!(status.success());
    at_b2.wait_for(nb + 60, "b2 after the drain")?;
    phase(t0, "moved after the drain");
    let fd = at_b2.freeze_after(drained).inspect_err(|_| track_logs(&relays, drained_at))?;
    println!(
        "SIGTERM (drain) b1: decoded video/180p froze {:?} at b2 (arrival gap {:?}, {} late, next group start {:?} later)",
        fd.decoded, fd.gap, fd.late, fd.key_frame
    );
    assert!(fd.decoded < FREEZE_BOUND, "freeze {fd:?}");
    let i = relays.iter().position(|r| r.name == "b1").unwrap();
    let mut b1 = relays.remove(i);
    let exit = b1.proc.wait_exit(WAIT)?;
    assert!(exit.success(), "b1 did not drain cleanly\n{}", b1.proc.dump());
    b1.proc.wait_line(Duration::from_secs(1), |l| l.text.contains("mesh draining: GOAWAY"))?;
    drop(rt);
    Ok(())
}

#[test]
fn a_move_waiting_on_a_slow_relay_is_not_subscribed_twice() -> Result<()> {
    let _serial = serial();
    let t0 = Instant::now();
    let env = Env::new("mesh-slow-move")?;
    let Watched { mut relays, _publisher, rt, at_b2, .. } = watched_mesh(&env, t0)?;
    at_b2.wait_for(30, "b2 before the kill")?;
    let nb = at_b2.len();
    let killed = Instant::now();
    let killed_at = std::time::SystemTime::now();
    let i = relays.iter().position(|r| r.name == "a1").unwrap();
    let mut a1 = relays.remove(i);
    a1.proc.kill();
    let (b1, b2) = (by_name(&relays, "b1"), by_name(&relays, "b2"));
    // About 1 s on, the routes that a1's death changes make b1 b2's next hop while b2's own
    // link to a1 has not timed out yet (it does a few hundred ms later): b2 moves the track
    // to b1, make-before-break.
    let first = b2.proc.wait_line(WAIT, |l| {
        l.text.contains("better route appeared") || l.text.contains("mesh link down peer=a1")
    })?;
    if !first.text.contains("better route appeared") {
        println!("b2's link to a1 timed out before the routes changed: no move to wait on");
        return Ok(());
    }
    // b1 answers slowly (held with SIGSTOP) until b2's link to a1 has timed out: the old
    // upstream is lost while the move waits for b1. b2 must wait for it too, not SUBSCRIBE
    // to b1 a second time (refused at once, and again, each refusal finishing the
    // subscriber's streams while the move's joining fetch forwards its objects).
    let pid = b1.proc.pid().to_string();
    let held = Instant::now();
    let stopped = std::process::Command::new("kill").args(["-STOP", &pid]).status()?;
    assert!(stopped.success());
    let down = b2
        .proc
        .wait_line(Duration::from_millis(800), |l| l.text.contains("mesh link down peer=a1"));
    // A little longer, as a relay under load would take.
    std::thread::sleep(Duration::from_millis(100));
    let resumed = std::process::Command::new("kill").args(["-CONT", &pid]).status()?;
    let held = held.elapsed();
    assert!(resumed.success());
    down?;
    at_b2.wait_for(nb + 60, "b2 after the kill")?;
    phase(t0, "moved after the kill");
    let f = at_b2.freeze_after(killed).inspect_err(|_| track_logs(&relays, killed_at))?;
    println!(
        "SIGKILL a1, b1 held {held:?} once b2's move to it began: decoded video/180p froze {:?} at b2 ({} late)",
        f.decoded, f.late
    );
    let refused: Vec<_> = b2
        .proc
        .lines()
        .into_iter()
        .filter(|l| l.text.contains("upstream subscription failed"))
        .collect();
    assert!(
        refused.is_empty(),
        "{} refused upstream subscriptions at b2: {:?}",
        refused.len(),
        refused.first().map(|l| &l.text)
    );
    drop(rt);
    Ok(())
}

#[test]
fn blackholed_link_moves_subscribers() -> Result<()> {
    let _serial = serial();
    let env = Env::new("mesh-blackhole")?;
    // Static links: a1-a2, c1-c2 within regions, a2-c1 and c2-a1 across; c2 dials a1
    // through `tiermesh link`.
    let mut a1_spec = Spec::new("a1", "A", env.node("a1", None)?);
    a1_spec.discover = false;
    let a1 = MeshRelay::start(&env, a1_spec)?;
    let mut a2 = Spec::new("a2", "A", env.node("a2", None)?);
    a2.discover = false;
    a2.peers = vec![peer("a1", "A", a1.mesh_port)];
    let a2 = MeshRelay::start(&env, a2)?;
    let mut c1 = Spec::new("c1", "C", env.node("c1", None)?);
    c1.discover = false;
    c1.peers = vec![peer("a2", "A", a2.mesh_port)];
    let c1 = MeshRelay::start(&env, c1)?;
    let link_port = free_udp_port();
    let mut emulator = Proc::tiermesh(
        "link",
        [
            "link",
            "--listen",
            &format!("127.0.0.1:{link_port}"),
            "--to",
            &format!("127.0.0.1:{}", a1.mesh_port),
            "--profile",
            "fiber",
        ],
    )?;
    let mut c2 = Spec::new("c2", "C", env.node("c2", None)?);
    c2.discover = false;
    c2.peers = vec![peer("c1", "C", c1.mesh_port), peer("a1", "A", link_port)];
    let c2 = MeshRelay::start(&env, c2)?;
    for (r, n) in [(&a1, 2.0), (&a2, 2.0), (&c1, 2.0), (&c2, 2.0)] {
        r.wait_metrics("links", |t| plain_metric(t, "tiermesh_mesh_links") == Some(n))?;
    }
    let _publisher = start_pub("pub", &a2.url(BROADCAST), &env.pin())?;
    c2.wait_routed()?;
    let rt = tokio::runtime::Runtime::new()?;
    let at_c2 = watch_video(&rt, c2.port, &env.dev_hash)?;
    // c2 - a1 - a2 wins the tie with c2 - c1 - a2 by name: the track crosses the emulator.
    c2.wait_metrics("c2 subscribes through a1", |t| {
        link_metric(t, "tiermesh_mesh_link_upstream_tracks", "a1") == Some(1.0)
    })?;
    at_c2.wait_for(30, "before the blackhole")?;
    let n = at_c2.len();
    let cut = Instant::now();
    // Cut the link: from now on the emulator drops every packet of the c2 - a1 link, in
    // either way.
    let status =
        std::process::Command::new("kill").args(["-USR1", &emulator.pid().to_string()]).status()?;
    assert!(status.success());
    emulator.wait_line(WAIT, |l| l.text.contains("blackhole: every packet dropped"))?;
    at_c2.wait_for(n + 60, "after the blackhole")?;
    let freeze = at_c2.freeze_after(cut)?;
    println!(
        "blackholed c2-a1 link: decoded video/180p froze {:?} at c2 (arrival gap {:?}, {} late, next group start {:?} later)",
        freeze.decoded, freeze.gap, freeze.late, freeze.key_frame
    );
    assert!(freeze.decoded < FREEZE_BOUND, "freeze {freeze:?}");
    let text = c2.metrics()?;
    assert_eq!(link_metric(&text, "tiermesh_mesh_link_upstream_tracks", "c1"), Some(1.0), "{text}");
    emulator.kill();
    drop(rt);
    Ok(())
}

#[test]
fn relays_without_the_right_identity_are_refused() -> Result<()> {
    let _serial = serial();
    let env = Env::new("mesh-identity")?;
    let a1 = MeshRelay::start(&env, Spec::new("a1", "A", env.node("a1", None)?))?;
    let mut b1 = Spec::new("b1", "B", env.node("b1", None)?);
    b1.seeds = vec![a1.mesh_port];
    let b1 = MeshRelay::start(&env, b1)?;
    a1.wait_metrics("b1 linked", |t| link_metric(t, "tiermesh_mesh_link_up", "b1") == Some(1.0))?;
    // A relay with a certificate from another CA.
    cli(&["cert", "ca", "--name", "other", "--out", path(&env.root.join("other-ca"))])?;
    let foreign_dir = env.node("x1", Some(&env.root.join("other-ca")))?;
    let mut x1 = Spec::new("x1", "B", foreign_dir);
    x1.seeds = vec![a1.mesh_port];
    let x1 = MeshRelay::start(&env, x1)?;
    // A relay of the right CA that claims to be b2 with the certificate of "y1".
    let y1_dir = env.node("y1", None)?;
    let mut b2 = Spec::new("b2", "B", y1_dir);
    b2.seeds = vec![a1.mesh_port];
    let imposter = MeshRelay::start(&env, b2)?;
    // The foreign certificate fails the mutual TLS handshake.
    a1.proc.wait_line(WAIT, |l| l.text.contains("UnknownIssuer"))?;
    let refused = a1.proc.wait_line(WAIT, |l| l.text.contains("mesh peer refused (identity)"))?;
    assert!(refused.text.contains("certificate is for"), "{}", refused.text);
    x1.proc.wait_line(WAIT, |l| {
        l.text.contains("mesh peer not reached") || l.text.contains("SETUP failed")
    })?;
    for r in [&a1, &b1] {
        let text = r.metrics()?;
        let peers: Vec<String> =
            link_metrics(&text, "tiermesh_mesh_link_up").into_iter().map(|p| p.0).collect();
        assert_eq!(peers.len(), 1, "{}: {peers:?}", r.name);
        assert!(!peers.iter().any(|p| p == "x1" || p == "b2" || p == "y1"), "{peers:?}");
    }
    for r in [&x1, &imposter] {
        assert_eq!(plain_metric(&r.metrics()?, "tiermesh_mesh_links"), Some(0.0), "{}", r.name);
    }
    Ok(())
}

/// `tiermesh link` from a new local port to `to`, with `flags`; its port.
fn emulator(name: &str, to: u16, flags: &[&str]) -> Result<(Proc, u16)> {
    let port = free_udp_port();
    let listen = format!("127.0.0.1:{port}");
    let to = format!("127.0.0.1:{to}");
    let mut args = vec!["link", "--listen", &listen, "--to", &to, "--profile", "fiber"];
    args.extend_from_slice(flags);
    Ok((Proc::tiermesh(name, args)?, port))
}

/// A chain of three regions, a1 - b1 - c1, each inter-region link through `tiermesh link`
/// (a1 - b1 with `ab`, b1 - c1 with `bc`); a publisher at a1. Returns the relays and the
/// emulators (kept alive by the caller).
fn chain(env: &Env, ab: &[&str], bc: &[&str]) -> Result<(Vec<MeshRelay>, Vec<Proc>, Proc)> {
    let mut a1 = Spec::new("a1", "A", env.node("a1", None)?);
    a1.discover = false;
    let a1 = MeshRelay::start(env, a1)?;
    let (l1, p1) = emulator("link-ab", a1.mesh_port, ab)?;
    let mut b1 = Spec::new("b1", "B", env.node("b1", None)?);
    b1.discover = false;
    b1.peers = vec![peer("a1", "A", p1)];
    let b1 = MeshRelay::start(env, b1)?;
    let (l2, p2) = emulator("link-bc", b1.mesh_port, bc)?;
    let mut c1 = Spec::new("c1", "C", env.node("c1", None)?);
    c1.discover = false;
    c1.peers = vec![peer("b1", "B", p2)];
    let c1 = MeshRelay::start(env, c1)?;
    c1.wait_metrics("c1 linked", |t| plain_metric(t, "tiermesh_mesh_links") == Some(1.0))?;
    let publisher = start_pub("pub", &a1.url(BROADCAST), &env.pin())?;
    c1.wait_routed()?;
    Ok((vec![a1, b1, c1], vec![l1, l2], publisher))
}

/// Watches the broadcast at `relay` for `secs` with `tiermesh sub --json`.
fn sub_report(env: &Env, relay: &MeshRelay, secs: u64) -> Result<tiermesh_tests::Report> {
    let mut args = vec![relay.url(BROADCAST), "--duration".to_owned(), format!("{secs}s")];
    args.extend(env.pin());
    let (report, ok, proc) = sub_json("sub", &args, WAIT)?;
    if !ok {
        bail!("sub failed\n{}", proc.dump());
    }
    report.context("no report")
}

/// Latency bound over the links' delays across two emulated hops: two relays' forwarding
/// and the emulator's own scheduling, on a loaded two-core machine.
const TWO_HOP_MARGIN_MS: f64 = 60.0;

/// Bound on the highest tier's p95 latency across the two hops. Its first second's objects
/// are the tail: with quinn's 12 000-byte initial window the idle mesh links took about a
/// second to reach the broadcast's rate and 720p's p95 was 283-696 ms (598 or more in 9 of
/// 12 runs); with the mesh links' 64 kB start it was 174-332 ms in 11 runs, the highest at
/// a load average of 9 on two cores (docs/BENCHMARKS.md, 2026-11-27). 450 ms leaves room for
/// a loaded machine.
const TWO_HOP_TOP_TIER_P95_MS: f64 = 450.0;

#[test]
fn two_mesh_hops_add_little_to_the_links_delays() -> Result<()> {
    let _serial = serial();
    let env = Env::new("mesh-delay")?;
    // 40 ms one-way between A and B, 90 ms between B and C.
    let (_relays, _links, _publisher) = chain(&env, &["--delay", "40ms"], &["--delay", "90ms"])?;
    let c1 = &_relays[2];
    let mut args =
        vec![c1.url(BROADCAST), "--duration".to_owned(), "5s".to_owned(), "--groups".to_owned()];
    args.extend(env.pin());
    let (report, ok, proc) = sub_json("sub", &args, WAIT)?;
    if !ok {
        bail!("sub failed\n{}", proc.dump());
    }
    let report = report.context("no report")?;
    print_start_up(&report, &proc.stdout())?;
    let delays = 40.0 + 90.0;
    for t in report.tracks.iter().filter(|t| t.name != "catalog") {
        let l = t.latency_ms.as_ref().context("latency")?;
        println!(
            "two hops (40 + 90 ms): {}: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} objects, {} by the joining fetch, first after {:.0} ms)",
            t.name,
            l.p50,
            l.p95,
            l.p99,
            l.max,
            t.objects,
            t.fetched_objects,
            t.first_object_ms.unwrap_or(f64::NAN)
        );
        assert!(l.p50 >= delays, "{}: faster than the links? {l:?}", t.name);
        assert!(l.p50 <= delays + TWO_HOP_MARGIN_MS, "{}: {l:?}", t.name);
        assert_eq!(t.missing_groups, 0, "{t:?}");
        if t.name == "video/720p" {
            assert!(l.p95 <= TWO_HOP_TOP_TIER_P95_MS, "720p's start-up came late: {l:?}");
        }
    }
    Ok(())
}

/// Prints, per video track, how its start-up went for a viewer, whatever came by the
/// joining fetch or by the subscription: when the first group start (key frame) arrived,
/// and how late each whole group's last object arrived (arrival minus capture minus the
/// group's span), from `tiermesh sub --groups`.
fn print_start_up(report: &tiermesh_tests::Report, stdout: &str) -> Result<()> {
    let line = stdout.lines().find(|l| l.starts_with('{')).context("no JSON")?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    let groups = v["groups"].as_array().context("no groups")?;
    // The subscription's start, wall clock: any track's first arrival minus its delay.
    let start = report
        .tracks
        .iter()
        .filter_map(|t| {
            let g = groups.iter().find(|g| g["name"] == t.name.as_str())?;
            let first = g["groups"].as_array()?.iter().filter_map(|r| r["first_ms"].as_f64());
            Some(first.fold(f64::MAX, f64::min) - t.first_object_ms?)
        })
        .fold(f64::MAX, f64::min);
    for g in groups.iter().filter(|g| g["name"].as_str().is_some_and(|n| n.starts_with("video/"))) {
        let recs = g["groups"].as_array().context("groups")?;
        let key = recs.iter().find(|r| r["capture_ms"].is_number());
        let late: Vec<String> = recs
            .iter()
            .filter(|r| r["complete"] == true && r["objects"] == 30)
            .filter_map(|r| {
                let span = 29.0 * 1000.0 / 30.0;
                Some(format!("{:.0}", r["last_ms"].as_f64()? - r["capture_ms"].as_f64()? - span))
            })
            .collect();
        println!(
            "two hops (40 + 90 ms): {}: first key frame after {:.0} ms; whole groups' last object late by {} ms",
            g["name"].as_str().unwrap_or("?"),
            key.and_then(|r| r["first_ms"].as_f64()).map_or(f64::NAN, |f| f - start),
            late.join(", ")
        );
    }
    Ok(())
}

/// The sending relay of the congested link (b1) orders its mesh link by the draft's
/// priorities like any other link: audio and the base tier go first, the highest tier is
/// dropped. Audio used to lose 1-4% of its frames here (33 to 46 objects/s of 50): b1's send
/// scheduler did not start an audio frame whose estimated departure, behind every byte QUIC
/// held unsent, passed its 400 ms delivery timeout, although quinn sends audio ahead of the
/// buffered video; on this 1 Mbit/s link with a 230 ms round trip the window holds about
/// that much video. The estimate now counts only the bytes of audio's own and more
/// important levels (`tiermesh_client::scheduler`), and audio arrives whole.
#[test]
fn a_congested_inter_region_link_drops_the_high_tier_first() -> Result<()> {
    let _serial = serial();
    let env = Env::new("mesh-congested")?;
    // B - C carries 1 Mbit/s with a 100 ms queue (a router's buffer): the broadcast
    // (2.2 Mbit/s, 720p alone 1.5) cannot fit.
    let (relays, _links, _publisher) = chain(
        &env,
        &["--delay", "40ms"],
        &["--delay", "90ms", "--rate", "1mbit", "--queue", "100ms"],
    )?;
    let secs = 8;
    let report = sub_report(&env, &relays[2], secs)?;
    let mut rate = std::collections::HashMap::new();
    for t in &report.tracks {
        let kbps = t.bytes as f64 * 8.0 / report.duration_s / 1000.0;
        println!(
            "congested B-C (1 Mbit/s): {}: {} objects, {} missing, {} groups ({} missing), first after {:?} ms, {kbps:.0} kbit/s, p95 {:?} ms",
            t.name,
            t.objects,
            t.missing_objects,
            t.groups,
            t.missing_groups,
            t.first_object_ms,
            t.latency_ms.as_ref().map(|l| l.p95)
        );
        rate.insert(t.name.clone(), (kbps, t));
    }
    for r in &relays {
        let text = r.metrics()?;
        for l in text
            .lines()
            .filter(|l| l.starts_with("tiermesh_objects_dropped_total") && !l.ends_with(" 0"))
        {
            println!("congested B-C: {}: {l}", r.name);
        }
    }
    // Audio is one object per group: the share of its groups that arrived, between the
    // first and the last one received (the watch's last few hundred milliseconds are still
    // on the link when it stops, so objects a second would understate it).
    let share = |t: &tiermesh_tests::TrackReport| {
        t.groups as f64 / (t.groups + t.missing_groups).max(1) as f64
    };
    // Objects a second from each track's first object to the end of the watch.
    let per_second = |t: &tiermesh_tests::TrackReport| {
        let since = report.duration_s - t.first_object_ms.unwrap_or(0.0) / 1000.0;
        t.objects as f64 / since.max(0.1)
    };
    let audio = rate["audio"].1;
    let base = rate["video/180p"].1;
    println!(
        "congested B-C: audio {:.1} objects/s (sent 50), {:.1}% of its groups; video/180p {:.1} objects/s (sent 30)",
        per_second(audio),
        share(audio) * 100.0,
        per_second(base)
    );
    // At most one audio frame in a hundred lost (none was, in 3 runs here).
    assert!(share(audio) >= 0.99, "audio {audio:?}");
    assert!(per_second(audio) >= 45.0, "audio {audio:?}");
    assert_eq!(audio.missing_objects, 0, "{audio:?}");
    assert!(per_second(base) >= 27.0, "base tier {base:?}");
    assert_eq!(base.missing_objects, 0, "{base:?}");
    // The high tier gets what is left: far below its 1.5 Mbit/s, and less than its share
    // of the link by rate; the base tier gets nearly all of its own.
    assert!(rate["video/720p"].0 < 500.0, "720p kept {:.0} kbit/s", rate["video/720p"].0);
    Ok(())
}
