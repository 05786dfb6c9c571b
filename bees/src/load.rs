//! The load run: N subscribers (and optionally M publishers), each on its own QUIC or
//! WebTransport connection, started at a fixed rate, all stopping at one deadline.
//!
//! Subscribers run on the caller's tokio runtime (`tiermesh bees` uses a current-thread
//! runtime, so the whole load costs one core); synthetic publishers run on a thread of their
//! own (see `PublisherThread`). Per subscriber there is one task that
//! connects, joins every track (SUBSCRIBE Largest Object plus a joining FETCH, as a player
//! does) and then one task per track that records what arrives until the deadline. A
//! sampler task reads the shared per-second counters once a second, prints the progress
//! line and samples the relay's `/proc` entry.
//!
//! Subscriber `k` (counted over all shards) belongs to shard `k mod n`, connects to target
//! `k mod R` and, with publishers, watches broadcast `p{k mod M}` under the target's
//! namespace; it starts `k / rate` seconds after the run's start, so shards started together
//! on several hosts make one ramp. Publisher `j` runs in shard `j mod n` and publishes its
//! broadcast to every target.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tiermesh_client::cli::BroadcastUrl;
use tiermesh_client::moq::{self, ClientOptions, ReceivedObject, SubscribeOptions, TrackEvent};
use tiermesh_client::publish::{Publisher, Served, now_us};
use tiermesh_client::synthetic::{BroadcastSpec, TrackKind, TrackSpec, VIDEO_FPS};
use tiermesh_client::transport::ClientTls;
use tiermesh_proto::catalog::CATALOG_TRACK_NAME;
use tiermesh_proto::types::{FullTrackName, TrackNamespace};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant as TokioInstant;

use crate::Error;
use crate::procfs::Process;
use crate::report::{Point, RelayUsage, Report, Shard, TrackTotals};
use tiermesh_client::report::Distribution;

/// How long one subscriber may take to connect and finish SETUP: a loaded relay on
/// loopback answers in milliseconds; 10 s only bounds a relay that stopped answering.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a SUBSCRIBE and its joining FETCH may take to be answered: a relay answers
/// from its registry and cache at once; a subscriber still waiting after 5 s is counted as
/// not subscribed, so the steady window can open without it.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long publishers may take to have their broadcasts accepted before subscribers start.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after the deadline a subscriber may take to close its session and hand in its
/// results before it is aborted (and counted as failed).
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Groups whose object-ID holes are still tracked per subscription. Older groups are
/// settled: their holes counted, their state dropped. 64 keeps a minute of video groups and
/// over a second of audio groups, far more than reordering on any path.
const OPEN_GROUPS: usize = 64;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The relays (and the broadcast namespace on each).
    pub targets: Vec<BroadcastUrl>,
    /// How to trust the relays' certificates.
    pub tls: ClientTls,
    /// Access token for SETUP, SUBSCRIBE and PUBLISH_NAMESPACE.
    pub token: Option<Bytes>,
    /// Subscribers over all shards.
    pub subscribers: u64,
    /// Synthetic publishers over all shards (0: the broadcast is published by someone else).
    pub publishers: u64,
    /// Subscribers started per second, over all shards.
    pub rate: f64,
    /// How long the whole run lasts, ramp included.
    pub duration: Duration,
    /// Tracks each subscriber joins; empty makes idle subscribers (connected, no
    /// subscription).
    pub tracks: Vec<String>,
    /// A wait between objects longer than this is a stall.
    pub stall: Duration,
    /// This shard's index and the shard count.
    pub shard: (u32, u32),
    /// A local relay process to measure.
    pub relay_pid: Option<u32>,
    /// Print a progress line on stderr every second.
    pub progress: bool,
    /// With publishers: add the video track [`BENCH_TRACK`] to their broadcast, with objects
    /// of this many bytes on average (30 a second in one-second groups, the key frame of
    /// each group about six times the others), to measure a relay per object of a chosen
    /// size.
    pub object_bytes: Option<u64>,
}

/// The track `object_bytes` adds to the synthetic broadcast.
pub const BENCH_TRACK: &str = "video/bench";

impl LoadConfig {
    /// Checks the numbers.
    ///
    /// # Errors
    /// A count, rate or shard is out of range.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::Config(m.to_owned()));
        if self.targets.is_empty() {
            return bad("no relay URL given");
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return bad("--rate must be a positive number of subscribers per second");
        }
        if self.shard.1 == 0 || self.shard.0 >= self.shard.1 {
            return bad("--shard must be i/n with 0 <= i < n");
        }
        if self.duration.is_zero() {
            return bad("--duration must be more than zero");
        }
        if let Some(n) = self.object_bytes {
            if self.publishers == 0 {
                return bad("--object-bytes needs --publishers (it shapes their broadcast)");
            }
            if !(64..=1 << 20).contains(&n) {
                return bad("--object-bytes must be between 64 and 1048576");
            }
        }
        Ok(())
    }
}

/// Converts [`Instant`]s to wall-clock microseconds, from one reading of both clocks.
#[derive(Debug, Clone, Copy)]
struct Clock {
    instant: Instant,
    wall_us: u64,
}

impl Clock {
    fn now() -> Self {
        Self { instant: Instant::now(), wall_us: now_us() }
    }

    fn wall_us(&self, at: Instant) -> u64 {
        match at.checked_duration_since(self.instant) {
            Some(d) => self.wall_us + d.as_micros() as u64,
            None => self.wall_us.saturating_sub((self.instant - at).as_micros() as u64),
        }
    }
}

/// Counters every task updates; the sampler reads them.
#[derive(Default)]
struct Live {
    connected: AtomicU64,
    settled: AtomicU64,
    objects: AtomicU64,
    bytes: AtomicU64,
    second: Mutex<Point>,
    all_settled: Notify,
    /// Set when the steady window opens (every subscriber settled).
    steady: AtomicBool,
}

impl Live {
    fn object(&self, track: &str, bytes: usize, latency_us: Option<u64>) {
        self.objects.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        let mut p = self.second.lock().unwrap_or_else(|e| e.into_inner());
        p.objects += 1;
        match p.bytes.get_mut(track) {
            Some(b) => *b += bytes as u64,
            None => {
                p.bytes.insert(track.to_owned(), bytes as u64);
            }
        }
        if let Some(l) = latency_us {
            p.latency_us.record(l);
        }
    }

    fn take_second(&self) -> Point {
        std::mem::take(&mut *self.second.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What one subscriber hands back.
#[derive(Default)]
struct SubResult {
    connect_us: Option<u64>,
    subscribed: bool,
    failed: bool,
    errors: Vec<String>,
    tracks: Vec<(String, TrackTotals)>,
}

/// Runs the load described by `config` and returns its report. Stops by itself at
/// `config.duration` (plus a few seconds to close sessions).
///
/// # Errors
/// The configuration is invalid, the relay process cannot be read, or a publisher's
/// broadcast was refused.
pub async fn run(config: LoadConfig) -> Result<Report, Error> {
    config.validate()?;
    let relay = config.relay_pid.map(Process::new).transpose()?;
    let me = Process::new(std::process::id()).ok();
    let my_start = me.as_ref().and_then(|p| p.sample().ok());
    let clock = Clock::now();
    let start = TokioInstant::now();
    let deadline = start + config.duration;
    let started_unix_ms = clock.wall_us / 1000;
    let (shard, shards) = config.shard;
    let live = Arc::new(Live::default());

    // Publishers first: subscribers need their broadcasts.
    let mut publishing: Vec<BoxFuture> = Vec::new();
    let mut published = Vec::new();
    for j in (0..config.publishers).filter(|j| j % u64::from(shards) == u64::from(shard)) {
        for target in &config.targets {
            let (tx, rx) = tokio::sync::oneshot::channel();
            published.push(rx);
            publishing.push(Box::pin(publish(
                target.clone(),
                broadcast(&target.namespace, config.publishers, j)?,
                config.clone(),
                deadline + STOP_GRACE,
                tx,
            )));
        }
    }
    let publishers = PublisherThread::start(publishing)?;
    let publish_by = TokioInstant::now() + PUBLISH_TIMEOUT;
    for rx in published {
        match tokio::time::timeout_at(publish_by, rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(Error::Publish(e)),
            Ok(Err(_)) => return Err(Error::Publish("publisher task ended".into())),
            Err(_) => return Err(Error::Publish("no answer to PUBLISH_NAMESPACE in time".into())),
        }
    }

    let mine: Vec<u64> =
        (0..config.subscribers).filter(|k| k % u64::from(shards) == u64::from(shard)).collect();
    // The broadcasts this shard watches must be live at the relays before the ramp.
    let mut watched = Vec::new();
    for &k in &mine {
        let target = &config.targets[(k % config.targets.len() as u64) as usize];
        let namespace = if config.publishers > 0 {
            broadcast(&target.namespace, config.publishers, k % config.publishers)?
        } else {
            target.namespace.clone()
        };
        if !watched.iter().any(|(t, n)| t == target && *n == namespace) {
            watched.push((target.clone(), namespace));
        }
    }
    let mut probes = JoinSet::new();
    for (target, namespace) in watched {
        probes.spawn(probe(target, namespace, config.clone(), deadline.min(publish_by)));
    }
    while let Some(p) = probes.join_next().await {
        if let Ok(Err(e)) = p {
            tracing::warn!("{e}");
        }
    }

    let before = relay.as_ref().map(Process::sample).transpose()?;
    let planned = mine.len() as u64;

    let sampler = tokio::spawn(sample(
        live.clone(),
        relay.clone(),
        me.clone(),
        planned,
        config.progress,
        start,
        deadline,
    ));

    let mut subscribers = JoinSet::new();
    let ramp = async {
        for &k in &mine {
            let at = start + Duration::from_secs_f64(k as f64 / config.rate);
            if at >= deadline {
                break;
            }
            tokio::time::sleep_until(at).await;
            let target = &config.targets[(k % config.targets.len() as u64) as usize];
            let namespace = if config.publishers > 0 {
                broadcast(&target.namespace, config.publishers, k % config.publishers)?
            } else {
                target.namespace.clone()
            };
            subscribers.spawn(subscriber(
                k,
                target.clone(),
                namespace,
                config.clone(),
                live.clone(),
                clock,
                deadline,
                planned,
            ));
        }
        Ok::<u64, Error>(subscribers.len() as u64)
    };
    let started = ramp.await?;
    if started < planned {
        // The ramp did not fit in the duration: the rest will never settle.
        live.settled.fetch_add(planned - started, Ordering::Relaxed);
        if live.settled.load(Ordering::Relaxed) >= planned {
            live.all_settled.notify_one();
        }
    }

    // The steady window opens when every subscriber has connected and subscribed (or
    // failed to).
    let settled = tokio::select! {
        () = live.all_settled.notified() => true,
        () = tokio::time::sleep_until(deadline) => live.settled.load(Ordering::Relaxed) >= planned,
    };
    let ramp_s = start.elapsed().as_secs_f64();
    let steady_start = if settled && TokioInstant::now() < deadline {
        live.steady.store(true, Ordering::Relaxed);
        let s = relay.as_ref().map(Process::sample).transpose()?;
        Some((
            TokioInstant::now(),
            s,
            me.as_ref().and_then(|p| p.sample().ok()),
            live.objects.load(Ordering::Relaxed),
            live.bytes.load(Ordering::Relaxed),
            live.connected.load(Ordering::Relaxed),
        ))
    } else {
        None
    };
    tokio::time::sleep_until(deadline).await;
    let end = relay.as_ref().map(Process::sample).transpose()?;
    let my_steady = match (&steady_start, me.as_ref().and_then(|p| p.sample().ok())) {
        (Some((at, _, Some(mine), ..)), Some(now)) => {
            (now.cpu_s - mine.cpu_s, (deadline - *at).as_secs_f64())
        }
        _ => (0.0, 0.0),
    };
    let end_objects = live.objects.load(Ordering::Relaxed);
    let end_bytes = live.bytes.load(Ordering::Relaxed);

    let mut report = Report::new();
    report.subscribers.started = started;
    let stop_by = TokioInstant::now() + STOP_GRACE;
    loop {
        match tokio::time::timeout_at(stop_by, subscribers.join_next()).await {
            Ok(Some(Ok(r))) => add(&mut report, r),
            Ok(Some(Err(e))) => {
                report.subscribers.failed += 1;
                report.note_error(&format!("subscriber task: {e}"));
            }
            Ok(None) => break,
            Err(_) => {
                let left = subscribers.len() as u64;
                report.subscribers.failed += left;
                report.note_error("subscriber did not stop in time");
                subscribers.abort_all();
                break;
            }
        }
    }
    let timeline = sampler.await.unwrap_or_default();
    publishers.stop();

    report.timeline = timeline;
    let duration_s = start.elapsed().as_secs_f64();
    report.shards.push(Shard {
        index: shard,
        count: shards,
        targets: config.targets.iter().map(|t| t.target.to_string()).collect(),
        subscribers: planned,
        publishers: (0..config.publishers)
            .filter(|j| j % u64::from(shards) == u64::from(shard))
            .count() as u64,
        tracks: config.tracks.clone(),
        started_unix_ms,
        duration_s,
        ramp_s,
        bees_cpu_s: match (me.and_then(|p| p.sample().ok()), my_start) {
            (Some(end), Some(start)) => end.cpu_s - start.cpu_s,
            _ => 0.0,
        },
        bees_steady_cpu_s: my_steady.0,
        steady_s: my_steady.1,
    });
    if let (Some(p), Some(before), Some(end)) = (&relay, before, end) {
        let max = report.timeline.values().filter_map(|p| p.relay_rss_kib).max().unwrap_or(0);
        let mut usage = RelayUsage {
            pid: p.pid(),
            rss_before_kib: before.rss_kib,
            rss_connected_kib: 0,
            rss_max_kib: max.max(end.rss_kib),
            subscribers_connected: 0,
            steady_cpu_s: 0.0,
            steady_s: 0.0,
            steady_objects: 0,
            steady_bytes: 0,
            total_cpu_s: end.cpu_s - before.cpu_s,
        };
        if let Some((at, Some(s), _, objects, bytes, connected)) = steady_start {
            usage.rss_connected_kib = s.rss_kib;
            usage.subscribers_connected = connected;
            usage.steady_cpu_s = end.cpu_s - s.cpu_s;
            usage.steady_s = (deadline - at).as_secs_f64();
            usage.steady_objects = end_objects - objects;
            usage.steady_bytes = end_bytes - bytes;
        }
        report.relays.push(usage);
    }
    Ok(report)
}

fn add(report: &mut Report, r: SubResult) {
    if let Some(c) = r.connect_us {
        report.subscribers.connected += 1;
        report.connect_us.record(c);
    }
    report.subscribers.subscribed += u64::from(r.subscribed);
    report.subscribers.failed += u64::from(r.failed);
    for e in &r.errors {
        report.note_error(e);
    }
    for (name, t) in r.tracks {
        report.tracks.entry(name).or_default().merge(&t);
    }
}

type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The synthetic publishers, on a thread of their own with a current-thread runtime.
///
/// On the subscribers' runtime, a publisher's object waited behind the work of every
/// subscriber (hundreds of tasks woken by each object): with 700 subscribers on one core
/// objects reached the relay 25-100 ms after capture, which every subscriber's latency then
/// carried and which the relay did not cause. A thread of its own is woken by the kernel
/// when its timer fires, even with bees pinned to one core.
struct PublisherThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl PublisherThread {
    /// Starts running `publishers` (none: no thread).
    fn start(publishers: Vec<BoxFuture>) -> Result<Self, Error> {
        if publishers.is_empty() {
            return Ok(Self { stop: None });
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Publish(format!("publisher runtime: {e}")))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("bees-publish".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut set = JoinSet::new();
                    for p in publishers {
                        set.spawn(p);
                    }
                    tokio::select! {
                        _ = stopped => {}
                        () = async { while set.join_next().await.is_some() {} } => {}
                    }
                });
                // Sessions and their tasks end with the runtime; do not wait for stragglers.
                runtime.shutdown_timeout(Duration::from_millis(100));
            })
            .map_err(|e| Error::Publish(format!("publisher thread: {e}")))?;
        Ok(Self { stop: Some(stop) })
    }

    /// Ends the publishers (their sessions close with their runtime).
    fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Broadcast `p{j}` under `base` when there are publishers.
fn broadcast(base: &TrackNamespace, publishers: u64, j: u64) -> Result<TrackNamespace, Error> {
    if publishers == 0 {
        return Ok(base.clone());
    }
    let mut fields = base.fields().to_vec();
    fields.push(Bytes::from(format!("p{j}")));
    TrackNamespace::new(fields).map_err(|e| Error::Config(format!("broadcast name: {e}")))
}

/// The synthetic broadcast bees' publishers send: `tiermesh pub`'s, plus [`BENCH_TRACK`]
/// when `object_bytes` is set.
fn spec(config: &LoadConfig) -> BroadcastSpec {
    let mut spec = BroadcastSpec::default();
    if let Some(n) = config.object_bytes {
        // One tier above the highest (publisher priority 80), 30 objects a second.
        spec.tracks.push(TrackSpec {
            name: BENCH_TRACK.to_owned(),
            kind: TrackKind::Video,
            priority: 80,
            bitrate: n * 8 * VIDEO_FPS,
            size: Some((1920, 1080)),
            delivery_timeout: Some(Duration::from_secs(1)),
        });
    }
    spec
}

fn options(config: &LoadConfig) -> ClientOptions {
    let mut o = ClientOptions::new(config.tls.clone());
    if let Some(t) = &config.token {
        o = o.token(t.clone());
    }
    o
}

async fn publish(
    target: BroadcastUrl,
    namespace: TrackNamespace,
    config: LoadConfig,
    stop: TokioInstant,
    published: tokio::sync::oneshot::Sender<Result<(), String>>,
) {
    let conn = match moq::connect(target.url(), options(&config)).await {
        Ok((conn, driver)) => {
            tokio::spawn(driver.run());
            conn
        }
        Err(e) => {
            let _ =
                published.send(Err(format!("publisher cannot connect to {}: {e}", target.target)));
            return;
        }
    };
    let mut p = Publisher::new(namespace, spec(&config), now_us(), config.token.clone());
    let mut published = Some(published);
    let served = p
        .serve(&conn, tokio::time::sleep_until(stop), || {
            if let Some(tx) = published.take() {
                let _ = tx.send(Ok(()));
            }
        })
        .await;
    match served {
        Ok(Served::Stopped) => {}
        Ok(Served::Closed(reason)) => tracing::warn!("publisher session ended: {reason}"),
        Err(e) => {
            if let Some(tx) = published.take() {
                let _ = tx.send(Err(format!("broadcast refused: {e}")));
            }
        }
    }
    conn.close(tiermesh_proto::TerminationCode::NoError, "bees done");
}

/// Waits until `namespace` at `target` delivers a live object on every track, or `by`.
///
/// The relay then has its upstream subscriptions and a cache: the ramp measures viewers
/// joining a live broadcast. (Viewers that join within the first few milliseconds of a
/// relay's upstream subscription, before its first object, can wait forever for their
/// joining FETCH's answer with the relay of this writing: a separate case.)
async fn probe(
    target: BroadcastUrl,
    namespace: TrackNamespace,
    config: LoadConfig,
    by: TokioInstant,
) -> Result<(), String> {
    let work = async {
        let (conn, driver) =
            moq::connect(target.url(), options(&config)).await.map_err(|e| e.to_string())?;
        let driver = tokio::spawn(driver.run());
        for name in &config.tracks {
            let track =
                FullTrackName::new(namespace.clone(), name.as_str()).map_err(|e| e.to_string())?;
            let options = SubscribeOptions {
                token: config.token.clone(),
                ..SubscribeOptions::largest_object()
            };
            let mut reader = conn.subscribe(track, options).await.map_err(|e| e.to_string())?;
            loop {
                match reader.next().await {
                    Some(TrackEvent::Object(_)) => break,
                    Some(_) => {}
                    None => return Err(format!("track {name} ended before its first object")),
                }
            }
        }
        conn.close(tiermesh_proto::TerminationCode::NoError, "bees probe done");
        driver.abort();
        Ok(())
    };
    match tokio::time::timeout_at(by, work).await {
        Ok(r) => r.map_err(|e| format!("probing {}: {e}", target.target)),
        Err(_) => Err(format!("probing {}: no live object on every track in time", target.target)),
    }
}

/// Marks one subscriber as settled (connected and subscribed, or failed).
fn settle(live: &Live, planned: u64) {
    if live.settled.fetch_add(1, Ordering::Relaxed) + 1 == planned {
        live.all_settled.notify_one();
    }
}

#[allow(clippy::too_many_arguments)] // one task's whole context, passed once
async fn subscriber(
    index: u64,
    target: BroadcastUrl,
    namespace: TrackNamespace,
    config: LoadConfig,
    live: Arc<Live>,
    clock: Clock,
    deadline: TokioInstant,
    planned: u64,
) -> SubResult {
    let mut result = SubResult::default();
    let t0 = Instant::now();
    let by = (TokioInstant::now() + CONNECT_TIMEOUT).min(deadline);
    let connected = tokio::time::timeout_at(by, async {
        let (conn, driver) = moq::connect(target.url(), options(&config)).await?;
        let driver = tokio::spawn(driver.run());
        match conn.ready().await {
            Ok(_) => Ok((conn, driver)),
            Err(e) => {
                driver.abort();
                Err(e)
            }
        }
    })
    .await;
    let (conn, driver) = match connected {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            result.failed = true;
            result.errors.push(format!("connect: {}", tiermesh_client::cli::explain(&e)));
            settle(&live, planned);
            return result;
        }
        Err(_) => {
            result.failed = true;
            result.errors.push("connect: timed out".to_owned());
            settle(&live, planned);
            return result;
        }
    };
    result.connect_us = Some(t0.elapsed().as_micros() as u64);
    live.connected.fetch_add(1, Ordering::Relaxed);

    // Join every track at once, then follow each in its own task.
    let mut joins = JoinSet::new();
    for name in &config.tracks {
        let track = match FullTrackName::new(namespace.clone(), name.as_str()) {
            Ok(t) => t,
            Err(e) => {
                result.errors.push(format!("track {name}: {e}"));
                continue;
            }
        };
        let conn = conn.clone();
        let options = SubscribeOptions { token: config.token.clone(), ..Default::default() };
        let name = name.clone();
        joins.spawn(async move {
            let asked = Instant::now();
            let by = (TokioInstant::now() + JOIN_TIMEOUT).min(deadline);
            let joined = tokio::time::timeout_at(by, conn.join(track, options, 0)).await;
            (name, asked, joined)
        });
    }
    let mut followers = JoinSet::new();
    let mut all_joined = result.errors.is_empty();
    while let Some(j) = joins.join_next().await {
        let Ok((name, asked, joined)) = j else {
            all_joined = false;
            continue;
        };
        match joined {
            Ok(Ok((reader, fetch))) => {
                let fetch = match fetch {
                    Ok(f) => Some(f),
                    Err(e) => {
                        // Not fatal: the subscription runs, starting mid-group.
                        result.errors.push(format!(
                            "joining fetch {name}: {}",
                            tiermesh_client::cli::explain(&e)
                        ));
                        None
                    }
                };
                let tracker = Tracker::new(&name, asked, config.stall);
                followers.spawn(follow(tracker, reader, fetch, live.clone(), clock, deadline));
            }
            Ok(Err(e)) => {
                all_joined = false;
                result
                    .errors
                    .push(format!("subscribe {name}: {}", tiermesh_client::cli::explain(&e)));
            }
            Err(_) => {
                all_joined = false;
                result.errors.push(format!("subscribe {name}: no answer in time"));
                tracing::warn!(subscriber = index, track = %name, "no answer to SUBSCRIBE");
            }
        }
    }
    result.subscribed = all_joined;
    settle(&live, planned);

    if config.tracks.is_empty() {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            _ = conn.closed() => {}
        }
    }
    while let Some(f) = followers.join_next().await {
        if let Ok(t) = f {
            result.tracks.push(t.finish(Instant::now(), live.steady.load(Ordering::Relaxed)));
        }
    }
    if let Some(reason) = conn.close_reason() {
        result.failed = true;
        result.errors.push(tiermesh_client::cli::explain_close(&reason));
    } else {
        conn.close(tiermesh_proto::TerminationCode::NoError, "bees done");
        let _ = tokio::time::timeout(Duration::from_millis(500), conn.closed()).await;
    }
    live.connected.fetch_sub(1, Ordering::Relaxed);
    driver.abort();
    result
}

async fn follow(
    mut tracker: Tracker,
    mut reader: moq::TrackReader,
    mut fetch: Option<moq::FetchReader>,
    live: Arc<Live>,
    clock: Clock,
    deadline: TokioInstant,
) -> Tracker {
    // One timer for the whole follow: a new `sleep_until` per object would insert into and
    // remove from tokio's timer wheel at every object.
    let stop = tokio::time::sleep_until(deadline);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            o = async { fetch.as_mut()?.next().await }, if fetch.is_some() => match o {
                Some(o) => tracker.record(&o, true, &live, &clock),
                None => fetch = None,
            },
            e = reader.next() => match e {
                Some(TrackEvent::Object(o)) => tracker.record(&o, false, &live, &clock),
                Some(TrackEvent::StreamEnd { .. }) => {}
                Some(TrackEvent::Done(done)) => {
                    tracker.error = Some(format!("track {} ended: {:?}", tracker.name, done.code));
                    break;
                }
                None => break,
            },
        }
    }
    tracker
}

#[derive(Default)]
struct Group {
    /// Bit per object ID seen.
    seen: Vec<u64>,
    count: u64,
    min: u64,
    max: u64,
    declared: u64,
    /// The subscription (not a fetch) delivered this group's first object seen: the group
    /// the subscription joined in, whose start only the joining FETCH brings.
    joined_here: bool,
}

/// Counts what one subscription delivers, in bounded memory (see [`OPEN_GROUPS`]).
struct Tracker {
    name: Arc<str>,
    /// Group IDs on a fixed cadence (not the catalog): holes count, waits are stalls.
    cadence: bool,
    stall_us: u64,
    asked: Instant,
    groups: BTreeMap<u64, Group>,
    first_group: Option<u64>,
    last_group: u64,
    distinct_groups: u64,
    declared_group_gaps: u64,
    last_live: Option<Instant>,
    any_live: bool,
    totals: TrackTotals,
    error: Option<String>,
}

impl Tracker {
    fn new(name: &str, asked: Instant, stall: Duration) -> Self {
        Self {
            name: Arc::from(name),
            cadence: name != CATALOG_TRACK_NAME,
            stall_us: stall.as_micros() as u64,
            asked,
            groups: BTreeMap::new(),
            first_group: None,
            last_group: 0,
            distinct_groups: 0,
            declared_group_gaps: 0,
            last_live: None,
            any_live: false,
            totals: TrackTotals { subscriptions: 1, ..TrackTotals::default() },
            error: None,
        }
    }

    fn record(&mut self, o: &ReceivedObject, fetched: bool, live: &Live, clock: &Clock) {
        let new_group = !self.groups.contains_key(&o.group_id);
        let first_live = !fetched && self.last_live.is_none() && !self.any_live;
        if !fetched {
            self.any_live = true;
        }
        let g = self.groups.entry(o.group_id).or_default();
        if new_group {
            g.min = o.object_id;
            g.joined_here = first_live;
        }
        g.min = g.min.min(o.object_id);
        let (word, bit) = ((o.object_id / 64) as usize, o.object_id % 64);
        if word > 1024 {
            // An object ID this large is not a frame of any real group; count it without
            // a bitmap so a hostile relay cannot make us allocate.
            g.count += 1;
        } else {
            if g.seen.len() <= word {
                g.seen.resize(word + 1, 0);
            }
            if g.seen[word] & (1 << bit) != 0 {
                self.totals.duplicate_objects += 1;
                return;
            }
            g.seen[word] |= 1 << bit;
            g.count += 1;
        }
        g.max = g.max.max(o.object_id);
        g.declared += o.extensions.object_gap().unwrap_or(0);
        if new_group {
            self.distinct_groups += 1;
            self.declared_group_gaps += o.extensions.group_gap().unwrap_or(0);
            self.first_group = Some(self.first_group.map_or(o.group_id, |f| f.min(o.group_id)));
            self.last_group = self.last_group.max(o.group_id);
            while self.groups.len() > OPEN_GROUPS {
                if let Some((_, old)) = self.groups.pop_first() {
                    self.settle(&old);
                }
            }
        }
        let steady = live.steady.load(Ordering::Relaxed);
        let t = &mut self.totals;
        t.objects += 1;
        t.bytes += o.payload.len() as u64;
        if t.first_object_us.count() == 0 {
            t.first_object_us
                .record(o.arrival.saturating_duration_since(self.asked).as_micros() as u64);
        }
        let mut latency = None;
        if fetched {
            t.fetched_objects += 1;
        } else {
            if let Some(capture) = tiermesh_proto::loc::capture_timestamp_us(&o.extensions) {
                let l = clock.wall_us(o.arrival).saturating_sub(capture);
                t.latency_us.record(l);
                if steady {
                    t.steady_latency_us.record(l);
                }
                latency = Some(l);
            }
            if self.cadence {
                if let Some(prev) = self.last_live {
                    let gap = o.arrival.saturating_duration_since(prev).as_micros() as u64;
                    if gap > self.stall_us {
                        t.stalls += 1;
                        t.steady_stalls += u64::from(steady);
                        t.stall_ms += gap as f64 / 1000.0;
                    }
                }
                self.last_live = Some(self.last_live.map_or(o.arrival, |p| p.max(o.arrival)));
            }
        }
        live.object(&self.name, o.payload.len(), latency);
    }

    fn settle(&mut self, g: &Group) {
        // The group the subscription joined in counts from its first object received unless
        // the joining FETCH brought the start (a failed fetch is reported as an error).
        let expected = if g.joined_here && g.min > 0 { g.max + 1 - g.min } else { g.max + 1 };
        self.totals.missing_objects += expected.saturating_sub(g.count + g.declared);
    }

    /// The totals, with what is still open settled and a final wait up to `end` counted.
    fn finish(mut self, end: Instant, steady: bool) -> (String, TrackTotals) {
        let open = std::mem::take(&mut self.groups);
        for g in open.values() {
            self.settle(g);
        }
        if self.cadence {
            if let Some(first) = self.first_group {
                let span = self.last_group - first + 1;
                self.totals.missing_groups =
                    span.saturating_sub(self.distinct_groups + self.declared_group_gaps);
            }
            let since = self.last_live.unwrap_or(self.asked);
            let gap = end.saturating_duration_since(since).as_micros() as u64;
            if gap > self.stall_us {
                self.totals.stalls += 1;
                self.totals.steady_stalls += u64::from(steady);
                self.totals.stall_ms += gap as f64 / 1000.0;
            }
        }
        (self.name.to_string(), self.totals)
    }
}

/// Once a second: the second's point, the progress line, the relay's sample.
async fn sample(
    live: Arc<Live>,
    relay: Option<Process>,
    me: Option<Process>,
    planned: u64,
    progress: bool,
    start: TokioInstant,
    deadline: TokioInstant,
) -> BTreeMap<u64, Point> {
    let mut timeline = BTreeMap::new();
    let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let mut last_cpu = relay.as_ref().and_then(|p| p.sample().ok()).map(|s| s.cpu_s);
    let mut my_last_cpu = me.as_ref().and_then(|p| p.sample().ok()).map(|s| s.cpu_s);
    let mut last_at = start;
    let mut latency_so_far = Distribution::new();
    loop {
        let now = tokio::select! {
            t = tick.tick() => t,
            () = tokio::time::sleep_until(deadline) => TokioInstant::now(),
        };
        let mut p = live.take_second();
        let secs = (now - last_at).as_secs_f64().max(1e-3);
        last_at = now;
        p.subscribers = live.connected.load(Ordering::Relaxed);
        let mut relay_text = String::new();
        if let Some(s) = relay.as_ref().and_then(|r| r.sample().ok()) {
            let used = last_cpu.map(|c| s.cpu_s - c).unwrap_or(0.0);
            last_cpu = Some(s.cpu_s);
            p.relay_cpu_ms = Some(used * 1000.0);
            p.relay_rss_kib = Some(s.rss_kib);
            relay_text =
                format!("  relay cpu {:>3.0}%  rss {} MiB", used / secs * 100.0, s.rss_kib / 1024);
        }
        if let Some(s) = me.as_ref().and_then(|r| r.sample().ok()) {
            let used = my_last_cpu.map(|c| s.cpu_s - c).unwrap_or(0.0);
            my_last_cpu = Some(s.cpu_s);
            relay_text.push_str(&format!("  bees cpu {:>3.0}%", used / secs * 100.0));
        }
        latency_so_far.merge(&p.latency_us);
        if progress {
            let bytes: u64 = p.bytes.values().sum();
            eprintln!(
                "bees {:>4.0}s  subs {}/{}  objects/s {:.0}  Mbit/s {:.1}  p99 {}{}",
                (now - start).as_secs_f64(),
                p.subscribers,
                planned,
                p.objects as f64 / secs,
                bytes as f64 * 8.0 / secs / 1e6,
                latency_so_far
                    .quantile(0.99)
                    .map_or("-".to_owned(), |v| format!("{:.1} ms", v as f64 / 1000.0)),
                relay_text
            );
        }
        // The second that just ended, by wall clock, so shards on several hosts line up;
        // never the same key twice (the last tick may fall in the second of the one before).
        let unix_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .saturating_sub(1);
        let key = match timeline.last_key_value() {
            Some((&k, _)) if k >= unix_s => k + 1,
            _ => unix_s,
        };
        timeline.insert(key, p);
        if now >= deadline {
            break;
        }
    }
    timeline
}
