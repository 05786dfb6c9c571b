//! Guards what a subscriber is told of a group its publisher never finished. A `tiermesh
//! pub` killed with SIGKILL in the middle of a video group (half a second into it) leaves
//! that group short; the relay learns only at its idle timeout that the publisher is gone,
//! holds the tracks for the linger, then ends them. The subgroup streams it forwarded from
//! the dead session must then be reset (draft-16 §10.4.3: a stream closed before all its
//! objects were delivered ends with RESET_STREAM), never finished: a FIN tells the
//! subscriber it has every object of the subgroup. The relay used to finish them, and
//! `tiermesh sub --json --groups` reported the cut group as `complete` with half its
//! objects.
//!
//! - `a_group_cut_by_a_killed_publisher_is_not_reported_whole`: one relay;
//! - `a_group_cut_by_a_killed_publisher_is_not_reported_whole_across_a_mesh_link`: the
//!   publisher at a1, the subscriber at b1 of a two-relay mesh: a1 resets the streams on the
//!   mesh link and b1 passes the reset on.
//!
//! Each takes about the relay's idle timeout on the dead publisher plus the linger (5 s on
//! one relay, about 11 s across the mesh, whose relays keep the default idle timeout).

#[allow(dead_code)]
mod mesh_common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use mesh_common::{Env, MeshRelay, Spec, WAIT, peer, plain_metric};
use tiermesh_tests::{Proc, Relay, metric, start_pub, wait_metrics};

/// The video tiers of the synthetic broadcast, each checked.
const TIERS: [&str; 3] = ["video/180p", "video/360p", "video/720p"];

/// What `tiermesh sub --json --groups` said of one group.
#[derive(Debug)]
struct Group {
    group: u64,
    objects: u64,
    complete: bool,
}

/// Each track's name and its groups, as the report lists them.
type Tracks = Vec<(String, Vec<Group>)>;

/// Runs `tiermesh sub --json --groups` on `url` (for at most `for_s` seconds; it stops
/// sooner when the relay ends the tracks) in a thread; the per-group records of each track.
fn start_sub(
    url: String,
    pin: Vec<String>,
    for_s: u64,
) -> std::thread::JoinHandle<Result<(Tracks, Proc)>> {
    std::thread::spawn(move || {
        let mut args = vec![
            "sub".to_owned(),
            url,
            "--json".into(),
            "--groups".into(),
            "--duration".into(),
            format!("{for_s}s"),
        ];
        args.extend(pin);
        let mut p = Proc::tiermesh("sub", &args)?;
        p.wait_exit(Duration::from_secs(for_s + 30))?;
        let out = p.stdout();
        let line = out.lines().find(|l| l.starts_with('{')).context("no JSON report")?;
        let v: serde_json::Value = serde_json::from_str(line).context("bad JSON report")?;
        let mut tracks = Vec::new();
        for t in v["groups"].as_array().context("no groups in the report")? {
            let name = t["name"].as_str().unwrap_or_default().to_owned();
            let groups = t["groups"]
                .as_array()
                .context("a track without groups")?
                .iter()
                .map(|g| Group {
                    group: g["group"].as_u64().unwrap_or(0),
                    objects: g["objects"].as_u64().unwrap_or(0),
                    complete: g["complete"].as_bool().unwrap_or(false),
                })
                .collect();
            tracks.push((name, groups));
        }
        Ok((tracks, p))
    })
}

/// Waits until the wall clock is half a second into a second: video groups begin at whole
/// seconds (a group's ID is its capture second), so a publisher killed now is in the middle
/// of one.
fn wait_mid_group() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into = now.subsec_millis() as u64;
    let wait = if into <= 500 { 500 - into } else { 1500 - into };
    std::thread::sleep(Duration::from_millis(wait));
}

/// Checks what the subscriber saw of each video tier: the group in progress when the
/// publisher was killed (its last group) is not reported complete, and groups before it
/// that arrived whole are (so the check is not vacuous).
fn check(tracks: &[(String, Vec<Group>)], sub: &Proc) -> Result<()> {
    for tier in TIERS {
        let Some((_, groups)) = tracks.iter().find(|(n, _)| n == tier) else {
            bail!("no groups of {tier} in the report\n{}", sub.dump());
        };
        let Some(last) = groups.last() else { bail!("nothing of {tier} arrived") };
        println!(
            "{tier}: {} groups, last {} with {} objects, complete: {}; complete before it: {}",
            groups.len(),
            last.group,
            last.objects,
            last.complete,
            groups.iter().filter(|g| g.complete).count()
        );
        if !groups[..groups.len() - 1].iter().any(|g| g.complete) {
            bail!("{tier}: no group reported complete before the kill: {groups:?}");
        }
        if last.complete {
            bail!(
                "{tier}: group {} cut by the publisher's death ({} objects) reported complete: \
                 the relay ended its stream with FIN\n{groups:?}",
                last.group,
                last.objects
            );
        }
    }
    Ok(())
}

#[test]
fn a_group_cut_by_a_killed_publisher_is_not_reported_whole() -> Result<()> {
    // A 4 s idle timeout (the clients' keep-alives come every 3 s) so that the relay sees
    // the killed publisher go soon, and a 1 s linger.
    let relay = Relay::start(&[
        "--public",
        "e2e",
        "--public-publish",
        "e2e",
        "--linger",
        "1s",
        "--idle-timeout",
        "4s",
    ])?;
    let url = relay.url("moqt", "e2e/killed");
    let mut publisher = start_pub("pub", &url, &relay.pin())?;
    let sub = start_sub(url, relay.pin().to_vec(), 30);
    // Two seconds of video (90 objects a second over three tiers) and audio reached the
    // subscriber, so groups before the kill arrived whole.
    wait_metrics(&relay, WAIT, |m| {
        metric(m, "tiermesh_objects_sent_total").unwrap_or(0.0) >= 300.0
    })?;
    wait_mid_group();
    publisher.kill();
    let (tracks, p) = sub.join().expect("the subscriber thread")?;
    check(&tracks, &p).map_err(|e| e.context(relay.proc.dump()))
}

#[test]
fn a_group_cut_by_a_killed_publisher_is_not_reported_whole_across_a_mesh_link() -> Result<()> {
    let env = Env::new("mesh-killed")?;
    let start = |name: &str, region: &str, peers: &[(&str, &str, u16)]| -> Result<MeshRelay> {
        let mut spec = Spec::new(name, region, env.node(name, None)?);
        spec.discover = false;
        spec.linger = "1s";
        spec.goaway_grace = None;
        spec.peers = peers.iter().map(|&(n, r, p)| peer(n, r, p)).collect();
        MeshRelay::start(&env, spec)
    };
    let a1 = start("a1", "A", &[])?;
    let b1 = start("b1", "B", &[("a1", "A", a1.mesh_port)])?;
    for r in [&a1, &b1] {
        r.wait_metrics("linked", |t| plain_metric(t, "tiermesh_mesh_links") == Some(1.0))?;
    }
    let mut publisher = start_pub("pub", &a1.url("e2e/killed"), &env.pin())?;
    b1.wait_origin("e2e/killed", "B", "a1")?;
    let sub = start_sub(b1.url("e2e/killed"), env.pin(), 40);
    b1.wait_metrics("objects forwarded at b1", |t| {
        metric(t, "tiermesh_objects_sent_total").unwrap_or(0.0) >= 300.0
    })?;
    wait_mid_group();
    publisher.kill();
    let (tracks, p) = sub.join().expect("the subscriber thread")?;
    check(&tracks, &p).map_err(|e| e.context(format!("{}{}", a1.proc.dump(), b1.proc.dump())))
}
