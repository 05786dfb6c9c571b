//! YUV4MPEG2 (Y4M): a text header, then `FRAME` lines each followed by one raw picture.
//!
//! Only 8-bit 4:2:0 (`C420`, `C420jpeg`, `C420paldv`, `C420mpeg2`, or no `C`) with even
//! sides is read: it is what the encoders take. The frame rate is the `F` parameter, else
//! the configured default.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Config;
use crate::frame::I420;
use crate::media::{Error, Format, Info, RawFrame, RawSource, VideoInfo};

const FORMAT: &str = "Y4M";
/// Longest header or `FRAME` line accepted: real ones are a few dozen bytes.
const MAX_LINE: usize = 4096;

pub(crate) struct Reader {
    path: PathBuf,
    file: BufReader<File>,
    info: Info,
    width: usize,
    height: usize,
    /// Frame rate as a fraction.
    rate: (u64, u64),
    /// Offset of every picture's first byte.
    frames: Vec<u64>,
    next: usize,
}

fn malformed(path: &Path, reason: impl Into<String>) -> Error {
    Error::Malformed { path: path.to_path_buf(), format: FORMAT, reason: reason.into() }
}

fn unsupported(path: &Path, reason: impl Into<String>) -> Error {
    Error::Unsupported { path: path.to_path_buf(), format: FORMAT, reason: reason.into() }
}

/// Reads one line up to `\n` (not included); `None` at the end of the file.
fn read_line(path: &Path, r: &mut impl BufRead, what: &str) -> Result<Option<Vec<u8>>, Error> {
    let mut line = Vec::new();
    let n =
        r.take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).map_err(|e| Error::io(path, e))?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(malformed(
            path,
            if line.len() > MAX_LINE {
                format!("{what} is longer than {MAX_LINE} bytes")
            } else {
                format!("{what} is cut off at the end of the file")
            },
        ));
    }
    line.pop();
    Ok(Some(line))
}

impl Reader {
    pub(crate) fn open(path: &Path, config: &Config) -> Result<Self, Error> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut file = BufReader::new(file);
        let header = read_line(path, &mut file, "the header")?
            .ok_or_else(|| malformed(path, "empty file"))?;
        let header =
            String::from_utf8(header).map_err(|_| malformed(path, "the header is not text"))?;
        let mut tokens = header.split(' ');
        if tokens.next() != Some("YUV4MPEG2") {
            return Err(malformed(path, "the header does not start with YUV4MPEG2"));
        }
        let (mut width, mut height, mut rate, mut colour) = (None, None, None, None);
        for t in tokens.filter(|t| !t.is_empty()) {
            let mut chars = t.chars();
            let tag = chars.next();
            let value = chars.as_str();
            match tag {
                Some('W') => {
                    width = Some(
                        value
                            .parse::<usize>()
                            .map_err(|_| malformed(path, format!("bad width {value:?}")))?,
                    )
                }
                Some('H') => {
                    height = Some(
                        value
                            .parse::<usize>()
                            .map_err(|_| malformed(path, format!("bad height {value:?}")))?,
                    )
                }
                Some('F') => {
                    let parsed = value
                        .split_once(':')
                        .and_then(|(n, d)| Some((n.parse::<u64>().ok()?, d.parse::<u64>().ok()?)))
                        .filter(|&(n, d)| n > 0 && d > 0 && n / d <= 1000);
                    rate = Some(
                        parsed
                            .ok_or_else(|| malformed(path, format!("bad frame rate {value:?}")))?,
                    );
                }
                Some('C') => colour = Some(value.to_string()),
                // Interlacing, pixel aspect and extensions do not change how pictures are read.
                _ => {}
            }
        }
        let width = width.ok_or_else(|| malformed(path, "the header has no width (W)"))?;
        let height = height.ok_or_else(|| malformed(path, "the header has no height (H)"))?;
        match colour.as_deref() {
            None | Some("420" | "420jpeg" | "420paldv" | "420mpeg2") => {}
            Some(other) => {
                return Err(unsupported(
                    path,
                    format!("colour space C{other}: only 8-bit 4:2:0 is read"),
                ));
            }
        }
        I420::new(width, height).map_err(|e| unsupported(path, e.to_string()))?;
        let rate = rate.unwrap_or_else(|| {
            // The default as a fraction with millihertz precision.
            (((config.default_fps * 1000.0).round() as u64).max(1), 1000)
        });
        let picture_len = (width * height + 2 * width.div_ceil(2) * height.div_ceil(2)) as u64;

        // Index every frame now, so a cut or damaged file is refused at once.
        let mut frames = Vec::new();
        let mut pos = file.stream_position().map_err(|e| Error::io(path, e))?;
        while let Some(line) = read_line(path, &mut file, &format!("FRAME line {}", frames.len()))?
        {
            if !line.starts_with(b"FRAME") {
                return Err(malformed(
                    path,
                    format!("frame {} at byte {pos} does not start with FRAME", frames.len()),
                ));
            }
            let start = pos + line.len() as u64 + 1;
            if start + picture_len > len {
                return Err(malformed(
                    path,
                    format!(
                        "frame {} at byte {start} needs {picture_len} bytes, only {} remain",
                        frames.len(),
                        len - start.min(len)
                    ),
                ));
            }
            frames.push(start);
            pos = start + picture_len;
            file.seek(SeekFrom::Start(pos)).map_err(|e| Error::io(path, e))?;
        }
        let count = frames.len() as u64;
        let info = Info {
            format: Format::Y4m,
            video: Some(VideoInfo {
                codec: None,
                codec_string: None,
                config: None,
                width: width as u32,
                height: height as u32,
                fps: rate.0 as f64 / rate.1 as f64,
                frames: count,
            }),
            audio: None,
            duration: frame_time(count, rate),
        };
        Ok(Self { path: path.to_path_buf(), file, info, width, height, rate, frames, next: 0 })
    }
}

fn frame_time(index: u64, (num, den): (u64, u64)) -> Duration {
    let nanos = u128::from(index) * u128::from(den) * 1_000_000_000 / u128::from(num);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

impl RawSource for Reader {
    fn info(&self) -> &Info {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<RawFrame>, Error> {
        let Some(&start) = self.frames.get(self.next) else {
            return Ok(None);
        };
        let index = self.next as u64;
        self.next += 1;
        let mut picture = I420::new(self.width, self.height)
            .map_err(|e| unsupported(&self.path, e.to_string()))?;
        let path = &self.path;
        self.file.seek(SeekFrom::Start(start)).map_err(|e| Error::io(path, e))?;
        for plane in [&mut picture.y, &mut picture.u, &mut picture.v] {
            self.file.read_exact(plane).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    malformed(
                        path,
                        format!("frame {index} was cut short while reading (the file shrank)"),
                    )
                } else {
                    Error::io(path, e)
                }
            })?;
        }
        let pts = frame_time(index, self.rate);
        Ok(Some(RawFrame { picture, pts, duration: frame_time(index + 1, self.rate) - pts }))
    }

    fn rewind(&mut self) -> Result<(), Error> {
        self.next = 0;
        Ok(())
    }
}
