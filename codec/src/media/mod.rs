//! Media files: what `tiermesh pub --input` reads and what `tiermesh sub --save` writes.
//!
//! ```text
//! input::open(path) ─► Input::Encoded(Box<dyn Source>)   IVF (AV1), Annex B (H.264), MP4 (H.264/AV1 + Opus)
//!                   │     next_sample() -> MediaSample { kind, data, pts, duration } in decode order
//!                   └► Input::Raw(Box<dyn RawSource>)     Y4M (raw I420), to be encoded by the ladder
//!                         next_frame() -> RawFrame { picture, pts, duration }
//! output::Mp4Writer::create(path, Tracks) ─► write_video / write_audio ─► finish()
//!                                           fragmented MP4: playable after every fragment
//! ```
//!
//! Encoded video leaves the readers in the packaging the rest of this crate uses (see
//! [`crate::h264`] and [`crate::av1`]): H.264 access units as NAL units with 4-byte length
//! prefixes and the parameter sets out of band in an avcC record, AV1 temporal units as
//! OBUs with size fields and an av1C record. Key frames carry their record, so a publisher
//! can hand each sample to the network (or to a decoder) as it comes.
//!
//! Files are checked when they are opened (headers, every frame's size against the file's
//! length) and again as samples are read; anything wrong is an [`Error`] naming the file
//! and what is wrong with it, never a panic.
//!
//! The formats, their limits and the reasons behind the choices are in `codec/MEDIA.md`.

pub mod input;
pub mod output;

mod bits;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use crate::frame::I420;
use crate::ladder::Codec;

pub use input::{Input, open};
pub use output::{AudioTrack, Mp4Writer, Tracks, VideoTrack};

/// Everything that can go wrong reading or writing a media file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused to open, read, seek or write the file.
    #[error("{path}: {source}", path = .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system reported.
        #[source]
        source: std::io::Error,
    },
    /// The file is empty or its format is none tiermesh reads.
    #[error("{path}: {reason}", path = .path.display())]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// What was found instead of a known signature or extension.
        reason: String,
    },
    /// The file's format is known but its contents are malformed or cut short.
    #[error("{path}: malformed {format} file: {reason}", path = .path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// "Y4M", "IVF", "H.264 Annex B" or "MP4".
        format: &'static str,
        /// What is wrong, with the frame number or byte offset where it was found.
        reason: String,
    },
    /// The file is well formed but holds something tiermesh does not handle (a pixel
    /// format, a codec, a bit depth).
    #[error("{path}: unsupported {format} content: {reason}", path = .path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// "Y4M", "IVF", "H.264 Annex B" or "MP4".
        format: &'static str,
        /// What is not supported.
        reason: String,
    },
    /// A track description or sample handed to [`Mp4Writer`] is invalid (a bad size or
    /// record, a payload that is not in the expected packaging, a call after `finish`).
    #[error("{path}: cannot write: {reason}", path = .path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// What is wrong with the call.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }
}

/// Audio codecs tiermesh reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    /// Opus (RFC 6716), `Opus` sample entry with a `dOps` box in MP4.
    Opus,
}

/// Which container a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// YUV4MPEG2: raw 8-bit 4:2:0 pictures.
    Y4m,
    /// IVF holding AV1.
    Ivf,
    /// An H.264 Annex B elementary stream (`.h264`).
    AnnexB,
    /// ISO base media file (`.mp4`), progressive or fragmented.
    Mp4,
}

/// What one sample is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SampleKind {
    /// One encoded picture (an H.264 access unit or an AV1 temporal unit).
    Video {
        /// The codec.
        codec: Codec,
        /// True if a decoder can start here (IDR picture, AV1 key frame).
        key: bool,
        /// Picture width in pixels.
        width: u32,
        /// Picture height in pixels.
        height: u32,
        /// The decoder configuration record (avcC for H.264, av1C for AV1); present on
        /// every key frame whose record is known.
        config: Option<Bytes>,
    },
    /// One encoded audio packet.
    Audio {
        /// The codec.
        codec: AudioCodec,
        /// Samples per second the packet decodes to.
        sample_rate: u32,
        /// Number of channels.
        channels: u16,
    },
}

/// One encoded sample of a file, in decode order.
#[derive(Clone, PartialEq, Eq)]
pub struct MediaSample {
    /// What it is.
    pub kind: SampleKind,
    /// The payload: H.264 with 4-byte NAL lengths, AV1 OBUs with size fields, one Opus packet.
    pub data: Bytes,
    /// Presentation time from the start of the file.
    pub pts: Duration,
    /// How long it is shown or played.
    pub duration: Duration,
}

impl MediaSample {
    /// True for video key frames and for every audio packet (each decodes on its own).
    pub fn is_key(&self) -> bool {
        match self.kind {
            SampleKind::Video { key, .. } => key,
            SampleKind::Audio { .. } => true,
        }
    }

    /// True for a video sample.
    pub fn is_video(&self) -> bool {
        matches!(self.kind, SampleKind::Video { .. })
    }

    /// The sample as a LOC object whose Timestamp is `start_us` (the wall-clock time in
    /// microseconds at which the file started playing) plus its presentation time.
    pub fn to_loc(&self, start_us: u64) -> crate::loc::Object {
        let pts_us = u64::try_from(self.pts.as_micros()).unwrap_or(u64::MAX);
        let video_config = match &self.kind {
            SampleKind::Video { config, .. } => config.as_ref().map(|c| c.to_vec()),
            SampleKind::Audio { .. } => None,
        };
        crate::loc::Object {
            payload: self.data.to_vec(),
            timestamp_us: start_us.saturating_add(pts_us),
            video_config,
            key_frame: self.is_key(),
        }
    }
}

impl std::fmt::Debug for MediaSample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            SampleKind::Video { codec, key, width, height, config } => write!(
                f,
                "{codec} {width}x{height}{}{} {} bytes at {:?}",
                if *key { " key" } else { "" },
                if config.is_some() { " +config" } else { "" },
                self.data.len(),
                self.pts
            ),
            SampleKind::Audio { codec, sample_rate, channels } => write!(
                f,
                "{codec:?} {sample_rate} Hz x{channels} {} bytes at {:?}",
                self.data.len(),
                self.pts
            ),
        }
    }
}

/// One raw picture of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame {
    /// The picture.
    pub picture: I420,
    /// Presentation time from the start of the file.
    pub pts: Duration,
    /// How long it is shown.
    pub duration: Duration,
}

/// The video of a file.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoInfo {
    /// The codec; `None` for raw pictures (Y4M).
    pub codec: Option<Codec>,
    /// WebCodecs codec string (`avc1.42C01F`, `av01.0.04M.08`) when the record is known.
    pub codec_string: Option<String>,
    /// The decoder configuration record of the first key frame (avcC or av1C).
    pub config: Option<Bytes>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second: from the file, or the average over the file, or the configured
    /// default for a stream that does not say ([`input::Config::default_fps`]).
    pub fps: f64,
    /// Number of pictures in the file.
    pub frames: u64,
}

/// The audio of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioInfo {
    /// The codec.
    pub codec: AudioCodec,
    /// Samples per second.
    pub sample_rate: u32,
    /// Number of channels.
    pub channels: u16,
    /// Number of packets in the file.
    pub packets: u64,
}

/// What a file holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Info {
    /// The container.
    pub format: Format,
    /// The video track, if any.
    pub video: Option<VideoInfo>,
    /// The audio track, if any.
    pub audio: Option<AudioInfo>,
    /// From the first sample's start to the last sample's end (one pass of a loop).
    pub duration: Duration,
}

/// A file of encoded media, read sample by sample in decode order.
pub trait Source: Send {
    /// What the file holds.
    fn info(&self) -> &Info;

    /// The next sample, or `None` at the end of the file.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Malformed`] naming the file and the sample.
    fn next_sample(&mut self) -> Result<Option<MediaSample>, Error>;

    /// Goes back to the first sample (for `--loop`; see [`input::Looped`], which also
    /// keeps timestamps increasing across passes).
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read again.
    fn rewind(&mut self) -> Result<(), Error>;
}

/// A file of raw pictures, read in order; the publisher encodes them (for example with a
/// [`crate::Ladder`]).
pub trait RawSource: Send {
    /// What the file holds.
    fn info(&self) -> &Info;

    /// The next picture, or `None` at the end of the file.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Malformed`] naming the file and the frame.
    fn next_frame(&mut self) -> Result<Option<RawFrame>, Error>;

    /// Goes back to the first picture.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read again.
    fn rewind(&mut self) -> Result<(), Error>;
}

/// `seconds * num / den` as a [`Duration`], saturating instead of overflowing.
pub(crate) fn ticks_to_duration(ticks: u64, timescale: u32) -> Duration {
    if timescale == 0 {
        return Duration::ZERO;
    }
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(timescale);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// A [`Duration`] in ticks of `timescale` per second, rounded to the nearest tick.
pub(crate) fn duration_to_ticks(d: Duration, timescale: u32) -> u64 {
    let ticks = (d.as_nanos() * u128::from(timescale) + 500_000_000) / 1_000_000_000;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_become_loc_objects_at_start_plus_pts() {
        let s = MediaSample {
            kind: SampleKind::Video {
                codec: Codec::Av1,
                key: true,
                width: 2,
                height: 2,
                config: Some(Bytes::from_static(&[0x81, 0, 0, 0])),
            },
            data: Bytes::from_static(&[1, 2, 3]),
            pts: Duration::from_millis(40),
            duration: Duration::from_millis(40),
        };
        let o = s.to_loc(1_000_000);
        assert_eq!(o.timestamp_us, 1_040_000);
        assert_eq!(o.payload, vec![1, 2, 3]);
        assert_eq!(o.video_config, Some(vec![0x81, 0, 0, 0]));
        assert!(o.key_frame);
    }

    #[test]
    fn tick_conversions_round_trip() {
        assert_eq!(ticks_to_duration(3003, 90_000), Duration::from_nanos(33_366_666));
        assert_eq!(duration_to_ticks(Duration::from_nanos(33_366_666), 90_000), 3003);
        assert_eq!(duration_to_ticks(Duration::from_millis(20), 48_000), 960);
        assert_eq!(ticks_to_duration(5, 0), Duration::ZERO);
        assert_eq!(ticks_to_duration(u64::MAX, 1), Duration::from_nanos(u64::MAX));
    }
}
