//! LOC properties (draft-ietf-moq-loc, "LOC Properties"): metadata about a media frame
//! carried as MoQT Object Extension Headers (the LOC Public Properties), visible to relays.
//!
//! | ID | Property | Value |
//! |---:|:---------|:------|
//! | 0x08 | Timescale | varint: timestamp units per second |
//! | 0x09 | Video Frame Marking | 1-4 bytes, RFC 9626 |
//! | 0x0C | Audio Level | varint, low 8 bits as in RFC 6464 §3 |
//! | 0x0D | Video Config | bytes: codec "extradata" |
//! | 0x0F | Audio Config | bytes: codec description |
//! | 0x10 | Timestamp | varint: without Timescale, wall-clock microseconds since the Unix epoch |
//!
//! The LOC draft writes values as "vi64"; inside MoQT draft-16 extension headers every even
//! type carries a QUIC varint, so that is the encoding used here (values up to 2^62-1).
//! Properties are read from the top level first, then from inside Immutable Extensions.
//! Relays never need to understand them: they stay in [`Extensions::other`] and are
//! forwarded unchanged. A malformed LOC property is reported as [`LocError`] to the media
//! layer; it is no transport error.

use bytes::Bytes;

use crate::ext::Extensions;
use crate::kvp::{KeyValue, MAX_VALUE_LEN};

/// LOC property IDs (the MOQ Properties registry entries of draft-ietf-moq-loc).
pub mod id {
    /// Timestamp units per second (Track, Object).
    pub const TIMESCALE: u64 = 0x08;
    /// Video Frame Marking, RFC 9626 (Object).
    pub const VIDEO_FRAME_MARKING: u64 = 0x09;
    /// Audio Level, RFC 6464 (Object).
    pub const AUDIO_LEVEL: u64 = 0x0C;
    /// Video codec configuration (Track, Object).
    pub const VIDEO_CONFIG: u64 = 0x0D;
    /// Audio codec configuration (Track, Object).
    pub const AUDIO_CONFIG: u64 = 0x0F;
    /// Timestamp of the frame (Object).
    pub const TIMESTAMP: u64 = 0x10;
}

/// Why a LOC property could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocError {
    /// Video Frame Marking is not 1 to 4 bytes long.
    #[error("video frame marking of {0} bytes (1 to 4 allowed)")]
    FrameMarkingLength(usize),
    /// Audio Level does not fit its 8 bits.
    #[error("audio level {0} does not fit 8 bits")]
    AudioLevelRange(u64),
    /// Timescale is 0, which gives timestamps no unit.
    #[error("timescale is 0")]
    ZeroTimescale,
    /// A configuration is longer than one extension value can be (2^16-1 bytes).
    #[error("codec configuration of {0} bytes exceeds 65535")]
    ConfigTooLong(usize),
}

/// Video Frame Marking (RFC 9626 §3): flags of one video frame.
///
/// First byte `|S|E|I|D|B| TID |`; for scalable streams a second byte LID and a third byte
/// TL0PICIDX may follow. Non-scalable streams send one byte with B and TID zero. The bytes
/// are kept as received, so a fourth byte survives forwarding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FrameMarking(Bytes);

impl FrameMarking {
    /// Builds the one-byte form for a non-scalable stream.
    pub fn non_scalable(start: bool, end: bool, independent: bool, discardable: bool) -> Self {
        let b = (u8::from(start) << 7)
            | (u8::from(end) << 6)
            | (u8::from(independent) << 5)
            | (u8::from(discardable) << 4);
        FrameMarking(Bytes::copy_from_slice(&[b]))
    }

    /// Builds the scalable form: flags, temporal ID (0-7), layer ID and, when given,
    /// TL0PICIDX.
    pub fn scalable(flags: [bool; 5], tid: u8, lid: u8, tl0picidx: Option<u8>) -> Self {
        let [s, e, i, d, b] = flags;
        let first = (u8::from(s) << 7)
            | (u8::from(e) << 6)
            | (u8::from(i) << 5)
            | (u8::from(d) << 4)
            | (u8::from(b) << 3)
            | (tid & 0x07);
        let mut v = vec![first, lid];
        v.extend(tl0picidx);
        FrameMarking(v.into())
    }

    /// Wraps received bytes (1 to 4).
    pub fn from_bytes(b: Bytes) -> Result<Self, LocError> {
        if b.is_empty() || b.len() > 4 {
            return Err(LocError::FrameMarkingLength(b.len()));
        }
        Ok(FrameMarking(b))
    }

    /// The bytes as sent.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    fn bit(&self, n: u8) -> bool {
        self.0[0] & (0x80 >> n) != 0
    }

    /// S: first packet (here: start) of a frame.
    pub fn start_of_frame(&self) -> bool {
        self.bit(0)
    }

    /// E: end of a frame.
    pub fn end_of_frame(&self) -> bool {
        self.bit(1)
    }

    /// I: the frame is independent (decodable without earlier frames): a key frame.
    pub fn independent(&self) -> bool {
        self.bit(2)
    }

    /// D: the frame can be discarded without hurting later frames.
    pub fn discardable(&self) -> bool {
        self.bit(3)
    }

    /// B: base layer sync point (scalable streams).
    pub fn base_layer_sync(&self) -> bool {
        self.bit(4)
    }

    /// TID: temporal layer ID (0 for non-scalable streams).
    pub fn temporal_id(&self) -> u8 {
        self.0[0] & 0x07
    }

    /// LID: layer ID, present in the scalable form.
    pub fn layer_id(&self) -> Option<u8> {
        self.0.get(1).copied()
    }

    /// TL0PICIDX, present in the long scalable form.
    pub fn tl0_pic_idx(&self) -> Option<u8> {
        self.0.get(2).copied()
    }
}

/// Audio Level (RFC 6464 §3): a voice activity flag and the level in -dBov.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AudioLevel {
    /// V: the frame contains voice.
    pub voice: bool,
    /// Level, 0 (loudest, 0 dBov) to 127 (-127 dBov, silence).
    pub level: u8,
}

impl AudioLevel {
    /// The 8-bit value `|V| level |` carried in the varint.
    pub fn to_byte(self) -> u8 {
        (u8::from(self.voice) << 7) | (self.level & 0x7f)
    }

    /// Reads the varint value; above 255 is an error.
    pub fn from_value(v: u64) -> Result<Self, LocError> {
        let b = u8::try_from(v).map_err(|_| LocError::AudioLevelRange(v))?;
        Ok(AudioLevel { voice: b & 0x80 != 0, level: b & 0x7f })
    }
}

/// The LOC Public Properties of one object (or track).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocProperties {
    /// Timestamp (0x10): with no timescale, wall-clock microseconds since the Unix epoch.
    pub timestamp: Option<u64>,
    /// Timescale (0x08): timestamp units per second; when present the timestamp is media
    /// time with an application-defined epoch.
    pub timescale: Option<u64>,
    /// Video Config (0x0D): codec extradata (e.g. an AVCDecoderConfigurationRecord).
    pub video_config: Option<Bytes>,
    /// Video Frame Marking (0x09).
    pub video_frame_marking: Option<FrameMarking>,
    /// Audio Config (0x0F): codec description.
    pub audio_config: Option<Bytes>,
    /// Audio Level (0x0C).
    pub audio_level: Option<AudioLevel>,
}

impl LocProperties {
    /// Reads the LOC properties of `ext`; absent ones are `None`.
    pub fn from_extensions(ext: &Extensions) -> Result<Self, LocError> {
        let int = |k| ext.find(k).and_then(KeyValue::as_int);
        let bytes = |k| ext.find(k).and_then(KeyValue::as_bytes).cloned();
        let timescale = int(id::TIMESCALE);
        if timescale == Some(0) {
            return Err(LocError::ZeroTimescale);
        }
        Ok(LocProperties {
            timestamp: int(id::TIMESTAMP),
            timescale,
            video_config: bytes(id::VIDEO_CONFIG),
            video_frame_marking: bytes(id::VIDEO_FRAME_MARKING)
                .map(FrameMarking::from_bytes)
                .transpose()?,
            audio_config: bytes(id::AUDIO_CONFIG),
            audio_level: int(id::AUDIO_LEVEL).map(AudioLevel::from_value).transpose()?,
        })
    }

    /// The properties as key-value pairs, sorted by ID.
    pub fn to_pairs(&self) -> Result<Vec<KeyValue>, LocError> {
        let mut out = Vec::new();
        if let Some(v) = self.timescale {
            out.push(KeyValue::int(id::TIMESCALE, v));
        }
        if let Some(v) = &self.video_frame_marking {
            out.push(KeyValue::bytes(id::VIDEO_FRAME_MARKING, v.0.clone()));
        }
        if let Some(v) = self.audio_level {
            out.push(KeyValue::int(id::AUDIO_LEVEL, v.to_byte().into()));
        }
        for (k, v) in
            [(id::VIDEO_CONFIG, &self.video_config), (id::AUDIO_CONFIG, &self.audio_config)]
        {
            if let Some(v) = v {
                if v.len() > MAX_VALUE_LEN {
                    return Err(LocError::ConfigTooLong(v.len()));
                }
                out.push(KeyValue::bytes(k, v.clone()));
            }
        }
        if let Some(v) = self.timestamp {
            out.push(KeyValue::int(id::TIMESTAMP, v));
        }
        crate::kvp::sort(&mut out);
        Ok(out)
    }

    /// Writes the properties into `ext` (top level), replacing any LOC property there.
    pub fn apply(&self, ext: &mut Extensions) -> Result<(), LocError> {
        let pairs = self.to_pairs()?;
        for k in [
            id::TIMESCALE,
            id::VIDEO_FRAME_MARKING,
            id::AUDIO_LEVEL,
            id::VIDEO_CONFIG,
            id::AUDIO_CONFIG,
            id::TIMESTAMP,
        ] {
            ext.remove(k);
        }
        ext.other.extend(pairs);
        Ok(())
    }

    /// The wall-clock capture time in microseconds since the Unix epoch: the Timestamp when
    /// no Timescale makes it media time.
    pub fn capture_timestamp_us(&self) -> Option<u64> {
        if self.timescale.is_some() { None } else { self.timestamp }
    }

    /// The timestamp converted to microseconds of its own timeline (media time when a
    /// timescale is present, wall clock otherwise).
    pub fn timestamp_us(&self) -> Option<u64> {
        let ts = self.timestamp?;
        match self.timescale {
            None => Some(ts),
            Some(0) => None,
            Some(scale) => u64::try_from(u128::from(ts) * 1_000_000 / u128::from(scale)).ok(),
        }
    }
}

/// The wall-clock capture time of an object in microseconds since the Unix epoch, read
/// straight from its extensions (no allocation): what a relay needs to measure age.
/// `None` when there is no Timestamp or a Timescale turns it into media time.
pub fn capture_timestamp_us(ext: &Extensions) -> Option<u64> {
    if ext.find(id::TIMESCALE).is_some() {
        return None;
    }
    ext.find(id::TIMESTAMP).and_then(KeyValue::as_int)
}

/// Sets the Timestamp (wall-clock microseconds) of an object, replacing an earlier one.
pub fn set_capture_timestamp_us(ext: &mut Extensions, us: u64) {
    ext.set(KeyValue::int(id::TIMESTAMP, us));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(hex_str: &str) -> Extensions {
        Extensions::decode_object_block(&hex::decode(hex_str).unwrap()).unwrap()
    }

    fn encoded(p: &LocProperties) -> String {
        let mut ext = Extensions::default();
        p.apply(&mut ext).unwrap();
        let mut out = Vec::new();
        ext.encode_block(&mut out);
        hex::encode(out)
    }

    #[test]
    fn timestamp_fixture() {
        // 0x10 Timestamp (delta 0x10), value 1746104606044000 us = 0x6_3412_A8C8_AF60 needs an
        // 8-byte varint: c0 06 34 12 a8 c8 af 60.
        let hex_str = "10c0063412a8c8af60";
        let ext = block(hex_str);
        let p = LocProperties::from_extensions(&ext).unwrap();
        assert_eq!(p.timestamp, Some(1_746_104_606_044_000));
        assert_eq!(p.capture_timestamp_us(), Some(1_746_104_606_044_000));
        assert_eq!(capture_timestamp_us(&ext), Some(1_746_104_606_044_000));
        assert_eq!(encoded(&p), hex_str);
    }

    #[test]
    fn timescale_fixture_makes_timestamp_media_time() {
        // 0x08 Timescale (delta 08) = 90000 = 4-byte 0x80015f90;
        // 0x10 Timestamp (delta 08) = 180000 = 4-byte 0x8002bf20.
        let hex_str = "0880015f90088002bf20";
        let ext = block(hex_str);
        let p = LocProperties::from_extensions(&ext).unwrap();
        assert_eq!(p.timescale, Some(90_000));
        assert_eq!(p.capture_timestamp_us(), None, "media time is not wall clock");
        assert_eq!(capture_timestamp_us(&ext), None);
        assert_eq!(p.timestamp_us(), Some(2_000_000));
        assert_eq!(encoded(&p), hex_str);
    }

    #[test]
    fn video_config_fixture() {
        // 0x0D Video Config (delta 0d), length 4, bytes 01 42 c0 1e.
        let hex_str = "0d040142c01e";
        let p = LocProperties::from_extensions(&block(hex_str)).unwrap();
        assert_eq!(p.video_config.as_deref(), Some(&[0x01, 0x42, 0xc0, 0x1e][..]));
        assert_eq!(encoded(&p), hex_str);
    }

    #[test]
    fn audio_config_fixture() {
        // 0x0F Audio Config (delta 0f), length 2, bytes 11 90.
        let hex_str = "0f021190";
        let p = LocProperties::from_extensions(&block(hex_str)).unwrap();
        assert_eq!(p.audio_config.as_deref(), Some(&[0x11, 0x90][..]));
        assert_eq!(encoded(&p), hex_str);
    }

    #[test]
    fn frame_marking_fixture() {
        // 0x09 Video Frame Marking (delta 09), length 1, S=1 E=1 I=1 D=0 -> 0b1110_0000.
        let hex_str = "0901e0";
        let p = LocProperties::from_extensions(&block(hex_str)).unwrap();
        let fm = p.video_frame_marking.clone().unwrap();
        assert!(fm.start_of_frame() && fm.end_of_frame() && fm.independent());
        assert!(!fm.discardable() && !fm.base_layer_sync());
        assert_eq!(fm, FrameMarking::non_scalable(true, true, true, false));
        assert_eq!(encoded(&p), hex_str);
        // Scalable, length 3: S=1 E=0 I=0 D=1 B=1 TID=2 -> 0b1001_1010, LID 1, TL0PICIDX 7.
        let hex_str = "09039a0107";
        let p = LocProperties::from_extensions(&block(hex_str)).unwrap();
        let fm = p.video_frame_marking.clone().unwrap();
        assert_eq!((fm.temporal_id(), fm.layer_id(), fm.tl0_pic_idx()), (2, Some(1), Some(7)));
        assert!(fm.discardable() && fm.base_layer_sync() && !fm.independent());
        assert_eq!(fm, FrameMarking::scalable([true, false, false, true, true], 2, 1, Some(7)));
        assert_eq!(encoded(&p), hex_str);
    }

    #[test]
    fn audio_level_fixture() {
        // 0x0C Audio Level (delta 0c), V=1 level=30 -> 0x9e, a 2-byte varint 0x409e.
        let hex_str = "0c409e";
        let p = LocProperties::from_extensions(&block(hex_str)).unwrap();
        assert_eq!(p.audio_level, Some(AudioLevel { voice: true, level: 30 }));
        assert_eq!(encoded(&p), hex_str);
    }

    #[test]
    fn all_properties_delta_encoded_in_id_order() {
        // 0x08 = 48000 (delta 08, 0x8000bb80), 0x0C = 0x1e (delta 04, 1e),
        // 0x0F len 1 "ab" (delta 03, 01 ab), 0x10 = 960 (delta 01, 0x43c0).
        let hex_str = "088000bb80041e0301ab0143c0";
        let p = LocProperties::from_extensions(&block(hex_str)).unwrap();
        assert_eq!(
            p,
            LocProperties {
                timestamp: Some(960),
                timescale: Some(48_000),
                audio_config: Some(Bytes::from_static(&[0xab])),
                audio_level: Some(AudioLevel { voice: false, level: 30 }),
                ..Default::default()
            }
        );
        assert_eq!(encoded(&p), hex_str);
    }

    #[test]
    fn properties_inside_immutable_are_found() {
        // 0x0B immutable, length 2 { 0x10 Timestamp (delta 10) = 0x25 }.
        let ext = block("0b021025");
        assert_eq!(capture_timestamp_us(&ext), Some(0x25));
    }

    #[test]
    fn bad_values_are_loc_errors() {
        assert_eq!(
            LocProperties::from_extensions(&block("0900")),
            Err(LocError::FrameMarkingLength(0))
        );
        assert_eq!(
            LocProperties::from_extensions(&block("090501020304 05".replace(' ', "").as_str())),
            Err(LocError::FrameMarkingLength(5))
        );
        assert_eq!(
            LocProperties::from_extensions(&block("0c4100")),
            Err(LocError::AudioLevelRange(256))
        );
        assert_eq!(LocProperties::from_extensions(&block("0800")), Err(LocError::ZeroTimescale));
    }

    #[test]
    fn set_capture_timestamp_replaces() {
        let mut ext = Extensions::default();
        set_capture_timestamp_us(&mut ext, 5);
        set_capture_timestamp_us(&mut ext, 7);
        assert_eq!(capture_timestamp_us(&ext), Some(7));
        assert_eq!(ext.other.len(), 1);
    }
}
