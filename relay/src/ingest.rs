//! The relay's ingest: turns one top-quality tier into the tier ladder.
//!
//! A publisher that wants the relay to make the ladder publishes its single tier (catalog,
//! one video track, optionally an Opus `audio` track) under `<broadcast>/source`. A relay
//! configured with `[ingest]` watches for such namespaces (SUBSCRIBE_NAMESPACE on its
//! `prefix`), subscribes to the source, decodes its video, scales and encodes every rung of
//! the configured ladder, and becomes the original publisher of `<broadcast>`: an MSF
//! catalog listing every rung (WebCodecs codec string, size, frame rate, bit rate, one
//! alternate group) and the audio track as the source described it, the audio objects passed
//! through unchanged, and one track per rung (`video/720p`, ...).
//!
//! ```text
//!                relay (this process)
//! publisher ──► <b>/source ──► loopback MoQT session of the ingest
//!                                ├─ audio objects ───────────────────────────────┐
//!                                └─ video objects ─► decoder thread ─► queue ─► ladder thread
//!                                                                     (bounded,   (drops by lag,
//!                                                                      drops)      groups, rungs)
//!                                                            one worker per rung ◄───┘
//!                                                  720p ─► 360p ─► 180p (scale from the rung
//!                                                    │       │       │   above, then encode)
//!               <b>: catalog, audio, video/* ◄── Publisher (PUBLISH_NAMESPACE <b>) ◄─┘
//! ```
//!
//! Design: the ingest is an ordinary MoQT client of its own relay over loopback QUIC
//! (raw QUIC, the relay's certificate pinned by hash), with a token signed by a key the
//! relay generates at start and trusts only in memory. It therefore goes through the same
//! authorization, routing, cache and fan-out as any publisher and subscriber, and needs no
//! hook in the relay's session or track code. Its publishing side is the client library's
//! [`Publisher`], so joining fetches, the catalog and NEW GROUP REQUEST in a SUBSCRIBE work
//! as for `tiermesh pub`: a NEW GROUP REQUEST makes every rung start a new group at the next
//! frame ([`Ladder::request_key_frame`]). Its source has nothing due at a time of its own:
//! the rungs' workers and the audio pass-through wake the publisher when they hand it
//! objects ([`Handover`], [`Source::wakeup`]), and it sleeps otherwise.
//!
//! Real time comes first. Decoding and encoding run on dedicated OS threads per broadcast,
//! never on the async runtime: a decoder thread, a ladder thread that decides groups and
//! drops, and one worker per rung ([`tiermesh_codec::ladder::Pipeline`]), so decoding,
//! scaling and every rung's encoder run side by side on as many cores as there are. Pictures
//! are shared between the stages, not copied; a rung of the source's size encodes the
//! decoded picture itself, and each lower rung scales from the rung above. Only watched
//! rungs are encoded: a rung starts with a key frame at the ladder's next group start once
//! the relay subscribes to its track, and stops when the last subscription ends
//! ([`IngestStats::rung_frames_idle`] counts what that saved). The decoder decodes every
//! source frame (so references stay intact); decoded pictures wait for the ladder in a
//! bounded queue. The
//! ladder drops, rather than encodes, a picture captured more than [`IngestConfig::max_lag`]
//! (200 ms) before the newest decoded one, and a picture that finds the queue
//! ([`IngestConfig::queue`]) full is dropped too: dropped frames are counted in
//! [`IngestStats::frames_dropped`] and in the broadcast's log line every 10 s. Should the
//! decoder itself fall more than [`MAX_DECODE_BACKLOG`] frames behind, it skips to the next
//! key frame (also counted as dropped). Capture timestamps (LOC Timestamp) of the source
//! are kept on every rung, so latency stays measurable end to end.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tiermesh_certs::CertHash;
use tiermesh_client::moq::{
    self, ClientOptions, Connection, JoinedTrack, NamespaceEvent, SubscribeOptions,
};
use tiermesh_client::publish::{Handover, Publisher, Source, now_us};
use tiermesh_client::synthetic::{self, BroadcastSpec, TrackKind, TrackSpec};
use tiermesh_client::transport::ClientTls;
use tiermesh_codec::catalog::{Catalog, Track};
use tiermesh_codec::ladder::{GroupLength, Rung, Sink};
use tiermesh_codec::{Codec, I420, Ladder, LadderConfig, av1, h264};
use tiermesh_proto::catalog::CATALOG_TRACK_NAME;
use tiermesh_proto::ext::Extensions;
use tiermesh_proto::loc::LocProperties;
use tiermesh_proto::types::{FullTrackName, TrackName, TrackNamespace};
use tokio::sync::{Notify, watch};

use crate::auth::{Action, Algorithm, Authorizer, Claims, KeyError, SigningKey};
use crate::config::RelayConfig;

/// The last namespace field that marks a source broadcast: a publisher sends its one tier
/// to `<broadcast>/source` and the ingest publishes the ladder as `<broadcast>`.
pub const SOURCE_FIELD: &str = "source";

/// Decoded frames may queue this far behind the decoder input before the decoder skips to
/// the next key frame: one second at 30 fps. Behind that, frames would reach viewers too
/// late for a 500 ms glass-to-glass budget anyway, and memory stays bounded.
pub const MAX_DECODE_BACKLOG: usize = 30;

/// How long the ingest waits for the source's catalog before giving up (and retrying).
const CATALOG_WAIT: Duration = Duration::from_secs(10);

/// Pause before reconnecting or restarting a failed broadcast: quick enough that viewers
/// see a short gap, slow enough not to spin on a persistent error.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Validity of the ingest's internal token. It is minted anew for every connection; a
/// session is closed when its token expires, so this bounds how often the ingest's own
/// sessions restart.
const TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often each broadcast logs its counters.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Video codec of a configured rung.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RungCodec {
    /// H.264 (OpenH264).
    #[default]
    H264,
    /// AV1 (rav1e): real time only for small rungs (360p and below) on a small machine.
    Av1,
}

impl From<RungCodec> for Codec {
    fn from(c: RungCodec) -> Self {
        match c {
            RungCodec::H264 => Codec::H264,
            RungCodec::Av1 => Codec::Av1,
        }
    }
}

/// One rung of the ingest's ladder (`[[ingest.rungs]]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RungConfig {
    /// Short name; the track is `video/<name>`.
    pub name: String,
    /// Encoded width (even).
    pub width: u32,
    /// Encoded height (even).
    pub height: u32,
    /// Frames per second; absent or above the source's, the source's rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
    /// Target bit rate, bits per second.
    pub bitrate: u32,
    /// Codec (`h264` or `av1`). Default `h264`.
    #[serde(default)]
    pub codec: RungCodec,
}

impl From<&Rung> for RungConfig {
    fn from(r: &Rung) -> Self {
        Self {
            name: r.name.clone(),
            width: u32::try_from(r.width).unwrap_or(0),
            height: u32::try_from(r.height).unwrap_or(0),
            fps: None,
            bitrate: r.bitrate,
            codec: match r.codec {
                Codec::H264 => RungCodec::H264,
                Codec::Av1 => RungCodec::Av1,
            },
        }
    }
}

/// The `[ingest]` section. Present, the relay makes the ladder of every `<broadcast>/source`
/// published under `prefix`; absent (the default), it does not.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Namespace prefix whose `…/source` broadcasts are ingested, fields joined by `/`.
    /// Default empty: every broadcast.
    pub prefix: String,
    /// Rungs, highest first. Default: the codec crate's default ladder, 720p at 1.5 Mbit/s,
    /// 360p at 550 kbit/s, 180p at 150 kbit/s, H.264. Rungs larger than the source are left
    /// out (never upscaled).
    pub rungs: Vec<RungConfig>,
    /// Group length: every rung starts a group (a key frame) at the same source frame this
    /// often. Default 1 s: a joining viewer waits at most this long for a key frame.
    #[serde(with = "duration")]
    pub group: Duration,
    /// Decoded pictures that may wait for the encoders; when the queue is full new ones are
    /// dropped. Default 10: a third of a second at 30 fps, more than `max_lag` allows, so
    /// it only bounds memory (10 pictures, 14 MB at 720p).
    pub queue: usize,
    /// How far (in capture time) the ladder may fall behind the newest decoded picture
    /// before it drops pictures instead of encoding them. Default 200 ms: absorbs a burst of
    /// source frames that arrive together, a slow key frame or a moment of CPU contention,
    /// and bounds what the ingest adds to glass-to-glass latency when it cannot keep up.
    #[serde(with = "duration")]
    pub max_lag: Duration,
    /// rav1e speed preset for AV1 rungs (0 slowest … 10 fastest). Default 10.
    pub av1_speed: u8,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            prefix: String::new(),
            rungs: LadderConfig::default().rungs.iter().map(RungConfig::from).collect(),
            group: Duration::from_secs(1),
            queue: 10,
            max_lag: Duration::from_millis(200),
            av1_speed: av1::DEFAULT_SPEED,
        }
    }
}

impl IngestConfig {
    /// The prefix as a namespace.
    ///
    /// # Errors
    /// The prefix has too many fields or bytes.
    pub fn prefix_namespace(&self) -> Result<TrackNamespace, String> {
        TrackNamespace::from_path(&self.prefix).map_err(|e| format!("prefix: {e}"))
    }

    /// Checks the values.
    ///
    /// # Errors
    /// What is wrong, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        self.prefix_namespace()?;
        if self.queue == 0 {
            return Err("queue must be at least 1".into());
        }
        if self.max_lag.is_zero() {
            return Err("max_lag must be more than 0s".into());
        }
        if self.group.is_zero() {
            return Err("group must be more than 0s".into());
        }
        if self.av1_speed > 10 {
            return Err(format!("av1_speed {} (0 to 10)", self.av1_speed));
        }
        self.ladder(None, 30.0).validate().map_err(|e| format!("rungs: {e}"))
    }

    /// The ladder for a source of `size` (width, height; `None` if unknown) at `fps`:
    /// rungs larger than the source are left out; if none fits, one rung at the source size
    /// with the smallest rung's codec and bit rate.
    pub fn ladder(&self, size: Option<(u32, u32)>, fps: f64) -> LadderConfig {
        let source_fps = if fps.is_finite() && fps > 0.0 { fps } else { 30.0 };
        let all: Vec<Rung> = self
            .rungs
            .iter()
            .map(|r| {
                Rung::new(
                    &r.name,
                    r.width as usize,
                    r.height as usize,
                    r.fps.unwrap_or(source_fps).min(source_fps),
                    r.bitrate,
                    r.codec.into(),
                )
            })
            .collect();
        let rungs = match size {
            Some((w, h)) => {
                let fit: Vec<Rung> = all
                    .iter()
                    .filter(|r| r.width <= w as usize && r.height <= h as usize)
                    .cloned()
                    .collect();
                match (fit.is_empty(), all.last()) {
                    (false, _) => fit,
                    (true, Some(low)) => {
                        let (w, h) = ((w as usize) & !1, (h as usize) & !1);
                        vec![Rung::new(&format!("{h}p"), w, h, low.fps, low.bitrate, low.codec)]
                    }
                    (true, None) => Vec::new(),
                }
            }
            None => all,
        };
        LadderConfig::default()
            .source_fps(source_fps)
            .rungs(rungs)
            .group_length(GroupLength::Micros(
                u64::try_from(self.group.as_micros()).unwrap_or(u64::MAX),
            ))
            .av1_speed(self.av1_speed)
    }
}

/// serde for `Duration` as human-readable text ("1s", "500ms").
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("{e} (write durations like \"1s\" or \"500ms\")"))
        })
    }
}

/// What the ingest did since the relay started, all broadcasts together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Broadcasts being ingested now.
    pub broadcasts: u64,
    /// Source video objects received.
    pub frames_in: u64,
    /// Source frames decoded into pictures.
    pub frames_decoded: u64,
    /// Source frames pushed through the ladder (each makes up to one frame per rung).
    pub frames_encoded: u64,
    /// Source frames dropped to stay real time: the ladder's queue was full, or the decoder
    /// skipped to the next key frame.
    pub frames_dropped: u64,
    /// Source frames the decoder rejected.
    pub decode_errors: u64,
    /// Frames an encoder failed on.
    pub encode_errors: u64,
    /// Encoded video objects handed to the publisher, all rungs together.
    pub video_objects: u64,
    /// Audio objects passed through.
    pub audio_objects: u64,
    /// NEW GROUP REQUESTs that reached the ladder.
    pub key_frame_requests: u64,
    /// Rung frames encoded: each source frame pushed through the ladder counts once per
    /// rung that encoded it.
    pub rung_frames_encoded: u64,
    /// Rung frames not encoded because the rung was idle: nobody subscribed to it, or it
    /// waits for the next group start to begin.
    pub rung_frames_idle: u64,
}

#[derive(Debug, Default)]
struct Counters {
    broadcasts: AtomicU64,
    frames_in: AtomicU64,
    frames_decoded: AtomicU64,
    frames_encoded: AtomicU64,
    frames_dropped: AtomicU64,
    decode_errors: AtomicU64,
    encode_errors: AtomicU64,
    video_objects: AtomicU64,
    audio_objects: AtomicU64,
    key_frame_requests: AtomicU64,
    rung_frames_encoded: AtomicU64,
    rung_frames_idle: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> IngestStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        IngestStats {
            broadcasts: g(&self.broadcasts),
            frames_in: g(&self.frames_in),
            frames_decoded: g(&self.frames_decoded),
            frames_encoded: g(&self.frames_encoded),
            frames_dropped: g(&self.frames_dropped),
            decode_errors: g(&self.decode_errors),
            encode_errors: g(&self.encode_errors),
            video_objects: g(&self.video_objects),
            audio_objects: g(&self.audio_objects),
            key_frame_requests: g(&self.key_frame_requests),
            rung_frames_encoded: g(&self.rung_frames_encoded),
            rung_frames_idle: g(&self.rung_frames_idle),
        }
    }
}

/// Counters of one broadcast and of the relay's ingest as a whole, updated together.
#[derive(Clone)]
struct Stats {
    own: Arc<Counters>,
    all: Arc<Counters>,
}

impl Stats {
    fn add(&self, pick: impl Fn(&Counters) -> &AtomicU64, n: u64) {
        add(pick(&self.own), n);
        add(pick(&self.all), n);
    }
}

/// The running ingest of a relay.
#[derive(Debug, Clone)]
pub struct Ingest {
    counters: Arc<Counters>,
}

impl Ingest {
    /// What it did so far.
    pub fn stats(&self) -> IngestStats {
        self.counters.snapshot()
    }

    /// Appends the ingest's figures to the relay's `/metrics` text (Prometheus format).
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let s = self.stats();
        let _ = writeln!(
            out,
            "# HELP tiermesh_ingest_broadcasts Broadcasts whose ladder the ingest makes now."
        );
        let _ = writeln!(out, "# TYPE tiermesh_ingest_broadcasts gauge");
        let _ = writeln!(out, "tiermesh_ingest_broadcasts {}", s.broadcasts);
        let counters: [(&str, &str, u64); 11] = [
            ("frames_in", "Source video objects received by the ingest.", s.frames_in),
            ("frames_decoded", "Source frames decoded into pictures.", s.frames_decoded),
            ("frames_encoded", "Source frames pushed through the ladder.", s.frames_encoded),
            ("frames_dropped", "Source frames dropped to stay real time.", s.frames_dropped),
            ("decode_errors", "Source frames the decoder rejected.", s.decode_errors),
            ("encode_errors", "Frames an encoder failed on.", s.encode_errors),
            ("video_objects", "Encoded video objects published, all rungs.", s.video_objects),
            ("audio_objects", "Audio objects passed through.", s.audio_objects),
            (
                "key_frame_requests",
                "NEW GROUP REQUESTs that reached the ladder.",
                s.key_frame_requests,
            ),
            ("rung_frames_encoded", "Rung frames encoded, all rungs.", s.rung_frames_encoded),
            (
                "rung_frames_idle",
                "Rung frames not encoded because nobody watched the rung.",
                s.rung_frames_idle,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP tiermesh_ingest_{name}_total {help}");
            let _ = writeln!(out, "# TYPE tiermesh_ingest_{name}_total counter");
            let _ = writeln!(out, "tiermesh_ingest_{name}_total {value}");
        }
    }
}

/// The relay's token authorizer, plus the internal key the ingest signs its own tokens with
/// when `[ingest]` is configured. The key lives only in memory; its tokens grant publish and
/// subscribe under the ingest prefix.
pub(crate) fn authorizer(
    config: &RelayConfig,
) -> Result<(Authorizer, Option<SigningKey>), KeyError> {
    let base = config.auth.authorizer()?;
    if config.ingest.is_none() {
        return Ok((base, None));
    }
    let key = SigningKey::generate(Algorithm::Es256)?;
    let mut keys = base.keys().to_vec();
    keys.push(key.verifying_key().clone());
    let mut authorizer = Authorizer::new(keys);
    for p in &config.auth.public {
        authorizer = authorizer.with_public(Action::Subscribe, p.clone());
    }
    for p in &config.auth.public_publish {
        authorizer = authorizer.with_public(Action::Publish, p.clone());
    }
    Ok((authorizer, Some(key)))
}

/// How the ingest reaches its relay.
#[derive(Clone)]
struct Target {
    url: url::Url,
    cert: Arc<dyn Fn() -> CertHash + Send + Sync>,
    key: Option<Arc<SigningKey>>,
    prefix: String,
}

impl Target {
    async fn connect(&self) -> Result<Connection, moq::Error> {
        let mut options = ClientOptions::new(ClientTls::pinned((self.cert)()));
        if let Some(key) = &self.key {
            let claims = Claims::new(
                SystemTime::now(),
                TOKEN_TTL,
                vec![self.prefix.clone()],
                vec![self.prefix.clone()],
            );
            match key.sign(&claims) {
                Ok(token) => options = options.token(Bytes::from(token.expose().clone())),
                Err(e) => tracing::warn!(error = %e, "ingest token not signed"),
            }
        }
        let (conn, driver) = moq::connect(&self.url, options).await?;
        tokio::spawn(driver.run());
        Ok(conn)
    }
}

/// The loopback address that reaches a listener bound to `listen`.
fn loopback(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Starts the ingest of a relay listening on `listen`, whose certificate hash `cert` gives
/// (it may change on reload). Runs until `stop` turns true.
pub(crate) fn spawn(
    config: IngestConfig,
    listen: SocketAddr,
    cert: Arc<dyn Fn() -> CertHash + Send + Sync>,
    key: Option<SigningKey>,
    stop: watch::Receiver<bool>,
) -> Ingest {
    let counters = Arc::new(Counters::default());
    let url = format!("moqt://{}/", loopback(listen));
    let url = match url.parse() {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(%url, error = %e, "ingest not started: bad loopback URL");
            return Ingest { counters };
        }
    };
    let target = Target { url, cert, key: key.map(Arc::new), prefix: config.prefix.clone() };
    tracing::info!(prefix = %config.prefix, rungs = config.rungs.len(), "ingest started");
    tokio::spawn(supervise(Arc::new(config), target, counters.clone(), stop));
    Ingest { counters }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Watches for `…/source` namespaces and runs one pipeline per broadcast, restarting a
/// failed one while its source is still published.
async fn supervise(
    config: Arc<IngestConfig>,
    target: Target,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let prefix = match config.prefix_namespace() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "ingest not started");
            return;
        }
    };
    let mut running: HashMap<TrackNamespace, tokio::task::AbortHandle> = HashMap::new();
    let mut announced: HashSet<TrackNamespace> = HashSet::new();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(TrackNamespace, bool)>();
    let start = |source: &TrackNamespace, running: &mut HashMap<_, tokio::task::AbortHandle>| {
        let Some(broadcast) = broadcast_of(source) else { return };
        if running.get(source).is_some_and(|h| !h.is_finished()) {
            return;
        }
        let (config, target, counters, done) =
            (config.clone(), target.clone(), counters.clone(), done_tx.clone());
        let key = source.clone();
        let handle = tokio::spawn(async move {
            let ok = match run_broadcast(&config, &target, &counters, &broadcast).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(broadcast = %broadcast, error = %e, "ingest of the broadcast failed");
                    false
                }
            };
            let _ = done.send((key, ok));
        });
        running.insert(source.clone(), handle.abort_handle());
    };
    'connect: loop {
        let conn = tokio::select! {
            () = stopped(&mut stop) => break 'connect,
            c = target.connect() => c,
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "ingest cannot reach its relay; retrying");
                tokio::select! {
                    () = stopped(&mut stop) => break 'connect,
                    () = tokio::time::sleep(RETRY_DELAY) => continue 'connect,
                }
            }
        };
        let mut namespaces = match conn.subscribe_namespace(prefix.clone(), None).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "ingest: SUBSCRIBE_NAMESPACE refused; retrying");
                tokio::select! {
                    () = stopped(&mut stop) => break 'connect,
                    () = tokio::time::sleep(RETRY_DELAY) => continue 'connect,
                }
            }
        };
        loop {
            tokio::select! {
                () = stopped(&mut stop) => break 'connect,
                event = namespaces.next() => match event {
                    Some(NamespaceEvent::Added(ns)) if broadcast_of(&ns).is_some() => {
                        tracing::info!(source = %ns, "ingest: source published");
                        announced.insert(ns.clone());
                        start(&ns, &mut running);
                    }
                    Some(NamespaceEvent::Removed(ns)) => {
                        // The pipeline keeps running while the relay holds the source's
                        // tracks (linger): a publisher that reconnects continues them.
                        announced.remove(&ns);
                    }
                    Some(NamespaceEvent::Added(_)) => {}
                    None => {
                        tracing::info!("ingest: namespace subscription ended; reconnecting");
                        continue 'connect;
                    }
                },
                Some((ns, ok)) = done_rx.recv() => {
                    if announced.contains(&ns) {
                        if !ok {
                            tokio::select! {
                                () = stopped(&mut stop) => break 'connect,
                                () = tokio::time::sleep(RETRY_DELAY) => {}
                            }
                        }
                        start(&ns, &mut running);
                    }
                }
            }
        }
    }
    for h in running.values() {
        h.abort();
    }
}

/// `<broadcast>` for a namespace `<broadcast>/source`.
pub fn broadcast_of(source: &TrackNamespace) -> Option<TrackNamespace> {
    let fields = source.fields();
    match fields.split_last() {
        Some((last, rest)) if !rest.is_empty() && last.as_ref() == SOURCE_FIELD.as_bytes() => {
            TrackNamespace::new(rest.iter().cloned()).ok()
        }
        _ => None,
    }
}

fn full(namespace: &TrackNamespace, name: &str) -> FullTrackName {
    FullTrackName {
        namespace: namespace.clone(),
        name: TrackName(Bytes::copy_from_slice(name.as_bytes())),
    }
}

/// Why one broadcast's ingest stopped.
#[derive(Debug, thiserror::Error)]
enum PipelineError {
    /// The MoQT session or a request failed.
    #[error("{0}")]
    Moq(#[from] moq::Error),
    /// The source's catalog is missing or unusable.
    #[error("source catalog: {0}")]
    Catalog(String),
    /// The ladder could not be built.
    #[error("ladder: {0}")]
    Codec(#[from] tiermesh_codec::Error),
    /// A worker thread could not start.
    #[error("thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// One source video object on its way to the decoder.
struct Sample {
    group_id: u64,
    object_id: u64,
    capture_us: u64,
    config: Option<Bytes>,
    payload: Bytes,
}

/// One decoded picture on its way to the ladder (shared, not copied, by the rungs).
struct Picture {
    image: Arc<I420>,
    capture_us: u64,
}

enum Decoder {
    H264(h264::Decoder),
    Av1(av1::Decoder),
}

impl Decoder {
    fn new(codec: Codec) -> Result<Self, tiermesh_codec::Error> {
        Ok(match codec {
            Codec::H264 => Decoder::H264(h264::Decoder::new()?),
            Codec::Av1 => Decoder::Av1(av1::Decoder::new()?),
        })
    }

    fn decode(&mut self, s: &Sample) -> Result<Option<I420>, tiermesh_codec::Error> {
        match self {
            Decoder::H264(d) => d.decode(&s.payload, s.config.as_deref()),
            Decoder::Av1(d) => d.decode(&s.payload),
        }
    }
}

/// The codec a WebCodecs codec string names.
fn codec_of(codec: &str) -> Option<Codec> {
    if codec.starts_with("avc1") || codec.starts_with("avc3") {
        Some(Codec::H264)
    } else if codec.starts_with("av01") {
        Some(Codec::Av1)
    } else {
        None
    }
}

/// The decoder thread: decodes every source frame in order and offers the pictures to the
/// ladder's bounded queue, dropping those that do not fit.
fn decode_loop(
    mut decoder: Decoder,
    input: mpsc::Receiver<Sample>,
    backlog: Arc<AtomicUsize>,
    output: mpsc::SyncSender<Picture>,
    newest: Arc<AtomicU64>,
    stats: Stats,
) {
    // Decoding starts at a key frame; after a gap it waits for the next one.
    let mut waiting_for_key = true;
    let mut last: Option<(u64, u64)> = None;
    while let Ok(s) = input.recv() {
        let behind = backlog.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        let key = s.object_id == 0;
        let consecutive = last.is_some_and(|(g, o)| g == s.group_id && o + 1 == s.object_id);
        last = Some((s.group_id, s.object_id));
        if key {
            waiting_for_key = false;
        } else if !consecutive {
            waiting_for_key = true;
        }
        if !key && behind > MAX_DECODE_BACKLOG {
            if !waiting_for_key {
                tracing::info!(behind, "ingest: decoder behind; skipping to the next key frame");
            }
            waiting_for_key = true;
        }
        if waiting_for_key {
            stats.add(|c| &c.frames_dropped, 1);
            continue;
        }
        match decoder.decode(&s) {
            Ok(Some(image)) => {
                stats.add(|c| &c.frames_decoded, 1);
                newest.fetch_max(s.capture_us, Ordering::Relaxed);
                let picture = Picture { image: Arc::new(image), capture_us: s.capture_us };
                match output.try_send(picture) {
                    Ok(()) => {}
                    Err(mpsc::TrySendError::Full(_)) => {
                        stats.add(|c| &c.frames_dropped, 1);
                        tracing::debug!(
                            group = s.group_id,
                            object = s.object_id,
                            "ingest: ladder queue full; frame dropped"
                        );
                    }
                    Err(mpsc::TrySendError::Disconnected(_)) => return,
                }
            }
            Ok(None) => {}
            Err(e) => {
                stats.add(|c| &c.decode_errors, 1);
                tracing::debug!(error = %e, group = s.group_id, object = s.object_id, "ingest: decode error");
                waiting_for_key = true;
            }
        }
    }
}

/// Where the ladder's frames go: the rung's track index, and the group ID offset.
#[derive(Clone)]
struct Output {
    /// To the publishing side, which sleeps until objects come (the receiving end is gone
    /// only while the broadcast is ending).
    to: Handover<synthetic::Object>,
    rung_track: Vec<usize>,
    group_base: u64,
}

impl Output {
    fn send(&self, frames: Vec<tiermesh_codec::EncodedFrame>, stats: &Stats) {
        let objects = frames.into_iter().filter_map(|f| {
            let &track = self.rung_track.get(f.rung)?;
            let mut extensions = Extensions::default();
            let props = LocProperties {
                timestamp: Some(f.capture_us),
                video_config: f.config.map(Bytes::from),
                ..LocProperties::default()
            };
            if let Err(e) = props.apply(&mut extensions) {
                tracing::warn!(error = %e, "LOC properties not written");
            }
            stats.add(|c| &c.video_objects, 1);
            Some(synthetic::Object {
                track,
                group_id: self.group_base + f.group_id,
                object_id: f.object_id,
                capture_us: f.capture_us,
                key: f.key_frame,
                extensions,
                payload: Bytes::from(f.data),
            })
        });
        self.to.send(objects);
    }
}

/// The ladder's pushing thread: drops pictures captured more than `max_lag_us` before the
/// newest decoded one, applies key-frame requests and which rungs are watched, and hands
/// the rest to the ladder's pipeline (one worker thread per rung: scaling from the rung
/// above and encoding run side by side, and beside the decoder).
#[allow(clippy::too_many_arguments)]
fn encode_loop(
    ladder: Ladder,
    input: mpsc::Receiver<Picture>,
    newest: Arc<AtomicU64>,
    max_lag_us: u64,
    key_request: Arc<AtomicBool>,
    watched: Arc<[AtomicBool]>,
    output: Output,
    stats: Stats,
) {
    let sink: Sink = {
        let stats = stats.clone();
        Arc::new(move |r: Result<Vec<tiermesh_codec::EncodedFrame>, tiermesh_codec::Error>| match r
        {
            Ok(frames) => output.send(frames, &stats),
            Err(e) => {
                stats.add(|c| &c.encode_errors, 1);
                tracing::warn!(error = %e, "ingest: encoding a frame failed");
            }
        })
    };
    let mut pipeline = match ladder.into_pipeline(sink) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "ingest: the ladder's workers did not start");
            return;
        }
    };
    let mut applied: Vec<Option<bool>> = vec![None; watched.len()];
    while let Ok(p) = input.recv() {
        let lag = newest.load(Ordering::Relaxed).saturating_sub(p.capture_us);
        if lag > max_lag_us {
            stats.add(|c| &c.frames_dropped, 1);
            tracing::debug!(lag_ms = lag / 1000, "ingest: ladder behind; frame dropped");
            continue;
        }
        if key_request.swap(false, Ordering::Relaxed) {
            pipeline.request_key_frame();
            stats.add(|c| &c.key_frame_requests, 1);
        }
        for (rung, (flag, applied)) in watched.iter().zip(&mut applied).enumerate() {
            let want = flag.load(Ordering::Relaxed);
            if *applied != Some(want) {
                *applied = Some(want);
                let _ = pipeline.set_rung_wanted(rung, want);
                tracing::debug!(rung, watched = want, "ingest: rung watched or not");
            }
        }
        match pipeline.push(p.image, p.capture_us) {
            Ok(pushed) => {
                stats.add(|c| &c.frames_encoded, 1);
                stats.add(|c| &c.rung_frames_encoded, pushed.encoding as u64);
                stats.add(|c| &c.rung_frames_idle, pushed.idle as u64);
            }
            Err(e) => {
                stats.add(|c| &c.encode_errors, 1);
                tracing::warn!(error = %e, "ingest: the ladder stopped");
                break;
            }
        }
    }
    // Every worker encodes what it holds and drains its encoder before this returns.
    pipeline.finish();
}

/// The publishing side's view of one ingested broadcast: objects come from the ladder's
/// workers and the audio pass-through through a channel, each with a wake-up
/// ([`Handover`]); nothing is due at a time of its own but the first catalog.
struct IngestSource {
    spec: BroadcastSpec,
    catalog_json: Bytes,
    catalog_due: Option<u64>,
    rx: mpsc::Receiver<synthetic::Object>,
    /// Notified after objects are sent on `rx`.
    wake: Arc<Notify>,
    key_request: Arc<AtomicBool>,
    /// Per track of `spec`, the ladder rung it carries.
    track_rung: Vec<Option<usize>>,
    /// Per rung, whether somebody subscribed to its track.
    watched: Arc<[AtomicBool]>,
}

impl IngestSource {
    /// The publishing side of the broadcast laid out as `layout`, and the output that the
    /// ladder's thread hands its frames to, their group IDs counted from `group_base`:
    /// every object reaches the source through the output's [`Handover`] (the audio
    /// pass-through hands over on a clone of it). The first catalog is due at
    /// `catalog_due`; every rung starts `watched` or not.
    fn with_output(
        layout: Layout,
        watched: bool,
        group_base: u64,
        catalog_due: u64,
    ) -> (Self, Output) {
        let wake = Arc::new(Notify::new());
        let (to, rx) = Handover::new(wake.clone());
        let source = Self {
            spec: layout.spec,
            catalog_json: Bytes::from(layout.catalog.to_json().into_bytes()),
            catalog_due: Some(catalog_due),
            rx,
            wake,
            key_request: Arc::default(),
            watched: layout.rung_track.iter().map(|_| AtomicBool::new(watched)).collect(),
            track_rung: layout.track_rung,
        };
        (source, Output { to, rung_track: layout.rung_track, group_base })
    }
}

impl Source for IngestSource {
    fn spec(&self) -> &BroadcastSpec {
        &self.spec
    }

    fn poll_object(&mut self, now_us: u64) -> Option<synthetic::Object> {
        if let Some(at) = self.catalog_due.take() {
            return self.catalog_object(at / 1_000_000, now_us.max(at));
        }
        self.rx.try_recv().ok()
    }

    fn poll_timeout(&self) -> Option<u64> {
        self.catalog_due
    }

    fn wakeup(&self) -> Option<Arc<Notify>> {
        Some(self.wake.clone())
    }

    fn catalog_object(&self, group_id: u64, now_us: u64) -> Option<synthetic::Object> {
        let mut extensions = Extensions::default();
        tiermesh_proto::loc::set_capture_timestamp_us(&mut extensions, now_us);
        Some(synthetic::Object {
            track: 0,
            group_id,
            object_id: 0,
            capture_us: now_us,
            key: true,
            extensions,
            payload: self.catalog_json.clone(),
        })
    }

    fn request_key_frame(&mut self) {
        self.key_request.store(true, Ordering::Relaxed);
    }

    fn is_idle(&self, track: usize) -> bool {
        // A rung nobody watched is not encoded; one just watched again starts at the next
        // group start.
        matches!(self.track_rung.get(track), Some(&Some(rung))
            if self.watched.get(rung).is_some_and(|w| !w.load(Ordering::Relaxed)))
    }

    fn subscribers_changed(&mut self, track: usize, subscribers: usize) {
        if let Some(&Some(rung)) = self.track_rung.get(track)
            && let Some(flag) = self.watched.get(rung)
        {
            flag.store(subscribers > 0, Ordering::Relaxed);
        }
    }
}

/// The tracks and catalog of the ladder broadcast.
struct Layout {
    spec: BroadcastSpec,
    catalog: Catalog,
    audio_track: Option<usize>,
    rung_track: Vec<usize>,
    /// Per track, the rung it carries.
    track_rung: Vec<Option<usize>>,
}

fn layout(ladder: &Ladder, audio: Option<&Track>) -> Layout {
    let mut tracks = vec![TrackSpec {
        name: CATALOG_TRACK_NAME.to_owned(),
        kind: TrackKind::Catalog,
        priority: 0,
        bitrate: 0,
        size: None,
        delivery_timeout: None,
    }];
    let mut catalog = ladder.catalog(None, Some(now_us() / 1000));
    let audio_track = audio.map(|a| {
        tracks.push(TrackSpec {
            name: a.name.clone(),
            kind: TrackKind::Audio,
            priority: 16,
            bitrate: a.bitrate.unwrap_or(0),
            size: None,
            delivery_timeout: Some(Duration::from_millis(400)),
        });
        // Passed through: described as the source described it.
        catalog.tracks.push(Track { namespace: None, ..a.clone() });
        tracks.len() - 1
    });
    let rungs = ladder.rungs();
    let first_video = tracks.len();
    let n = rungs.len();
    for (lowest_first, r) in rungs.iter().rev().enumerate() {
        tracks.push(TrackSpec {
            name: r.track_name(),
            kind: TrackKind::Video,
            priority: u8::try_from(32 + 16 * lowest_first).unwrap_or(u8::MAX),
            bitrate: u64::from(r.bitrate),
            size: Some((u32::try_from(r.width).unwrap_or(0), u32::try_from(r.height).unwrap_or(0))),
            delivery_timeout: Some(Duration::from_secs(1)),
        });
    }
    let rung_track: Vec<usize> = (0..n).map(|i| first_video + (n - 1 - i)).collect();
    let mut track_rung = vec![None; tracks.len()];
    for (rung, &track) in rung_track.iter().enumerate() {
        track_rung[track] = Some(rung);
    }
    Layout { spec: BroadcastSpec { tracks }, catalog, audio_track, rung_track, track_rung }
}

/// Ingests one broadcast until its source ends or the session closes.
async fn run_broadcast(
    config: &IngestConfig,
    target: &Target,
    all: &Arc<Counters>,
    broadcast: &TrackNamespace,
) -> Result<(), PipelineError> {
    let source_ns = broadcast
        .join(
            &TrackNamespace::from_path(SOURCE_FIELD)
                .map_err(|e| PipelineError::Catalog(e.to_string()))?,
        )
        .map_err(|e| PipelineError::Catalog(e.to_string()))?;
    let conn = target.connect().await?;
    let result = ingest(config, all, broadcast, &source_ns, &conn).await;
    conn.close(tiermesh_proto::TerminationCode::NoError, "ingest ended");
    result
}

async fn ingest(
    config: &IngestConfig,
    all: &Arc<Counters>,
    broadcast: &TrackNamespace,
    source_ns: &TrackNamespace,
    conn: &Connection,
) -> Result<(), PipelineError> {
    // The source's catalog names its video and audio tracks.
    let mut catalog_track = JoinedTrack::open(
        conn,
        full(source_ns, CATALOG_TRACK_NAME),
        SubscribeOptions::largest_object(),
    )
    .await?;
    let catalog = match tokio::time::timeout(CATALOG_WAIT, catalog_track.next()).await {
        Ok(Some(o)) => {
            Catalog::from_json(&o.payload).map_err(|e| PipelineError::Catalog(e.to_string()))?
        }
        Ok(None) => return Err(PipelineError::Catalog("the catalog track ended".into())),
        Err(_) => return Err(PipelineError::Catalog(format!("none within {CATALOG_WAIT:?}"))),
    };
    drop(catalog_track);
    let video = catalog
        .tracks
        .iter()
        .filter(|t| t.role.as_deref() == Some("video"))
        .max_by_key(|t| t.height.unwrap_or(0))
        .ok_or_else(|| PipelineError::Catalog("no video track".into()))?
        .clone();
    let codec = video.codec.as_deref().and_then(codec_of).ok_or_else(|| {
        PipelineError::Catalog(format!(
            "{}: codec {:?} is not H.264 or AV1",
            video.name, video.codec
        ))
    })?;
    let audio = catalog
        .tracks
        .iter()
        .find(|t| t.role.as_deref() == Some("audio") && t.codec.as_deref() == Some("opus"))
        .cloned();
    let size = video.width.zip(video.height);
    let ladder_config = config.ladder(size, video.framerate.unwrap_or(30.0));
    // Building the encoders encodes a probe frame per rung: blocking work.
    let ladder = tokio::task::spawn_blocking(move || Ladder::new(ladder_config))
        .await
        .map_err(|e| PipelineError::Thread(std::io::Error::other(e.to_string())))??;
    let layout = layout(&ladder, audio.as_ref());
    let rung_names: Vec<String> = ladder.rungs().iter().map(Rung::track_name).collect();
    tracing::info!(broadcast = %broadcast, source = %video.name, codec = %codec, rungs = ?rung_names, "ingest: making the ladder");

    let stats = Stats { own: Arc::new(Counters::default()), all: all.clone() };
    let audio_index = layout.audio_track;
    let now = now_us();
    // No rung is encoded until somebody subscribes to it (the relay subscribes here once
    // per track, for all its viewers).
    let (source, output) = IngestSource::with_output(layout, false, now / 1_000_000, now);
    let handover = output.to.clone();
    let (sample_tx, sample_rx) = mpsc::channel::<Sample>();
    let (picture_tx, picture_rx) = mpsc::sync_channel::<Picture>(config.queue);
    let backlog = Arc::new(AtomicUsize::new(0));
    let newest = Arc::new(AtomicU64::new(0));
    let decoder = Decoder::new(codec)?;
    let name = broadcast.to_string();
    {
        let (backlog, newest, stats) = (backlog.clone(), newest.clone(), stats.clone());
        std::thread::Builder::new()
            .name(format!("ingest-decode {name}"))
            .spawn(move || decode_loop(decoder, sample_rx, backlog, picture_tx, newest, stats))?;
    }
    {
        let (key_request, watched) = (source.key_request.clone(), source.watched.clone());
        let stats = stats.clone();
        let max_lag_us = u64::try_from(config.max_lag.as_micros()).unwrap_or(u64::MAX);
        std::thread::Builder::new().name(format!("ingest-ladder {name}")).spawn(move || {
            encode_loop(ladder, picture_rx, newest, max_lag_us, key_request, watched, output, stats)
        })?;
    }

    // No request token: the session's (CLIENT_SETUP) covers the ingest prefix.
    let mut publisher = Publisher::with_source(broadcast.clone(), source, None);

    let mut video_track =
        JoinedTrack::open(conn, full(source_ns, &video.name), SubscribeOptions::largest_object())
            .await?;
    let mut audio_track = match &audio {
        Some(a) => match JoinedTrack::open(
            conn,
            full(source_ns, &a.name),
            SubscribeOptions::largest_object(),
        )
        .await
        {
            Ok(j) => Some(j),
            Err(e) => {
                tracing::warn!(error = %e, "ingest: the source's audio cannot be subscribed; video only");
                None
            }
        },
        None => None,
    };

    let (end_tx, end_rx) = tokio::sync::oneshot::channel::<()>();
    let serve = publisher.serve(
        conn,
        async {
            let _ = end_rx.await;
        },
        || tracing::info!(broadcast = %broadcast, "ingest: publishing the ladder"),
    );
    let pump = async {
        add(&all.broadcasts, 1);
        let started = Instant::now();
        let mut log = tokio::time::interval(LOG_INTERVAL);
        log.tick().await;
        loop {
            tokio::select! {
                o = video_track.next() => {
                    let Some(o) = o else { break };
                    stats.add(|c| &c.frames_in, 1);
                    let props = LocProperties::from_extensions(&o.extensions).unwrap_or_default();
                    backlog.fetch_add(1, Ordering::Relaxed);
                    let sample = Sample {
                        group_id: o.group_id,
                        object_id: o.object_id,
                        capture_us: props.capture_timestamp_us().unwrap_or_else(now_us),
                        config: props.video_config,
                        payload: o.payload,
                    };
                    if sample_tx.send(sample).is_err() {
                        break;
                    }
                }
                o = async { match &mut audio_track { Some(a) => a.next().await, None => std::future::pending().await } } => {
                    let Some(o) = o else { audio_track = None; continue };
                    let Some(track) = audio_index else { continue };
                    stats.add(|c| &c.audio_objects, 1);
                    let capture_us = tiermesh_proto::loc::capture_timestamp_us(&o.extensions).unwrap_or_else(now_us);
                    handover.send([synthetic::Object {
                        track,
                        group_id: o.group_id,
                        object_id: o.object_id,
                        capture_us,
                        key: o.object_id == 0,
                        extensions: o.extensions,
                        payload: o.payload,
                    }]);
                }
                _ = log.tick() => log_stats(broadcast, &stats.own.snapshot(), started.elapsed()),
            }
        }
        let _ = end_tx.send(());
        add_neg(&all.broadcasts);
        log_stats(broadcast, &stats.own.snapshot(), started.elapsed());
        tracing::info!(broadcast = %broadcast, "ingest: the source ended");
    };
    let (served, ()) = tokio::join!(serve, pump);
    served?;
    Ok(())
}

fn add_neg(c: &AtomicU64) {
    let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(1)));
}

fn log_stats(broadcast: &TrackNamespace, s: &IngestStats, elapsed: Duration) {
    tracing::info!(
        broadcast = %broadcast,
        seconds = elapsed.as_secs(),
        frames_in = s.frames_in,
        encoded = s.frames_encoded,
        dropped = s.frames_dropped,
        decode_errors = s.decode_errors,
        encode_errors = s.encode_errors,
        key_frame_requests = s.key_frame_requests,
        "ingest"
    );
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tiermesh_codec::test_pattern;

    use super::*;

    fn stats() -> Stats {
        Stats { own: Arc::new(Counters::default()), all: Arc::new(Counters::default()) }
    }

    #[test]
    fn default_ladder_is_the_codec_crates_and_fits_the_source() {
        let c = IngestConfig::default();
        c.validate().unwrap();
        let names = |l: &LadderConfig| l.rungs.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&c.ladder(Some((1280, 720)), 30.0)), ["720p", "360p", "180p"]);
        assert_eq!(c.ladder(None, 30.0).rungs, LadderConfig::default().rungs);
        // Never upscaled: a 360p source loses the 720p rung.
        assert_eq!(names(&c.ladder(Some((640, 360)), 25.0)), ["360p", "180p"]);
        assert!(c.ladder(Some((640, 360)), 25.0).rungs.iter().all(|r| r.fps == 25.0));
        // Smaller than every rung: one rung at the source size.
        let tiny = c.ladder(Some((161, 91)), 30.0);
        assert_eq!((tiny.rungs.len(), tiny.rungs[0].width, tiny.rungs[0].height), (1, 160, 90));
    }

    #[test]
    fn the_ingest_section_parses_and_bad_values_name_the_key() {
        let text = r#"
            [tls]
            generate = true
            [ingest]
            prefix = "clinic"
            group = "2s"
            queue = 4
            max_lag = "150ms"
            [[ingest.rungs]]
            name = "360p"
            width = 640
            height = 360
            bitrate = 500000
            codec = "av1"
            [[ingest.rungs]]
            name = "180p"
            width = 320
            height = 180
            fps = 15
            bitrate = 150000
        "#;
        let config = RelayConfig::parse(text, Path::new("relay.toml")).unwrap();
        config.validate().unwrap();
        let ingest = config.ingest.clone().unwrap();
        assert_eq!(ingest.prefix, "clinic");
        assert_eq!(ingest.group, Duration::from_secs(2));
        assert_eq!(ingest.max_lag, Duration::from_millis(150));
        assert_eq!(ingest.rungs[0].codec, RungCodec::Av1);
        assert_eq!(ingest.rungs[1].codec, RungCodec::H264);
        let ladder = ingest.ladder(Some((1280, 720)), 30.0);
        assert_eq!(ladder.group_length, GroupLength::Micros(2_000_000));
        assert_eq!(ladder.rungs[1].fps, 15.0);
        // It round-trips through the relay's TOML.
        assert_eq!(RelayConfig::parse(&config.to_toml(), Path::new("x")).unwrap(), config);

        let mut bad = config.clone();
        bad.ingest.as_mut().unwrap().queue = 0;
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.starts_with("ingest: queue"), "{e}");
        let mut bad = config;
        bad.ingest.as_mut().unwrap().rungs[0].width = 641;
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("ingest") && e.contains("360p"), "{e}");
        let unknown = "[tls]\ngenerate = true\n[ingest]\nrung = []\n";
        let e = RelayConfig::parse(unknown, Path::new("r.toml")).unwrap_err().to_string();
        assert!(e.contains("rung"), "{e}");
    }

    #[test]
    fn only_source_namespaces_are_ingested() {
        let ns = |p: &str| TrackNamespace::from_path(p).unwrap();
        assert_eq!(broadcast_of(&ns("clinic/room-42/source")), Some(ns("clinic/room-42")));
        assert_eq!(broadcast_of(&ns("clinic/room-42")), None);
        assert_eq!(broadcast_of(&ns("source")), None);
        assert_eq!(broadcast_of(&ns("clinic/source/x")), None);
    }

    /// H.264 samples of the test pattern, one group every 30 frames.
    fn samples(n: u32, w: usize, h: usize) -> Vec<Sample> {
        let pattern = test_pattern::Generator::new(w, h, 30.0).unwrap();
        let mut enc = h264::Encoder::new(h264::EncoderConfig {
            width: w,
            height: h,
            fps: 30.0,
            bitrate: 300_000,
        })
        .unwrap();
        (0..n)
            .map(|i| {
                let p = enc.encode(&pattern.next_frame(i), i % 30 == 0).unwrap();
                Sample {
                    group_id: u64::from(i / 30),
                    object_id: u64::from(i % 30),
                    capture_us: u64::from(i) * 33_333,
                    config: p.config.map(Bytes::from),
                    payload: Bytes::from(p.data),
                }
            })
            .collect()
    }

    /// With nobody draining the ladder's queue, the decoder keeps decoding (references stay
    /// intact) and drops, and counts, every picture that does not fit.
    #[test]
    fn a_full_ladder_queue_drops_and_counts_frames_instead_of_waiting() {
        let (sample_tx, sample_rx) = mpsc::channel();
        let (picture_tx, picture_rx) = mpsc::sync_channel(2);
        let backlog = Arc::new(AtomicUsize::new(0));
        let s = stats();
        for sample in samples(12, 160, 96) {
            backlog.fetch_add(1, Ordering::Relaxed);
            sample_tx.send(sample).unwrap();
        }
        drop(sample_tx);
        let decoder = Decoder::new(Codec::H264).unwrap();
        decode_loop(decoder, sample_rx, backlog, picture_tx, Arc::default(), s.clone());
        let got = s.own.snapshot();
        assert_eq!((got.frames_decoded, got.frames_dropped, got.decode_errors), (12, 10, 0));
        assert_eq!(picture_rx.try_iter().count(), 2);
        assert_eq!(s.all.snapshot().frames_dropped, 10);
    }

    /// A decoder far behind skips to the next key frame; a gap in a group waits for one.
    #[test]
    fn a_decoder_behind_or_after_a_gap_resumes_at_a_key_frame() {
        let (sample_tx, sample_rx) = mpsc::channel();
        let (picture_tx, picture_rx) = mpsc::sync_channel(100);
        let all = samples(60, 160, 96);
        // Object 5 of group 0 is lost: 6..29 cannot be decoded, group 1 can.
        let backlog = Arc::new(AtomicUsize::new(0));
        for sample in all.into_iter().filter(|s| !(s.group_id == 0 && s.object_id == 5)) {
            backlog.fetch_add(1, Ordering::Relaxed);
            sample_tx.send(sample).unwrap();
        }
        drop(sample_tx);
        let s = stats();
        // 59 queued: more than MAX_DECODE_BACKLOG, so the first group is skipped at once too.
        let newest = Arc::new(AtomicU64::new(0));
        let decoder = Decoder::new(Codec::H264).unwrap();
        decode_loop(decoder, sample_rx, backlog, picture_tx, newest.clone(), s.clone());
        assert_eq!(newest.load(Ordering::Relaxed), 59 * 33_333);
        let got = s.own.snapshot();
        assert_eq!(got.decode_errors, 0, "{got:?}");
        // The key frame of group 0, then all of group 1; the rest skipped and counted.
        assert_eq!((got.frames_decoded, got.frames_dropped), (31, 28), "{got:?}");
        let times: Vec<u64> = picture_rx.try_iter().map(|p| p.capture_us).collect();
        assert_eq!(times[0], 0);
        assert!(times[1..].windows(2).all(|w| w[1] - w[0] < 40_000), "{times:?}");
    }

    /// A ladder behind the decoder by more than `max_lag` drops the late pictures and
    /// encodes from the first one within it.
    #[test]
    fn a_ladder_behind_drops_pictures_older_than_max_lag() {
        let config = IngestConfig {
            rungs: vec![RungConfig {
                name: "90p".into(),
                width: 160,
                height: 90,
                fps: None,
                bitrate: 60_000,
                codec: RungCodec::H264,
            }],
            ..IngestConfig::default()
        };
        let ladder = Ladder::new(config.ladder(Some((160, 90)), 30.0)).unwrap();
        let (to, out_rx) = Handover::new(Arc::default());
        let output = Output { to, rung_track: vec![1], group_base: 0 };
        let (picture_tx, picture_rx) = mpsc::sync_channel(10);
        let pattern = test_pattern::Generator::new(160, 90, 30.0).unwrap();
        // Ten pictures queued while the decoder is already at 300 ms.
        for i in 0..10u32 {
            let capture_us = u64::from(i) * 33_333;
            let image = Arc::new(pattern.next_frame(i));
            picture_tx.send(Picture { image, capture_us }).unwrap();
        }
        drop(picture_tx);
        let newest = Arc::new(AtomicU64::new(300_000));
        let s = stats();
        let flag = Arc::new(AtomicBool::new(false));
        let watched: Arc<[AtomicBool]> = Arc::new([AtomicBool::new(true)]);
        encode_loop(ladder, picture_rx, newest, 200_000, flag, watched, output, s.clone());
        let got = s.own.snapshot();
        // 0, 33, 67 and 100 ms are more than 200 ms behind 300 ms.
        assert_eq!((got.frames_dropped, got.frames_encoded), (4, 6), "{got:?}");
        let first = out_rx.try_iter().next().unwrap();
        assert_eq!((first.object_id, first.key, first.capture_us), (0, true, 4 * 33_333));
    }

    /// A two-rung ladder cheap enough for a debug build: 180p and 90p H.264.
    fn two_rungs() -> IngestConfig {
        let rung = |name: &str, width, height, bitrate| RungConfig {
            name: name.into(),
            width,
            height,
            fps: None,
            bitrate,
            codec: RungCodec::H264,
        };
        IngestConfig {
            rungs: vec![rung("180p", 320, 180, 150_000), rung("90p", 160, 90, 60_000)],
            ..IngestConfig::default()
        }
    }

    /// The publishing side of `ladder`'s broadcast (no audio, the first catalog due at 0),
    /// every rung watched, and the ladder thread's output feeding it, its groups counted
    /// from `group_base`.
    fn source_and_output(ladder: &Ladder, group_base: u64) -> (IngestSource, Output) {
        IngestSource::with_output(layout(ladder, None), true, group_base, 0)
    }

    fn picture(pattern: &test_pattern::Generator, i: u32) -> Picture {
        Picture { image: Arc::new(pattern.next_frame(i)), capture_us: u64::from(i) * 33_333 }
    }

    /// Frames handed over while the publisher is busy elsewhere (not waiting) still wake
    /// it: its next wait returns at once, rather than leaving them until later frames come.
    #[tokio::test]
    async fn frames_handed_over_while_the_publisher_is_busy_still_wake_it() {
        let ladder = Ladder::new(two_rungs().ladder(Some((320, 180)), 30.0)).unwrap();
        let (mut source, output) = source_and_output(&ladder, 0);
        let wake = source.wakeup().expect("the ingest's source has no wake-up");
        let pattern = test_pattern::Generator::new(320, 180, 30.0).unwrap();
        let (picture_tx, picture_rx) = mpsc::sync_channel(10);
        for i in 0..3 {
            picture_tx.send(picture(&pattern, i)).unwrap();
        }
        drop(picture_tx);
        // Every frame is encoded and handed over while nobody waits.
        let watched = source.watched.clone();
        encode_loop(
            ladder,
            picture_rx,
            Arc::default(),
            200_000,
            Arc::default(),
            watched,
            output,
            stats(),
        );
        let woken = tokio::time::timeout(Duration::from_secs(5), wake.notified()).await;
        assert!(woken.is_ok(), "the wake-up for frames handed over earlier was lost");
        let objects: Vec<_> = std::iter::from_fn(|| source.poll_object(now_us())).collect();
        assert_eq!(objects.iter().filter(|o| o.track != 0).count(), 6, "{objects:?}");
    }

    /// The publishing side asks for no polling (nothing is due at a time of its own after
    /// the first catalog), and a publisher that only sleeps until woken still gets every
    /// frame of every rung as the rungs' workers hand them over, one source frame every
    /// 10 ms. A lost wake-up leaves frames waiting for ever (here: until the bound).
    #[tokio::test]
    async fn frames_keep_flowing_to_a_publisher_that_sleeps_until_woken() {
        const FRAMES: u32 = 60;
        let ladder = Ladder::new(two_rungs().ladder(Some((320, 180)), 30.0)).unwrap();
        let (mut source, output) = source_and_output(&ladder, 0);
        let wake = source.wakeup().expect("the ingest's source has no wake-up");
        let catalog = source.poll_object(now_us()).expect("the first catalog");
        assert_eq!(catalog.track, 0);
        assert_eq!(source.poll_timeout(), None, "the publishing side asks to be polled");

        let (picture_tx, picture_rx) = mpsc::sync_channel(10);
        let watched = source.watched.clone();
        let encoder = std::thread::spawn(move || {
            let (newest, key) = (Arc::default(), Arc::default());
            encode_loop(ladder, picture_rx, newest, 200_000, key, watched, output, stats());
        });
        let feeder = std::thread::spawn(move || {
            let pattern = test_pattern::Generator::new(320, 180, 30.0).unwrap();
            for i in 0..FRAMES {
                // The source's pace (a third of a 30 fps interval, so that the workers'
                // hand-overs meet the publisher both waiting and busy).
                std::thread::sleep(Duration::from_millis(10));
                if picture_tx.send(picture(&pattern, i)).is_err() {
                    return;
                }
            }
        });
        let expected = 2 * FRAMES as usize;
        let mut got = Vec::new();
        let flowed = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                got.extend(std::iter::from_fn(|| source.poll_object(now_us())));
                if got.len() >= expected {
                    return;
                }
                wake.notified().await;
            }
        })
        .await;
        assert!(flowed.is_ok(), "{} of {expected} frames came: a wake-up was lost", got.len());
        feeder.join().unwrap();
        encoder.join().unwrap();
        for track in [1, 2] {
            let ids: Vec<u64> =
                got.iter().filter(|o| o.track == track).map(|o| o.object_id).collect();
            assert_eq!(ids.len(), FRAMES as usize, "track {track}: {ids:?}");
        }
    }

    /// What a NEW GROUP REQUEST does: the publisher calls `request_key_frame` on its source,
    /// and at the next frame every rung starts a new group at the same source frame.
    #[test]
    fn a_key_frame_request_starts_a_new_group_on_every_rung_at_the_next_frame() {
        let ladder = Ladder::new(two_rungs().ladder(Some((320, 180)), 30.0)).unwrap();
        let (mut source, output) = source_and_output(&ladder, 1000);
        let rung_track = output.rung_track.clone();
        assert_eq!(rung_track.len(), 2);
        let key_request = source.key_request.clone();
        let (picture_tx, picture_rx) = mpsc::sync_channel(1);
        let s = stats();
        let encoder = {
            let s = s.clone();
            let newest = Arc::new(AtomicU64::new(0));
            let watched = source.watched.clone();
            std::thread::spawn(move || {
                encode_loop(ladder, picture_rx, newest, 200_000, key_request, watched, output, s)
            })
        };
        let pattern = test_pattern::Generator::new(320, 180, 30.0).unwrap();
        let push = |i: u32| {
            let capture_us = 1_000_000 + u64::from(i) * 33_333;
            let image = Arc::new(pattern.next_frame(i));
            picture_tx.send(Picture { image, capture_us }).unwrap();
        };
        let catalog = source.poll_object(0).unwrap();
        assert_eq!(catalog.track, 0);
        let mut objects = Vec::new();
        let mut take = |n: usize, source: &mut IngestSource| {
            for _ in 0..n {
                objects.push(source.rx.recv_timeout(Duration::from_secs(30)).unwrap());
            }
        };
        for i in 0..10 {
            push(i);
        }
        take(20, &mut source);
        source.request_key_frame();
        for i in 10..15 {
            push(i);
        }
        take(10, &mut source);
        drop(picture_tx);
        encoder.join().unwrap();
        // Objects 0..9 of group 1000 on both rungs, then a new group from frame 10 on.
        for track in rung_track {
            let mine: Vec<(u64, u64, bool, u64)> = objects
                .iter()
                .filter(|o| o.track == track)
                .map(|o| (o.group_id, o.object_id, o.key, o.capture_us))
                .collect();
            assert_eq!(mine.len(), 15);
            assert_eq!(mine[9].0, 1000);
            assert_eq!((mine[10].0, mine[10].1, mine[10].2), (1001, 0, true), "{mine:?}");
            assert_eq!(mine[10].3, 1_000_000 + 10 * 33_333);
            assert!(mine[11..].iter().all(|o| o.0 == 1001 && !o.2), "{mine:?}");
        }
        assert_eq!(s.own.snapshot().key_frame_requests, 1);
    }
}
