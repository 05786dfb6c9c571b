//! Opening media files: the format is told by the file's signature, else by its extension.
//!
//! | format | signature | extensions | yields |
//! |---|---|---|---|
//! | Y4M | `YUV4MPEG2 ` | `.y4m` | [`RawFrame`]s (8-bit 4:2:0) |
//! | IVF (AV1) | `DKIF` | `.ivf` | AV1 temporal units |
//! | H.264 Annex B | `00 00 01` / `00 00 00 01` | `.h264`, `.264`, `.avc` | H.264 access units |
//! | MP4 | a box type (`ftyp`, `moov`, ...) at byte 4 | `.mp4`, `.m4v`, `.mov` | H.264 or AV1 video, Opus audio |
//!
//! [`Looped`] plays a source over and over with timestamps that keep increasing
//! (`tiermesh pub --loop`).

mod annexb;
mod ivf;
mod mp4;
mod y4m;

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use super::{Error, Format, Info, MediaSample, RawFrame, RawSource, Source};

/// How files are read: `Default` plus chained setters.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Frame rate of streams that do not state one: an Annex B stream without VUI timing,
    /// a Y4M file without an `F` parameter.
    pub default_fps: f64,
}

impl Default for Config {
    fn default() -> Self {
        // 30 fps: what cameras and the tiermesh ladder use by default.
        Self { default_fps: 30.0 }
    }
}

impl Config {
    /// Sets the frame rate assumed for streams that do not state one.
    pub fn default_fps(mut self, fps: f64) -> Self {
        self.default_fps = fps;
        self
    }
}

/// An opened file: encoded samples, or raw pictures to encode.
pub enum Input {
    /// IVF, Annex B or MP4: encoded samples ready to send.
    Encoded(Box<dyn Source>),
    /// Y4M: raw pictures.
    Raw(Box<dyn RawSource>),
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Encoded(s) => write!(f, "Input::Encoded({:?})", s.info()),
            Input::Raw(s) => write!(f, "Input::Raw({:?})", s.info()),
        }
    }
}

impl Input {
    /// What the file holds.
    pub fn info(&self) -> &Info {
        match self {
            Input::Encoded(s) => s.info(),
            Input::Raw(s) => s.info(),
        }
    }

    /// The same input played in an endless loop ([`Looped`]).
    pub fn looped(self) -> Input {
        match self {
            Input::Encoded(s) => Input::Encoded(Box::new(Looped::new(s))),
            Input::Raw(s) => Input::Raw(Box::new(Looped::new(s))),
        }
    }

    /// The encoded source, or `None` for raw pictures.
    pub fn into_encoded(self) -> Option<Box<dyn Source>> {
        match self {
            Input::Encoded(s) => Some(s),
            Input::Raw(_) => None,
        }
    }

    /// The raw source, or `None` for encoded samples.
    pub fn into_raw(self) -> Option<Box<dyn RawSource>> {
        match self {
            Input::Raw(s) => Some(s),
            Input::Encoded(_) => None,
        }
    }
}

/// Opens a media file with the default [`Config`].
///
/// # Errors
/// [`Error::Io`] if the file cannot be read, [`Error::UnknownFormat`] if it is none of the
/// formats above, [`Error::Malformed`] / [`Error::Unsupported`] if its headers or frame
/// index are bad.
pub fn open(path: impl AsRef<Path>) -> Result<Input, Error> {
    open_with(path, &Config::default())
}

/// Opens a media file.
///
/// # Errors
/// As [`open`].
pub fn open_with(path: impl AsRef<Path>, config: &Config) -> Result<Input, Error> {
    let path = path.as_ref();
    if !(0.001..=1000.0).contains(&config.default_fps) {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            format: "input",
            reason: format!("default frame rate {} is outside [0.001, 1000]", config.default_fps),
        });
    }
    let format = detect(path)?;
    tracing::debug!(path = %path.display(), ?format, "opening media file");
    Ok(match format {
        Format::Y4m => Input::Raw(Box::new(y4m::Reader::open(path, config)?)),
        Format::Ivf => Input::Encoded(Box::new(ivf::Reader::open(path)?)),
        Format::AnnexB => Input::Encoded(Box::new(annexb::Reader::open(path, config)?)),
        Format::Mp4 => Input::Encoded(Box::new(mp4::Reader::open(path)?)),
    })
}

/// Box types that can start an MP4 file.
const MP4_FIRST_BOXES: [&[u8; 4]; 7] =
    [b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"styp"];

/// Tells the format from the first bytes, else from the extension.
pub fn detect(path: &Path) -> Result<Format, Error> {
    let mut head = Vec::with_capacity(16);
    File::open(path)
        .and_then(|f| f.take(16).read_to_end(&mut head))
        .map_err(|e| Error::io(path, e))?;
    if head.is_empty() {
        return Err(Error::UnknownFormat {
            path: path.to_path_buf(),
            reason: "the file is empty".into(),
        });
    }
    if head.starts_with(b"YUV4MPEG2") {
        return Ok(Format::Y4m);
    }
    if head.starts_with(b"DKIF") {
        return Ok(Format::Ivf);
    }
    if head.len() >= 8 && MP4_FIRST_BOXES.iter().any(|b| &head[4..8] == *b) {
        return Ok(Format::Mp4);
    }
    if head.starts_with(&[0, 0, 1]) || head.starts_with(&[0, 0, 0, 1]) {
        return Ok(Format::AnnexB);
    }
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let by_ext = match ext.as_deref() {
        Some("y4m") => Some(Format::Y4m),
        Some("ivf") => Some(Format::Ivf),
        Some("h264" | "264" | "avc") => Some(Format::AnnexB),
        Some("mp4" | "m4v" | "mov") => Some(Format::Mp4),
        _ => None,
    };
    let shown: String =
        head.iter().take(8).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
    match by_ext {
        // The extension names a format but the signature is missing: say so plainly rather
        // than letting a parser trip over the first bytes.
        Some(format) => Err(Error::Malformed {
            path: path.to_path_buf(),
            format: format_name(format),
            reason: format!("the file starts with {shown}, not {}", signature(format)),
        }),
        None => Err(Error::UnknownFormat {
            path: path.to_path_buf(),
            reason: format!(
                "unknown format (starts with {shown}); tiermesh reads Y4M, IVF (AV1), H.264 Annex B and MP4"
            ),
        }),
    }
}

fn signature(format: Format) -> &'static str {
    match format {
        Format::Y4m => "a YUV4MPEG2 header",
        Format::Ivf => "an IVF DKIF signature",
        Format::AnnexB => "an H.264 start code (00 00 01)",
        Format::Mp4 => "an MP4 box (ftyp, moov, ...)",
    }
}

pub(crate) fn format_name(format: Format) -> &'static str {
    match format {
        Format::Y4m => "Y4M",
        Format::Ivf => "IVF",
        Format::AnnexB => "H.264 Annex B",
        Format::Mp4 => "MP4",
    }
}

/// Plays a source over and over: at the end it rewinds and shifts the timestamps of the
/// next pass by the length of the passes before, so time keeps going forward. An empty
/// pass ends the loop (no busy spinning on a file with nothing to play).
pub struct Looped<S> {
    inner: S,
    /// Added to every timestamp of the current pass.
    offset: Duration,
    /// The latest end (pts + duration) seen in the current pass.
    pass_end: Duration,
    /// Whether the current pass yielded anything.
    yielded: bool,
    /// Completed passes.
    passes: u64,
}

impl<S> Looped<S> {
    /// Wraps a source.
    pub fn new(inner: S) -> Self {
        Self { inner, offset: Duration::ZERO, pass_end: Duration::ZERO, yielded: false, passes: 0 }
    }

    /// Number of passes completed so far.
    pub fn passes(&self) -> u64 {
        self.passes
    }

    fn note(&mut self, pts: Duration, duration: Duration) {
        self.yielded = true;
        self.pass_end = self.pass_end.max(pts.saturating_add(duration));
    }

    fn restart(&mut self) {
        self.offset = Duration::ZERO;
        self.pass_end = Duration::ZERO;
        self.yielded = false;
        self.passes = 0;
    }

    /// Ends a pass; returns false if it was empty (the loop stops).
    fn end_pass(&mut self) -> bool {
        if !self.yielded {
            return false;
        }
        self.offset = self.offset.saturating_add(self.pass_end);
        self.pass_end = Duration::ZERO;
        self.yielded = false;
        self.passes += 1;
        true
    }
}

impl Source for Looped<Box<dyn Source>> {
    fn info(&self) -> &Info {
        self.inner.info()
    }

    fn next_sample(&mut self) -> Result<Option<MediaSample>, Error> {
        // Two tries: the rest of this pass, then the start of the next.
        for _ in 0..2 {
            if let Some(mut s) = self.inner.next_sample()? {
                self.note(s.pts, s.duration);
                s.pts = s.pts.saturating_add(self.offset);
                return Ok(Some(s));
            }
            if !self.end_pass() {
                return Ok(None);
            }
            self.inner.rewind()?;
        }
        Ok(None)
    }

    fn rewind(&mut self) -> Result<(), Error> {
        self.restart();
        self.inner.rewind()
    }
}

impl RawSource for Looped<Box<dyn RawSource>> {
    fn info(&self) -> &Info {
        self.inner.info()
    }

    fn next_frame(&mut self) -> Result<Option<RawFrame>, Error> {
        for _ in 0..2 {
            if let Some(mut f) = self.inner.next_frame()? {
                self.note(f.pts, f.duration);
                f.pts = f.pts.saturating_add(self.offset);
                return Ok(Some(f));
            }
            if !self.end_pass() {
                return Ok(None);
            }
            self.inner.rewind()?;
        }
        Ok(None)
    }

    fn rewind(&mut self) -> Result<(), Error> {
        self.restart();
        self.inner.rewind()
    }
}
