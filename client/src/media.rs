//! Real media for the publisher: what `tiermesh pub --test-pattern` and
//! `tiermesh pub --input FILE` send.
//!
//! A [`MediaBroadcast`] is a [`Source`] for [`crate::publish::Publisher`], so it goes out
//! through the same publishing path as the synthetic broadcast (subscribers, cache,
//! joining fetches, reconnection). Sans-IO like the synthetic generator: it is given
//! wall-clock time and hands out the objects due by then, encoding as it goes.
//!
//! ```text
//! test pattern / Y4M frames ──────────────────────────┐
//! H.264 / AV1 of a file (--ladder) ─► decoding thread ─► codec Pipeline (a worker per rung) ─► one LOC object per frame per rung
//! tone ─► Opus ─────────────────────────────────────► `audio`, one object per group
//! H.264 / AV1 / Opus samples of a file (no --ladder) ─► passed through as one tier
//! ```
//!
//! Each encoded frame is one object: LOC Timestamp = capture time (wall clock), Video
//! Config = the avcC / av1C on key frames. Tracks, priorities and extensions are those of
//! the synthetic broadcast ([`crate::synthetic::TrackSpec::extensions`]): catalog 0, audio
//! 16, lowest tier 32 and +16 per higher tier, descending group order, DYNAMIC GROUPS,
//! delivery timeouts 400 ms (audio) and 1 s (video). The catalog lists every rung with its
//! WebCodecs codec string, size, frame rate, bit rate and the alternate group that ties
//! them together.
//!
//! Real time comes first, and the publisher's driver never waits for an encoder or a
//! decoder. The ladder runs on worker threads, one per rung ([`Pipeline`]); each source
//! frame is offered to it when it falls due, and the top rung's worker takes the newest
//! frame offered whenever it is free. Encoded frames come back through a channel, and the
//! publisher is woken for them ([`Handover`], [`Source::wakeup`]). A file's video
//! (`--input --ladder`) is read and decoded on a thread of its own, at most
//! [`DECODE_AHEAD`] samples ahead, so a frame is a picture ready to offer when it falls
//! due. When the encoders cannot keep up (a slow machine, a busy core), the frames they
//! had no time for are skipped evenly: the picture moves at a steady lower frame rate
//! (every second or third source frame) rather than in runs of frames broken by freezes,
//! and audio, the catalog and the network keep their pace. Skipped source frames are
//! counted in [`MediaStats::frames_dropped`].

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use bytes::Bytes;
use tiermesh_codec::catalog::{Catalog, Track};
use tiermesh_codec::ladder::{GroupLength, Pipeline, Rung, Sink};
use tiermesh_codec::media::{self, Input, MediaSample, RawSource, SampleKind};
use tiermesh_codec::{Codec, EncodedFrame, I420, Ladder, LadderConfig, h264, opus, test_pattern};
use tiermesh_proto::catalog::CATALOG_TRACK_NAME;
use tiermesh_proto::ext::Extensions;
use tiermesh_proto::loc::{self, LocProperties};

use crate::publish::{Handover, Source};
use crate::synthetic::{self, AUDIO_FRAME_US, BroadcastSpec, TrackKind, TrackSpec};
use crate::uplink::{UplinkConfig, UplinkController, UplinkMeter};
use tokio::sync::Notify;

/// How many frame intervals late a decoded frame of a file (`--input --ladder`) may be and
/// still be offered to the encoders: two frames (66 ms at 30 fps) absorb a slow key frame
/// without dropping, more would add latency every viewer sees. (The decoder itself decodes
/// every frame, so that references stay intact.)
pub const MAX_LAG_FRAMES: u64 = 2;

/// Samples of a file (`--input --ladder`; video pictures and audio packets, in file order)
/// that its decoding thread may have ready before they fall due: about 100 ms of a 30 fps
/// file with 20 ms audio packets, enough for a key frame that decodes slowly to be ready
/// on time, while at most this many decoded pictures are held (24 MB at 1080p).
pub const DECODE_AHEAD: usize = 8;

/// Audio bit rate of the test tone's Opus encoding (speech quality, with FEC room).
const TONE_BITRATE: u32 = 32_000;

/// Errors of setting up a media broadcast.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The encoders or the test pattern refused the configuration.
    #[error("{0}")]
    Codec(#[from] tiermesh_codec::Error),
    /// The input file cannot be read.
    #[error("{0}")]
    Input(#[from] media::Error),
    /// The input holds nothing tiermesh can publish.
    #[error("{0}")]
    Unsupported(String),
    /// The thread that decodes a file's video could not be started.
    #[error("starting the decoding thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// What a [`MediaBroadcast`] did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaStats {
    /// Source video frames taken in (pattern pictures, file frames or samples).
    pub frames_in: u64,
    /// Source frames skipped to stay real time: the encoders were busy with an earlier
    /// frame until a newer one came, or the frame was already late when due.
    pub frames_dropped: u64,
    /// Encoded video objects handed out, all tiers together.
    pub video_objects: u64,
    /// Audio objects handed out.
    pub audio_objects: u64,
    /// Frames an encoder or decoder failed on (logged, skipped).
    pub errors: u64,
    /// Groups started early for a key-frame request.
    pub key_frame_requests: u64,
    /// The video encoders' target bit rate now, the rungs being sent together (bit/s).
    pub video_bitrate_bps: u64,
    /// The smoothed send-rate estimate of the uplink (bit/s; 0 before the first one).
    pub uplink_estimate_bps: u64,
    /// Lowest video target of the run so far, the rungs being sent together (bit/s).
    pub min_video_bitrate_bps: u64,
    /// Times the encoder rates were changed to follow the uplink.
    pub rate_changes: u64,
    /// Times the top rung was dropped because the uplink could not carry it.
    pub top_rung_drops: u64,
    /// Whether the top rung is dropped now.
    pub top_rung_dropped: bool,
    /// Rung frames encoded: each source frame counts once per rung active for it.
    pub rung_frames_encoded: u64,
    /// Rung frames not encoded because the rung was idle: nobody subscribed to it, the
    /// uplink could not carry it, or it waits for the next group start to resume.
    pub rung_frames_idle: u64,
}

/// The ladder used by `tiermesh pub --test-pattern`: three rungs for H.264 (the codec
/// crate's default), the two AV1 rungs this machine class encodes in real time for AV1.
pub fn ladder_for(codec: Codec) -> LadderConfig {
    match codec {
        Codec::H264 => LadderConfig::default(),
        Codec::Av1 => LadderConfig::av1_low(),
    }
}

/// A light H.264 ladder (the default ladder's 360p and 180p rungs, 30 fps) that runs in
/// real time on a shared two-core machine beside a relay: what `tiermesh dev` publishes.
pub fn light_ladder() -> LadderConfig {
    let mut ladder = LadderConfig::default();
    ladder.rungs.retain(|r| r.height <= 360);
    ladder
}

enum Video {
    /// The generated test pattern, at the top rung's size.
    Pattern(test_pattern::Generator),
    /// Raw pictures from a file (Y4M).
    Raw(Box<dyn RawSource>),
    /// Encoded samples of a file, decoded on their own thread ([`decode_ahead`]) and
    /// encoded again on the ladder.
    Transcode(mpsc::Receiver<FileSample>),
    /// Encoded samples of a file sent as they are (video and audio).
    Pass(Box<dyn media::Source>),
}

/// A sample of a file as the publisher takes it when it falls due.
enum FileSample {
    /// Sent as it is: audio, or video without `--ladder`.
    Sample(MediaSample),
    /// A video sample decoded ahead of its time (`--ladder`): its picture (`None` while
    /// the decoder holds pictures back), or why decoding it failed.
    Decoded { pts: Duration, key: bool, picture: Result<Option<I420>, tiermesh_codec::Error> },
    /// Nothing more comes: the file ended, or (`Some`) it cannot be read further.
    End(Option<media::Error>),
}

impl FileSample {
    /// The next sample of `source`, its video decoded by `decoder` if there is one (`--ladder`).
    fn read(source: &mut dyn media::Source, decoder: Option<&mut Decoder>) -> Self {
        match (source.next_sample(), decoder) {
            (Ok(Some(s)), Some(decoder)) if matches!(s.kind, SampleKind::Video { .. }) => {
                let key = matches!(s.kind, SampleKind::Video { key: true, .. });
                FileSample::Decoded { pts: s.pts, key, picture: decoder.decode(&s) }
            }
            (Ok(Some(s)), _) => FileSample::Sample(s),
            (Ok(None), _) => FileSample::End(None),
            (Err(e), _) => FileSample::End(Some(e)),
        }
    }

    /// When the sample falls due, given the broadcast's start; the end at once.
    fn due(&self, start_us: u64) -> u64 {
        match self {
            FileSample::Sample(s) => start_us + duration_us(s.pts),
            FileSample::Decoded { pts, .. } => start_us + duration_us(*pts),
            FileSample::End(_) => start_us,
        }
    }
}

/// The samples of `source` in file order, its video decoded by `decoder` on a thread of its
/// own, each hand-over notifying `wake`. The thread reads at most [`DECODE_AHEAD`] samples
/// ahead of the publisher, hands over [`FileSample::End`] last, and stops when the file ends
/// or cannot be read, or when the receiving end is dropped.
fn decode_ahead(
    mut source: Box<dyn media::Source>,
    mut decoder: Decoder,
    wake: Arc<Notify>,
) -> Result<mpsc::Receiver<FileSample>, MediaError> {
    let (to, rx) = Handover::bounded(wake, DECODE_AHEAD);
    std::thread::Builder::new().name("pub-decode".into()).spawn(move || {
        loop {
            let next = FileSample::read(source.as_mut(), Some(&mut decoder));
            let end = matches!(next, FileSample::End(_));
            if !to.send([next]) || end {
                return;
            }
        }
    })?;
    Ok(rx)
}

/// A video decoder of either codec.
enum Decoder {
    H264(h264::Decoder),
    Av1(tiermesh_codec::av1::Decoder),
}

impl Decoder {
    fn decode(&mut self, sample: &MediaSample) -> Result<Option<I420>, tiermesh_codec::Error> {
        match (self, &sample.kind) {
            (Decoder::H264(d), SampleKind::Video { config, .. }) => {
                d.decode(&sample.data, config.as_deref())
            }
            (Decoder::Av1(d), SampleKind::Video { .. }) => d.decode(&sample.data),
            _ => Ok(None),
        }
    }
}

/// The ladder's encoders on their worker threads, and what comes back from them.
struct Encoder {
    pipeline: Pipeline,
    /// Encoded frames (or an encoder's error) in the order the workers finished them,
    /// handed over with a wake-up.
    done: mpsc::Receiver<Result<Vec<EncodedFrame>, tiermesh_codec::Error>>,
}

/// Publishes real encoded media as the tracks of one broadcast.
pub struct MediaBroadcast {
    spec: BroadcastSpec,
    encoder: Option<Encoder>,
    /// Notified by the encoders' workers when frames come back, and by the decoding thread
    /// of a file when a sample is ready.
    wake: Arc<Notify>,
    /// Track index of each ladder rung (rungs are highest first, tracks lowest first).
    rung_track: Vec<usize>,
    video: Video,
    tone: Option<(test_pattern::Tone, opus::Encoder)>,
    catalog_tracks: Vec<Track>,
    catalog_due: Option<u64>,
    start_us: u64,
    frame_us: f64,
    /// Index of the next video frame on the frame clock.
    next_frame: u64,
    /// Capture time of the next video frame (`u64::MAX` when the source ended).
    next_video_us: u64,
    /// Capture time of the next audio frame (`u64::MAX`: no audio or it ended).
    next_audio_us: u64,
    /// A file sample read (or decoded) ahead of its time.
    ahead: Option<FileSample>,
    /// Nothing more of the file comes: it ended, or it (or its decoding thread) failed.
    file_ended: bool,
    audio_group: u64,
    /// Group IDs start at the start time in seconds, so a restarted publisher keeps them
    /// increasing.
    group_base: u64,
    pass_group: Option<u64>,
    pass_object: u64,
    pending: VecDeque<synthetic::Object>,
    stats: MediaStats,
    /// Follows the uplink with the encoders' rates (`None`: fixed rates, or no encoder).
    uplink: Option<UplinkController>,
    /// The send-rate estimate of the current connection.
    meter: UplinkMeter,
    /// Per rung (highest first): somebody subscribed to its track. Every rung counts as
    /// watched until the publisher reports otherwise.
    watched: Vec<bool>,
    /// Per rung (highest first): its name and the objects handed out on its track.
    rung_objects: Vec<(String, u64)>,
}

impl std::fmt::Debug for MediaBroadcast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaBroadcast")
            .field("tracks", &self.spec.tracks.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn catalog_spec() -> TrackSpec {
    TrackSpec {
        name: CATALOG_TRACK_NAME.to_owned(),
        kind: TrackKind::Catalog,
        priority: 0,
        bitrate: 0,
        size: None,
        delivery_timeout: None,
    }
}

fn audio_spec(bitrate: u64) -> TrackSpec {
    TrackSpec {
        name: "audio".to_owned(),
        kind: TrackKind::Audio,
        priority: 16,
        bitrate,
        size: None,
        delivery_timeout: Some(Duration::from_millis(400)),
    }
}

fn video_spec(name: String, lowest_first: usize, bitrate: u64, size: (u32, u32)) -> TrackSpec {
    TrackSpec {
        name,
        kind: TrackKind::Video,
        priority: u8::try_from(32 + 16 * lowest_first).unwrap_or(u8::MAX),
        bitrate,
        size: Some(size),
        delivery_timeout: Some(Duration::from_secs(1)),
    }
}

impl MediaBroadcast {
    /// The test pattern (with noise of `noise` luma steps; 0 for none) encoded on `ladder`
    /// at its source frame rate, and a tone in Opus, starting at wall-clock `now_us`.
    ///
    /// # Errors
    /// The ladder's configuration or an encoder is refused.
    pub fn test_pattern(ladder: LadderConfig, noise: u8, now_us: u64) -> Result<Self, MediaError> {
        let top = ladder
            .rungs
            .first()
            .ok_or_else(|| MediaError::Unsupported("a ladder needs at least one rung".into()))?;
        let pattern = test_pattern::Generator::new(top.width, top.height, ladder.source_fps)?
            .with_noise(noise);
        let tone = test_pattern::Tone::new(opus::SAMPLE_RATE, 1)?;
        let encoder = opus::Encoder::new(opus::EncoderConfig {
            bitrate: TONE_BITRATE,
            ..opus::EncoderConfig::default()
        })?;
        let fps = ladder.source_fps;
        let mut this =
            Self::with_ladder(ladder, Video::Pattern(pattern), true, now_us, Arc::default())?;
        this.tone = Some((tone, encoder));
        this.frame_us = 1_000_000.0 / fps;
        Ok(this)
    }

    /// The media of the file at `path`. Raw video (Y4M) always goes through `ladder`;
    /// encoded video goes through it (decoded first) when `transcode` is set, else it is
    /// sent as it is as one tier named after its height, with the file's Opus audio.
    /// `looped` plays the file endlessly.
    ///
    /// # Errors
    /// The file cannot be read or holds nothing publishable; an encoder is refused.
    pub fn file(
        path: &Path,
        ladder: LadderConfig,
        transcode: bool,
        looped: bool,
        now_us: u64,
    ) -> Result<Self, MediaError> {
        let input = media::input::open(path)?;
        let input = if looped { input.looped() } else { input };
        let info = input.info().clone();
        match input {
            Input::Raw(src) => {
                let v = info.video.as_ref().ok_or_else(|| {
                    MediaError::Unsupported(format!("{}: no video", path.display()))
                })?;
                let ladder = fit_ladder(ladder, v.width, v.height, v.fps);
                let fps = ladder.source_fps;
                let mut this =
                    Self::with_ladder(ladder, Video::Raw(src), false, now_us, Arc::default())?;
                this.frame_us = 1_000_000.0 / fps;
                Ok(this)
            }
            Input::Encoded(src) if transcode => {
                let v = info.video.as_ref().ok_or_else(|| {
                    MediaError::Unsupported(format!("{}: no video to transcode", path.display()))
                })?;
                let decoder = match v.codec {
                    Some(Codec::Av1) => Decoder::Av1(tiermesh_codec::av1::Decoder::new()?),
                    _ => Decoder::H264(h264::Decoder::new()?),
                };
                let ladder = fit_ladder(ladder, v.width, v.height, v.fps);
                let fps = ladder.source_fps;
                // The decoding thread wakes the publisher as the encoders do.
                let wake = Arc::new(Notify::new());
                let samples = decode_ahead(src, decoder, wake.clone())?;
                let mut this = Self::with_ladder(
                    ladder,
                    Video::Transcode(samples),
                    info.audio.is_some(),
                    now_us,
                    wake,
                )?;
                this.frame_us = 1_000_000.0 / fps;
                Ok(this)
            }
            Input::Encoded(src) => Self::pass(path, src, &info, now_us),
        }
    }

    /// A broadcast of `video` encoded on the ladder `config` (and of audio if `audio`),
    /// whose encoders notify `wake` as they hand their frames back.
    fn with_ladder(
        config: LadderConfig,
        video: Video,
        audio: bool,
        now_us: u64,
        wake: Arc<Notify>,
    ) -> Result<Self, MediaError> {
        let ladder = Ladder::new(config)?;
        let rungs = ladder.rungs();
        let n = rungs.len();
        let mut tracks = vec![catalog_spec()];
        if audio {
            tracks.push(audio_spec(u64::from(TONE_BITRATE)));
        }
        let first_video = tracks.len();
        for (lowest_first, r) in rungs.iter().rev().enumerate() {
            let size = (u32::try_from(r.width).unwrap_or(0), u32::try_from(r.height).unwrap_or(0));
            tracks.push(video_spec(r.track_name(), lowest_first, u64::from(r.bitrate), size));
        }
        let rung_track = (0..n).map(|i| first_video + (n - 1 - i)).collect();
        let mut catalog_tracks = ladder.catalog_tracks(None);
        if audio {
            catalog_tracks.push(Catalog::opus_track(
                "audio",
                1,
                TONE_BITRATE,
                ladder.config().render_group,
            ));
        }
        let mut this =
            Self::blank(BroadcastSpec { tracks }, Video::Pattern(dummy_pattern()?), now_us);
        this.wake = wake;
        // The receiving end is gone only while the broadcast is being dropped.
        let (to, done) = Handover::new(this.wake.clone());
        let sink: Sink = Arc::new(move |r| {
            to.send([r]);
        });
        let pipeline = ladder.into_newest_pipeline(sink)?;
        this.video = video;
        let configured: Vec<u32> = rungs.iter().map(|r| r.bitrate).collect();
        this.stats.video_bitrate_bps = configured.iter().map(|&b| u64::from(b)).sum();
        this.stats.min_video_bitrate_bps = this.stats.video_bitrate_bps;
        let audio_bps = if audio { TONE_BITRATE } else { 0 };
        this.uplink = Some(UplinkController::new(UplinkConfig::default(), configured, audio_bps));
        this.encoder = Some(Encoder { pipeline, done });
        this.rung_track = rung_track;
        this.watched = vec![true; n];
        this.rung_objects = rungs.iter().map(|r| (r.name.clone(), 0)).collect();
        this.catalog_tracks = catalog_tracks;
        if audio {
            this.next_audio_us = now_us.div_ceil(AUDIO_FRAME_US) * AUDIO_FRAME_US;
        }
        Ok(this)
    }

    fn blank(spec: BroadcastSpec, video: Video, now_us: u64) -> Self {
        Self {
            spec,
            encoder: None,
            wake: Arc::new(Notify::new()),
            rung_track: Vec::new(),
            video,
            tone: None,
            catalog_tracks: Vec::new(),
            catalog_due: Some(now_us),
            start_us: now_us,
            frame_us: 1_000_000.0 / 30.0,
            next_frame: 0,
            next_video_us: now_us,
            next_audio_us: u64::MAX,
            ahead: None,
            file_ended: false,
            audio_group: now_us / AUDIO_FRAME_US,
            group_base: now_us / 1_000_000,
            pass_group: None,
            pass_object: 0,
            pending: VecDeque::new(),
            stats: MediaStats::default(),
            uplink: None,
            meter: UplinkMeter::new(),
            watched: Vec::new(),
            rung_objects: Vec::new(),
        }
    }

    fn pass(
        path: &Path,
        src: Box<dyn media::Source>,
        info: &media::Info,
        now_us: u64,
    ) -> Result<Self, MediaError> {
        let mut tracks = vec![catalog_spec()];
        let mut catalog_tracks = Vec::new();
        if let Some(a) = &info.audio {
            tracks.push(audio_spec(64_000));
            catalog_tracks.push(Catalog::opus_track("audio", a.channels, 64_000, 1));
        }
        if let Some(v) = &info.video {
            let name = format!("video/{}p", v.height);
            let seconds = info.duration.as_secs_f64().max(0.001);
            // The file's average rate: what the catalog can say without encoding.
            let bitrate = (src_bytes_estimate(v) as f64 * 8.0 / seconds) as u64;
            tracks.push(video_spec(name.clone(), 0, bitrate, (v.width, v.height)));
            catalog_tracks.push(Track {
                name,
                packaging: "loc".into(),
                is_live: true,
                role: Some("video".into()),
                render_group: Some(1),
                alt_group: Some(1),
                codec: v.codec_string.clone(),
                width: Some(v.width),
                height: Some(v.height),
                framerate: Some(v.fps),
                bitrate: (bitrate > 0).then_some(bitrate),
                ..Track::default()
            });
        }
        if tracks.len() == 1 {
            return Err(MediaError::Unsupported(format!(
                "{}: neither H.264/AV1 video nor Opus audio",
                path.display()
            )));
        }
        let mut this = Self::blank(BroadcastSpec { tracks }, Video::Pass(src), now_us);
        this.catalog_tracks = catalog_tracks;
        Ok(this)
    }

    /// What happened so far.
    pub fn stats(&self) -> MediaStats {
        let mut s = self.stats;
        if let Some(e) = &self.encoder {
            let p = e.pipeline.stats();
            s.frames_dropped += p.frames_replaced;
            s.rung_frames_encoded = p.rung_frames_encoded;
            s.rung_frames_idle = p.rung_frames_idle;
        }
        s
    }

    /// Waits until the encoders have encoded every frame offered so far and handed it back
    /// (at most `timeout`); the frames are then returned by the next
    /// [`Source::poll_object`]. Returns whether they got there. For tests and tools that
    /// drive the broadcast on a virtual clock faster than real time, where frames would
    /// otherwise be skipped as they are under overload.
    pub fn wait_encoded(&self, timeout: Duration) -> bool {
        self.encoder.as_ref().is_none_or(|e| e.pipeline.wait_idle(timeout))
    }

    /// Keeps the configured bit rates whatever the uplink does (`tiermesh pub
    /// --fixed-rate`).
    pub fn fixed_rate(mut self) -> Self {
        self.uplink = None;
        self
    }

    /// The encoder rates' controller (`None` with fixed rates or without encoders).
    pub fn uplink(&self) -> Option<&UplinkController> {
        self.uplink.as_ref()
    }

    fn apply_uplink(&mut self, now_us: u64, estimate_bps: u64) {
        let (Some(ctl), Some(enc)) = (&mut self.uplink, &mut self.encoder) else { return };
        let change = ctl.on_estimate(now_us, estimate_bps);
        self.stats.uplink_estimate_bps = ctl.smoothed_bps().unwrap_or(0);
        let Some(change) = change else { return };
        let top = enc.pipeline.config().rungs.first().map_or("", |r| r.name.as_str());
        let estimate_kbps = ctl.smoothed_bps().unwrap_or(0) / 1000;
        match change.top_rung {
            Some(false) => {
                self.stats.top_rung_drops += 1;
                tracing::info!(rung = %top, estimate_kbps, "uplink cannot carry the top rung: dropped");
            }
            Some(true) => tracing::info!(
                rung = %top,
                estimate_kbps,
                "uplink carries the top rung again: back at the next group"
            ),
            None => {}
        }
        if change.top_rung.is_some() {
            self.apply_wanted(0);
        }
        let (Some(ctl), Some(enc)) = (&self.uplink, &mut self.encoder) else { return };
        for (rung, &bps) in change.rates.iter().enumerate() {
            if bps > 0
                && let Err(e) = enc.pipeline.set_bitrate(rung, bps)
            {
                tracing::warn!(error = %e, rung, "setting the bit rate failed");
            }
        }
        self.stats.rate_changes += 1;
        self.stats.top_rung_dropped = ctl.top_dropped();
        self.stats.video_bitrate_bps = ctl.video_bps();
        if self.stats.video_bitrate_bps > 0 {
            self.stats.min_video_bitrate_bps =
                self.stats.min_video_bitrate_bps.min(self.stats.video_bitrate_bps);
        }
        let rates: Vec<String> = change.rates.iter().map(|b| format!("{}", b / 1000)).collect();
        tracing::info!(
            video_bps = ctl.video_bps(),
            estimate_bps = ctl.smoothed_bps().unwrap_or(0),
            rungs_kbps = %rates.join("/"),
            "uplink: video encoder rate changed"
        );
    }

    /// Encodes rung `rung` (highest first) when somebody watches it and, for the top rung,
    /// the uplink carries it (the pipeline decides whether a ladder may lose its top rung);
    /// else stops it. A rung that starts again begins at the ladder's next group start, with
    /// a key frame, aligned with the other rungs.
    fn apply_wanted(&mut self, rung: usize) {
        let top_dropped = self.uplink.as_ref().is_some_and(UplinkController::top_dropped);
        let watched = self.watched.get(rung).copied().unwrap_or(true);
        let Some(enc) = &mut self.encoder else { return };
        if rung == 0 && watched {
            if top_dropped {
                enc.pipeline.drop_top_rung();
            } else {
                enc.pipeline.restore_top_rung();
            }
            return;
        }
        if let Err(e) = enc.pipeline.set_rung_wanted(rung, watched) {
            self.stats.errors += 1;
            tracing::warn!(error = %e, rung, "starting or stopping a rung failed");
        }
    }

    fn catalog_json(&self, now_us: u64) -> Bytes {
        let mut c = Catalog::new(Some(now_us / 1000));
        c.tracks = self.catalog_tracks.clone();
        Bytes::from(c.to_json().into_bytes())
    }

    fn track_index(&self, kind: TrackKind) -> Option<usize> {
        self.spec.tracks.iter().position(|t| t.kind == kind)
    }

    fn object(
        track: usize,
        group_id: u64,
        object_id: u64,
        capture_us: u64,
        key: bool,
        config: Option<Bytes>,
        payload: Bytes,
    ) -> synthetic::Object {
        let mut extensions = Extensions::default();
        let props = LocProperties {
            timestamp: Some(capture_us),
            video_config: config,
            ..LocProperties::default()
        };
        if let Err(e) = props.apply(&mut extensions) {
            tracing::warn!(error = %e, "LOC properties not written");
            loc::set_capture_timestamp_us(&mut extensions, capture_us);
        }
        synthetic::Object { track, group_id, object_id, capture_us, key, extensions, payload }
    }

    fn push_encoded(&mut self, frames: Vec<EncodedFrame>) {
        for f in frames {
            let Some(&track) = self.rung_track.get(f.rung) else { continue };
            self.stats.video_objects += 1;
            if let Some((_, n)) = self.rung_objects.get_mut(f.rung) {
                *n += 1;
            }
            self.pending.push_back(Self::object(
                track,
                self.group_base + f.group_id,
                f.object_id,
                f.capture_us,
                f.key_frame,
                f.config.map(Bytes::from),
                Bytes::from(f.data),
            ));
        }
    }

    /// Offers `picture` to the encoders, which take the newest picture offered whenever
    /// they are free; never waits.
    fn encode(&mut self, picture: I420, capture_us: u64) {
        let Some(enc) = &self.encoder else { return };
        if let Err(e) = enc.pipeline.offer(Arc::new(picture), capture_us) {
            self.stats.errors += 1;
            tracing::warn!(error = %e, "offering a frame to the encoders failed");
        }
    }

    /// Moves what the encoders finished to the objects to hand out.
    fn collect_encoded(&mut self) {
        let Some(enc) = &self.encoder else { return };
        let done: Vec<_> = enc.done.try_iter().collect();
        for r in done {
            match r {
                Ok(frames) => self.push_encoded(frames),
                Err(e) => {
                    self.stats.errors += 1;
                    tracing::warn!(error = %e, "encoding a frame failed");
                }
            }
        }
    }

    /// Takes the video frame due at `at`, or the newest one due by `now_us` if the driver
    /// comes late (the older ones are skipped: the encoders would take the newest anyway).
    fn video_frame(&mut self, at: u64, now_us: u64) {
        let skip = (now_us.saturating_sub(at) as f64 / self.frame_us) as u64;
        match &mut self.video {
            Video::Pattern(p) => {
                self.stats.frames_dropped += skip;
                self.next_frame += skip;
                let capture = self.start_us + (self.next_frame as f64 * self.frame_us) as u64;
                let picture = p.frame(u32::try_from(self.next_frame).unwrap_or(u32::MAX), capture);
                self.next_frame += 1;
                self.stats.frames_in += 1;
                self.encode(picture, capture);
            }
            Video::Raw(src) => {
                let mut skipped = 0;
                let frame = loop {
                    match src.next_frame() {
                        Ok(Some(_)) if skipped < skip => skipped += 1,
                        Ok(Some(f)) => break Some(f),
                        Ok(None) => break None,
                        Err(e) => {
                            tracing::warn!(error = %e, "reading the input failed");
                            break None;
                        }
                    }
                };
                self.stats.frames_dropped += skipped;
                self.next_frame += skipped + 1;
                match frame {
                    Some(f) => {
                        self.stats.frames_in += 1;
                        let capture = self.start_us + duration_us(f.pts);
                        self.encode(f.picture, capture);
                    }
                    None => self.next_video_us = u64::MAX,
                }
            }
            Video::Transcode(_) | Video::Pass(_) => {}
        }
        if self.next_video_us != u64::MAX && matches!(self.video, Video::Pattern(_) | Video::Raw(_))
        {
            self.next_video_us = self.start_us + (self.next_frame as f64 * self.frame_us) as u64;
        }
    }

    fn tone_frame(&mut self, at: u64) {
        let Some((tone, encoder)) = &mut self.tone else { return };
        let audio = tone.next_frame();
        self.next_audio_us = at + AUDIO_FRAME_US;
        match encoder.encode(&audio) {
            Ok(packet) => {
                let Some(track) = self.track_index(TrackKind::Audio) else { return };
                self.stats.audio_objects += 1;
                self.pending.push_back(Self::object(
                    track,
                    at / AUDIO_FRAME_US,
                    0,
                    at,
                    true,
                    None,
                    Bytes::from(packet),
                ));
            }
            Err(e) => {
                self.stats.errors += 1;
                tracing::warn!(error = %e, "encoding audio failed");
            }
        }
    }

    /// The next sample of a file source, read ahead once; for `--ladder`, the next one the
    /// decoding thread has ready (none yet: it wakes the publisher when it has).
    fn peek_sample(&mut self) -> Option<&FileSample> {
        if self.ahead.is_none() && !self.file_ended {
            match &mut self.video {
                Video::Pass(src) => self.ahead = Some(FileSample::read(src.as_mut(), None)),
                Video::Transcode(samples) => match samples.try_recv() {
                    Ok(s) => self.ahead = Some(s),
                    Err(mpsc::TryRecvError::Empty) => {}
                    Err(mpsc::TryRecvError::Disconnected) => {
                        // The thread hands over an end before it stops: it died.
                        tracing::error!(
                            "decoding the input stopped unexpectedly; no more of its video and audio is sent"
                        );
                        self.file_ended = true;
                    }
                },
                _ => {}
            }
        }
        self.ahead.as_ref()
    }

    fn sample_due(&mut self) -> Option<u64> {
        let start = self.start_us;
        self.peek_sample().map(|s| s.due(start))
    }

    fn file_sample(&mut self, now_us: u64) {
        let Some(next) = self.ahead.take() else { return };
        let at = next.due(self.start_us);
        let sample = match next {
            FileSample::Sample(s) => s,
            FileSample::Decoded { key, picture, .. } => {
                self.stats.frames_in += 1;
                match picture {
                    Ok(Some(picture)) => {
                        let late = now_us.saturating_sub(at) as f64 / self.frame_us;
                        if late > MAX_LAG_FRAMES as f64 && !key {
                            self.stats.frames_dropped += 1;
                        } else {
                            self.encode(picture, at);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.stats.errors += 1;
                        tracing::warn!(error = %e, "decoding the input failed");
                    }
                }
                return;
            }
            FileSample::End(error) => {
                self.file_ended = true;
                match error {
                    Some(e) => {
                        tracing::error!(error = %e, "reading the input failed; no more of it is sent")
                    }
                    None => tracing::info!("the input ended; no more of it is sent"),
                }
                return;
            }
        };
        match &sample.kind {
            SampleKind::Audio { .. } => {
                let Some(track) = self.track_index(TrackKind::Audio) else { return };
                self.stats.audio_objects += 1;
                let group = self.audio_group.max(at / AUDIO_FRAME_US);
                self.audio_group = group + 1;
                self.pending.push_back(Self::object(track, group, 0, at, true, None, sample.data));
            }
            SampleKind::Video { key, config, .. } => {
                self.stats.frames_in += 1;
                let Some(track) = self.track_index(TrackKind::Video) else { return };
                let group = match (self.pass_group, *key) {
                    (None, false) => return,
                    (Some(g), false) => g,
                    (prev, true) => {
                        self.pass_object = 0;
                        prev.map_or(self.group_base, |g| g + 1)
                    }
                };
                self.pass_group = Some(group);
                self.stats.video_objects += 1;
                let object = self.pass_object;
                self.pass_object += 1;
                self.pending.push_back(Self::object(
                    track,
                    group,
                    object,
                    at,
                    *key,
                    if *key { config.clone() } else { None },
                    sample.data,
                ));
            }
        }
    }
}

fn dummy_pattern() -> Result<test_pattern::Generator, tiermesh_codec::Error> {
    test_pattern::Generator::new(96, 64, 30.0)
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// An estimate of a file's video bytes for the catalog's bit rate: none is known before
/// reading, so 0 (the catalog then leaves the bit rate out).
fn src_bytes_estimate(_v: &media::VideoInfo) -> u64 {
    0
}

/// The ladder for a source of `width`x`height` at `fps`: rungs taller than the source are
/// left out (never upscale), the source frame rate is the file's.
fn fit_ladder(mut ladder: LadderConfig, width: u32, height: u32, fps: f64) -> LadderConfig {
    ladder.source_fps = if fps > 0.0 { fps } else { 30.0 };
    let fitting: Vec<Rung> = ladder
        .rungs
        .iter()
        .filter(|r| r.height <= height as usize && r.width <= width as usize)
        .cloned()
        .collect();
    if fitting.is_empty() {
        // A source smaller than every rung: one rung at the source size.
        let (w, h) = (width as usize & !1, height as usize & !1);
        let codec = ladder.rungs.first().map_or(Codec::H264, |r| r.codec);
        ladder.rungs = vec![Rung::new(&format!("{h}p"), w, h, ladder.source_fps, 300_000, codec)];
    } else {
        ladder.rungs = fitting;
    }
    if let GroupLength::Micros(_) = ladder.group_length {
    } else {
        ladder.group_length = GroupLength::Micros(1_000_000);
    }
    ladder
}

impl Source for MediaBroadcast {
    fn spec(&self) -> &BroadcastSpec {
        &self.spec
    }

    fn poll_object(&mut self, now_us: u64) -> Option<synthetic::Object> {
        if self.pending.is_empty() {
            self.collect_encoded();
        }
        loop {
            if let Some(o) = self.pending.pop_front() {
                return Some(o);
            }
            if let Some(at) = self.catalog_due
                && at <= now_us
            {
                self.catalog_due = None;
                return self.catalog_object(at / 1_000_000, at);
            }
            let file = matches!(self.video, Video::Pass(_) | Video::Transcode(_));
            let video_at =
                if file { self.sample_due().unwrap_or(u64::MAX) } else { self.next_video_us };
            let audio_at = self.next_audio_us;
            if audio_at <= now_us && audio_at <= video_at && self.tone.is_some() {
                self.tone_frame(audio_at);
            } else if video_at <= now_us {
                if file {
                    self.file_sample(now_us);
                } else {
                    self.video_frame(video_at, now_us);
                }
            } else {
                return None;
            }
        }
    }

    fn poll_timeout(&self) -> Option<u64> {
        if !self.pending.is_empty() {
            return Some(0);
        }
        let video = match &self.video {
            Video::Pass(_) | Video::Transcode(_) => match &self.ahead {
                Some(s) => s.due(self.start_us),
                None if self.file_ended => u64::MAX,
                // The decoding thread wakes the publisher when its next sample is ready.
                None if matches!(self.video, Video::Transcode(_)) => u64::MAX,
                // Not read ahead yet: poll at once and read.
                None => self.start_us,
            },
            _ => self.next_video_us,
        };
        let audio = if self.tone.is_some() { self.next_audio_us } else { u64::MAX };
        let next = video.min(audio).min(self.catalog_due.unwrap_or(u64::MAX));
        (next != u64::MAX).then_some(next)
    }

    fn catalog_object(&self, group_id: u64, now_us: u64) -> Option<synthetic::Object> {
        let track = self.track_index(TrackKind::Catalog)?;
        Some(Self::object(track, group_id, 0, now_us, true, None, self.catalog_json(now_us)))
    }

    fn wakeup(&self) -> Option<Arc<Notify>> {
        self.encoder.as_ref().map(|_| self.wake.clone())
    }

    fn request_key_frame(&mut self) {
        if let Some(e) = &mut self.encoder {
            e.pipeline.request_key_frame();
            self.stats.key_frame_requests += 1;
        }
    }

    fn subscribers_changed(&mut self, track: usize, subscribers: usize) {
        let Some(rung) = self.rung_track.iter().position(|&t| t == track) else { return };
        if let Some(c) = &mut self.uplink {
            c.set_watched(rung, subscribers > 0);
        }
        if let Some(w) = self.watched.get_mut(rung) {
            *w = subscribers > 0;
        }
        self.apply_wanted(rung);
    }

    fn is_idle(&self, track: usize) -> bool {
        let Some(rung) = self.rung_track.iter().position(|&t| t == track) else { return false };
        self.encoder.as_ref().is_some_and(|e| !e.pipeline.rung_active(rung))
    }

    fn connected(&mut self, now_us: u64) {
        if let Some(c) = &mut self.uplink {
            c.connected(now_us);
        }
        self.meter = UplinkMeter::new();
    }

    fn uplink_stats(&mut self, now_us: u64, stats: &crate::transport::Stats) {
        if self.uplink.is_none() {
            return;
        }
        if let Some(bps) = self.meter.estimate(now_us, stats) {
            self.apply_uplink(now_us, bps);
        }
    }

    fn summary(&self) -> Option<String> {
        let ctl = self.uplink.as_ref()?;
        let s = &self.stats();
        let rates: Vec<String> = ctl.rates().iter().map(|b| format!("{}", b / 1000)).collect();
        let objects: Vec<String> =
            self.rung_objects.iter().map(|(name, n)| format!("{name} {n}")).collect();
        Some(format!(
            "uplink: estimate {} kbit/s, video {} kbit/s now ({} kbit/s per rung), lowest {} \
             kbit/s, {} rate changes, top rung dropped {} times{}, tried again {} times; rung \
             frames encoded {}, idle {}; source frames {}, skipped {}; objects per rung: {}",
            s.uplink_estimate_bps / 1000,
            s.video_bitrate_bps / 1000,
            rates.join("/"),
            s.min_video_bitrate_bps / 1000,
            s.rate_changes,
            s.top_rung_drops,
            if s.top_rung_dropped { " (dropped now)" } else { "" },
            ctl.probes(),
            s.rung_frames_encoded,
            s.rung_frames_idle,
            s.frames_in,
            s.frames_dropped,
            objects.join(", "),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000_000;

    /// Polls `b` every 10 ms of virtual time from `from_us` for `ms` milliseconds, letting
    /// the encoders finish each frame before the clock moves on (the virtual clock runs
    /// faster than real time, where frames would be skipped as under overload).
    fn poll_for(b: &mut MediaBroadcast, from_us: u64, ms: u64) -> Vec<synthetic::Object> {
        let mut out = Vec::new();
        for step in 0..ms / 10 {
            let now = from_us + step * 10_000;
            while let Some(o) = b.poll_object(now) {
                out.push(o);
            }
            assert!(b.wait_encoded(Duration::from_secs(30)), "the encoders stalled");
            while let Some(o) = b.poll_object(now) {
                out.push(o);
            }
        }
        out
    }

    fn track(b: &MediaBroadcast, name: &str) -> usize {
        b.spec().tracks.iter().position(|t| t.name == name).unwrap()
    }

    /// Writes `frames` pictures of the test pattern at `width`x`height` as an H.264 Annex B
    /// file (a key frame every 15) at `path`; returns where each frame starts in it.
    fn h264_file(path: &Path, width: usize, height: usize, frames: u32) -> Vec<u64> {
        let pattern = test_pattern::Generator::new(width, height, 30.0).unwrap();
        let config = h264::EncoderConfig { width, height, fps: 30.0, bitrate: 400_000 };
        let mut encoder = h264::Encoder::new(config).unwrap();
        let (mut bytes, mut starts) = (Vec::new(), Vec::new());
        for i in 0..frames {
            let p = encoder.encode(&pattern.next_frame(i), i % 15 == 0).unwrap();
            starts.push(bytes.len() as u64);
            bytes.extend(h264::to_annexb(&p.data, p.config.as_deref()).unwrap());
        }
        std::fs::write(path, bytes).unwrap();
        starts
    }

    /// Drives `b` (a file on the ladder) as [`crate::publish::Publisher::serve`] does, on a
    /// virtual clock from `T0`: takes what is due and lets the encoders finish it, then waits
    /// until the next due time (the clock jumps there, so nothing is late) or, when nothing
    /// is due, until the decoding thread's wake-up (the clock stands still). Returns what
    /// was handed out once the file has ended.
    async fn drive_file(b: &mut MediaBroadcast) -> Vec<synthetic::Object> {
        let wake = b.wakeup().expect("a file on the ladder has no wake-up");
        let mut now = T0;
        let mut out = Vec::new();
        while !b.file_ended {
            out.extend(std::iter::from_fn(|| b.poll_object(now)));
            assert!(b.wait_encoded(Duration::from_secs(30)), "the encoders stalled");
            out.extend(std::iter::from_fn(|| b.poll_object(now)));
            match b.poll_timeout() {
                Some(t) => now = now.max(t),
                None => {
                    let woken = tokio::time::timeout(Duration::from_secs(30), wake.notified());
                    assert!(woken.await.is_ok(), "the decoder's hand-over woke nobody");
                }
            }
        }
        out
    }

    /// `--input FILE --ladder`: the file's video is decoded on a thread of its own, ahead of
    /// time, and a publisher that sleeps until something is due or it is woken still gets
    /// every frame of the file on every rung, none dropped, and nothing more once it ends.
    #[tokio::test]
    async fn every_frame_of_a_file_reaches_every_rung_from_the_decoding_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("camera.h264");
        h264_file(&path, 640, 360, 45);
        let mut b = MediaBroadcast::file(&path, light_ladder(), true, false, T0).unwrap();
        let out = drive_file(&mut b).await;
        for name in ["video/360p", "video/180p"] {
            let t = track(&b, name);
            let frames: Vec<_> = out.iter().filter(|o| o.track == t).collect();
            let ids: Vec<u64> = frames.iter().map(|o| o.object_id).collect();
            assert_eq!(frames.len(), 45, "{name}: {ids:?}");
            assert!(frames[0].key && frames[0].object_id == 0, "{name}: {ids:?}");
            let captured: Vec<u64> = frames.iter().map(|o| o.capture_us - T0).collect();
            assert_eq!(captured[44], 44 * 1_000_000 / 30, "{name}: not at the file's times");
        }
        let s = b.stats();
        assert_eq!((s.frames_in, s.frames_dropped, s.errors), (45, 0, 0), "{s:?}");
        assert_eq!(b.poll_timeout(), None, "something is due after the end");
    }

    /// A file that cannot be read any further (here: cut short after it was opened) ends
    /// its video there with an error in the log, not a panic: the frames before the cut
    /// are all sent, and the broadcast goes on without video.
    #[tokio::test]
    async fn a_file_cut_short_while_read_ends_its_video_at_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.h264");
        let starts = h264_file(&path, 320, 180, 45);
        let mut b = MediaBroadcast::file(&path, light_ladder(), true, false, T0).unwrap();
        // The decoding thread has read at most DECODE_AHEAD + 1 frames by now.
        let cut = starts[20] + (starts[21] - starts[20]) / 2;
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(cut).unwrap();
        let out = drive_file(&mut b).await;
        let t = track(&b, "video/180p");
        let ids: Vec<u64> = out.iter().filter(|o| o.track == t).map(|o| o.object_id).collect();
        assert_eq!(ids, (0..20).map(|i| i % 30).collect::<Vec<_>>());
        assert_eq!(b.stats().frames_in, 20);
        assert_eq!(b.poll_timeout(), None, "something is due after the end");
    }

    #[test]
    fn only_watched_rungs_are_encoded_and_a_rung_watched_again_starts_with_a_key_frame() {
        let mut b = MediaBroadcast::test_pattern(light_ladder(), 0, T0).unwrap();
        let (top, low) = (track(&b, "video/360p"), track(&b, "video/180p"));
        // What a publisher reports at the start of a connection: nobody on 360p yet.
        b.subscribers_changed(top, 0);
        b.subscribers_changed(low, 1);
        let first = poll_for(&mut b, T0, 1_500);
        assert!(first.iter().all(|o| o.track != top), "360p sent while nobody watches it");
        assert!(b.is_idle(top) && !b.is_idle(low));
        let low_frames = first.iter().filter(|o| o.track == low).count() as u64;
        assert!(low_frames >= 40, "{low_frames} 180p frames in 1.5 s");
        assert_eq!(b.stats().rung_frames_encoded, low_frames);
        assert_eq!(b.stats().rung_frames_idle, low_frames);

        // Somebody subscribes to 360p: it starts at the next group start, with a key frame,
        // in the same group as 180p.
        b.subscribers_changed(top, 1);
        let next = poll_for(&mut b, T0 + 1_500_000, 1_500);
        let start = next.iter().position(|o| o.track == top).expect("360p never started");
        let o = &next[start];
        assert!(o.key && o.object_id == 0, "360p resumed at object {}", o.object_id);
        let low_key = next.iter().find(|p| p.track == low && p.capture_us == o.capture_us).unwrap();
        assert!(low_key.key && low_key.group_id == o.group_id, "groups not aligned");
        assert!(next[start..].iter().filter(|p| p.track == top).count() >= 10);
        assert!(!b.is_idle(top));

        // Nobody on either: nothing more is encoded (audio goes on).
        b.subscribers_changed(top, 0);
        b.subscribers_changed(low, 0);
        let encoded = b.stats().rung_frames_encoded;
        let last = poll_for(&mut b, T0 + 3_000_000, 500);
        assert!(last.iter().all(|o| o.track != top && o.track != low));
        assert!(last.iter().any(|o| o.track == track(&b, "audio")));
        assert_eq!(b.stats().rung_frames_encoded, encoded);
    }
}
