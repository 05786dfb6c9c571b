//! IVF with AV1: a 32-byte file header (`DKIF`, codec `AV01`, size, time base), then frames
//! of a 12-byte header (size, timestamp, little-endian) and one temporal unit each.
//!
//! Key frames are told from the OBUs: a temporal unit whose first frame header is a shown
//! `KEY_FRAME` (or any frame of a reduced still-picture sequence). The av1C record comes
//! from the sequence header in band (the codec crate's [`crate::av1::av1c`]).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use crate::av1::{self, split_obus};
use crate::ladder::Codec;
use crate::media::{Error, Format, Info, MediaSample, SampleKind, Source, VideoInfo};

const FORMAT: &str = "IVF";
/// Largest frame accepted: far above any real AV1 temporal unit, small enough that a
/// damaged size field cannot exhaust memory.
const MAX_FRAME: u32 = 64 << 20;

const OBU_SEQUENCE_HEADER: u8 = 1;
const OBU_FRAME_HEADER: u8 = 3;
const OBU_FRAME: u8 = 6;

struct Entry {
    /// Offset of the temporal unit's first byte.
    offset: u64,
    size: u32,
    timestamp: u64,
}

pub(crate) struct Reader {
    path: PathBuf,
    file: BufReader<File>,
    info: Info,
    /// Seconds per timestamp tick as a fraction.
    time_base: (u64, u64),
    frames: Vec<Entry>,
    next: usize,
    first_timestamp: u64,
    width: u32,
    height: u32,
    /// The av1C of the latest sequence header seen.
    config: Option<Bytes>,
}

fn malformed(path: &Path, reason: impl Into<String>) -> Error {
    Error::Malformed { path: path.to_path_buf(), format: FORMAT, reason: reason.into() }
}

/// What the OBUs of one AV1 temporal unit say.
pub(crate) struct TemporalUnit {
    /// A decoder can start here.
    pub(crate) key: bool,
    /// av1C built from the sequence header in this unit, if it has one.
    pub(crate) config: Option<Vec<u8>>,
    /// That sequence header.
    pub(crate) sequence: Option<av1::SequenceHeader>,
}

/// Reads the OBU headers of a temporal unit (low-overhead format).
pub(crate) fn inspect_temporal_unit(data: &[u8]) -> Result<TemporalUnit, crate::Error> {
    let mut reduced_still_picture = false;
    let mut config = None;
    let mut sequence = None;
    let mut key = None;
    for obu in split_obus(data)? {
        match obu.kind {
            OBU_SEQUENCE_HEADER => {
                // seq_profile (3 bits), still_picture (1), reduced_still_picture_header (1).
                reduced_still_picture = obu.payload.first().is_some_and(|b| b & 0x08 != 0);
                sequence = Some(av1::parse_sequence_header(obu.payload)?);
                config = Some(av1::av1c(&obu)?);
            }
            OBU_FRAME_HEADER | OBU_FRAME if key.is_none() => {
                key = Some(if reduced_still_picture {
                    true
                } else {
                    // show_existing_frame (1 bit), then frame_type (2 bits, 0 = KEY_FRAME).
                    let b = *obu
                        .payload
                        .first()
                        .ok_or_else(|| crate::malformed("AV1 frame header", "empty"))?;
                    b & 0x80 == 0 && (b >> 5) & 3 == 0
                });
            }
            _ => {}
        }
    }
    Ok(TemporalUnit { key: key.unwrap_or(false), config, sequence })
}

impl Reader {
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut file = BufReader::new(file);
        let mut header = [0u8; 32];
        file.read_exact(&mut header).map_err(|_| {
            malformed(path, format!("the file header needs 32 bytes, the file has {len}"))
        })?;
        if &header[0..4] != b"DKIF" {
            return Err(malformed(path, "no DKIF signature"));
        }
        let le16 = |i: usize| u16::from_le_bytes([header[i], header[i + 1]]);
        let le32 =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let header_len = u64::from(le16(6)).max(32);
        let fourcc = &header[8..12];
        if fourcc != b"AV01" {
            return Err(Error::Unsupported {
                path: path.to_path_buf(),
                format: FORMAT,
                reason: format!(
                    "codec {:?}: only AV1 (AV01) is read from IVF",
                    String::from_utf8_lossy(fourcc)
                ),
            });
        }
        let (width, height) = (u32::from(le16(12)), u32::from(le16(14)));
        // The header holds the time base as denominator, then numerator.
        let (den, num) = (u64::from(le32(16)), u64::from(le32(20)));
        if den == 0 || num == 0 {
            return Err(malformed(path, format!("time base {num}/{den}")));
        }

        let mut frames = Vec::new();
        let mut pos = header_len;
        while pos < len {
            if len - pos < 12 {
                return Err(malformed(
                    path,
                    format!(
                        "frame {} header at byte {pos} is cut off ({} of 12 bytes)",
                        frames.len(),
                        len - pos
                    ),
                ));
            }
            file.seek(SeekFrom::Start(pos)).map_err(|e| Error::io(path, e))?;
            let mut fh = [0u8; 12];
            file.read_exact(&mut fh).map_err(|e| Error::io(path, e))?;
            let size = u32::from_le_bytes([fh[0], fh[1], fh[2], fh[3]]);
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&fh[4..12]);
            let timestamp = u64::from_le_bytes(ts);
            if size == 0 || size > MAX_FRAME {
                return Err(malformed(
                    path,
                    format!("frame {} at byte {pos} has size {size}", frames.len()),
                ));
            }
            let offset = pos + 12;
            if offset + u64::from(size) > len {
                return Err(malformed(
                    path,
                    format!(
                        "frame {} at byte {pos} needs {size} bytes, only {} remain",
                        frames.len(),
                        len - offset
                    ),
                ));
            }
            if let Some(prev) = frames.last().map(|e: &Entry| e.timestamp)
                && timestamp < prev
            {
                return Err(malformed(
                    path,
                    format!("frame {} timestamp {timestamp} goes back from {prev}", frames.len()),
                ));
            }
            frames.push(Entry { offset, size, timestamp });
            pos = offset + u64::from(size);
        }
        let first_timestamp = frames.first().map_or(0, |e| e.timestamp);
        let mut this = Self {
            path: path.to_path_buf(),
            file,
            info: Info { format: Format::Ivf, video: None, audio: None, duration: Duration::ZERO },
            time_base: (num, den),
            frames,
            next: 0,
            first_timestamp,
            width,
            height,
            config: None,
        };

        // The first frame tells the av1C (and the size, if the header left it out).
        let mut config = None;
        if !this.frames.is_empty() {
            let data = this.read(0)?;
            let tu = inspect_temporal_unit(&data)
                .map_err(|e| malformed(path, format!("frame 0: {e}")))?;
            if let Some(s) = tu.sequence
                && (this.width == 0 || this.height == 0)
            {
                this.width = s.max_width;
                this.height = s.max_height;
            }
            config = tu.config.map(Bytes::from);
        }
        let count = this.frames.len() as u64;
        let span = match (this.frames.first(), this.frames.last()) {
            (Some(a), Some(b)) => b.timestamp - a.timestamp,
            _ => 0,
        };
        // Average frame interval in ticks (one tick if the file has a single frame).
        let interval_ticks = if count > 1 { span as f64 / (count - 1) as f64 } else { 1.0 };
        let tick = num as f64 / den as f64;
        let fps = if interval_ticks > 0.0 {
            1.0 / (interval_ticks * tick)
        } else {
            den as f64 / num as f64
        };
        this.info = Info {
            format: Format::Ivf,
            video: Some(VideoInfo {
                codec: Some(Codec::Av1),
                codec_string: config.as_deref().and_then(|c| av1::codec_string(c).ok()),
                config,
                width: this.width,
                height: this.height,
                fps,
                frames: count,
            }),
            audio: None,
            duration: if count == 0 {
                Duration::ZERO
            } else {
                Duration::try_from_secs_f64(count as f64 / fps).unwrap_or(Duration::MAX)
            },
        };
        Ok(this)
    }

    fn read(&mut self, index: usize) -> Result<Vec<u8>, Error> {
        let e = &self.frames[index];
        let mut data = vec![0u8; e.size as usize];
        let path = &self.path;
        self.file.seek(SeekFrom::Start(e.offset)).map_err(|e| Error::io(path, e))?;
        self.file.read_exact(&mut data).map_err(|e| Error::io(path, e))?;
        Ok(data)
    }

    fn time(&self, timestamp: u64) -> Duration {
        let (num, den) = self.time_base;
        let ticks = u128::from(timestamp - self.first_timestamp);
        let nanos = ticks * u128::from(num) * 1_000_000_000 / u128::from(den);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

impl Source for Reader {
    fn info(&self) -> &Info {
        &self.info
    }

    fn next_sample(&mut self) -> Result<Option<MediaSample>, Error> {
        let index = self.next;
        if index >= self.frames.len() {
            return Ok(None);
        }
        self.next += 1;
        let data = self.read(index)?;
        let tu = inspect_temporal_unit(&data)
            .map_err(|e| malformed(&self.path, format!("frame {index}: {e}")))?;
        if let Some(c) = tu.config {
            self.config = Some(Bytes::from(c));
        }
        let pts = self.time(self.frames[index].timestamp);
        let duration = match self.frames.get(index + 1) {
            Some(n) => self.time(n.timestamp) - pts,
            None => {
                let fps = self.info.video.as_ref().map_or(30.0, |v| v.fps);
                Duration::try_from_secs_f64(1.0 / fps).unwrap_or(Duration::ZERO)
            }
        };
        Ok(Some(MediaSample {
            kind: SampleKind::Video {
                codec: Codec::Av1,
                key: tu.key,
                width: self.width,
                height: self.height,
                config: if tu.key { self.config.clone() } else { None },
            },
            data: Bytes::from(data),
            pts,
            duration,
        }))
    }

    fn rewind(&mut self) -> Result<(), Error> {
        self.next = 0;
        Ok(())
    }
}
