//! The tier ladder: one source picture in, one encoded frame per rung out, with every
//! rung's groups starting at the same input frame.
//!
//! ```text
//! push(frame, capture_us) ─► new group? (first frame, key-frame request, group length)
//!                          ─► per rung: frame-rate decimation ─► scale ─► encode
//!                          ─► EncodedFrame { track, group_id, object_id, key, data, avcC/av1C }
//! ```
//!
//! Group IDs are counted by the ladder, not per rung: group N of every tier starts at the
//! same input frame and so covers the same media time, even for a rung that was dropped for
//! a while and restored. Rungs are listed from the highest to the lowest.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use crate::catalog::{Catalog, Track};
use crate::frame::I420;
use crate::scale::Scaler;
use crate::{Error, av1, h264, loc};

/// Video codec of a rung.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// H.264 (OpenH264), `avc1` packaging.
    H264,
    /// AV1 (rav1e), `av01`.
    Av1,
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::H264 => "h264",
            Codec::Av1 => "av1",
        })
    }
}

/// One rung of the ladder: one video track.
#[derive(Clone, Debug, PartialEq)]
pub struct Rung {
    /// Short name; the track is `video/<name>` (e.g. `720p`).
    pub name: String,
    /// Encoded width (even).
    pub width: usize,
    /// Encoded height (even).
    pub height: usize,
    /// Frames per second, at most the source's; lower rates drop source frames evenly.
    pub fps: f64,
    /// Target bit rate in bits per second.
    pub bitrate: u32,
    /// Codec.
    pub codec: Codec,
}

impl Rung {
    /// A rung.
    pub fn new(
        name: &str,
        width: usize,
        height: usize,
        fps: f64,
        bitrate: u32,
        codec: Codec,
    ) -> Self {
        Self { name: name.to_string(), width, height, fps, bitrate, codec }
    }

    /// The MoQT track name of this rung: `video/<name>`.
    pub fn track_name(&self) -> String {
        format!("video/{}", self.name)
    }
}

/// How long a group (the run from one key frame to the next) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupLength {
    /// A new group every this many source frames.
    Frames(u32),
    /// A new group at the first source frame captured at least this many microseconds
    /// (less half a frame interval, to absorb capture jitter) after the group's first.
    Micros(u64),
}

/// Configuration of a ladder: `Default` plus chained setters.
#[derive(Clone, Debug, PartialEq)]
pub struct LadderConfig {
    /// Frame rate of the source pictures.
    pub source_fps: f64,
    /// Rungs, highest first.
    pub rungs: Vec<Rung>,
    /// Group length.
    pub group_length: GroupLength,
    /// rav1e speed preset for AV1 rungs (see [`av1::DEFAULT_SPEED`]).
    pub av1_speed: u8,
    /// Encode the rungs on parallel threads (one per rung) inside [`Ladder::push`].
    pub parallel: bool,
    /// MSF alternate group shared by the rungs in the catalog.
    pub alt_group: u32,
    /// MSF render group shared by video and audio in the catalog.
    pub render_group: u32,
}

impl Default for LadderConfig {
    /// 720p at 1.5 Mbit/s, 360p at 550 kbit/s, 180p at 150 kbit/s, H.264, 30 fps, 1 s groups.
    ///
    /// 360p's rate: with the audio (32-48 kbit/s) and 180p it comes to 730-750 kbit/s, three
    /// quarters of a 1 Mbit/s link (the `rural` profile), leaving the rest to packet
    /// overhead, loss recovery and the congestion controller's swings. At 500 kbit/s these
    /// three tiers filled at most 70% of such a link, so the 70% of it that should arrive as
    /// whole groups was out of reach by arithmetic alone; at 600 kbit/s 360p lost more
    /// groups and arrived later (docs/BENCHMARKS.md, "The 360p rung").
    fn default() -> Self {
        Self {
            source_fps: 30.0,
            rungs: vec![
                Rung::new("720p", 1280, 720, 30.0, 1_500_000, Codec::H264),
                Rung::new("360p", 640, 360, 30.0, 550_000, Codec::H264),
                Rung::new("180p", 320, 180, 30.0, 150_000, Codec::H264),
            ],
            // One second: a joining subscriber waits at most this long for a key frame,
            // and a key frame every second costs little at these rates.
            group_length: GroupLength::Micros(1_000_000),
            av1_speed: av1::DEFAULT_SPEED,
            parallel: true,
            alt_group: 1,
            render_group: 1,
        }
    }
}

impl LadderConfig {
    /// AV1 ladder of the two rungs this machine class encodes in real time: 360p at
    /// 550 kbit/s and 180p at 150 kbit/s, the H.264 ladder's rates (a 720p AV1 rung runs far
    /// below 30 fps here).
    pub fn av1_low() -> Self {
        Self {
            rungs: vec![
                Rung::new("360p", 640, 360, 30.0, 550_000, Codec::Av1),
                Rung::new("180p", 320, 180, 30.0, 150_000, Codec::Av1),
            ],
            ..Self::default()
        }
    }

    /// Sets the rungs (highest first).
    pub fn rungs(mut self, rungs: Vec<Rung>) -> Self {
        self.rungs = rungs;
        self
    }

    /// Sets the source frame rate; rung frame rates above it are lowered to it.
    pub fn source_fps(mut self, fps: f64) -> Self {
        self.source_fps = fps;
        self
    }

    /// Sets the group length.
    pub fn group_length(mut self, length: GroupLength) -> Self {
        self.group_length = length;
        self
    }

    /// Sets the rav1e speed preset.
    pub fn av1_speed(mut self, speed: u8) -> Self {
        self.av1_speed = speed;
        self
    }

    /// Encodes rungs in parallel (`true`, the default) or one after the other.
    pub fn parallel(mut self, parallel: bool) -> Self {
        self.parallel = parallel;
        self
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// [`Error::Config`] saying what is wrong.
    pub fn validate(&self) -> Result<(), Error> {
        if !(self.source_fps > 0.0 && self.source_fps <= 240.0) {
            return Err(Error::Config(format!("source frame rate {}", self.source_fps)));
        }
        if self.rungs.is_empty() {
            return Err(Error::Config("a ladder needs at least one rung".into()));
        }
        match self.group_length {
            GroupLength::Frames(0) | GroupLength::Micros(0) => {
                return Err(Error::Config("group length must be positive".into()));
            }
            _ => {}
        }
        for (i, r) in self.rungs.iter().enumerate() {
            if r.name.is_empty() || self.rungs[..i].iter().any(|o| o.name == r.name) {
                return Err(Error::Config(format!("rung name {:?} is empty or repeated", r.name)));
            }
            if r.fps.is_nan() || r.fps <= 0.0 || r.bitrate == 0 {
                return Err(Error::Config(format!(
                    "rung {}: frame rate {} / bit rate {}",
                    r.name, r.fps, r.bitrate
                )));
            }
            I420::new(r.width, r.height)
                .map_err(|e| Error::Config(format!("rung {}: {e}", r.name)))?;
        }
        Ok(())
    }
}

/// One encoded frame of one rung: one LOC object of that rung's track.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// Index of the rung in [`LadderConfig::rungs`].
    pub rung: usize,
    /// Track name (`video/720p`, ...).
    pub track_name: String,
    /// MoQT group ID: the ladder's group count, the same for every rung at one input frame.
    pub group_id: u64,
    /// Object ID within the group (0 for the key frame).
    pub object_id: u64,
    /// True when this frame starts a group (a key frame).
    pub key_frame: bool,
    /// Index of the source frame ([`Ladder::push`] calls counted from 0).
    pub input_index: u64,
    /// Capture time of the source frame, wall-clock microseconds.
    pub capture_us: u64,
    /// LOC payload.
    pub data: Vec<u8>,
    /// Decoder configuration record (avcC or av1C), on key frames.
    pub config: Option<Vec<u8>>,
}

impl fmt::Debug for EncodedFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} g{} o{}{} in#{} {} bytes",
            self.track_name,
            self.group_id,
            self.object_id,
            if self.key_frame { " key" } else { "" },
            self.input_index,
            self.data.len()
        )
    }
}

impl EncodedFrame {
    /// The frame as a LOC object description.
    pub fn loc(&self) -> loc::Object {
        loc::Object {
            payload: self.data.clone(),
            timestamp_us: self.capture_us,
            video_config: self.config.clone(),
            key_frame: self.key_frame,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Tag {
    input_index: u64,
    capture_us: u64,
    group_id: u64,
    object_id: u64,
}

enum Coder {
    H264(Box<h264::Encoder>),
    Av1(Box<av1::Encoder<Tag>>),
}

struct RungState {
    index: usize,
    rung: Rung,
    track: String,
    coder: Coder,
    codec_string: String,
}

impl RungState {
    fn new(index: usize, rung: &Rung, speed: u8) -> Result<Self, Error> {
        let coder = make_coder(rung, speed)?;
        let codec_string = probe_codec_string(rung, speed)?;
        Ok(Self { index, rung: rung.clone(), track: rung.track_name(), coder, codec_string })
    }

    fn encode(&mut self, picture: &I420, key: bool, tag: Tag) -> Result<Vec<EncodedFrame>, Error> {
        let frames = match &mut self.coder {
            Coder::H264(enc) => {
                let p = enc.encode(picture, key)?;
                vec![(p.data, p.key, p.config, tag)]
            }
            Coder::Av1(enc) => enc
                .send(picture, key, tag)?
                .into_iter()
                .map(|p| (p.data, p.key, p.config, p.tag))
                .collect(),
        };
        Ok(self.package(frames))
    }

    fn flush(&mut self) -> Result<Vec<EncodedFrame>, Error> {
        let frames = match &mut self.coder {
            Coder::H264(_) => Vec::new(),
            Coder::Av1(enc) => {
                enc.flush()?.into_iter().map(|p| (p.data, p.key, p.config, p.tag)).collect()
            }
        };
        Ok(self.package(frames))
    }

    #[allow(clippy::type_complexity)]
    fn package(&mut self, frames: Vec<(Vec<u8>, bool, Option<Vec<u8>>, Tag)>) -> Vec<EncodedFrame> {
        frames
            .into_iter()
            .map(|(data, key, config, tag)| {
                if let Some(cs) = config.as_deref().and_then(|c| self.codec_string_of(c)) {
                    self.codec_string = cs;
                }
                EncodedFrame {
                    rung: self.index,
                    track_name: self.track.clone(),
                    group_id: tag.group_id,
                    object_id: tag.object_id,
                    key_frame: key,
                    input_index: tag.input_index,
                    capture_us: tag.capture_us,
                    data,
                    config,
                }
            })
            .collect()
    }

    fn codec_string_of(&self, config: &[u8]) -> Option<String> {
        match self.rung.codec {
            Codec::H264 => h264::codec_string(config).ok(),
            Codec::Av1 => av1::codec_string(config).ok(),
        }
    }

    fn set_bitrate(&mut self, bps: u32) {
        self.rung.bitrate = bps;
        match &mut self.coder {
            Coder::H264(e) => e.set_bitrate(bps),
            Coder::Av1(e) => e.set_bitrate(bps),
        }
    }
}

fn make_coder(rung: &Rung, speed: u8) -> Result<Coder, Error> {
    Ok(match rung.codec {
        Codec::H264 => Coder::H264(Box::new(h264::Encoder::new(h264::EncoderConfig {
            width: rung.width,
            height: rung.height,
            fps: rung.fps as f32,
            bitrate: rung.bitrate,
        })?)),
        Codec::Av1 => Coder::Av1(Box::new(av1::Encoder::new(av1::EncoderConfig {
            width: rung.width,
            height: rung.height,
            fps: rung.fps as f32,
            bitrate: rung.bitrate,
            speed,
        })?)),
    })
}

/// Encodes one grey frame with a throwaway encoder of the same settings, to learn the codec
/// string (profile, level) before the first real frame, so the catalog is complete from
/// the start.
fn probe_codec_string(rung: &Rung, speed: u8) -> Result<String, Error> {
    let grey = I420::new(rung.width, rung.height)?;
    let probe_err = || Error::Encode {
        codec: "probe",
        message: format!("no key frame for rung {}", rung.name),
    };
    match make_coder(rung, speed)? {
        Coder::H264(mut e) => {
            h264::codec_string(&e.encode(&grey, true)?.config.ok_or_else(probe_err)?)
        }
        Coder::Av1(mut e) => {
            let tag = Tag { input_index: 0, capture_us: 0, group_id: 0, object_id: 0 };
            let mut packets = e.send(&grey, true, tag)?;
            packets.extend(e.flush()?);
            let config = packets.into_iter().find_map(|p| p.config).ok_or_else(probe_err)?;
            av1::codec_string(&config)
        }
    }
}

/// Where every rung's groups start and which source frames each rung takes: the part of
/// the ladder that must see every source frame in order, shared by [`Ladder`] and
/// [`Pipeline`].
#[derive(Clone, Debug)]
struct Grid {
    source_fps: f64,
    group_length: GroupLength,
    /// Per rung: its frame rate.
    fps: Vec<f64>,
    next_input: u64,
    group_id: u64,
    group_start_index: u64,
    group_start_us: u64,
    started: bool,
    key_requested: bool,
    /// Per rung: it should be encoding (it starts, or resumes, at the next group start).
    wanted: Vec<bool>,
    /// Per rung: it is encoding now.
    active: Vec<bool>,
    /// Per rung: next object ID in the current group.
    next_object: Vec<u64>,
    /// Per rung: frames of the current group it has taken (for frame-rate decimation).
    taken_in_group: Vec<u64>,
}

/// What the grid decided for one source frame.
#[derive(Clone, Debug)]
struct Plan {
    /// The frame starts a group on every active rung.
    new_group: bool,
    /// Per rung: the tag of its frame, if it encodes this source frame.
    tags: Vec<Option<Tag>>,
    /// Per rung: whether it is active (an AV1 rung that just went idle drains its encoder).
    active: Vec<bool>,
}

impl Grid {
    fn new(config: &LadderConfig) -> Self {
        let n = config.rungs.len();
        Self {
            source_fps: config.source_fps,
            group_length: config.group_length,
            fps: config.rungs.iter().map(|r| r.fps).collect(),
            next_input: 0,
            group_id: 0,
            group_start_index: 0,
            group_start_us: 0,
            started: false,
            key_requested: false,
            wanted: vec![true; n],
            active: vec![false; n],
            next_object: vec![0; n],
            taken_in_group: vec![0; n],
        }
    }

    fn plan(&mut self, capture_us: u64) -> Plan {
        let index = self.next_input;
        let new_group = !self.started
            || self.key_requested
            || match self.group_length {
                GroupLength::Frames(n) => index - self.group_start_index >= u64::from(n),
                GroupLength::Micros(us) => {
                    let half_frame = (500_000.0 / self.source_fps) as u64;
                    capture_us.saturating_sub(self.group_start_us) + half_frame >= us
                }
            };
        if new_group {
            if self.started {
                self.group_id += 1;
            }
            self.started = true;
            self.key_requested = false;
            self.group_start_index = index;
            self.group_start_us = capture_us;
            self.active.clone_from(&self.wanted);
            self.next_object.fill(0);
            self.taken_in_group.fill(0);
        }
        self.next_input += 1;

        // Which rungs take this frame: a rung at a lower frame rate takes the frames whose
        // position in the group crosses its next frame slot; every rung takes the first.
        let k = index - self.group_start_index;
        let tags = (0..self.fps.len())
            .map(|i| {
                if !self.active[i] {
                    return None;
                }
                let due = ((k as f64) * self.fps[i] / self.source_fps + 1e-9).floor() as u64 + 1;
                if self.taken_in_group[i] >= due {
                    return None;
                }
                self.taken_in_group[i] = due;
                let tag = Tag {
                    input_index: index,
                    capture_us,
                    group_id: self.group_id,
                    object_id: self.next_object[i],
                };
                self.next_object[i] += 1;
                Some(tag)
            })
            .collect();
        Plan { new_group, tags, active: self.active.clone() }
    }

    /// Marks rung `rung` wanted or not. An unwanted rung stops at once (returns true if it
    /// was active); a wanted one starts at the next group start, aligned with the others.
    fn set_wanted(&mut self, rung: usize, wanted: bool) -> bool {
        self.wanted[rung] = wanted;
        if !wanted && self.active[rung] {
            self.active[rung] = false;
            return true;
        }
        false
    }
}

/// A picture scaled to a rung's size (width, height).
type Scaled = ((usize, usize), I420);

/// Scales `frame` to the size of every rung that has a job, each from the smallest
/// picture already made that is at least as large (so 180p comes from 360p, not from 720p),
/// and never copies a picture that already has the rung's size.
fn scale_chain(
    scaler: &mut Scaler,
    frame: &I420,
    sizes: impl Iterator<Item = (usize, usize)>,
) -> Result<Vec<Scaled>, Error> {
    let mut made: Vec<Scaled> = Vec::new();
    for (w, h) in sizes {
        if (frame.width, frame.height) == (w, h) || made.iter().any(|(s, _)| *s == (w, h)) {
            continue;
        }
        let from = made
            .iter()
            .filter(|((mw, mh), _)| *mw >= w && *mh >= h)
            .min_by_key(|((mw, mh), _)| mw * mh)
            .map_or(frame, |(_, p)| p);
        let scaled = scaler.scale(from, w, h)?;
        made.push(((w, h), scaled));
    }
    Ok(made)
}

/// The tier ladder.
pub struct Ladder {
    config: LadderConfig,
    rungs: Vec<RungState>,
    grid: Grid,
    scaler: Scaler,
}

impl fmt::Debug for Ladder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ladder")
            .field("rungs", &self.config.rungs)
            .field("next_input", &self.grid.next_input)
            .field("group_id", &self.grid.group_id)
            .finish()
    }
}

impl Ladder {
    /// Builds the encoders of every rung (and learns their codec strings).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration, [`Error::Encode`] if an encoder fails
    /// to start.
    pub fn new(mut config: LadderConfig) -> Result<Self, Error> {
        config.validate()?;
        for r in &mut config.rungs {
            r.fps = r.fps.min(config.source_fps);
        }
        let rungs = config
            .rungs
            .iter()
            .enumerate()
            .map(|(i, r)| RungState::new(i, r, config.av1_speed))
            .collect::<Result<Vec<_>, _>>()?;
        let grid = Grid::new(&config);
        Ok(Self { config, rungs, grid, scaler: Scaler::new() })
    }

    /// The configuration in force (bit rates as last set).
    pub fn config(&self) -> &LadderConfig {
        &self.config
    }

    /// The rungs, highest first, with their current bit rates.
    pub fn rungs(&self) -> Vec<Rung> {
        self.rungs.iter().map(|r| r.rung.clone()).collect()
    }

    /// The WebCodecs codec string of rung `rung` (`avc1.…` or `av01.…`).
    pub fn codec_string(&self, rung: usize) -> Option<&str> {
        self.rungs.get(rung).map(|r| r.codec_string.as_str())
    }

    /// Makes every active rung start a new group at the next pushed frame (a downstream
    /// key-frame request, e.g. a MoQT NEW GROUP REQUEST).
    pub fn request_key_frame(&mut self) {
        self.grid.key_requested = true;
    }

    /// Changes the target bit rate of rung `rung`; it takes effect at the next group start
    /// (call [`Ladder::request_key_frame`] to make that the next frame).
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown rung or a zero rate.
    pub fn set_bitrate(&mut self, rung: usize, bps: u32) -> Result<(), Error> {
        if bps == 0 {
            return Err(Error::Config("bit rate must be positive".into()));
        }
        let r = self.rungs.get_mut(rung).ok_or_else(|| Error::Config(format!("no rung {rung}")))?;
        r.set_bitrate(bps);
        self.config.rungs[rung].bitrate = bps;
        Ok(())
    }

    /// Starts or stops encoding rung `rung` (e.g. while nobody watches it). A stopped rung
    /// stops from the next frame on and returns the frames an AV1 encoder still held; a
    /// started one begins at the next group start, with a key frame and the same group ID
    /// as the other rungs. Every rung is wanted when the ladder is built.
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown rung, [`Error::Encode`] if draining the encoder fails.
    pub fn set_rung_wanted(
        &mut self,
        rung: usize,
        wanted: bool,
    ) -> Result<Vec<EncodedFrame>, Error> {
        if rung >= self.rungs.len() {
            return Err(Error::Config(format!("no rung {rung}")));
        }
        if self.grid.set_wanted(rung, wanted) {
            return self.rungs[rung].flush();
        }
        Ok(Vec::new())
    }

    /// Whether rung `rung` is being encoded now.
    /// Before the first frame: whether it will be.
    pub fn rung_active(&self, rung: usize) -> bool {
        let state = if self.grid.started { &self.grid.active } else { &self.grid.wanted };
        state.get(rung).copied().unwrap_or(false)
    }

    /// Encodes one source picture captured at `capture_us` (wall-clock microseconds) on
    /// every active rung. Returns the frames that came out, in rung order; AV1 rungs return
    /// each frame up to 4 pushes later than H.264 rungs (rav1e's lookahead).
    ///
    /// # Errors
    /// [`Error::InvalidFrame`] for an inconsistent picture, [`Error::Encode`] if an encoder fails.
    pub fn push(&mut self, frame: &I420, capture_us: u64) -> Result<Vec<EncodedFrame>, Error> {
        frame.validate()?;
        let plan = self.grid.plan(capture_us);
        let new_group = plan.new_group;
        let sizes: Vec<(usize, usize)> = self
            .rungs
            .iter()
            .filter(|r| plan.tags[r.index].is_some())
            .map(|r| (r.rung.width, r.rung.height))
            .collect();
        let pictures = scale_chain(&mut self.scaler, frame, sizes.into_iter())?;
        let picture_for = |r: &RungState| -> &I420 {
            let size = (r.rung.width, r.rung.height);
            pictures.iter().find(|(s, _)| *s == size).map_or(frame, |(_, p)| p)
        };

        let mut results: Vec<Result<Vec<EncodedFrame>, Error>> = Vec::new();
        let selected: Vec<(&mut RungState, Tag)> =
            self.rungs.iter_mut().filter_map(|r| plan.tags[r.index].map(|tag| (r, tag))).collect();
        if self.config.parallel && selected.len() > 1 {
            std::thread::scope(|s| {
                let handles: Vec<_> = selected
                    .into_iter()
                    .map(|(r, tag)| {
                        let pic = picture_for(r);
                        s.spawn(move || r.encode(pic, new_group, tag))
                    })
                    .collect();
                for h in handles {
                    results.push(h.join().unwrap_or_else(|_| {
                        Err(Error::Encode {
                            codec: "ladder",
                            message: "an encoder thread panicked".into(),
                        })
                    }));
                }
            });
        } else {
            for (r, tag) in selected {
                let pic = picture_for(r);
                results.push(r.encode(pic, new_group, tag));
            }
        }
        let mut out = Vec::new();
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }

    /// Ends the stream: returns every frame still inside an encoder (AV1 lookahead).
    ///
    /// # Errors
    /// [`Error::Encode`] if an encoder fails while draining.
    pub fn flush(&mut self) -> Result<Vec<EncodedFrame>, Error> {
        let mut out = Vec::new();
        for r in &mut self.rungs {
            out.extend(r.flush()?);
        }
        Ok(out)
    }

    /// The catalog tracks of the rungs: codec string, size, frame rate, bit rate, and the
    /// alternate group that ties them together. `namespace` is left out when `None`
    /// (tracks inherit the catalog track's namespace).
    pub fn catalog_tracks(&self, namespace: Option<&str>) -> Vec<Track> {
        let max_group_ms = match self.config.group_length {
            GroupLength::Frames(n) => {
                (f64::from(n) * 1000.0 / self.config.source_fps).ceil() as u64
            }
            GroupLength::Micros(us) => us.div_ceil(1000),
        };
        self.rungs
            .iter()
            .map(|r| Track {
                name: r.track.clone(),
                namespace: namespace.map(str::to_string),
                packaging: "loc".into(),
                is_live: true,
                role: Some("video".into()),
                render_group: Some(self.config.render_group),
                alt_group: Some(self.config.alt_group),
                codec: Some(r.codec_string.clone()),
                width: u32::try_from(r.rung.width).ok(),
                height: u32::try_from(r.rung.height).ok(),
                framerate: Some(r.rung.fps),
                bitrate: Some(u64::from(r.rung.bitrate)),
                max_group_duration: Some(max_group_ms),
                ..Track::default()
            })
            .collect()
    }

    /// A catalog of the ladder's rungs (add the audio track with [`Catalog::opus_track`]).
    pub fn catalog(&self, namespace: Option<&str>, generated_at_ms: Option<u64>) -> Catalog {
        let mut c = Catalog::new(generated_at_ms);
        c.tracks = self.catalog_tracks(namespace);
        c
    }
}

/// Pictures that may wait in front of each rung's worker. Two: the worker in front can
/// hand on the next picture while this one encodes, and a slow rung holds up the rungs
/// above it (and so the pushing thread, which then drops by its own rule) after two frames
/// instead of letting latency grow.
const PIPELINE_DEPTH: usize = 2;

/// Where a [`Pipeline`]'s encoded frames go: called on the worker thread of the rung that
/// made them, so it must be cheap (e.g. a channel send).
pub type Sink = Arc<dyn Fn(Result<Vec<EncodedFrame>, Error>) + Send + Sync>;

/// What travels down the pipeline with one source frame.
struct Job {
    /// The source picture.
    source: Arc<I420>,
    /// The smallest picture made so far for this frame (the rung above's, scaled).
    nearest: Arc<I420>,
    plan: Arc<Plan>,
    /// Counts the frame as in flight until every rung is done with it.
    _done: Arc<InFlight>,
}

/// Held by every job of one source frame; when the last is dropped, every rung has encoded
/// the frame (or left it) and handed the result to the sink.
struct InFlight(Arc<Slot>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        self.0.changed.notify_all();
    }
}

/// The state the pushing side shares with the top rung's worker.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    changed: Condvar,
}

#[derive(Default)]
struct SlotState {
    /// [`Pipeline::offer`]: the newest frame offered and not yet taken, with its capture time.
    newest: Option<(Arc<I420>, u64)>,
    /// The pipeline is stopping: the top worker takes what is left and ends.
    closed: bool,
    /// Source frames taken and not yet done on every rung.
    in_flight: usize,
    stats: PipelineStats,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // A worker that panicked leaves counters behind, nothing inconsistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What a [`Pipeline`] did with the source frames it was given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Source frames that went down the pipeline.
    pub frames_taken: u64,
    /// Frames [`Pipeline::offer`] replaced with a newer one before the top worker was free
    /// to take them (skipped to stay real time).
    pub frames_replaced: u64,
    /// Rung frames encoded: each frame taken counts once per rung that encodes it.
    pub rung_frames_encoded: u64,
    /// Rung frames not encoded because the rung was idle (not wanted, or waiting for the
    /// next group start).
    pub rung_frames_idle: u64,
}

/// How a [`Pipeline`] is given source frames.
enum Head {
    /// [`Pipeline::push`]: every frame is encoded; the pusher waits while the top worker is
    /// [`PIPELINE_DEPTH`] frames behind.
    Queue(mpsc::SyncSender<Job>),
    /// [`Pipeline::offer`]: the top worker takes the newest frame whenever it is free.
    Newest,
}

/// Where the top rung's worker takes its jobs from.
enum Input {
    /// From the rung above (or from [`Pipeline::push`]).
    Queue(mpsc::Receiver<Job>),
    /// The newest offered frame, planned when taken.
    Newest { slot: Arc<Slot>, grid: Arc<Mutex<Grid>> },
}

impl Input {
    /// The next job; `None` once the pipeline is stopping and nothing is left.
    fn next(&self) -> Option<Job> {
        match self {
            Input::Queue(rx) => rx.recv().ok(),
            Input::Newest { slot, grid } => {
                let mut s = slot.lock();
                loop {
                    if let Some((source, capture_us)) = s.newest.take() {
                        let plan = lock_grid(grid).plan(capture_us);
                        count(&mut s.stats, &plan);
                        s.in_flight += 1;
                        drop(s);
                        let done = Arc::new(InFlight(slot.clone()));
                        return Some(Job {
                            nearest: source.clone(),
                            source,
                            plan: Arc::new(plan),
                            _done: done,
                        });
                    }
                    if s.closed {
                        return None;
                    }
                    s = slot.changed.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            }
        }
    }
}

fn lock_grid(grid: &Mutex<Grid>) -> MutexGuard<'_, Grid> {
    grid.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Adds one planned frame to `stats`.
fn count(stats: &mut PipelineStats, plan: &Plan) {
    stats.frames_taken += 1;
    stats.rung_frames_encoded += plan.tags.iter().filter(|t| t.is_some()).count() as u64;
    stats.rung_frames_idle += plan.active.iter().filter(|a| !**a).count() as u64;
}

/// The ladder on worker threads, one per rung, chained from the highest rung to the lowest:
///
/// ```text
/// push(picture) ─► grid (groups, frame-rate decimation, wanted rungs)
///   ─► [720p worker] scale (if needed) ─► hand on ─► [360p worker] scale ─► hand on ─► [180p …]
///          └─ encode ─► sink                             └─ encode ─► sink
/// ```
///
/// Each worker hands its scaled picture to the next rung before it encodes, so every rung's
/// encoder runs at the same time as the others and as the caller's decoding; each rung
/// scales from the rung above (a quarter of the pixels of the source for the third rung),
/// and a rung of the source's size encodes the source picture itself, without a copy.
/// Queues between the workers hold two pictures: a rung that falls behind
/// makes the rungs above it wait rather than letting frames of one rung drift away from
/// the others. Group IDs and key frames are decided for each source frame as it enters the
/// pipeline, as in [`Ladder::push`], so group N of every rung starts at the same source frame.
///
/// Two ways in: [`Ladder::into_pipeline`] makes a pipeline that encodes every frame given
/// to [`Pipeline::push`], which waits when the workers are two frames behind (the relay's
/// ingest, which drops by its own rule on its own thread). [`Ladder::into_newest_pipeline`]
/// makes one that never waits: [`Pipeline::offer`] leaves the frame in a slot of one, and
/// the top rung's worker takes whatever is newest there each time it is free. A ladder
/// that cannot keep up then encodes every second or third source frame, evenly, at the
/// rate its slowest rung manages, and a frame waits at most one encoding time before it
/// starts.
pub struct Pipeline {
    config: LadderConfig,
    grid: Arc<Mutex<Grid>>,
    slot: Arc<Slot>,
    bitrates: Arc<[AtomicU32]>,
    codec_strings: Vec<String>,
    head: Option<Head>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("rungs", &self.config.rungs)
            .field("next_input", &lock_grid(&self.grid).next_input)
            .finish_non_exhaustive()
    }
}

/// What [`Pipeline::push`] did with a frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Rungs that encode this frame.
    pub encoding: usize,
    /// Rungs that are not encoding now (not wanted, or waiting for the next group start).
    pub idle: usize,
}

impl Ladder {
    /// Moves the ladder's encoders onto worker threads (see [`Pipeline`]), fed by
    /// [`Pipeline::push`]; every encoded frame, or encoder error, is handed to `sink` on the
    /// worker that made it. The ladder's state (groups so far, wanted rungs) carries over.
    ///
    /// # Errors
    /// [`Error::Encode`] if a worker thread cannot be started.
    pub fn into_pipeline(self, sink: Sink) -> Result<Pipeline, Error> {
        self.into_workers(sink, false)
    }

    /// As [`Ladder::into_pipeline`], fed by [`Pipeline::offer`]: the top rung's worker takes
    /// the newest offered frame whenever it is free, and the caller never waits.
    ///
    /// # Errors
    /// [`Error::Encode`] if a worker thread cannot be started.
    pub fn into_newest_pipeline(self, sink: Sink) -> Result<Pipeline, Error> {
        self.into_workers(sink, true)
    }

    fn into_workers(self, sink: Sink, newest: bool) -> Result<Pipeline, Error> {
        let Ladder { config, rungs, grid, .. } = self;
        let codec_strings = rungs.iter().map(|r| r.codec_string.clone()).collect();
        let bitrates: Arc<[AtomicU32]> =
            rungs.iter().map(|r| AtomicU32::new(r.rung.bitrate)).collect();
        let grid = Arc::new(Mutex::new(grid));
        let slot = Arc::new(Slot::default());
        let mut next: Option<mpsc::SyncSender<Job>> = None;
        let mut workers = Vec::new();
        // Built from the lowest rung up: each worker needs the sender of the one below.
        for rung in rungs.into_iter().rev() {
            let below = next.take();
            let input = if newest && rung.index == 0 {
                Input::Newest { slot: slot.clone(), grid: grid.clone() }
            } else {
                let (tx, rx) = mpsc::sync_channel::<Job>(PIPELINE_DEPTH);
                next = Some(tx);
                Input::Queue(rx)
            };
            let sink = sink.clone();
            let bitrates = bitrates.clone();
            let handle = std::thread::Builder::new()
                .name(format!("ladder-{}", rung.rung.name))
                .spawn(move || worker(rung, input, below, sink, bitrates))
                .map_err(|e| Error::Encode {
                    codec: "ladder",
                    message: format!("starting a worker thread: {e}"),
                })?;
            workers.push(handle);
        }
        let head = if newest {
            Head::Newest
        } else {
            Head::Queue(
                next.ok_or_else(|| Error::Config("a ladder needs at least one rung".into()))?,
            )
        };
        Ok(Pipeline { config, grid, slot, bitrates, codec_strings, head: Some(head), workers })
    }
}

/// One rung's worker: takes each job, scales the picture if this rung encodes it, hands it
/// on to the rung below, then encodes.
fn worker(
    mut rung: RungState,
    input: Input,
    below: Option<mpsc::SyncSender<Job>>,
    sink: Sink,
    bitrates: Arc<[AtomicU32]>,
) {
    let mut scaler = Scaler::new();
    let (w, h) = (rung.rung.width, rung.rung.height);
    let i = rung.index;
    let mut was_active = false;
    let drain = |rung: &mut RungState| match rung.flush() {
        Ok(f) if f.is_empty() => {}
        r => sink(r),
    };
    while let Some(job) = input.next() {
        let active = job.plan.active[i];
        if was_active && !active {
            drain(&mut rung);
        }
        was_active = active;
        let tag = job.plan.tags[i];
        let mut own: Option<Arc<I420>> = None;
        if tag.is_some() {
            let from = if job.nearest.width >= w && job.nearest.height >= h {
                &job.nearest
            } else {
                &job.source
            };
            if (from.width, from.height) == (w, h) {
                own = Some(from.clone());
            } else {
                match scaler.scale(from, w, h) {
                    Ok(p) => own = Some(Arc::new(p)),
                    Err(e) => sink(Err(e)),
                }
            }
        }
        if let Some(below) = &below {
            let nearest = own.clone().unwrap_or_else(|| job.nearest.clone());
            let next = Job {
                source: job.source.clone(),
                nearest,
                plan: job.plan.clone(),
                _done: job._done.clone(),
            };
            // A worker below that stopped leaves its rung silent; this one goes on.
            let _ = below.send(next);
        }
        if let (Some(tag), Some(picture)) = (tag, own) {
            let bps = bitrates.get(i).map_or(0, |b| b.load(Ordering::Relaxed));
            if bps > 0 && bps != rung.rung.bitrate {
                rung.set_bitrate(bps);
            }
            sink(rung.encode(&picture, job.plan.new_group, tag));
        }
    }
    drop(below);
    drain(&mut rung);
}

impl Pipeline {
    /// The configuration in force.
    pub fn config(&self) -> &LadderConfig {
        &self.config
    }

    /// The WebCodecs codec string of rung `rung`, as learnt when the ladder was built.
    pub fn codec_string(&self, rung: usize) -> Option<&str> {
        self.codec_strings.get(rung).map(String::as_str)
    }

    /// Encodes `frame` captured at `capture_us` on every active rung. Returns once the top
    /// rung's worker has taken it: at once while the workers keep up, after up to a frame's
    /// encoding time when they are two frames behind.
    ///
    /// # Errors
    /// [`Error::InvalidFrame`] for an inconsistent picture, [`Error::Encode`] if the workers
    /// have stopped, [`Error::Config`] on a pipeline made by [`Ladder::into_newest_pipeline`].
    pub fn push(&mut self, frame: Arc<I420>, capture_us: u64) -> Result<Pushed, Error> {
        frame.validate()?;
        let head = match &self.head {
            Some(Head::Queue(tx)) => tx,
            Some(Head::Newest) => {
                return Err(Error::Config("this pipeline takes frames by offer".into()));
            }
            None => return Err(stopped()),
        };
        let plan = lock_grid(&self.grid).plan(capture_us);
        let pushed = Pushed {
            encoding: plan.tags.iter().filter(|t| t.is_some()).count(),
            idle: plan.active.iter().filter(|a| !**a).count(),
        };
        {
            let mut s = self.slot.lock();
            count(&mut s.stats, &plan);
            s.in_flight += 1;
        }
        let done = Arc::new(InFlight(self.slot.clone()));
        let job = Job { source: frame.clone(), nearest: frame, plan: Arc::new(plan), _done: done };
        head.send(job).map_err(|_| stopped())?;
        Ok(pushed)
    }

    /// Offers `frame` captured at `capture_us` to a pipeline made by
    /// [`Ladder::into_newest_pipeline`], without waiting: the top rung's worker takes it when
    /// it is next free, unless a newer frame is offered first. Returns whether an earlier
    /// frame still waiting was replaced (counted in [`PipelineStats::frames_replaced`]).
    ///
    /// # Errors
    /// [`Error::InvalidFrame`] for an inconsistent picture, [`Error::Encode`] if the workers
    /// have stopped, [`Error::Config`] on a pipeline made by [`Ladder::into_pipeline`].
    pub fn offer(&self, frame: Arc<I420>, capture_us: u64) -> Result<bool, Error> {
        frame.validate()?;
        match &self.head {
            Some(Head::Newest) => {}
            Some(Head::Queue(_)) => {
                return Err(Error::Config("this pipeline takes frames by push".into()));
            }
            None => return Err(stopped()),
        }
        let mut s = self.slot.lock();
        if s.closed || self.workers.iter().any(std::thread::JoinHandle::is_finished) {
            return Err(stopped());
        }
        let replaced = s.newest.replace((frame, capture_us)).is_some();
        if replaced {
            s.stats.frames_replaced += 1;
        }
        self.slot.changed.notify_all();
        Ok(replaced)
    }

    /// What the pipeline did with its frames so far.
    pub fn stats(&self) -> PipelineStats {
        self.slot.lock().stats
    }

    /// Waits until every frame given so far has been encoded on every rung and handed to
    /// the sink (an offered frame waiting in the slot included), at most `timeout`. Returns
    /// whether it got there.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.slot.lock();
        while s.newest.is_some() || s.in_flight > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self
                .slot
                .changed
                .wait_timeout(s, left)
                .map_or_else(|e| e.into_inner().0, |(s, _)| s);
        }
        true
    }

    /// Changes the target bit rate of rung `rung`, as [`Ladder::set_bitrate`]; its worker
    /// applies it before the next frame it encodes.
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown rung or a zero rate.
    pub fn set_bitrate(&mut self, rung: usize, bps: u32) -> Result<(), Error> {
        if bps == 0 {
            return Err(Error::Config("bit rate must be positive".into()));
        }
        let b = self.bitrates.get(rung).ok_or_else(|| Error::Config(format!("no rung {rung}")))?;
        b.store(bps, Ordering::Relaxed);
        self.config.rungs[rung].bitrate = bps;
        Ok(())
    }

    /// Makes every active rung start a new group at the next frame taken.
    pub fn request_key_frame(&mut self) {
        lock_grid(&self.grid).key_requested = true;
    }

    /// Starts or stops encoding rung `rung`, as [`Ladder::set_rung_wanted`]: a stopped rung
    /// stops from the next frame taken on (its worker drains an AV1 encoder to the sink); a
    /// started one begins at the next group start.
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown rung.
    pub fn set_rung_wanted(&mut self, rung: usize, wanted: bool) -> Result<(), Error> {
        let mut grid = lock_grid(&self.grid);
        if rung >= grid.wanted.len() {
            return Err(Error::Config(format!("no rung {rung}")));
        }
        grid.set_wanted(rung, wanted);
        Ok(())
    }

    /// Whether rung `rung` is being encoded now (before the first frame: whether it will).
    pub fn rung_active(&self, rung: usize) -> bool {
        let grid = lock_grid(&self.grid);
        let state = if grid.started { &grid.active } else { &grid.wanted };
        state.get(rung).copied().unwrap_or(false)
    }

    /// Stops encoding the top rung from the next frame taken on, because the uplink cannot
    /// carry it (its worker drains an AV1 encoder to the sink). A one-rung ladder keeps its
    /// rung whatever the uplink does: there is no lower rung for its viewers to move to.
    /// Returns whether the top rung is stopped.
    pub fn drop_top_rung(&mut self) -> bool {
        let mut grid = lock_grid(&self.grid);
        if grid.wanted.len() < 2 {
            return false;
        }
        grid.set_wanted(0, false);
        true
    }

    /// Resumes the top rung at the next group start, so that its groups stay aligned with
    /// the other rungs'.
    pub fn restore_top_rung(&mut self) {
        lock_grid(&self.grid).set_wanted(0, true);
    }

    /// Whether the top rung is being encoded now (before the first frame: whether it will).
    pub fn top_rung_active(&self) -> bool {
        self.rung_active(0)
    }

    /// Ends the stream: every worker encodes what it holds, drains its encoder to the sink
    /// and stops. Returns when all have stopped.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.head = None;
        self.slot.lock().closed = true;
        self.slot.changed.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn stopped() -> Error {
    Error::Encode { codec: "ladder", message: "the ladder's workers stopped".into() }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::test_pattern::Generator;

    fn collecting() -> (Sink, Arc<Mutex<Vec<EncodedFrame>>>) {
        let out: Arc<Mutex<Vec<EncodedFrame>>> = Arc::default();
        let sink: Sink = {
            let out = out.clone();
            Arc::new(move |r: Result<Vec<EncodedFrame>, Error>| {
                out.lock().unwrap().extend(r.expect("encoding failed"));
            })
        };
        (sink, out)
    }

    fn small_ladder() -> LadderConfig {
        LadderConfig::default()
            .rungs(vec![
                Rung::new("180p", 320, 180, 30.0, 150_000, Codec::H264),
                Rung::new("90p", 160, 90, 30.0, 60_000, Codec::H264),
            ])
            .group_length(GroupLength::Frames(10))
    }

    /// Frames offered faster than the workers encode replace each other: the caller never
    /// waits, the newest frame is always encoded, every frame is either taken or counted as
    /// replaced, and what is encoded keeps groups aligned across rungs (object 0 a key
    /// frame in every group, object IDs without holes, the same source frames on both).
    #[test]
    fn offered_frames_replace_each_other_and_groups_stay_aligned() {
        let (sink, out) = collecting();
        let pipeline = Ladder::new(small_ladder()).unwrap().into_newest_pipeline(sink).unwrap();
        let g = Generator::new(320, 180, 30.0).unwrap();
        let offered = 90u32;
        let capture = |i: u32| 1_000_000 + u64::from(i) * 33_333;
        for i in 0..offered {
            pipeline.offer(Arc::new(g.frame(i, capture(i))), capture(i)).unwrap();
        }
        assert!(pipeline.wait_idle(Duration::from_secs(60)), "the workers stalled");
        let stats = pipeline.stats();
        assert_eq!(stats.frames_taken + stats.frames_replaced, u64::from(offered), "{stats:?}");
        assert!(stats.frames_replaced > 0, "no frame replaced: {stats:?}");
        assert_eq!(stats.rung_frames_encoded, 2 * stats.frames_taken);
        let frames = out.lock().unwrap().clone();
        let mut per_rung: BTreeMap<usize, Vec<&EncodedFrame>> = BTreeMap::new();
        for f in &frames {
            per_rung.entry(f.rung).or_default().push(f);
        }
        let captures = |r: usize| per_rung[&r].iter().map(|f| f.capture_us).collect::<Vec<_>>();
        assert_eq!(captures(0), captures(1), "the rungs encoded different source frames");
        assert_eq!(captures(0).len() as u64, stats.frames_taken);
        assert_eq!(captures(0).last(), Some(&capture(offered - 1)), "the newest was skipped");
        for fs in per_rung.values() {
            assert!(fs.windows(2).all(|w| w[0].capture_us < w[1].capture_us));
            let mut expected = (0, 0);
            for f in fs {
                if f.group_id != expected.0 {
                    assert_eq!(f.group_id, expected.0 + 1, "{f:?}");
                    expected = (f.group_id, 0);
                }
                assert_eq!(f.object_id, expected.1, "{f:?}");
                assert_eq!(f.key_frame, f.object_id == 0, "{f:?}");
                expected.1 += 1;
            }
        }
    }

    /// Each way in is refused on a pipeline made for the other.
    #[test]
    fn push_and_offer_each_need_their_own_pipeline() {
        let frame = Arc::new(I420::new(320, 180).unwrap());
        let (sink, _) = collecting();
        let mut newest = Ladder::new(small_ladder()).unwrap().into_newest_pipeline(sink).unwrap();
        assert!(matches!(newest.push(frame.clone(), 0), Err(Error::Config(_))));
        let (sink, _) = collecting();
        let queue = Ladder::new(small_ladder()).unwrap().into_pipeline(sink).unwrap();
        assert!(matches!(queue.offer(frame, 0), Err(Error::Config(_))));
    }
}
