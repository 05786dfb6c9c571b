//! H.264 Annex B elementary streams: NAL units after `00 00 01` start codes.
//!
//! The file is scanned once when opened: NAL units are grouped into access units (a new
//! one starts at an access unit delimiter, SEI, SPS or PPS after a picture's slices, or at
//! a slice with `first_mb_in_slice == 0`), IDR pictures mark key frames, and every SPS/PPS
//! pair becomes an avcC record ([`crate::h264::avcc`]). Samples leave in the "avc"
//! packaging: 4-byte NAL lengths, parameter sets and delimiters removed, the avcC on key
//! frames. Size comes from the SPS (cropping applied); the frame rate from its VUI timing
//! if present, else [`Config::default_fps`]. Pictures are timed in decode order at that
//! rate: streams with B-frames get decode times, not presentation times.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use super::Config;
use crate::h264;
use crate::ladder::Codec;
use crate::media::bits::{BitReader, unescape_rbsp};
use crate::media::{Error, Format, Info, MediaSample, SampleKind, Source, VideoInfo};

const FORMAT: &str = "H.264 Annex B";
/// Largest parameter set kept (the avcC stores lengths in 16 bits).
const MAX_PARAMETER_SET: usize = 0xffff;
/// Largest access unit accepted, so a file without start codes cannot exhaust memory.
const MAX_ACCESS_UNIT: u64 = 64 << 20;

const NAL_SLICE: u8 = 1;
const NAL_IDR: u8 = 5;
const NAL_SEI: u8 = 6;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;
const NAL_FILLER: u8 = 12;

/// What the SPS says that matters here.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Sps {
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// Frames per second from the VUI timing information, if present.
    pub(crate) fps: Option<f64>,
}

/// Parses an SPS NAL unit (header byte included) far enough for size and frame rate.
pub(crate) fn parse_sps(nal: &[u8]) -> Option<Sps> {
    let rbsp = unescape_rbsp(nal.get(1..)?);
    let mut r = BitReader::new(&rbsp);
    let profile = r.bits(8)?;
    r.skip(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    let mut separate_planes = false;
    if matches!(profile, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        chroma_format = r.ue()?;
        if chroma_format == 3 {
            separate_planes = r.bit()?;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? {
            for i in 0..if chroma_format == 3 { 12 } else { 8 } {
                if r.bit()? {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i64, 8i64);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + r.se()? + 256).rem_euclid(256);
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            let cycle = r.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.bit()?;
    if !frame_mbs_only {
        r.bit()?;
    }
    r.bit()?; // direct_8x8_inference_flag
    let (mut crop_l, mut crop_r, mut crop_t, mut crop_b) = (0u64, 0u64, 0u64, 0u64);
    if r.bit()? {
        crop_l = r.ue()?.into();
        crop_r = r.ue()?.into();
        crop_t = r.ue()?.into();
        crop_b = r.ue()?.into();
    }
    let chroma_array = if separate_planes { 0 } else { chroma_format };
    let (sub_w, sub_h) = match chroma_array {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let field = if frame_mbs_only { 1 } else { 2 };
    let (unit_x, unit_y) = if chroma_array == 0 { (1, field) } else { (sub_w, sub_h * field) };
    let width = (width_mbs * 16).checked_sub(unit_x * (crop_l + crop_r))?;
    let height = (height_units * 16 * field).checked_sub(unit_y * (crop_t + crop_b))?;
    let mut fps = None;
    if r.bit()? {
        fps = parse_vui_timing(&mut r);
    }
    Some(Sps { width: u32::try_from(width).ok()?, height: u32::try_from(height).ok()?, fps })
}

fn parse_vui_timing(r: &mut BitReader<'_>) -> Option<f64> {
    if r.bit()? {
        // aspect_ratio_info_present_flag
        if r.bits(8)? == 255 {
            r.skip(32)?;
        }
    }
    if r.bit()? {
        r.bit()?; // overscan_appropriate_flag
    }
    if r.bit()? {
        r.skip(4)?; // video_format, video_full_range_flag
        if r.bit()? {
            r.skip(24)?;
        }
    }
    if r.bit()? {
        r.ue()?;
        r.ue()?;
    }
    if !r.bit()? {
        return None;
    }
    let num_units_in_tick = r.bits(32)?;
    let time_scale = r.bits(32)?;
    if num_units_in_tick == 0 || time_scale == 0 {
        return None;
    }
    // One frame is two ticks (the tick counts fields).
    let fps = f64::from(time_scale) / (2.0 * f64::from(num_units_in_tick));
    (fps > 0.0 && fps <= 1000.0).then_some(fps)
}

/// One access unit found by the scan.
struct Unit {
    /// From the first NAL's first byte to the last NAL's last byte.
    start: u64,
    end: u64,
    key: bool,
    /// Index into `configs` of the parameter sets in force.
    config: Option<usize>,
}

/// An avcC with the size its SPS describes.
struct ParamSet {
    avcc: Bytes,
    width: u32,
    height: u32,
}

pub(crate) struct Reader {
    path: PathBuf,
    file: BufReader<File>,
    info: Info,
    units: Vec<Unit>,
    configs: Vec<ParamSet>,
    frame: Duration,
    next: usize,
}

fn malformed(path: &Path, reason: impl Into<String>) -> Error {
    Error::Malformed { path: path.to_path_buf(), format: FORMAT, reason: reason.into() }
}

/// Builds access units from NAL units as the scanner finds them.
struct Scanner {
    units: Vec<Unit>,
    configs: Vec<ParamSet>,
    /// The access unit being built: start, end, has a slice, has an IDR slice.
    current: Option<(u64, u64, bool, bool)>,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    /// Whether the SPS/PPS changed since the last avcC was built.
    params_changed: bool,
    first_sps: Option<Sps>,
}

impl Scanner {
    fn close_unit(&mut self, path: &Path) -> Result<(), Error> {
        let Some((start, end, has_slice, key)) = self.current.take() else {
            return Ok(());
        };
        if !has_slice {
            // Parameter sets or SEI with no picture after them (the end of the stream).
            return Ok(());
        }
        if key && self.params_changed {
            let (Some(sps), Some(pps)) = (&self.sps, &self.pps) else {
                return Err(malformed(
                    path,
                    format!(
                        "IDR picture {} at byte {start} has no SPS and PPS before it",
                        self.units.len()
                    ),
                ));
            };
            let avcc = h264::avcc(sps, pps)
                .map_err(|e| malformed(path, format!("at byte {start}: {e}")))?;
            let parsed = parse_sps(sps).ok_or_else(|| {
                malformed(path, format!("the SPS before byte {start} cannot be parsed"))
            })?;
            self.first_sps.get_or_insert(parsed);
            self.configs.push(ParamSet {
                avcc: Bytes::from(avcc),
                width: parsed.width,
                height: parsed.height,
            });
            self.params_changed = false;
        }
        let config = if self.configs.is_empty() { None } else { Some(self.configs.len() - 1) };
        self.units.push(Unit { start, end, key, config });
        Ok(())
    }

    /// A NAL unit from `start` to `end` (start code excluded) with its first two bytes.
    fn nal(
        &mut self,
        path: &Path,
        start: u64,
        end: u64,
        head: [u8; 2],
        body: Option<Vec<u8>>,
    ) -> Result<(), Error> {
        let kind = head[0] & 0x1f;
        let has_slice = self.current.is_some_and(|c| c.2);
        let new_unit = match kind {
            NAL_SLICE | NAL_IDR => has_slice && head[1] & 0x80 != 0,
            NAL_SEI | NAL_SPS | NAL_PPS | NAL_AUD | 14..=18 => has_slice,
            _ => false,
        };
        if new_unit {
            self.close_unit(path)?;
        }
        match kind {
            NAL_SPS | NAL_PPS => {
                let body = body.ok_or_else(|| {
                    malformed(
                        path,
                        format!(
                            "parameter set at byte {start} is larger than {MAX_PARAMETER_SET} bytes"
                        ),
                    )
                })?;
                let slot = if kind == NAL_SPS { &mut self.sps } else { &mut self.pps };
                if slot.as_deref() != Some(&body[..]) {
                    *slot = Some(body);
                    self.params_changed = true;
                }
            }
            _ => {}
        }
        let c = self.current.get_or_insert((start, end, false, false));
        c.1 = end;
        c.2 |= matches!(kind, NAL_SLICE | NAL_IDR);
        c.3 |= kind == NAL_IDR;
        if c.1 - c.0 > MAX_ACCESS_UNIT {
            return Err(malformed(
                path,
                format!("access unit at byte {} is larger than {MAX_ACCESS_UNIT} bytes", c.0),
            ));
        }
        Ok(())
    }
}

/// A NAL unit being scanned: start offset, its first two bytes, how many bytes were seen,
/// and its bytes if it is a parameter set.
type OpenNal = (u64, [u8; 2], usize, Option<Vec<u8>>);

/// Hands a finished NAL unit to the scanner; `zeros` bytes at its end were the start of
/// the next start code (or trailing zeros) and are dropped from a kept parameter set.
fn finish_nal(
    scanner: &mut Scanner,
    path: &Path,
    start: u64,
    end: u64,
    head: [u8; 2],
    mut body: Option<Vec<u8>>,
    zeros: u64,
) -> Result<(), Error> {
    if end <= start {
        return Ok(());
    }
    if let Some(v) = body.as_mut() {
        let keep = v.len().saturating_sub(usize::try_from(zeros).unwrap_or(usize::MAX));
        v.truncate(keep);
        if v.len() > MAX_PARAMETER_SET {
            body = None;
        }
    }
    scanner.nal(path, start, end, head, body)
}

impl Reader {
    pub(crate) fn open(path: &Path, config: &Config) -> Result<Self, Error> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut file = BufReader::with_capacity(1 << 20, file);
        let mut scanner = Scanner {
            units: Vec::new(),
            configs: Vec::new(),
            current: None,
            sps: None,
            pps: None,
            params_changed: false,
            first_sps: None,
        };

        // Byte-wise scan for start codes. `zeros` counts the zero bytes just seen; a NAL
        // unit ends where the zeros of the next start code begin.
        let mut pos: u64 = 0;
        let mut zeros: u64 = 0;
        // The NAL unit being read: start offset, first two bytes seen so far, and its
        // bytes if it is a parameter set.
        let mut nal: Option<OpenNal> = None;
        let mut seen_start_code = false;
        loop {
            let buf = file.fill_buf().map_err(|e| Error::io(path, e))?;
            if buf.is_empty() {
                break;
            }
            let n = buf.len();
            for &b in buf {
                if b == 1 && zeros >= 2 {
                    if let Some((start, head, got, body)) = nal.take()
                        && got > 0
                    {
                        finish_nal(&mut scanner, path, start, pos - zeros, head, body, zeros)?;
                    }
                    seen_start_code = true;
                    nal = Some((pos + 1, [0, 0], 0, None));
                    zeros = 0;
                    pos += 1;
                    continue;
                }
                if !seen_start_code && b != 0 {
                    return Err(malformed(
                        path,
                        format!("byte {pos} comes before the first start code"),
                    ));
                }
                zeros = if b == 0 { zeros + 1 } else { 0 };
                if let Some((_, head, got, body)) = nal.as_mut() {
                    if *got < 2 {
                        head[*got] = b;
                        if *got == 0 {
                            if b & 0x80 != 0 {
                                return Err(malformed(
                                    path,
                                    format!("NAL unit at byte {pos} has its forbidden bit set"),
                                ));
                            }
                            if matches!(b & 0x1f, NAL_SPS | NAL_PPS) {
                                *body = Some(Vec::new());
                            }
                        }
                    }
                    *got += 1;
                    if let Some(v) = body {
                        if v.len() < MAX_PARAMETER_SET + 4 {
                            v.push(b);
                        } else {
                            *body = None;
                        }
                    }
                }
                pos += 1;
            }
            file.consume(n);
        }
        if let Some((start, head, got, body)) = nal.take()
            && got > 0
        {
            // Trailing zero bytes at the end of the file belong to no NAL unit.
            finish_nal(&mut scanner, path, start, pos - zeros, head, body, zeros)?;
        }
        if !seen_start_code {
            return Err(malformed(path, "no start code found"));
        }
        scanner.close_unit(path)?;
        let Scanner { units, configs, first_sps, .. } = scanner;
        if units.is_empty() {
            return Err(malformed(path, "no picture (no slice NAL unit) in the stream"));
        }
        let first =
            first_sps.ok_or_else(|| malformed(path, "no SPS and PPS before any IDR picture"))?;
        let fps = first.fps.unwrap_or(config.default_fps);
        let frame = Duration::try_from_secs_f64(1.0 / fps).unwrap_or(Duration::from_secs(1));
        let count = units.len() as u64;
        let avcc = configs.first().map(|c| c.avcc.clone());
        let info = Info {
            format: Format::AnnexB,
            video: Some(VideoInfo {
                codec: Some(Codec::H264),
                codec_string: avcc.as_deref().and_then(|c| h264::codec_string(c).ok()),
                config: avcc,
                width: first.width,
                height: first.height,
                fps,
                frames: count,
            }),
            audio: None,
            duration: frame * u32::try_from(count).unwrap_or(u32::MAX),
        };
        Ok(Self { path: path.to_path_buf(), file, info, units, configs, frame, next: 0 })
    }
}

impl Source for Reader {
    fn info(&self) -> &Info {
        &self.info
    }

    fn next_sample(&mut self) -> Result<Option<MediaSample>, Error> {
        let index = self.next;
        let Some(unit) = self.units.get(index) else {
            return Ok(None);
        };
        self.next += 1;
        let path = &self.path;
        // Read from three bytes before the first NAL unit: its start code, so the whole
        // access unit splits like a stream.
        let from = unit.start.saturating_sub(3);
        let mut raw = vec![0u8; (unit.end - from) as usize];
        self.file.seek(SeekFrom::Start(from)).map_err(|e| Error::io(path, e))?;
        self.file.read_exact(&mut raw).map_err(|e| Error::io(path, e))?;
        let mut data = Vec::with_capacity(raw.len() + 16);
        for nal in h264::split_annexb(&raw) {
            if matches!(nal[0] & 0x1f, NAL_SPS | NAL_PPS | NAL_AUD | NAL_FILLER) {
                continue;
            }
            data.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            data.extend_from_slice(nal);
        }
        let params = unit.config.and_then(|i| self.configs.get(i));
        let (width, height) = params.map_or((0, 0), |p| (p.width, p.height));
        let pts = self.frame * u32::try_from(index).unwrap_or(u32::MAX);
        Ok(Some(MediaSample {
            kind: SampleKind::Video {
                codec: Codec::H264,
                key: unit.key,
                width,
                height,
                config: if unit.key { params.map(|p| p.avcc.clone()) } else { None },
            },
            data: Bytes::from(data),
            pts,
            duration: self.frame,
        }))
    }

    fn rewind(&mut self) -> Result<(), Error> {
        self.next = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sps_size_crop_and_timing() {
        // x264 High profile 160x90 at 25 fps (timing_info 1/50): 10x6 macroblocks cropped
        // by 6 lines at the bottom, emulation prevention bytes inside.
        let sps = [
            0x67, 0x64, 0x00, 0x0b, 0xac, 0xd9, 0x42, 0x8d, 0xf9, 0x30, 0x11, 0x00, 0x00, 0x03,
            0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x32, 0x0f, 0x14, 0x29, 0x96,
        ];
        let parsed = parse_sps(&sps).expect("parses");
        assert_eq!((parsed.width, parsed.height), (160, 90));
        assert_eq!(parsed.fps, Some(25.0));
        for cut in 0..sps.len() {
            let _ = parse_sps(&sps[..cut]);
        }
    }
}
