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
    /// 720p at 1.5 Mbit/s, 360p at 500 kbit/s, 180p at 150 kbit/s, H.264, 30 fps, 1 s groups.
    fn default() -> Self {
        Self {
            source_fps: 30.0,
            rungs: vec![
                Rung::new("720p", 1280, 720, 30.0, 1_500_000, Codec::H264),
                Rung::new("360p", 640, 360, 30.0, 500_000, Codec::H264),
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
    /// 500 kbit/s and 180p at 150 kbit/s (a 720p AV1 rung runs far below 30 fps here).
    pub fn av1_low() -> Self {
        Self {
            rungs: vec![
                Rung::new("360p", 640, 360, 30.0, 500_000, Codec::Av1),
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
    /// Encoding now.
    active: bool,
    /// Next object ID in the current group.
    next_object: u64,
    /// Frames of the current group this rung has encoded (for frame-rate decimation).
    taken_in_group: u64,
}

impl RungState {
    fn new(index: usize, rung: &Rung, speed: u8) -> Result<Self, Error> {
        let coder = make_coder(rung, speed)?;
        let codec_string = probe_codec_string(rung, speed)?;
        Ok(Self {
            index,
            rung: rung.clone(),
            track: rung.track_name(),
            coder,
            codec_string,
            active: true,
            next_object: 0,
            taken_in_group: 0,
        })
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

/// The tier ladder.
pub struct Ladder {
    config: LadderConfig,
    rungs: Vec<RungState>,
    scaler: Scaler,
    next_input: u64,
    group_id: u64,
    group_start_index: u64,
    group_start_us: u64,
    started: bool,
    key_requested: bool,
    /// The top rung should be encoding (it resumes at the next group start).
    top_wanted: bool,
}

impl fmt::Debug for Ladder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ladder")
            .field("rungs", &self.config.rungs)
            .field("next_input", &self.next_input)
            .field("group_id", &self.group_id)
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
        Ok(Self {
            config,
            rungs,
            scaler: Scaler::new(),
            next_input: 0,
            group_id: 0,
            group_start_index: 0,
            group_start_us: 0,
            started: false,
            key_requested: false,
            top_wanted: true,
        })
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
        self.key_requested = true;
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

    /// Stops encoding the top rung from the next frame on (the uplink cannot carry it).
    /// Frames an AV1 encoder still held are returned. Does nothing on a one-rung ladder.
    ///
    /// # Errors
    /// [`Error::Encode`] if draining the encoder fails.
    pub fn drop_top_rung(&mut self) -> Result<Vec<EncodedFrame>, Error> {
        if self.rungs.len() < 2 {
            return Ok(Vec::new());
        }
        self.top_wanted = false;
        let top = &mut self.rungs[0];
        if !top.active {
            return Ok(Vec::new());
        }
        top.active = false;
        top.flush()
    }

    /// Resumes the top rung at the next group start, so that its groups stay aligned.
    pub fn restore_top_rung(&mut self) {
        self.top_wanted = true;
    }

    /// Whether the top rung is being encoded now.
    pub fn top_rung_active(&self) -> bool {
        self.rungs.first().is_some_and(|r| r.active)
    }

    /// Encodes one source picture captured at `capture_us` (wall-clock microseconds) on
    /// every active rung. Returns the frames that came out, in rung order; AV1 rungs return
    /// each frame up to 4 pushes later than H.264 rungs (rav1e's lookahead).
    ///
    /// # Errors
    /// [`Error::InvalidFrame`] for an inconsistent picture, [`Error::Encode`] if an encoder fails.
    pub fn push(&mut self, frame: &I420, capture_us: u64) -> Result<Vec<EncodedFrame>, Error> {
        frame.validate()?;
        let index = self.next_input;
        let new_group = !self.started
            || self.key_requested
            || match self.config.group_length {
                GroupLength::Frames(n) => index - self.group_start_index >= u64::from(n),
                GroupLength::Micros(us) => {
                    let half_frame = (500_000.0 / self.config.source_fps) as u64;
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
            if self.top_wanted && !self.rungs[0].active {
                self.rungs[0].active = true;
            }
            for r in &mut self.rungs {
                r.next_object = 0;
                r.taken_in_group = 0;
            }
        }
        self.next_input += 1;

        // Which rungs take this frame: a rung at a lower frame rate takes the frames whose
        // position in the group crosses its next frame slot; every rung takes the first.
        let k = index - self.group_start_index;
        let source_fps = self.config.source_fps;
        let mut jobs: Vec<(usize, Tag)> = Vec::new();
        for r in &mut self.rungs {
            if !r.active {
                continue;
            }
            let due = ((k as f64) * r.rung.fps / source_fps + 1e-9).floor() as u64 + 1;
            if r.taken_in_group >= due {
                continue;
            }
            r.taken_in_group = due;
            let tag = Tag {
                input_index: index,
                capture_us,
                group_id: self.group_id,
                object_id: r.next_object,
            };
            r.next_object += 1;
            jobs.push((r.index, tag));
        }

        // Scale once per distinct rung size.
        let mut pictures: Vec<((usize, usize), I420)> = Vec::new();
        for &(i, _) in &jobs {
            let size = (self.rungs[i].rung.width, self.rungs[i].rung.height);
            if !pictures.iter().any(|(s, _)| *s == size) {
                let p = self.scaler.scale(frame, size.0, size.1)?;
                pictures.push((size, p));
            }
        }
        let picture_for = |r: &RungState| -> Option<&I420> {
            pictures.iter().find(|(s, _)| *s == (r.rung.width, r.rung.height)).map(|(_, p)| p)
        };

        let mut results: Vec<Result<Vec<EncodedFrame>, Error>> = Vec::new();
        let selected: Vec<(&mut RungState, Tag)> = self
            .rungs
            .iter_mut()
            .filter_map(|r| jobs.iter().find(|(i, _)| *i == r.index).map(|&(_, tag)| (r, tag)))
            .collect();
        if self.config.parallel && selected.len() > 1 {
            std::thread::scope(|s| {
                let handles: Vec<_> = selected
                    .into_iter()
                    .map(|(r, tag)| {
                        let pic = picture_for(r);
                        s.spawn(move || match pic {
                            Some(p) => r.encode(p, new_group, tag),
                            None => Err(Error::InvalidFrame("no scaled picture".into())),
                        })
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
                let pic = picture_for(r)
                    .ok_or_else(|| Error::InvalidFrame("no scaled picture".into()))?;
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
