//! Subscribing to a broadcast and measuring what arrives: what `tiermesh sub` runs.
//!
//! [`watch`] joins every track of a broadcast (those its MSF catalog lists, or those named)
//! the way a player does: SUBSCRIBE with the Largest Object filter plus a relative joining
//! FETCH of the current group, so each track starts at the first object of a group (a key
//! frame) at once. The upper rungs of a video ladder (the tracks of a catalog alternate
//! group above the one of lowest bit rate) are the exception: a player needs only one rung
//! to show a picture at once, so they start at their next group (SUBSCRIBE with Next Group
//! Start, no fetch) rather than catch the current group up over the same link, where that
//! catch-up holds back every live object of the join ([`Join`]). Every object is recorded in
//! the track's [`TrackStats`]; after the duration (or when every track has ended) the
//! statistics become a [`Report`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tiermesh_proto::catalog::{CATALOG_TRACK_NAME, Catalog};
use tiermesh_proto::types::{FullTrackName, SubscriptionFilter, TrackNamespace};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::moq::{Connection, ReceivedObject, SubscribeOptions, TrackEvent};
use crate::report::{Report, TrackStats};

/// What to watch.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The broadcast.
    pub namespace: TrackNamespace,
    /// Track names; empty means every track of the catalog (and the catalog itself). For
    /// [`watch_abr`], a video tier listed here is the one it starts on (else the lowest).
    pub tracks: Vec<String>,
    /// How long to watch.
    pub duration: Duration,
    /// AUTHORIZATION TOKEN sent with each SUBSCRIBE and FETCH.
    pub token: Option<Bytes>,
}

/// How [`watch`] starts receiving a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// At once, from the start of the current group: SUBSCRIBE (Largest Object) plus a
    /// joining FETCH of the current group (draft-16, "Joining an Ongoing Track").
    Now,
    /// At the track's next group: SUBSCRIBE with Next Group Start, no fetch. For the upper
    /// rungs of a ladder, whose current group would otherwise be caught up beside the
    /// lowest rung's on the same link: on a 1 Mbit/s link a second of 360p (69 kB) and one
    /// of 720p (188 kB) took 1-2 s to catch up and held the live objects of the join 300-800
    /// ms late (docs/BENCHMARKS.md, "Shaped links").
    NextGroup,
}

/// How each track of `catalog` is joined, in catalog order: in each alternate group
/// (`altGroup`: the rungs of a ladder, of whatever role) the track of lowest bit rate at
/// once, the others at their next group; every track of no alternate group at once. A track
/// without a bit rate counts as the highest; on a tie the one listed first is the lowest.
pub fn joins(catalog: &Catalog) -> Vec<(String, Join)> {
    let tracks = catalog.tracks();
    let rate = |t: &tiermesh_proto::catalog::Track| t.bitrate.unwrap_or(u64::MAX);
    tracks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let upper = t.alt_group.is_some_and(|g| {
                tracks
                    .iter()
                    .enumerate()
                    .any(|(j, o)| j != i && o.alt_group == Some(g) && (rate(o), j) < (rate(t), i))
            });
            (t.name.clone(), if upper { Join::NextGroup } else { Join::Now })
        })
        .collect()
}

/// Converts [`Instant`]s to wall-clock microseconds, from one reading of both clocks.
#[derive(Debug, Clone, Copy)]
struct Clock {
    instant: Instant,
    wall_us: u64,
}

impl Clock {
    fn now() -> Self {
        let wall_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self { instant: Instant::now(), wall_us }
    }

    fn wall_us(&self, at: Instant) -> u64 {
        match at.checked_duration_since(self.instant) {
            Some(d) => self.wall_us + u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            None => self
                .wall_us
                .saturating_sub(u64::try_from((self.instant - at).as_micros()).unwrap_or(0)),
        }
    }
}

/// Watches a broadcast on `conn` and reports what arrived.
pub async fn watch(conn: &Connection, config: WatchConfig) -> Report {
    watch_inner(conn, config).await.0
}

/// What `tiermesh sub --json` prints: the [`Report`]'s fields, plus per-group detail with
/// `--groups` and the tier switches with `--abr`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SubOutput {
    /// The per-track report.
    #[serde(flatten)]
    pub report: Report,
    /// What arrived of each group of each track (`--groups`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<TrackGroups>,
    /// The tiers watched and switches made (`--abr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abr: Option<AbrReport>,
    /// Capture-to-arrival latency of every object delivered by subscription on every
    /// media track (all but the catalog) together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_latency_ms: Option<crate::report::LatencyMs>,
}

/// What arrived of each group of one track ([`watch_groups`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrackGroups {
    /// Track name.
    pub name: String,
    /// Every group of which something arrived, in group order.
    pub groups: Vec<GroupRecord>,
}

/// What arrived of one group.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GroupRecord {
    /// Group ID.
    pub group: u64,
    /// Distinct objects received.
    pub objects: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Every subgroup stream of the group that was seen ended with FIN (none reset), and
    /// object IDs 0 up to the largest received all arrived: a decoder can use all of it.
    pub complete: bool,
    /// Capture time (LOC Timestamp) of object 0, wall-clock milliseconds since the Unix
    /// epoch, if object 0 arrived and carried one.
    pub capture_ms: Option<f64>,
    /// Arrival of the group's first object to arrive, wall-clock milliseconds since the Unix
    /// epoch.
    pub first_ms: f64,
    /// Arrival of the last object received, wall-clock milliseconds since the Unix epoch.
    pub last_ms: f64,
}

/// Per-group tallies of one track.
#[derive(Debug, Default)]
struct GroupLog {
    groups: BTreeMap<u64, GroupTally>,
}

#[derive(Debug, Default)]
struct GroupTally {
    ids: std::collections::BTreeSet<u64>,
    bytes: u64,
    fin: bool,
    reset: bool,
    capture_us: Option<u64>,
    first_us: u64,
    last_us: u64,
}

impl GroupLog {
    fn object(&mut self, o: &ReceivedObject, arrival_us: u64) {
        let g = self
            .groups
            .entry(o.group_id)
            .or_insert_with(|| GroupTally { first_us: arrival_us, ..GroupTally::default() });
        if g.ids.insert(o.object_id) {
            g.bytes += o.payload.len() as u64;
        }
        if o.object_id == 0 {
            g.capture_us = tiermesh_proto::loc::capture_timestamp_us(&o.extensions);
        }
        g.first_us = g.first_us.min(arrival_us);
        g.last_us = g.last_us.max(arrival_us);
    }

    fn stream_end(&mut self, group: u64, reset: bool) {
        let g = self.groups.entry(group).or_default();
        if reset {
            g.reset = true;
        } else {
            g.fin = true;
        }
    }

    fn records(&self, name: &str) -> TrackGroups {
        let ms = |us: u64| us as f64 / 1000.0;
        let groups = self
            .groups
            .iter()
            .filter(|(_, g)| !g.ids.is_empty())
            .map(|(&group, g)| {
                let max = g.ids.last().copied().unwrap_or(0);
                GroupRecord {
                    group,
                    objects: g.ids.len() as u64,
                    bytes: g.bytes,
                    complete: g.fin && !g.reset && g.ids.len() as u64 == max + 1,
                    capture_ms: g.capture_us.map(|c| c as f64 / 1000.0),
                    first_ms: ms(g.first_us),
                    last_ms: ms(g.last_us),
                }
            })
            .collect();
        TrackGroups { name: name.to_owned(), groups }
    }
}

/// Watches a broadcast on `conn`: the report, what arrived of each group of each track, and
/// the latency of all media objects together ([`SubOutput`] without `abr`).
pub async fn watch_groups(conn: &Connection, config: WatchConfig) -> SubOutput {
    let (report, groups, latency) = watch_inner(conn, config).await;
    SubOutput { report, groups, abr: None, media_latency_ms: latency }
}

fn latency_ms(d: &crate::report::Distribution) -> Option<crate::report::LatencyMs> {
    let ms = |us: u64| us as f64 / 1000.0;
    d.summary().map(|s| crate::report::LatencyMs {
        p50: ms(s.p50),
        p95: ms(s.p95),
        p99: ms(s.p99),
        max: ms(s.max),
    })
}

async fn watch_inner(
    conn: &Connection,
    config: WatchConfig,
) -> (Report, Vec<TrackGroups>, Option<crate::report::LatencyMs>) {
    let clock = Clock::now();
    let deadline = tokio::time::Instant::now() + config.duration;
    let mut tasks = JoinSet::new();
    let mut order: Vec<String> = Vec::new();
    let options = SubscribeOptions { token: config.token.clone(), ..Default::default() };
    let track = |name: &str| FullTrackName::new(config.namespace.clone(), name);

    let mut missing_catalog = false;
    let names = if config.tracks.is_empty() {
        // The catalog first: it names the rest.
        let (tx, rx) = oneshot::channel();
        order.push(CATALOG_TRACK_NAME.to_owned());
        match track(CATALOG_TRACK_NAME) {
            Ok(t) => {
                tasks.spawn(follow(
                    conn.clone(),
                    t,
                    Join::Now,
                    options.clone(),
                    clock,
                    deadline,
                    Taps { catalog: Some(tx), ..Taps::default() },
                ));
            }
            Err(e) => {
                let report = Report {
                    broadcast: path(&config.namespace),
                    duration_s: 0.0,
                    tracks: Vec::new(),
                    error: Some(format!("bad broadcast name: {e}")),
                };
                return (report, Vec::new(), None);
            }
        }
        let names = tokio::select! {
            r = rx => r.ok(),
            () = tokio::time::sleep_until(deadline) => None,
        };
        match names {
            Some(n) => n,
            None => {
                missing_catalog = true;
                Vec::new()
            }
        }
    } else {
        // Tracks named by the user are all wanted at once.
        config.tracks.iter().map(|n| (n.clone(), Join::Now)).collect()
    };

    for (name, join) in names {
        if order.contains(&name) {
            continue;
        }
        order.push(name.clone());
        match track(&name) {
            Ok(t) => {
                tasks.spawn(follow(
                    conn.clone(),
                    t,
                    join,
                    options.clone(),
                    clock,
                    deadline,
                    Taps::default(),
                ));
            }
            Err(e) => {
                let mut s = TrackStats::new(&name, clock.wall_us, false);
                s.set_error(format!("bad track name: {e}"));
                let groups = TrackGroups { name: name.clone(), groups: Vec::new() };
                tasks.spawn(async move { (s, groups) });
            }
        }
    }

    let mut stats = Vec::new();
    let mut groups = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((s, g)) => {
                stats.push(s);
                groups.push(g);
            }
            Err(e) => tracing::error!(error = %e, "a track task failed"),
        }
    }
    stats.sort_by_key(|s| order.iter().position(|n| n == s.name()));
    groups.sort_by_key(|g| order.iter().position(|n| *n == g.name));
    let mut all = crate::report::Distribution::new();
    for s in stats.iter().filter(|s| s.name() != CATALOG_TRACK_NAME) {
        all.merge(s.latency_us());
    }
    if missing_catalog
        && let Some(catalog) = stats.iter_mut().find(|s| s.name() == CATALOG_TRACK_NAME)
        && catalog.report().error.is_none()
    {
        catalog.set_error("no catalog arrived: the broadcast's tracks are unknown");
    }
    let report = Report {
        broadcast: path(&config.namespace),
        duration_s: clock.instant.elapsed().as_secs_f64(),
        tracks: stats.iter().map(TrackStats::report).collect(),
        error: conn.close_reason().map(|r| r.to_string()),
    };
    (report, groups, latency_ms(&all))
}

/// The namespace as `a/b/c`.
pub fn path(namespace: &TrackNamespace) -> String {
    namespace.fields().iter().map(|f| String::from_utf8_lossy(f)).collect::<Vec<_>>().join("/")
}

/// What [`follow`] hands on as it happens, beside the statistics it returns.
#[derive(Default)]
struct Taps {
    /// For the catalog: receives the tracks of the first catalog object and how each is to
    /// be joined ([`joins`]).
    catalog: Option<oneshot::Sender<Vec<(String, Join)>>>,
    /// Receives the arrival of every object (the audio of [`watch_abr`]).
    heard: Option<tokio::sync::watch::Sender<Option<Instant>>>,
}

/// Joins one track as `join` says and records what arrives until `deadline` or the track's
/// end, handing on what `taps` ask for.
async fn follow(
    conn: Connection,
    track: FullTrackName,
    join: Join,
    options: SubscribeOptions,
    clock: Clock,
    deadline: tokio::time::Instant,
    taps: Taps,
) -> (TrackStats, TrackGroups) {
    let Taps { mut catalog, heard } = taps;
    let name = String::from_utf8_lossy(&track.name.0).into_owned();
    let started = Instant::now();
    let mut stats = TrackStats::new(&name, clock.wall_us(started), name != CATALOG_TRACK_NAME);
    let mut log = GroupLog::default();
    let joined = async {
        match join {
            Join::Now => conn.join(track, options, 0).await.map(|(r, f)| (r, Some(f))),
            Join::NextGroup => {
                let options = SubscribeOptions {
                    filter: Some(SubscriptionFilter::NextGroupStart),
                    ..options
                };
                conn.subscribe(track, options).await.map(|r| (r, None))
            }
        }
    };
    let joined = tokio::select! {
        r = joined => r,
        () = tokio::time::sleep_until(deadline) => {
            stats.set_error("no answer to SUBSCRIBE before the end");
            return (stats, log.records(&name));
        }
    };
    let (mut reader, fetch) = match joined {
        Ok(j) => j,
        Err(e) => {
            stats.set_error(crate::cli::explain(&e));
            return (stats, log.records(&name));
        }
    };
    let mut fetch = match fetch {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(e)) => {
            tracing::info!(track = %name, error = %e, "joining FETCH refused; starting live");
            None
        }
    };
    let mut record = |stats: &mut TrackStats, log: &mut GroupLog, o: &ReceivedObject, fetched| {
        if let Some(h) = &heard {
            h.send_replace(Some(o.arrival));
        }
        log.object(o, clock.wall_us(o.arrival));
        stats.record(
            o.group_id,
            o.object_id,
            o.payload.len(),
            &o.extensions,
            clock.wall_us(o.arrival),
            fetched,
        );
        if let Some(tx) = catalog.take() {
            match Catalog::from_slice(&o.payload) {
                Ok(c) if !c.is_delta() => {
                    let _ = tx.send(joins(&c));
                }
                Ok(_) => catalog = Some(tx),
                Err(e) => {
                    stats.set_error(format!("catalog: {e}"));
                    catalog = Some(tx);
                }
            }
        }
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            o = async { fetch.as_mut()?.next().await }, if fetch.is_some() => match o {
                Some(o) => record(&mut stats, &mut log, &o, true),
                None => fetch = None,
            },
            e = reader.next() => match e {
                Some(TrackEvent::Object(o)) => record(&mut stats, &mut log, &o, false),
                Some(TrackEvent::StreamEnd { group_id, reset, .. }) => {
                    log.stream_end(group_id, reset.is_some());
                }
                Some(TrackEvent::Done(done)) => {
                    stats.set_ended(format!("{:?}: {}", done.code, done.reason));
                    break;
                }
                None => {
                    if let Some(reason) = conn.close_reason() {
                        stats.set_error(format!("session {reason}"));
                    }
                    break;
                }
            },
        }
    }
    (stats, log.records(&name))
}

/// Gaps in the played video longer than this count as stalls in [`AbrReport::stalls`]: a
/// viewer notices a picture frozen for more than about six frames at 30 fps.
pub const STALL_GAP: Duration = Duration::from_millis(200);

/// What `tiermesh sub --abr` did: the tiers it moved between and how the video played.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AbrReport {
    /// The video tiers of the catalog, lowest first.
    pub tiers: Vec<String>,
    /// Their rates from the catalog, bit/s.
    pub rates: Vec<u64>,
    /// Every switch, in order.
    pub switches: Vec<TierSwitch>,
    /// Gaps over [`STALL_GAP`] between consecutive played video objects (by arrival).
    pub stalls: u64,
    /// The longest gap between consecutive played video objects, ms.
    pub longest_gap_ms: f64,
    /// Each group played, in order: which tier it came from and whether it was whole.
    pub played: Vec<PlayedGroup>,
    /// The tier watched at the end.
    pub final_tier: Option<String>,
}

/// One tier switch.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TierSwitch {
    /// When the switch was decided, ms after the watch began.
    pub decided_ms: f64,
    /// When the first object of the new tier arrived, ms after the watch began (`None`: not
    /// within the watch).
    pub at_ms: Option<f64>,
    /// The new tier's first group played: the boundary where the switch took effect.
    pub group: Option<u64>,
    /// Tier left.
    pub from: String,
    /// Tier taken.
    pub to: String,
    /// Why ([`crate::abr::Abr::reason`]: `backlog`, `late`, `starved`, `cut`, `failed step
    /// up`, `up`).
    #[serde(default)]
    pub reason: Option<String>,
}

/// One played video group.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlayedGroup {
    /// Group ID.
    pub group: u64,
    /// The tier it came from.
    pub tier: String,
    /// Objects played.
    pub objects: u64,
    /// Whole: its stream ended with FIN and no object ID is missing.
    pub complete: bool,
}

/// One video subscription of [`watch_abr`].
struct TierSub {
    tier: usize,
    reader: crate::moq::TrackReader,
    fetch: Option<crate::moq::FetchReader>,
    /// First group played from it.
    from: u64,
}

/// Where a video object came from.
enum Source {
    /// The ABR's timer: nothing arrived to decide at.
    Idle,
    Current(Option<ReceivedObject>, bool),
    CurrentEnd(u64, u64, bool),
    CurrentGone,
    Pending(Option<TrackEvent>),
}

/// Reads the catalog: (audio track name, video tiers as (name, bit/s) lowest first).
async fn abr_catalog(
    conn: &Connection,
    track: FullTrackName,
    options: SubscribeOptions,
) -> Result<(Option<String>, Vec<(String, u64)>), String> {
    let (mut reader, fetch) =
        conn.join(track, options, 0).await.map_err(|e| crate::cli::explain(&e))?;
    let mut fetch = fetch.ok();
    loop {
        let o = tokio::select! {
            o = async { fetch.as_mut()?.next().await }, if fetch.is_some() => match o {
                Some(o) => o,
                None => { fetch = None; continue; }
            },
            o = reader.next_object() => o.ok_or("the catalog track ended before a catalog")?,
        };
        let c = Catalog::from_slice(&o.payload).map_err(|e| format!("catalog: {e}"))?;
        if c.is_delta() {
            continue;
        }
        let audio = c.tracks().iter().find(|t| t.name.starts_with("audio")).map(|t| t.name.clone());
        let mut video: Vec<(String, u64)> = c
            .tracks()
            .iter()
            .filter(|t| t.name.starts_with("video"))
            .filter_map(|t| Some((t.name.clone(), t.bitrate?)))
            .collect();
        video.sort_by_key(|v| v.1);
        return Ok((audio, video));
    }
}

/// Watches audio and one video tier, moving between the catalog's video tiers with
/// [`crate::abr::Abr`]: a switch is decided from the measured throughput and latency of the
/// watched tier, and takes effect at a group boundary: the new tier is subscribed from its
/// next group (NEXT GROUP START), the old one is played up to the group before and then
/// unsubscribed, so no group is ever played half from one tier and half from another.
///
/// Starts on the lowest tier, joined at once (SUBSCRIBE plus a joining FETCH of its current
/// group, the smallest there is), and steps up from measurements ([`crate::abr`]'s quick
/// climb from the start): a patient on a poor link sees a picture at once instead of
/// waiting for a heavier tier's current group, and a good link is on its top tier about
/// as soon as a start on the middle tier got there. A video tier named in
/// [`WatchConfig::tracks`] is the one to start on instead.
pub async fn watch_abr(conn: &Connection, config: WatchConfig) -> (Report, AbrReport) {
    use crate::abr::{Abr, AbrConfig, GroupEnds};
    let clock = Clock::now();
    let deadline = tokio::time::Instant::now() + config.duration;
    let options = SubscribeOptions { token: config.token.clone(), ..Default::default() };
    let ms = |at: Instant| at.saturating_duration_since(clock.instant).as_secs_f64() * 1000.0;
    let mut abr_report = AbrReport {
        tiers: Vec::new(),
        rates: Vec::new(),
        switches: Vec::new(),
        stalls: 0,
        longest_gap_ms: 0.0,
        played: Vec::new(),
        final_tier: None,
    };
    let mut report = Report {
        broadcast: path(&config.namespace),
        duration_s: 0.0,
        tracks: Vec::new(),
        error: None,
    };
    let track = |name: &str| FullTrackName::new(config.namespace.clone(), name);
    let catalog = match track(CATALOG_TRACK_NAME) {
        Ok(t) => tokio::select! {
            r = abr_catalog(conn, t, options.clone()) => r,
            () = tokio::time::sleep_until(deadline) => Err("no catalog arrived".to_owned()),
        },
        Err(e) => Err(format!("bad broadcast name: {e}")),
    };
    let (audio, tiers) = match catalog {
        Ok((audio, tiers)) if !tiers.is_empty() => (audio, tiers),
        Ok(_) => {
            report.error = Some("the catalog lists no video tier with a bitrate".into());
            return (report, abr_report);
        }
        Err(e) => {
            report.error = Some(e);
            return (report, abr_report);
        }
    };
    abr_report.tiers = tiers.iter().map(|t| t.0.clone()).collect();
    abr_report.rates = tiers.iter().map(|t| t.1).collect();

    let mut audio_task = JoinSet::new();
    // The newest audio arrival: while it flows the link works, and a silent video tier is
    // the tier's doing (`Abr::on_link`).
    let (audio_heard, audio_rx) = tokio::sync::watch::channel(None);
    if let Some(name) = &audio
        && let Ok(t) = track(name)
    {
        audio_task.spawn(follow(
            conn.clone(),
            t,
            Join::Now,
            options.clone(),
            clock,
            deadline,
            Taps { heard: Some(audio_heard), ..Taps::default() },
        ));
    }

    let start = match tiers.iter().position(|(name, _)| config.tracks.contains(name)) {
        Some(i) => i,
        None if config.tracks.is_empty() => 0,
        None => {
            let names: Vec<&str> = tiers.iter().map(|(n, _)| n.as_str()).collect();
            report.error = Some(format!(
                "no video tier of the catalog is named {}: its tiers are {}",
                config.tracks.join(", "),
                names.join(", ")
            ));
            return (report, abr_report);
        }
    };
    let mut abr = Abr::new(AbrConfig::new(abr_report.rates.clone()), start, Instant::now());
    // Which groups of the watched tier the ABR hears the end of.
    let mut ends = GroupEnds::new();
    let mut stats: Vec<TrackStats> =
        tiers.iter().map(|(n, _)| TrackStats::new(n, clock.wall_us, true)).collect();
    let mut played: BTreeMap<u64, (usize, GroupTally)> = BTreeMap::new();
    let mut last_played: Option<Instant> = None;
    let mut largest_gap = Duration::ZERO;

    let join = |tier: usize| {
        let t = track(&tiers[tier].0);
        let options = options.clone();
        async move {
            let t = t.map_err(|e| e.to_string())?;
            let (reader, fetch) =
                conn.join(t, options, 0).await.map_err(|e| crate::cli::explain(&e))?;
            Ok::<_, String>(TierSub { tier, reader, fetch: fetch.ok(), from: 0 })
        }
    };
    let first = tokio::select! {
        r = join(start) => r,
        () = tokio::time::sleep_until(deadline) => Err("no answer to SUBSCRIBE".to_owned()),
    };
    let mut cur = match first {
        Ok(s) => Some(s),
        Err(e) => {
            stats[start].set_error(e);
            None
        }
    };
    let mut cur_tier = start;
    // Groups of `cur` from this one on are not played (the pending tier takes over there).
    let mut until: Option<u64> = None;
    let mut pending: Option<TierSub> = None;
    let mut last_boundary: Option<u64> = None;
    // The first group played from the current tier, and whether the ABR measures yet.
    let mut first_group: Option<u64> = None;
    let mut measuring = false;
    let mut base_latency: Option<Duration> = None;
    // A switch decided (at an object, or at the end of a group): to which tier, and the
    // last group seen when it was.
    let mut decided: Option<(usize, u64)> = None;
    // Between arrivals: a tier that stops arriving entirely (its publisher dropped the rung,
    // or the path carries nothing of it), its first group after a switch included, and a
    // switch whose tier never comes bring no object or stream end to decide at, so the ABR
    // is asked on a timer too. A quarter of a second: a small share of its patience and of
    // a switch's wait, and often enough to see a gap in the audio (`abr::LINK_GAP`).
    let mut idle = tokio::time::interval(Duration::from_millis(250));
    idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A switch given up while the tier it left still played: the report's entry for it
    // takes the next group played.
    let mut resumed = false;

    loop {
        if let Some((next, after)) = decided.take() {
            let now = Instant::now();
            // What the switch leaves: the tier a waiting switch gives up, else the one playing.
            let left = pending.as_ref().map_or(cur_tier, |p| p.tier);
            tracing::debug!(
                target: "tiermesh_client::abr",
                at_ms = ms(now),
                from = %tiers[left].0,
                to = %tiers[next].0,
                reason = abr.reason().unwrap_or("?"),
                throughput = ?abr.throughput(now),
                capacity = ?abr.capacity(),
                "switch decided"
            );
            abr_report.switches.push(TierSwitch {
                decided_ms: ms(now),
                at_ms: None,
                group: None,
                from: tiers[left].0.clone(),
                to: tiers[next].0.clone(),
                reason: abr.reason().map(str::to_owned),
            });
            if next == cur_tier && cur.is_some() {
                // A switch given up before the tier it left reached the boundary: that tier
                // plays on, with nothing missed, measured afresh from its next group.
                pending = None;
                until = None;
                first_group = None;
                measuring = false;
                last_boundary = None;
                abr.started(now);
                if let Some(sw) = abr_report.switches.last_mut() {
                    sw.at_ms = Some(ms(now));
                }
                resumed = true;
                continue;
            }
            let sub = match track(&tiers[next].0) {
                Ok(t) => {
                    let options = SubscribeOptions {
                        filter: Some(SubscriptionFilter::NextGroupStart),
                        ..options.clone()
                    };
                    tokio::select! {
                        r = conn.subscribe(t, options) => r.map_err(|e| crate::cli::explain(&e)),
                        () = tokio::time::sleep_until(deadline) => break,
                    }
                }
                Err(e) => Err(e.to_string()),
            };
            match sub {
                Ok(reader) => {
                    // Its wait for the first group counts from here.
                    abr.subscribed(Instant::now());
                    let from = reader.largest().map_or(0, |l| l.group.0 + 1).max(after + 1);
                    until = Some(from);
                    // A switch given up is unsubscribed here (its reader dropped).
                    pending = Some(TierSub { tier: next, reader, fetch: None, from });
                }
                Err(e) => {
                    tracing::warn!(tier = %tiers[next].0, error = %e, "tier switch failed");
                    stats[next].set_error(e);
                    pending = None;
                    until = None;
                    abr.cancel(Instant::now());
                }
            }
        }
        let has_fetch = cur.as_ref().is_some_and(|c| c.fetch.is_some());
        let has_cur = cur.is_some();
        let (cur_fetch, cur_reader) = match cur.as_mut() {
            Some(c) => (c.fetch.as_mut(), Some(&mut c.reader)),
            None => (None, None),
        };
        let pending_reader = pending.as_mut().map(|p| &mut p.reader);
        let has_pending = pending_reader.is_some();
        let source = tokio::select! {
            () = tokio::time::sleep_until(deadline) => None,
            _ = idle.tick() => Some(Source::Idle),
            o = async { cur_fetch?.next().await }, if has_fetch => Some(Source::Current(o, true)),
            e = async { cur_reader?.next().await }, if has_cur => Some(match e {
                Some(TrackEvent::Object(o)) => Source::Current(Some(o), false),
                Some(TrackEvent::StreamEnd { group_id, subgroup_id, reset }) => {
                    Source::CurrentEnd(group_id, subgroup_id, reset.is_some())
                }
                Some(TrackEvent::Done(_)) | None => Source::CurrentGone,
            }),
            e = async { pending_reader?.next().await }, if has_pending => {
                Some(Source::Pending(e))
            }
        };
        let Some(source) = source else { break };
        if let Some(at) = *audio_rx.borrow() {
            abr.on_link(at);
        }
        let (o, fetched, tier) = match source {
            Source::Idle => {
                // As at a stream end: the switch subscribes the lower tier from the group
                // after the last one seen (or gives up a switch whose tier never came).
                let now = Instant::now();
                if let Some(next) = abr.poll_down(now) {
                    let seen = played.last_key_value().map_or(0, |(&g, _)| g);
                    decided = Some((next, seen));
                }
                continue;
            }
            Source::CurrentGone => {
                cur = None;
                continue;
            }
            Source::Current(None, _) => {
                if let Some(c) = cur.as_mut() {
                    c.fetch = None;
                }
                continue;
            }
            Source::Current(Some(o), fetched) => {
                if until.is_some_and(|u| o.group_id >= u) {
                    // The old tier's part is over: stop receiving it. The picture waits for
                    // the new tier from here.
                    abr.on_left_object(o.arrival, true);
                    cur = None;
                    continue;
                }
                (o, fetched, cur_tier)
            }
            Source::CurrentEnd(group, subgroup, reset) => {
                // How a group of the watched tier ended tells the ABR whether the relay
                // carried it whole or cut it short (a reset, objects missing, or nothing of it
                // at all). Not a group played from another tier, nor one that ends while a
                // switch waits; `ends` leaves out the tier's first group (its start-up, or the
                // joining FETCH) and keeps the groups in order.
                let (objects, whole) = match played.get_mut(&group) {
                    Some((t, _)) if *t != cur_tier => continue,
                    Some((_, g)) => {
                        if reset {
                            g.reset = true;
                        } else {
                            g.fin = true;
                        }
                        let objects = g.ids.len() as u64;
                        (objects, !reset && g.ids.last().is_some_and(|&last| last + 1 == objects))
                    }
                    // A stream reset before its first object arrived.
                    None => (0, false),
                };
                if pending.is_some() {
                    continue;
                }
                let now = Instant::now();
                let judged: Vec<_> = ends.on_stream_end(group, subgroup, objects, whole).collect();
                if judged.is_empty() {
                    continue;
                }
                for (i, &(objects, whole)) in judged.iter().enumerate() {
                    abr.on_group_end(objects, whole);
                    // Of two, the first stands for IDs skipped before this group.
                    let skipped = i + 1 < judged.len();
                    tracing::trace!(
                        target: "tiermesh_client::abr",
                        at_ms = ms(now),
                        group,
                        objects,
                        whole,
                        skipped,
                        tier = cur_tier,
                        "group end"
                    );
                }
                let seen = played.last_key_value().map_or(group, |(&g, _)| g.max(group));
                decided = abr.poll_down(now).map(|next| (next, seen));
                continue;
            }
            Source::Pending(Some(TrackEvent::Object(o))) => {
                let Some(p) = pending.take() else { continue };
                if o.group_id < p.from {
                    pending = Some(p);
                    continue;
                }
                // The new tier's first group begins: the switch takes effect here.
                let now = Instant::now();
                if let Some(sw) = abr_report.switches.last_mut() {
                    sw.at_ms = Some(ms(o.arrival));
                    sw.group = Some(o.group_id);
                }
                cur_tier = p.tier;
                cur = Some(p);
                until = None;
                last_boundary = None;
                first_group = None;
                measuring = false;
                abr.started(now);
                (o, false, cur_tier)
            }
            Source::Pending(Some(TrackEvent::StreamEnd { group_id, reset, .. })) => {
                if let Some(p) = &pending
                    && let Some((t, g)) = played.get_mut(&group_id)
                    && *t == p.tier
                {
                    g.fin |= reset.is_none();
                    g.reset |= reset.is_some();
                }
                continue;
            }
            Source::Pending(_) => {
                // Its subscription ended before its first group: the switch is not made.
                pending = None;
                until = None;
                abr.cancel(Instant::now());
                continue;
            }
        };

        // Play it.
        let arrival_us = clock.wall_us(o.arrival);
        stats[tier].record(
            o.group_id,
            o.object_id,
            o.payload.len(),
            &o.extensions,
            arrival_us,
            fetched,
        );
        let entry = played.entry(o.group_id).or_insert_with(|| (tier, GroupTally::default()));
        if entry.0 != tier {
            // A group already played from another tier: never mix two tiers in one group.
            continue;
        }
        if entry.1.ids.insert(o.object_id) {
            entry.1.bytes += o.payload.len() as u64;
        }
        if resumed && tier == cur_tier {
            resumed = false;
            if let Some(sw) = abr_report.switches.last_mut() {
                sw.group = Some(o.group_id);
            }
        }
        if let Some(prev) = last_played {
            let gap = o.arrival.saturating_duration_since(prev);
            largest_gap = largest_gap.max(gap);
            if gap > STALL_GAP {
                abr_report.stalls += 1;
            }
        }
        last_played = Some(last_played.map_or(o.arrival, |p| p.max(o.arrival)));

        // Adapt.
        if pending.is_some() {
            // The tier left, up to the boundary: whether it still delivers decides where a
            // switch whose tier never comes goes back to.
            abr.on_left_object(o.arrival, false);
            continue;
        }
        let now = Instant::now();
        let latency = tiermesh_proto::loc::capture_timestamp_us(&o.extensions)
            .map(|c| Duration::from_micros(arrival_us.saturating_sub(c)));
        let mut next = None;
        if first_group.is_none() {
            first_group = Some(o.group_id);
            ends.start(o.group_id);
        }
        ends.on_object(o.group_id, o.subgroup_id);
        if o.object_id == 0 && !fetched && last_boundary != Some(o.group_id) {
            last_boundary = Some(o.group_id);
            let t = abr.at_group_start(now);
            if t != cur_tier {
                next = Some(t);
            }
        }
        // The joining FETCH is history by design, and a tier's first group after a switch
        // carries the start-up of its subscription (an upstream subscribe, a key frame
        // queued behind the old tier): neither says whether the tier fits, but either says
        // that the tier is not silent.
        let counts = !fetched && first_group.is_some_and(|g| o.group_id > g);
        if next.is_none() && !counts {
            abr.on_heard(o.arrival);
        }
        if next.is_none() && counts {
            if !measuring {
                // Throughput is measured from the first group that counts.
                measuring = true;
                abr.started(o.arrival);
            }
            if let Some(l) = latency {
                // The ABR judges queueing, not the path's fixed delay: latency above the
                // least seen in this watch (one-way delay plus the publisher's pipeline).
                let floor = *base_latency.get_or_insert(l);
                base_latency = Some(floor.min(l));
                let queueing = l.saturating_sub(floor.min(l));
                abr.on_object(o.arrival, o.payload.len() as u64, queueing, o.object_id == 0);
                // The ABR's inputs, for reading its decisions back
                // (`RUST_LOG=tiermesh_client::abr=trace`).
                tracing::trace!(
                    target: "tiermesh_client::abr",
                    at_ms = ms(o.arrival),
                    group = o.group_id,
                    object = o.object_id,
                    bytes = o.payload.len(),
                    queueing_ms = queueing.as_secs_f64() * 1000.0,
                    tier = cur_tier,
                    "object"
                );
            } else {
                abr.on_heard(o.arrival);
            }
            next = abr.poll_down(now);
        }
        // The switch is made at the top of the loop, before the next event.
        decided = next.map(|next| (next, o.group_id));
    }
    drop(cur);
    drop(pending);
    abr_report.final_tier = Some(tiers[cur_tier].0.clone());
    abr_report.longest_gap_ms = largest_gap.as_secs_f64() * 1000.0;
    abr_report.played = played
        .iter()
        .map(|(&group, (tier, g))| {
            let max = g.ids.last().copied().unwrap_or(0);
            PlayedGroup {
                group,
                tier: tiers[*tier].0.clone(),
                objects: g.ids.len() as u64,
                complete: g.fin && !g.reset && g.ids.len() as u64 == max + 1,
            }
        })
        .collect();
    let mut tracks = Vec::new();
    while let Some(r) = audio_task.join_next().await {
        if let Ok((s, _)) = r {
            tracks.push(s.report());
        }
    }
    tracks.extend(
        stats
            .iter()
            .filter(|s| s.objects() > 0 || s.report().error.is_some())
            .map(TrackStats::report),
    );
    report.tracks = tracks;
    report.duration_s = clock.instant.elapsed().as_secs_f64();
    report.error = conn.close_reason().map(|r| r.to_string());
    (report, abr_report)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tiermesh_certs::dev;

    use super::*;
    use crate::moq::{self, ClientOptions, Event, ServerOptions};
    use crate::publish::{Publisher, now_us};
    use crate::synthetic::BroadcastSpec;
    use crate::transport::{ClientTls, CongestionControl, Server, ServerTls, TransportConfig};

    /// The lowest rung of each ladder (alternate group) is joined at once, the rungs above
    /// it at their next group; audio and tracks of no alternate group at once.
    #[test]
    fn upper_rungs_start_at_their_next_group() {
        let catalog = BroadcastSpec::default().catalog(0);
        let j = joins(&catalog);
        let names: Vec<(&str, Join)> = j.iter().map(|(n, j)| (n.as_str(), *j)).collect();
        assert_eq!(
            names,
            [
                ("audio", Join::Now),
                ("video/180p", Join::Now),
                ("video/360p", Join::NextGroup),
                ("video/720p", Join::NextGroup),
            ]
        );

        // Two ladders, listed highest first, one rung without a bit rate, one lone track.
        let track =
            |name: &str, alt: Option<u64>, rate: Option<u64>| tiermesh_proto::catalog::Track {
                name: name.to_owned(),
                alt_group: alt,
                bitrate: rate,
                ..Default::default()
            };
        let catalog = Catalog {
            tracks: Some(vec![
                track("cam/hi", Some(1), Some(2_000_000)),
                track("cam/lo", Some(1), Some(300_000)),
                track("screen/x", Some(2), None),
                track("screen/lo", Some(2), Some(100_000)),
                track("screen/same", Some(2), Some(100_000)),
                track("captions", None, None),
            ]),
            ..Default::default()
        };
        let got: Vec<Join> = joins(&catalog).into_iter().map(|(_, j)| j).collect();
        use Join::{NextGroup, Now};
        assert_eq!(got, [NextGroup, Now, NextGroup, Now, NextGroup, Now]);
    }

    /// A synthetic broadcast (catalog, audio, the default ladder) published for 30 s by a
    /// server on 127.0.0.1, and the client's connection to it.
    async fn synthetic_broadcast() -> (moq::Connection, TrackNamespace, tokio::task::JoinHandle<()>)
    {
        synthetic_broadcast_with(TransportConfig::default()).await
    }

    /// [`synthetic_broadcast`] with both ends on the given transport configuration.
    async fn synthetic_broadcast_with(
        transport: TransportConfig,
    ) -> (moq::Connection, TrackNamespace, tokio::task::JoinHandle<()>) {
        let names: Vec<String> = dev::DEFAULT_NAMES.iter().map(|s| s.to_string()).collect();
        let cert = dev::generate(&names, dev::DEFAULT_VALIDITY).unwrap();
        let tls =
            ServerTls::from_der(vec![cert.cert.to_vec()], cert.key.secret_pkcs8_der().to_vec())
                .unwrap();
        let mut server =
            Server::bind_with("127.0.0.1:0".parse().unwrap(), tls, transport.clone()).unwrap();
        let url = format!("moqt://127.0.0.1:{}/clinic/room-42", server.local_addr().port())
            .parse()
            .unwrap();
        let namespace = TrackNamespace::from_path("clinic/room-42").unwrap();

        // The publisher is the server side here; it publishes its namespace to the client.
        let ns = namespace.clone();
        let publisher = tokio::spawn(async move {
            let session = server.accept().await.unwrap().accept().await.unwrap();
            let (conn, driver) = moq::accept(session, ServerOptions::default()).await.unwrap();
            tokio::spawn(driver.run());
            let mut p = Publisher::new(ns, BroadcastSpec::default(), now_us(), None);
            let stop = tokio::time::sleep(Duration::from_secs(30));
            let _ = p.serve(&conn, stop, || {}).await;
            drop(server);
        });

        let options = ClientOptions::new(ClientTls::pinned(cert.sha256)).transport(transport);
        let (conn, driver) = moq::connect(&url, options).await.unwrap();
        tokio::spawn(driver.run());
        let events = conn.clone();
        tokio::spawn(async move {
            while let Some(e) = events.next_event().await {
                if let Event::PublishNamespace(req) = e {
                    req.accept();
                }
            }
        });
        (conn, namespace, publisher)
    }

    /// `sub --abr --track X` where X is no tier of the ladder is refused with the tiers
    /// named, not started on some tier.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abr_start_tier_that_is_not_in_the_catalog_is_an_error() {
        let (conn, namespace, publisher) = synthetic_broadcast().await;
        let config = WatchConfig {
            namespace,
            tracks: vec!["video/4k".to_owned()],
            duration: Duration::from_secs(2),
            token: None,
        };
        let (report, abr) = watch_abr(&conn, config).await;
        publisher.abort();
        let error = report.error.expect("an error for a tier the catalog lacks");
        assert!(error.contains("video/4k") && error.contains("video/180p"), "{error}");
        assert!(abr.switches.is_empty(), "{abr:?}");
    }

    /// The publisher serves a subscriber directly (no relay between): the subscriber finds
    /// the tracks in the catalog, joins each at a key frame, and counts nothing missing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_joins_every_catalog_track_at_a_key_frame() {
        // Under cubic: `delay`, the default, has its own variant below.
        let transport = TransportConfig::default().congestion(CongestionControl::Cubic);
        joins_every_track_at_a_key_frame(transport).await;
    }

    /// The same under the `delay` controller, where the scheduler holds a new session's upper
    /// tiers until their offered rates show: on a path that reads far above them (loopback),
    /// 720p's first key frame must not wait that quarter second (its p99 read 223-253 ms).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_joins_every_catalog_track_at_a_key_frame_under_delay() {
        let transport = TransportConfig::default().congestion(CongestionControl::Delay);
        joins_every_track_at_a_key_frame(transport).await;
    }

    async fn joins_every_track_at_a_key_frame(transport: TransportConfig) {
        let (conn, namespace, publisher) = synthetic_broadcast_with(transport).await;
        let report = watch(
            &conn,
            WatchConfig {
                namespace,
                tracks: Vec::new(),
                duration: Duration::from_millis(3500),
                token: None,
            },
        )
        .await;
        publisher.abort();
        let names: Vec<&str> = report.tracks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["catalog", "audio", "video/180p", "video/360p", "video/720p"]);
        for t in &report.tracks {
            assert_eq!(t.error, None, "{}", t.name);
            assert_eq!((t.missing_objects, t.missing_groups), (0, 0), "{t:?}");
            assert!(t.objects > 0, "{}", t.name);
            if t.name.starts_with("video/") {
                // Video starts at the next whole second, then 30 frames a second.
                assert!(t.objects >= 45, "{t:?}");
                let l = t.latency_ms.unwrap();
                assert!(l.p99 < 200.0, "{t:?}");
            }
            if t.name == "audio" {
                assert!(t.objects >= 100, "{t:?}");
            }
            assert_eq!(t.first_object, Some(0), "{t:?}");
        }
    }
}
