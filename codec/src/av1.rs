//! AV1: rav1e encoder, dav1d decoder, the sequence-header parser behind the `av1C` record
//! and the `av01.P.LLT.DD` codec string.
//!
//! A LOC payload for AV1 is one temporal unit in the low-overhead OBU format, exactly as
//! rav1e writes it; key frames repeat the sequence header in band and carry `av1C` too.

use std::collections::BTreeMap;

use rav1e::config::SpeedSettings;
use rav1e::prelude::{
    ChromaSampling, Config, Context, EncoderConfig as RavConfig, EncoderStatus, FrameParameters,
    FrameType, FrameTypeOverride, Opaque, Rational, SceneDetectionSpeed, Tune,
};

use crate::frame::I420;
use crate::{Error, malformed};

/// The rav1e speed preset that ships: the fastest. Speed 10 with low latency and bit-rate
/// control has been seen elsewhere to write frames that dav1d and libaom reject; with the
/// settings of [`Encoder`] (no scene-cut detection, one frame of RDO lookahead, key frames
/// only where asked) every frame of the tests decodes with both, which the tests check on
/// every run. At speed 10 tiermesh also turns off what its real-time budget cannot afford
/// (see `realtime` in this file); speeds 0 to 9 are rav1e's presets as they are. Speed 9
/// takes more than twice the time for better quality per bit.
pub const DEFAULT_SPEED: u8 = 10;

/// Settings of one AV1 encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderConfig {
    /// Picture width (even).
    pub width: usize,
    /// Picture height (even).
    pub height: usize,
    /// Frames per second the encoder is fed (used by rate control).
    pub fps: f32,
    /// Target bit rate in bits per second.
    pub bitrate: u32,
    /// rav1e speed preset, 0 (slowest) to 10 (fastest); see [`DEFAULT_SPEED`].
    pub speed: u8,
}

/// One encoded AV1 temporal unit.
#[derive(Debug)]
pub struct Packet<T> {
    /// The temporal unit (OBUs with size fields).
    pub data: Vec<u8>,
    /// True for a key frame (a decoder can start here).
    pub key: bool,
    /// The `av1C` record, present on key frames.
    pub config: Option<Vec<u8>>,
    /// What the caller passed in with this frame ([`Encoder::send`]).
    pub tag: T,
}

/// rav1e in low-latency mode: no frame reordering, one-frame RDO lookahead, no scene-cut
/// key frames (the caller decides where groups start).
///
/// rav1e still holds frames back for its lookahead: a packet comes out up to 4 frames after its
/// picture went in (133 ms at 30 fps, measured by the ladder tests), in input order, with
/// the tag its frame was sent with. H.264 has no such delay. A bit-rate change
/// applies from the next key frame: rav1e fixes rate control at creation, so the encoder
/// is drained and rebuilt there.
pub struct Encoder<T> {
    config: EncoderConfig,
    pending_bitrate: Option<u32>,
    ctx: Context<u8>,
    /// Tags of frames sent but not yet out, by sequence number (rav1e's opaque carries the key).
    tags: BTreeMap<u64, T>,
    sent: u64,
}

impl<T> std::fmt::Debug for Encoder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("av1::Encoder")
            .field("config", &self.config)
            .field("sent", &self.sent)
            .finish()
    }
}

fn context(config: &EncoderConfig) -> Result<Context<u8>, Error> {
    let cfg = Config::new().with_encoder_config(rav1e_config(config));
    cfg.new_context().map_err(|e| Error::Config(format!("rav1e: {e}")))
}

/// rav1e's settings for `config`.
fn rav1e_config(config: &EncoderConfig) -> RavConfig {
    let mut enc = RavConfig::with_speed_preset(config.speed);
    enc.width = config.width;
    enc.height = config.height;
    // Frame rate as a rational with millihertz precision (29.97 -> 1000/29970).
    let fps_milli = (f64::from(config.fps) * 1000.0).round() as u64;
    enc.time_base = Rational::new(1000, fps_milli.max(1));
    enc.bit_depth = 8;
    enc.chroma_sampling = ChromaSampling::Cs420;
    enc.bitrate = i32::try_from(config.bitrate).unwrap_or(i32::MAX);
    enc.low_latency = true;
    // With a bit rate set, `quantizer` is the highest quantizer rate control may use; the
    // default (100 of 255) keeps quality so high that low rungs overshoot their rate twice.
    enc.quantizer = 255;
    // Rate control evens out over this many frames: one second, like a VBV for live
    // video (rav1e's default follows the key-frame interval, which here is unbounded and
    // lets it overshoot for many seconds). rav1e's minimum is 12.
    enc.reservoir_frame_delay = Some((config.fps.round() as i32).max(12));
    // Key frames only where the ladder asks: the interval cap is the largest rav1e takes.
    enc.min_key_frame_interval = 0;
    enc.max_key_frame_interval = i32::MAX as u64 / 3;
    enc.speed_settings = SpeedSettings::from_preset(config.speed);
    enc.speed_settings.scene_detection_mode = SceneDetectionSpeed::None;
    // One frame of RDO lookahead, the least rav1e accepts: every extra frame is latency.
    enc.speed_settings.rdo_lookahead_frames = 1;
    if config.speed >= 10 {
        realtime(&mut enc);
    }
    enc
}

/// What speed 10 adds to rav1e's fastest preset so that a 360p and a 180p rung keep up
/// with 30 fps beside a browser on a shared two-core machine (`tiermesh pub --test-pattern
/// --codec av1` in the web client's browser tests): rate is estimated in the transform
/// domain instead of by coding each candidate, CDEF (the constrained directional
/// enhancement filter, a search per 64x64 block) is off, and rav1e is tuned for PSNR, the
/// only tuning under which it also estimates distortion in the transform domain (and skips
/// its psychovisual activity mask). The first two took the noisy 360p test pattern at
/// 500 kbit/s from 21.7 to 12.6 ms of CPU a frame (release build) for 4.2 dB less PSNR
/// (44.6 to 40.4 dB), 180p at 150 kbit/s from 6.4 to 3.6 ms for 3.1 dB. The PSNR tuning
/// took 360p+180p a further 9 % lower in CPU with 0.2 and 0.6 dB more PSNR at the same
/// rates (docs/BENCHMARKS.md, "AV1 test pattern in the publisher"). Every frame still
/// decodes with dav1d and libaom (`codec/tests/ladder_av1.rs`).
fn realtime(enc: &mut RavConfig) {
    // rav1e uses transform-domain distortion only when tuned for PSNR: under its default
    // psychovisual tuning `tx_domain_distortion` is ignored, and every candidate is
    // reconstructed and scored with its CDEF-style distortion and an activity mask.
    enc.tune = Tune::Psnr;
    let s = &mut enc.speed_settings;
    s.transform.tx_domain_distortion = true;
    s.transform.tx_domain_rate = true;
    s.cdef = false;
}

impl<T> Encoder<T> {
    /// Creates an encoder.
    ///
    /// # Errors
    /// [`Error::Config`] for settings rav1e refuses, [`Error::InvalidFrame`] for a bad size.
    pub fn new(config: EncoderConfig) -> Result<Self, Error> {
        I420::new(config.width, config.height)?;
        if config.bitrate == 0 || !(config.fps > 0.0 && config.fps <= 240.0) || config.speed > 10 {
            return Err(Error::Config(format!(
                "av1 bit rate {} / frame rate {} / speed {}",
                config.bitrate, config.fps, config.speed
            )));
        }
        let ctx = context(&config)?;
        Ok(Self { config, pending_bitrate: None, ctx, tags: BTreeMap::new(), sent: 0 })
    }

    /// The current settings (the bit rate shown is the one in force).
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Asks for a new target bit rate; it applies from the next key frame on.
    pub fn set_bitrate(&mut self, bps: u32) {
        self.pending_bitrate = Some(bps.max(1));
    }

    /// Sends one picture (`force_key` makes it a key frame; the first frame always is) and
    /// returns every packet that became ready, oldest first.
    ///
    /// # Errors
    /// [`Error::InvalidFrame`] for a picture of the wrong size, [`Error::Encode`] if rav1e fails.
    pub fn send(&mut self, frame: &I420, force_key: bool, tag: T) -> Result<Vec<Packet<T>>, Error> {
        frame.validate()?;
        if frame.width != self.config.width || frame.height != self.config.height {
            return Err(Error::InvalidFrame(format!(
                "av1 encoder is {}x{}, got {}x{}",
                self.config.width, self.config.height, frame.width, frame.height
            )));
        }
        let mut out = Vec::new();
        let force_key = force_key || self.sent == 0;
        if force_key
            && let Some(bps) = self.pending_bitrate.take()
            && bps != self.config.bitrate
        {
            // Drain what the old context still holds, then start afresh at this key frame.
            self.ctx.flush();
            self.drain(&mut out)?;
            self.config.bitrate = bps;
            self.ctx = context(&self.config)?;
        }
        let mut f = self.ctx.new_frame();
        let cw = frame.chroma_width();
        f.planes[0].copy_from_raw_u8(&frame.y, frame.width, 1);
        f.planes[1].copy_from_raw_u8(&frame.u, cw, 1);
        f.planes[2].copy_from_raw_u8(&frame.v, cw, 1);
        let seq = self.sent;
        self.sent += 1;
        self.tags.insert(seq, tag);
        let params = FrameParameters {
            frame_type_override: if force_key {
                FrameTypeOverride::Key
            } else {
                FrameTypeOverride::No
            },
            opaque: Some(Opaque::new(seq)),
            t35_metadata: Box::new([]),
        };
        self.ctx
            .send_frame((f, params))
            .map_err(|e| Error::Encode { codec: "av1", message: format!("send_frame: {e}") })?;
        self.drain(&mut out)?;
        Ok(out)
    }

    /// Ends the stream: returns the packets of every frame still inside the encoder. The
    /// encoder then starts a new stream (with a key frame) on the next [`Encoder::send`].
    ///
    /// # Errors
    /// [`Error::Encode`] if rav1e fails.
    pub fn flush(&mut self) -> Result<Vec<Packet<T>>, Error> {
        let mut out = Vec::new();
        self.ctx.flush();
        self.drain(&mut out)?;
        if let Some(bps) = self.pending_bitrate.take() {
            self.config.bitrate = bps;
        }
        self.ctx = context(&self.config)?;
        self.sent = 0;
        Ok(out)
    }

    fn drain(&mut self, out: &mut Vec<Packet<T>>) -> Result<(), Error> {
        loop {
            match self.ctx.receive_packet() {
                Ok(p) => {
                    let seq =
                        p.opaque.and_then(|o| o.downcast::<u64>().ok()).map(|b| *b).ok_or_else(
                            || Error::Encode {
                                codec: "av1",
                                message: "packet lost its frame tag".into(),
                            },
                        )?;
                    let tag = self.tags.remove(&seq).ok_or_else(|| Error::Encode {
                        codec: "av1",
                        message: format!("unknown frame tag {seq}"),
                    })?;
                    let key = p.frame_type == FrameType::KEY;
                    let config = if key { Some(av1c_from_temporal_unit(&p.data)?) } else { None };
                    out.push(Packet { data: p.data, key, config, tag });
                }
                Err(EncoderStatus::Encoded) => continue,
                Err(EncoderStatus::NeedMoreData | EncoderStatus::LimitReached) => return Ok(()),
                Err(e) => {
                    return Err(Error::Encode {
                        codec: "av1",
                        message: format!("receive_packet: {e}"),
                    });
                }
            }
        }
    }
}

/// dav1d decoder fed with LOC payloads, one temporal unit at a time, with no frame delay.
pub struct Decoder {
    inner: dav1d::Decoder,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("av1::Decoder")
    }
}

impl Decoder {
    /// Creates a single-threaded decoder that returns each picture as soon as its temporal
    /// unit is in.
    ///
    /// # Errors
    /// [`Error::Decode`] if dav1d fails to start.
    pub fn new() -> Result<Self, Error> {
        let mut settings = dav1d::Settings::new();
        settings.set_n_threads(1);
        settings.set_max_frame_delay(1);
        let inner = dav1d::Decoder::with_settings(&settings)
            .map_err(|e| Error::Decode { codec: "av1", message: e.to_string() })?;
        Ok(Self { inner })
    }

    /// Decodes one temporal unit; returns the picture it shows, if any.
    ///
    /// # Errors
    /// [`Error::Decode`] if dav1d rejects the data, [`Error::InvalidFrame`] for a picture
    /// that is not 8-bit 4:2:0.
    pub fn decode(&mut self, temporal_unit: &[u8]) -> Result<Option<I420>, Error> {
        let err = |e: dav1d::Error| Error::Decode { codec: "av1", message: e.to_string() };
        let mut picture = None;
        let mut result = self.inner.send_data(temporal_unit.to_vec(), None, None, None);
        loop {
            match result {
                Ok(()) => break,
                Err(e) if e.is_again() => {
                    // The decoder wants its output taken before it accepts the rest.
                    match self.inner.get_picture() {
                        Ok(p) => picture = Some(p),
                        Err(e) if e.is_again() => {}
                        Err(e) => return Err(err(e)),
                    }
                    result = self.inner.send_pending_data();
                }
                Err(e) => return Err(err(e)),
            }
        }
        match self.inner.get_picture() {
            Ok(p) => picture = Some(p),
            Err(e) if e.is_again() => {}
            Err(e) => return Err(err(e)),
        }
        picture.map(|p| to_i420(&p)).transpose()
    }
}

fn to_i420(p: &dav1d::Picture) -> Result<I420, Error> {
    use dav1d::PlanarImageComponent::{U, V, Y};
    if p.bit_depth() != 8 || p.pixel_layout() != dav1d::PixelLayout::I420 {
        return Err(Error::InvalidFrame(format!(
            "decoded AV1 picture is {:?} at {} bits, not 8-bit 4:2:0",
            p.pixel_layout(),
            p.bit_depth()
        )));
    }
    let (y, u, v) = (p.plane(Y), p.plane(U), p.plane(V));
    I420::from_planes(
        p.width() as usize,
        p.height() as usize,
        [&y, &u, &v],
        [p.stride(Y) as usize, p.stride(U) as usize, p.stride(V) as usize],
    )
}

/// OBU type of a sequence header.
const OBU_SEQUENCE_HEADER: u8 = 1;

/// One OBU inside a temporal unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Obu<'a> {
    /// `obu_type` (1 sequence header, 2 temporal delimiter, 6 frame, ...).
    pub kind: u8,
    /// The whole OBU, header included.
    pub raw: &'a [u8],
    /// The OBU's payload.
    pub payload: &'a [u8],
}

/// Splits a temporal unit (low-overhead format: every OBU has a size field) into OBUs.
///
/// # Errors
/// [`Error::Malformed`] if an OBU lacks its size field or runs past the end.
pub fn split_obus(data: &[u8]) -> Result<Vec<Obu<'_>>, Error> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let header = data[pos];
        if header & 0x80 != 0 {
            return Err(malformed("AV1 OBU", format!("forbidden bit set at byte {pos}")));
        }
        let kind = (header >> 3) & 0x0f;
        let has_ext = header & 0x04 != 0;
        if header & 0x02 == 0 {
            return Err(malformed("AV1 OBU", format!("OBU at byte {pos} has no size field")));
        }
        let mut p = pos + 1 + usize::from(has_ext);
        let mut size: u64 = 0;
        let mut i = 0;
        loop {
            let b = *data
                .get(p)
                .ok_or_else(|| malformed("AV1 OBU", format!("size cut at byte {p}")))?;
            size |= u64::from(b & 0x7f) << (7 * i);
            p += 1;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            if i == 8 {
                return Err(malformed("AV1 OBU", "size field longer than 8 bytes"));
            }
        }
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| p.checked_add(s))
            .filter(|&e| e <= data.len())
            .ok_or_else(|| {
                malformed("AV1 OBU", format!("OBU of {size} bytes at byte {pos} runs past the end"))
            })?;
        out.push(Obu { kind, raw: &data[pos..end], payload: &data[p..end] });
        pos = end;
    }
    Ok(out)
}

/// The fields of a sequence header that `av1C` and the codec string need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequenceHeader {
    /// `seq_profile` (0 Main, 1 High, 2 Professional).
    pub profile: u8,
    /// `seq_level_idx[0]`.
    pub level: u8,
    /// `seq_tier[0]` (false: Main tier).
    pub high_tier: bool,
    /// 8, 10 or 12.
    pub bit_depth: u8,
    /// `mono_chrome`.
    pub monochrome: bool,
    /// `subsampling_x`.
    pub subsampling_x: bool,
    /// `subsampling_y`.
    pub subsampling_y: bool,
    /// `chroma_sample_position`.
    pub chroma_sample_position: u8,
    /// `max_frame_width_minus_1 + 1`.
    pub max_width: u32,
    /// `max_frame_height_minus_1 + 1`.
    pub max_height: u32,
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Result<bool, Error> {
        let byte = self
            .data
            .get(self.pos / 8)
            .ok_or_else(|| malformed("AV1 sequence header", "truncated"))?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(b == 1)
    }
    fn bits(&mut self, n: u32) -> Result<u32, Error> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | u32::from(self.bit()?);
        }
        Ok(v)
    }
    fn uvlc(&mut self) -> Result<u32, Error> {
        let mut zeros = 0;
        while !self.bit()? {
            zeros += 1;
            if zeros >= 32 {
                return Err(malformed("AV1 sequence header", "uvlc longer than 32 bits"));
            }
        }
        Ok(self.bits(zeros)? + ((1u64 << zeros) - 1) as u32)
    }
}

/// Parses a sequence header OBU payload (AV1 spec 5.5) up to its colour configuration.
///
/// # Errors
/// [`Error::Malformed`] if the payload is truncated.
pub fn parse_sequence_header(payload: &[u8]) -> Result<SequenceHeader, Error> {
    let mut r = Bits { data: payload, pos: 0 };
    let profile = r.bits(3)? as u8;
    let _still_picture = r.bit()?;
    let reduced = r.bit()?;
    let (level, high_tier);
    if reduced {
        level = r.bits(5)? as u8;
        high_tier = false;
    } else {
        let mut decoder_model_info = false;
        let mut buffer_delay_len = 0;
        if r.bit()? {
            // timing_info
            r.bits(32)?;
            r.bits(32)?;
            if r.bit()? {
                r.uvlc()?;
            }
            decoder_model_info = r.bit()?;
            if decoder_model_info {
                buffer_delay_len = r.bits(5)? + 1;
                r.bits(32)?;
                r.bits(5)?;
                r.bits(5)?;
            }
        }
        let initial_display_delay = r.bit()?;
        let op_count = r.bits(5)? + 1;
        let mut first = None;
        for _ in 0..op_count {
            r.bits(12)?;
            let lvl = r.bits(5)? as u8;
            let tier = if lvl > 7 { r.bit()? } else { false };
            if decoder_model_info && r.bit()? {
                r.bits(buffer_delay_len)?;
                r.bits(buffer_delay_len)?;
                r.bit()?;
            }
            if initial_display_delay && r.bit()? {
                r.bits(4)?;
            }
            first.get_or_insert((lvl, tier));
        }
        let (l, t) = first.unwrap_or((0, false));
        level = l;
        high_tier = t;
    }
    let wbits = r.bits(4)? + 1;
    let hbits = r.bits(4)? + 1;
    let max_width = r.bits(wbits)? + 1;
    let max_height = r.bits(hbits)? + 1;
    if !reduced && r.bit()? {
        r.bits(4)?;
        r.bits(3)?;
    }
    r.bits(3)?; // use_128x128_superblock, enable_filter_intra, enable_intra_edge_filter
    if !reduced {
        r.bits(4)?; // interintra, masked compound, warped motion, dual filter
        let order_hint = r.bit()?;
        if order_hint {
            r.bits(2)?; // jnt_comp, ref_frame_mvs
        }
        let force_screen_content = if r.bit()? { 2 } else { r.bits(1)? };
        if force_screen_content > 0 && !r.bit()? {
            r.bit()?; // seq_force_integer_mv
        }
        if order_hint {
            r.bits(3)?;
        }
    }
    r.bits(3)?; // superres, cdef, restoration
    // color_config
    let high_bitdepth = r.bit()?;
    let bit_depth = if profile == 2 && high_bitdepth {
        if r.bit()? { 12 } else { 10 }
    } else if high_bitdepth {
        10
    } else {
        8
    };
    let monochrome = if profile == 1 { false } else { r.bit()? };
    let (mut cp, mut tc, mut mc) = (2, 2, 2);
    if r.bit()? {
        cp = r.bits(8)?;
        tc = r.bits(8)?;
        mc = r.bits(8)?;
    }
    let (subsampling_x, subsampling_y, mut chroma_sample_position) = if monochrome {
        r.bit()?;
        (true, true, 0)
    } else if cp == 1 && tc == 13 && mc == 0 {
        (false, false, 0)
    } else {
        r.bit()?; // color_range
        let (sx, sy) = match profile {
            0 => (true, true),
            1 => (false, false),
            _ if bit_depth == 12 => {
                let sx = r.bit()?;
                (sx, if sx { r.bit()? } else { false })
            }
            _ => (true, false),
        };
        (sx, sy, 0)
    };
    if !monochrome && subsampling_x && subsampling_y {
        chroma_sample_position = r.bits(2)? as u8;
    }
    Ok(SequenceHeader {
        profile,
        level,
        high_tier,
        bit_depth,
        monochrome,
        subsampling_x,
        subsampling_y,
        chroma_sample_position,
        max_width,
        max_height,
    })
}

/// Builds an `AV1CodecConfigurationRecord` (`av1C`) from a sequence header OBU.
///
/// # Errors
/// [`Error::Malformed`] if `obu` is not a sequence header OBU.
pub fn av1c(obu: &Obu<'_>) -> Result<Vec<u8>, Error> {
    if obu.kind != OBU_SEQUENCE_HEADER {
        return Err(malformed("av1C", format!("OBU type {} is not a sequence header", obu.kind)));
    }
    let s = parse_sequence_header(obu.payload)?;
    let mut out = vec![
        0x81,
        (s.profile << 5) | (s.level & 0x1f),
        (u8::from(s.high_tier) << 7)
            | (u8::from(s.bit_depth > 8) << 6)
            | (u8::from(s.bit_depth == 12) << 5)
            | (u8::from(s.monochrome) << 4)
            | (u8::from(s.subsampling_x) << 3)
            | (u8::from(s.subsampling_y) << 2)
            | (s.chroma_sample_position & 3),
        0,
    ];
    out.extend_from_slice(obu.raw);
    Ok(out)
}

/// Builds `av1C` from the sequence header inside a key frame's temporal unit.
///
/// # Errors
/// [`Error::Malformed`] if the temporal unit holds no sequence header.
pub fn av1c_from_temporal_unit(data: &[u8]) -> Result<Vec<u8>, Error> {
    let obus = split_obus(data)?;
    let seq = obus
        .iter()
        .find(|o| o.kind == OBU_SEQUENCE_HEADER)
        .ok_or_else(|| malformed("AV1 key frame", "no sequence header OBU"))?;
    av1c(seq)
}

/// The WebCodecs codec string (`av01.P.LLT.DD`) for an `av1C` record.
///
/// # Errors
/// [`Error::Malformed`] if the record is too short or has the wrong marker.
pub fn codec_string(av1c: &[u8]) -> Result<String, Error> {
    if av1c.len() < 4 || av1c[0] != 0x81 {
        return Err(malformed("av1C", "missing marker/version byte or shorter than 4 bytes"));
    }
    let profile = av1c[1] >> 5;
    let level = av1c[1] & 0x1f;
    let tier = if av1c[2] & 0x80 != 0 { 'H' } else { 'M' };
    let depth = if av1c[2] & 0x40 == 0 {
        8
    } else if av1c[2] & 0x20 != 0 {
        12
    } else {
        10
    };
    Ok(format!("av01.{profile}.{level:02}{tier}.{depth:02}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_10_takes_distortion_in_the_transform_domain() {
        let config =
            EncoderConfig { width: 640, height: 360, fps: 30.0, bitrate: 550_000, speed: 10 };
        let enc = rav1e_config(&config);
        // rav1e honours `tx_domain_distortion` only when tuned for PSNR.
        assert_eq!(enc.tune, Tune::Psnr);
        assert!(enc.speed_settings.transform.tx_domain_distortion);
        assert!(enc.speed_settings.transform.tx_domain_rate && !enc.speed_settings.cdef);
        assert_eq!(rav1e_config(&EncoderConfig { speed: 9, ..config }).tune, Tune::Psychovisual);
    }

    #[test]
    fn obu_splitting_rejects_truncation_without_panicking() {
        // Temporal delimiter (type 2, size 0) followed by a padding OBU claiming 5 bytes.
        let data = [0x12, 0x00, 0x7a, 0x05, 1, 2];
        assert!(split_obus(&data).is_err());
        let ok = split_obus(&data[..2]).unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].kind, 2);
        assert!(split_obus(&[0x0a]).is_err());
    }

    #[test]
    fn codec_string_reads_profile_level_tier_depth() {
        assert_eq!(codec_string(&[0x81, 0x08, 0x0c, 0]).unwrap(), "av01.0.08M.08");
        assert_eq!(codec_string(&[0x81, 0x2d, 0xc0, 0]).unwrap(), "av01.1.13H.10");
        assert!(codec_string(&[0x80, 0, 0, 0]).is_err());
    }

    #[test]
    fn sequence_header_parser_survives_every_truncation() {
        let payload = [0x00, 0x00, 0x00, 0x04, 0x3c, 0xff, 0xbc, 0xff, 0xf9, 0x80, 0x40];
        for cut in 0..payload.len() {
            let _ = parse_sequence_header(&payload[..cut]);
        }
    }
}
