//! Writing what arrived into a playable MP4: [`Mp4Writer`].
//!
//! The file is a fragmented MP4: `ftyp` and `moov` (track descriptions, no samples) are
//! written by [`Mp4Writer::create`], then one `moof` + `mdat` pair per fragment. A fragment
//! is closed before every video key frame and at the latest every [`MAX_FRAGMENT`], and
//! handed to the operating system at once, so a recording whose process dies (Ctrl-C, a
//! crash, a lost machine) still plays up to its last closed fragment. A progressive MP4
//! with its `moov` at the end would be unplayable in that case.
//!
//! Timestamps are presentation times, samples come in decode order. The file's time 0 is
//! the earliest timestamp among the first samples of the tracks when the first fragment is
//! closed. Decode times are the fragment's presentation times sorted, so frames reordered
//! by B-frames get composition offsets (signed, `trun` version 1) and keep their display
//! times; tiermesh's own encoders never reorder, and then decode time = presentation time.
//! Two samples with the same time are moved one tick apart.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use mp4_atom::{
    Atom, Av01, Av1c, Avc1, Avcc, Dinf, Dops, Dref, DrefEntry, Encode, FixedPoint, Ftyp, Hdlr,
    Mdhd, Mdia, Mfhd, Minf, Moof, Moov, Mvex, Mvhd, Opus, Smhd, Stbl, Stco, Stsd, Tfdt, Tfhd, Tkhd,
    Traf, Trak, Trex, Trun, TrunEntry, TrunSamples, Url, Visual, Vmhd,
};

use crate::ladder::Codec;
use crate::media::{AudioCodec, Error, duration_to_ticks};
use crate::{av1, h264};

/// Longest fragment: a crash loses at most this much, and a player reading the file while
/// it grows sees new media this often.
pub const MAX_FRAGMENT: Duration = Duration::from_secs(2);

/// Sample flags: a sync sample that depends on no other (ISO/IEC 14496-12 8.8.3.1).
const FLAGS_KEY: u32 = 0x0200_0000;
/// Sample flags: depends on others, not a sync sample.
const FLAGS_DELTA: u32 = 0x0101_0000;

/// The video track of a recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoTrack {
    /// The codec.
    pub codec: Codec,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The decoder configuration record: avcC for H.264, av1C for AV1 (as key frames carry
    /// it in [`crate::EncodedFrame::config`] and [`crate::media::SampleKind::Video`]).
    pub config: Bytes,
    /// Ticks per second of the track's clock.
    pub timescale: u32,
}

impl VideoTrack {
    /// A video track with a 90 kHz clock (the customary video timescale: exact for 24, 25,
    /// 30, 50 and 60 fps and for 29.97 fps).
    pub fn new(codec: Codec, width: u32, height: u32, config: impl Into<Bytes>) -> Self {
        Self { codec, width, height, config: config.into(), timescale: 90_000 }
    }

    /// Sets the track's clock in ticks per second.
    pub fn timescale(mut self, timescale: u32) -> Self {
        self.timescale = timescale;
        self
    }
}

/// The audio track of a recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioTrack {
    /// The codec.
    pub codec: AudioCodec,
    /// Sample rate of the source (the track's clock runs at this rate; Opus at 48 000).
    pub sample_rate: u32,
    /// Number of channels (1 or 2).
    pub channels: u16,
    /// Samples a player drops at the start (the encoder's look-ahead); 0 keeps them all.
    pub pre_skip: u16,
}

impl AudioTrack {
    /// An Opus track.
    pub fn opus(sample_rate: u32, channels: u16) -> Self {
        Self { codec: AudioCodec::Opus, sample_rate, channels, pre_skip: 0 }
    }
}

/// The tracks of a recording: video, audio, or both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tracks {
    /// The video track.
    pub video: Option<VideoTrack>,
    /// The audio track.
    pub audio: Option<AudioTrack>,
}

impl Tracks {
    /// Video only.
    pub fn video(video: VideoTrack) -> Self {
        Self { video: Some(video), audio: None }
    }

    /// Audio only.
    pub fn audio(audio: AudioTrack) -> Self {
        Self { video: None, audio: Some(audio) }
    }

    /// Adds an audio track.
    pub fn with_audio(mut self, audio: AudioTrack) -> Self {
        self.audio = Some(audio);
        self
    }
}

/// Samples of one track not yet written.
struct TrackState {
    id: u32,
    timescale: u32,
    /// Payload, presentation time, key flag, in arrival order.
    queue: Vec<(Bytes, Duration, bool)>,
    /// Decode time (ticks) of the last sample written.
    last_dts: Option<u64>,
    /// Duration (ticks) of the last sample written: the guess for the final one.
    last_duration: u32,
    /// Duration given to a lone last sample.
    default_duration: u32,
    samples: u64,
}

impl TrackState {
    fn new(id: u32, timescale: u32, default_duration: u32) -> Self {
        Self {
            id,
            timescale,
            queue: Vec::new(),
            last_dts: None,
            last_duration: default_duration,
            default_duration,
            samples: 0,
        }
    }

    /// Queued media time: from the first queued sample to the last.
    fn span(&self) -> Duration {
        match (self.queue.first(), self.queue.last()) {
            (Some(a), Some(b)) => b.1.saturating_sub(a.1),
            _ => Duration::ZERO,
        }
    }
}

/// One track's part of a fragment.
struct Run {
    track: u32,
    base_dts: u64,
    entries: Vec<TrunEntry>,
    data: Vec<Bytes>,
}

/// Writes a fragmented MP4 with an H.264 or AV1 video track and/or an Opus audio track.
pub struct Mp4Writer {
    path: PathBuf,
    file: BufWriter<File>,
    video: Option<(TrackState, Codec, usize)>,
    audio: Option<TrackState>,
    /// Media time that becomes the file's time 0, fixed when the first fragment is written.
    origin: Option<Duration>,
    sequence: u32,
    finished: bool,
}

impl std::fmt::Debug for Mp4Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mp4Writer")
            .field("path", &self.path)
            .field("fragments", &self.sequence)
            .finish()
    }
}

fn write_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Write { path: path.to_path_buf(), reason: reason.into() }
}

fn encoded<T: Encode>(path: &Path, atom: &T, what: &str) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    atom.encode(&mut out).map_err(|e| write_error(path, format!("{what}: {e}")))?;
    Ok(out)
}

fn visual(width: u32, height: u32) -> Visual {
    Visual {
        data_reference_index: 1,
        width: width as u16,
        height: height as u16,
        ..Default::default()
    }
}

fn trak(
    id: u32,
    timescale: u32,
    handler: &[u8; 4],
    name: &str,
    entry: mp4_atom::Codec,
    video: Option<(u32, u32)>,
) -> Trak {
    let (vmhd, smhd) =
        if video.is_some() { (Some(Vmhd::default()), None) } else { (None, Some(Smhd::default())) };
    let (width, height) = video.unwrap_or((0, 0));
    Trak {
        tkhd: Tkhd {
            track_id: id,
            enabled: true,
            in_movie: true,
            volume: if video.is_some() { FixedPoint::from(0u8) } else { FixedPoint::from(1u8) },
            width: FixedPoint::from(width as u16),
            height: FixedPoint::from(height as u16),
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd { timescale, language: "und".into(), ..Default::default() },
            hdlr: Hdlr { handler: handler.into(), name: name.into() },
            minf: Minf {
                vmhd,
                smhd,
                dinf: Dinf {
                    dref: Dref { entries: vec![DrefEntry::Url(Url { location: String::new() })] },
                },
                stbl: Stbl {
                    stsd: Stsd { codecs: vec![entry] },
                    stco: Some(Stco::default()),
                    ..Default::default()
                },
                ..Default::default()
            },
        },
        ..Default::default()
    }
}

impl Mp4Writer {
    /// Creates (or truncates) `path` and writes the file header and track descriptions.
    ///
    /// # Errors
    /// [`Error::Write`] for no tracks, a size that is odd, zero or over 65535, a malformed
    /// or mismatched configuration record, a zero timescale, or audio that is not 1 or 2
    /// channels; [`Error::Io`] if the file cannot be written.
    pub fn create(path: impl AsRef<Path>, tracks: Tracks) -> Result<Self, Error> {
        let path = path.as_ref();
        if tracks.video.is_none() && tracks.audio.is_none() {
            return Err(write_error(path, "a recording needs a video or an audio track"));
        }
        let mut traks = Vec::new();
        let mut brands: Vec<mp4_atom::FourCC> =
            vec![b"isom".into(), b"iso6".into(), b"mp41".into()];
        let mut video = None;
        let mut audio = None;
        let mut next_id = 1;
        if let Some(v) = &tracks.video {
            if v.width == 0 || v.height == 0 || v.width > 0xffff || v.height > 0xffff {
                return Err(write_error(path, format!("video size {}x{}", v.width, v.height)));
            }
            if v.timescale == 0 {
                return Err(write_error(path, "video timescale 0"));
            }
            let bad_config =
                |e: String| write_error(path, format!("video configuration record: {e}"));
            let (entry, length_size) = match v.codec {
                Codec::H264 => {
                    let sets =
                        h264::parse_avcc(&v.config).map_err(|e| bad_config(e.to_string()))?;
                    let avcc = Avcc::decode_body(&mut v.config.as_ref())
                        .map_err(|e| bad_config(e.to_string()))?;
                    brands.push(b"avc1".into());
                    let entry =
                        Avc1 { visual: visual(v.width, v.height), avcc, ..Default::default() };
                    (mp4_atom::Codec::Avc1(entry), sets.length_size)
                }
                Codec::Av1 => {
                    av1::codec_string(&v.config).map_err(|e| bad_config(e.to_string()))?;
                    let av1c = Av1c::decode_body(&mut v.config.as_ref())
                        .map_err(|e| bad_config(e.to_string()))?;
                    brands.push(b"av01".into());
                    let entry =
                        Av01 { visual: visual(v.width, v.height), av1c, ..Default::default() };
                    (mp4_atom::Codec::Av01(entry), 0)
                }
            };
            traks.push(trak(
                next_id,
                v.timescale,
                b"vide",
                "tiermesh video",
                entry,
                Some((v.width, v.height)),
            ));
            // A lone last frame is shown for 1/30 s, the usual frame interval.
            video = Some((
                TrackState::new(next_id, v.timescale, (v.timescale / 30).max(1)),
                v.codec,
                length_size,
            ));
            next_id += 1;
        }
        if let Some(a) = &tracks.audio {
            if !(1..=2).contains(&a.channels) || a.sample_rate == 0 || a.sample_rate > 0xffff {
                return Err(write_error(
                    path,
                    format!("audio {} Hz with {} channels", a.sample_rate, a.channels),
                ));
            }
            let entry = Opus {
                audio: mp4_atom::Audio {
                    data_reference_index: 1,
                    channel_count: a.channels,
                    sample_size: 16,
                    // Opus sample entries state 48 kHz whatever the source rate.
                    sample_rate: FixedPoint::from(48_000u16),
                },
                dops: Dops {
                    output_channel_count: a.channels as u8,
                    pre_skip: a.pre_skip,
                    input_sample_rate: a.sample_rate,
                    output_gain: 0,
                    channel_mapping: None,
                },
                btrt: None,
            };
            brands.push(b"Opus".into());
            // Opus packets are timed on a 48 kHz clock.
            let timescale = crate::opus::SAMPLE_RATE;
            traks.push(trak(
                next_id,
                timescale,
                b"soun",
                "tiermesh audio",
                mp4_atom::Codec::Opus(entry),
                None,
            ));
            // A lone last packet lasts 20 ms, the frame size tiermesh sends.
            audio = Some(TrackState::new(next_id, timescale, timescale / 50));
            next_id += 1;
        }
        let trex = (1..next_id)
            .map(|id| Trex {
                track_id: id,
                default_sample_description_index: 1,
                ..Default::default()
            })
            .collect();
        let moov = Moov {
            mvhd: Mvhd {
                timescale: 1000,
                rate: FixedPoint::from(1u16),
                volume: FixedPoint::from(1u8),
                next_track_id: next_id,
                ..Default::default()
            },
            mvex: Some(Mvex { mehd: None, trex }),
            trak: traks,
            ..Default::default()
        };
        let ftyp =
            Ftyp { major_brand: b"isom".into(), minor_version: 0x200, compatible_brands: brands };
        let mut head = encoded(path, &ftyp, "ftyp")?;
        head.extend(encoded(path, &moov, "moov")?);
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let mut file = BufWriter::new(file);
        file.write_all(&head).and_then(|()| file.flush()).map_err(|e| Error::io(path, e))?;
        tracing::debug!(path = %path.display(), ?tracks, "recording started");
        Ok(Self {
            path: path.to_path_buf(),
            file,
            video,
            audio,
            origin: None,
            sequence: 0,
            finished: false,
        })
    }

    /// Adds one video frame: an H.264 access unit with NAL length prefixes of the avcC's
    /// size (as [`crate::h264::Encoder`] writes) or in Annex B (converted here), or an AV1
    /// temporal unit (temporal delimiters are dropped, as MP4 wants). `key` marks a frame a
    /// player can start from.
    ///
    /// # Errors
    /// [`Error::Write`] if the file has no video track, was finished, or the payload is
    /// not in the track's format; [`Error::Io`] if a fragment cannot be written.
    pub fn write_video(&mut self, data: &[u8], pts: Duration, key: bool) -> Result<(), Error> {
        self.check_open()?;
        let path = self.path.clone();
        let Some((state, codec, length_size)) = self.video.as_mut() else {
            return Err(write_error(&path, "the recording has no video track"));
        };
        let payload = match codec {
            Codec::H264 => h264_payload(data, *length_size).map_err(|e| write_error(&path, e))?,
            Codec::Av1 => av1_payload(data).map_err(|e| write_error(&path, e))?,
        };
        state.queue.push((payload, pts, key));
        let split = (key && state.queue.len() > 1) || state.span() >= MAX_FRAGMENT;
        if split {
            self.write_fragment(false)?;
        }
        Ok(())
    }

    /// Adds one audio packet.
    ///
    /// # Errors
    /// [`Error::Write`] if the file has no audio track, was finished, or the packet is
    /// empty; [`Error::Io`] if a fragment cannot be written.
    pub fn write_audio(&mut self, data: &[u8], pts: Duration) -> Result<(), Error> {
        self.check_open()?;
        let path = self.path.clone();
        let Some(state) = self.audio.as_mut() else {
            return Err(write_error(&path, "the recording has no audio track"));
        };
        if data.is_empty() {
            return Err(write_error(&path, "empty audio packet"));
        }
        state.queue.push((Bytes::copy_from_slice(data), pts, true));
        // Audio alone closes fragments only by length (video key frames close them otherwise).
        if state.span() >= MAX_FRAGMENT {
            self.write_fragment(false)?;
        }
        Ok(())
    }

    /// Writes what is still held and flushes the file to disk. Dropping a writer without
    /// calling this writes what it holds too, but cannot report errors.
    ///
    /// # Errors
    /// [`Error::Io`] if the last fragment cannot be written or synced.
    pub fn finish(mut self) -> Result<Stats, Error> {
        self.finish_inner()
    }

    /// Counts so far.
    pub fn stats(&self) -> Stats {
        Stats {
            fragments: self.sequence,
            video_samples: self.video.as_ref().map_or(0, |v| v.0.samples),
            audio_samples: self.audio.as_ref().map_or(0, |a| a.samples),
        }
    }

    fn finish_inner(&mut self) -> Result<Stats, Error> {
        if self.finished {
            return Ok(self.stats());
        }
        self.finished = true;
        self.write_fragment(true)?;
        let path = &self.path;
        self.file.flush().map_err(|e| Error::io(path, e))?;
        self.file.get_ref().sync_all().map_err(|e| Error::io(path, e))?;
        let stats = self.stats();
        tracing::debug!(path = %path.display(), ?stats, "recording finished");
        Ok(stats)
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.finished {
            return Err(write_error(&self.path, "the recording is finished"));
        }
        Ok(())
    }

    /// Writes every queued sample whose duration is known (all of them if `last`) as one
    /// fragment.
    fn write_fragment(&mut self, last: bool) -> Result<(), Error> {
        let origin = match self.origin {
            Some(o) => o,
            None => {
                let firsts = self
                    .video
                    .iter()
                    .map(|v| &v.0)
                    .chain(self.audio.iter())
                    .filter_map(|t| t.queue.first());
                let Some(o) = firsts.map(|s| s.1).min() else {
                    return Ok(());
                };
                self.origin = Some(o);
                o
            }
        };
        let mut runs = Vec::new();
        let tracks = self.video.as_mut().map(|v| &mut v.0).into_iter().chain(self.audio.as_mut());
        for t in tracks {
            let ready = if last { t.queue.len() } else { t.queue.len().saturating_sub(1) };
            if ready == 0 {
                continue;
            }
            // Presentation times in ticks, in arrival (decode) order.
            let pts: Vec<u64> = t
                .queue
                .iter()
                .map(|(_, p, _)| duration_to_ticks(p.saturating_sub(origin), t.timescale))
                .collect();
            // Decode times: the presentation times in ascending order, strictly increasing.
            // Without frame reordering they are the presentation times themselves; with
            // B-frames (decode order differs from display order) each frame gets the
            // composition offset that puts it back at its presentation time.
            let mut sorted = pts.clone();
            sorted.sort_unstable();
            let mut dts = Vec::with_capacity(sorted.len());
            let mut prev = t.last_dts;
            for d in sorted {
                let d = match prev {
                    Some(p) if d <= p => p.saturating_add(1),
                    _ => d,
                };
                dts.push(d);
                prev = Some(d);
            }
            let mut entries = Vec::with_capacity(ready);
            let mut data = Vec::with_capacity(ready);
            for (i, (payload, _, key)) in t.queue.drain(..ready).enumerate() {
                let duration = match dts.get(i + 1) {
                    Some(next) => u32::try_from(next - dts[i]).unwrap_or(u32::MAX),
                    None => t.last_duration,
                };
                t.last_duration = if duration > 0 { duration } else { t.default_duration };
                let offset = i64::try_from(pts[i]).unwrap_or(i64::MAX)
                    - i64::try_from(dts[i]).unwrap_or(i64::MAX);
                entries.push(TrunEntry {
                    duration: Some(duration),
                    size: Some(payload.len() as u32),
                    flags: Some(if key { FLAGS_KEY } else { FLAGS_DELTA }),
                    cts: Some(offset.clamp(i64::from(i32::MIN), i64::from(i32::MAX))),
                });
                data.push(payload);
            }
            if entries.iter().all(|e| e.cts == Some(0)) {
                // No reordering: leave the offsets out.
                entries.iter_mut().for_each(|e| e.cts = None);
            }
            t.last_dts = Some(dts[ready - 1]);
            t.samples += ready as u64;
            runs.push(Run { track: t.id, base_dts: dts[0], entries, data });
        }
        if runs.is_empty() {
            return Ok(());
        }
        self.sequence += 1;
        let mut moof = Moof {
            mfhd: Mfhd { sequence_number: self.sequence },
            traf: runs
                .iter()
                .map(|r| Traf {
                    tfhd: Tfhd {
                        track_id: r.track,
                        default_base_is_moof: true,
                        ..Default::default()
                    },
                    tfdt: Some(Tfdt { base_media_decode_time: r.base_dts }),
                    trun: vec![Trun {
                        data_offset: Some(0),
                        samples: TrunSamples::Explicit(r.entries.clone()),
                    }],
                    ..Default::default()
                })
                .collect(),
        };
        // Data offsets count from the moof's first byte; their values do not change its size.
        let moof_len = encoded(&self.path, &moof, "moof")?.len();
        let mut offset = moof_len + 8;
        for (traf, run) in moof.traf.iter_mut().zip(&runs) {
            traf.trun[0].data_offset = Some(
                i32::try_from(offset).map_err(|_| write_error(&self.path, "fragment too large"))?,
            );
            offset += run.data.iter().map(Bytes::len).sum::<usize>();
        }
        let moof_bytes = encoded(&self.path, &moof, "moof")?;
        let mdat_len = u32::try_from(offset - moof_len)
            .map_err(|_| write_error(&self.path, "fragment too large"))?;
        let path = &self.path;
        let io = |e| Error::io(path, e);
        self.file.write_all(&moof_bytes).map_err(io)?;
        self.file.write_all(&mdat_len.to_be_bytes()).map_err(io)?;
        self.file.write_all(b"mdat").map_err(io)?;
        for run in &runs {
            for d in &run.data {
                self.file.write_all(d).map_err(io)?;
            }
        }
        // Each fragment reaches the operating system at once: it survives the process.
        self.file.flush().map_err(io)?;
        Ok(())
    }
}

impl Drop for Mp4Writer {
    fn drop(&mut self) {
        if !self.finished
            && let Err(e) = self.finish_inner()
        {
            tracing::warn!(path = %self.path.display(), error = %e, "recording not finished cleanly");
        }
    }
}

/// What a writer has written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Fragments (`moof` + `mdat`) written.
    pub fragments: u32,
    /// Video frames written.
    pub video_samples: u64,
    /// Audio packets written.
    pub audio_samples: u64,
}

/// True if `data` is a well-formed sequence of `length_size`-byte length-prefixed NAL units.
fn is_length_prefixed(data: &[u8], length_size: usize) -> bool {
    let mut pos = 0;
    while pos < data.len() {
        let Some(len) = data.get(pos..pos + length_size) else {
            return false;
        };
        let len = len.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if len == 0 {
            return false;
        }
        pos += length_size + len;
    }
    pos == data.len() && !data.is_empty()
}

/// An H.264 payload in the track's length-prefixed form; Annex B input is converted
/// (parameter sets and delimiters dropped: the avcC carries the parameter sets).
fn h264_payload(data: &[u8], length_size: usize) -> Result<Bytes, String> {
    if is_length_prefixed(data, length_size) {
        return Ok(Bytes::copy_from_slice(data));
    }
    if data.starts_with(&[0, 0, 1]) || data.starts_with(&[0, 0, 0, 1]) {
        let mut out = Vec::with_capacity(data.len() + 16);
        for nal in h264::split_annexb(data) {
            // SPS, PPS, access unit delimiter.
            if matches!(nal[0] & 0x1f, 7..=9) {
                continue;
            }
            let len = nal.len();
            if length_size < 4 && len >= 1 << (8 * length_size) {
                return Err(format!(
                    "NAL unit of {len} bytes does not fit a {length_size}-byte length"
                ));
            }
            out.extend_from_slice(&(len as u32).to_be_bytes()[4 - length_size..]);
            out.extend_from_slice(nal);
        }
        if out.is_empty() {
            return Err("H.264 access unit without any picture data".into());
        }
        return Ok(Bytes::from(out));
    }
    Err(format!(
        "H.264 payload of {} bytes is neither {length_size}-byte length-prefixed NAL units nor Annex B",
        data.len()
    ))
}

/// An AV1 temporal unit without temporal delimiter and padding OBUs.
fn av1_payload(data: &[u8]) -> Result<Bytes, String> {
    let obus = av1::split_obus(data).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(data.len());
    for obu in obus {
        // 2: temporal delimiter, 15: padding: the AV1 binding for ISO media files leaves them out.
        if !matches!(obu.kind, 2 | 15) {
            out.extend_from_slice(obu.raw);
        }
    }
    if out.is_empty() {
        return Err("AV1 temporal unit without any OBU besides delimiters".into());
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_payload_keeps_length_prefixed_and_converts_annexb() {
        let prefixed = [0, 0, 0, 2, 0x65, 0x88, 0, 0, 0, 1, 0x06];
        assert_eq!(&h264_payload(&prefixed, 4).unwrap()[..], &prefixed);
        let annexb = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 1, 0x65, 0x88];
        assert_eq!(&h264_payload(&annexb, 4).unwrap()[..], &[0, 0, 0, 2, 0x65, 0x88]);
        assert!(h264_payload(&[1, 2, 3], 4).is_err());
    }

    #[test]
    fn av1_payload_drops_temporal_delimiters() {
        // Temporal delimiter (type 2, size 0), then a padding-free "frame" OBU of 2 bytes.
        let tu = [0x12, 0x00, 0x32, 0x02, 0xaa, 0xbb];
        assert_eq!(&av1_payload(&tu).unwrap()[..], &[0x32, 0x02, 0xaa, 0xbb]);
        assert!(av1_payload(&[0x12, 0x00]).is_err());
    }
}
