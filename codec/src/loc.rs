//! What the encoder knows about each LOC object (draft-ietf-moq-loc).
//!
//! The wire encoding of LOC properties lives with the MoQT object model; this module only
//! names the property IDs and gathers their values for one encoded frame.

/// LOC property ID of the capture Timestamp (vi64, microseconds since the Unix epoch when no
/// Timescale property is present).
pub const TIMESTAMP: u64 = 0x10;
/// LOC property ID of Video Config (length-prefixed bytes: avcC or av1C).
pub const VIDEO_CONFIG: u64 = 0x0d;
/// LOC property ID of Audio Config.
pub const AUDIO_CONFIG: u64 = 0x0f;

/// The LOC view of one encoded frame: payload plus the properties the encoder can fill in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    /// LOC Payload: the codec's "internal data" (length-prefixed NAL units for `avc1`, a
    /// temporal unit for `av01`, one Opus packet for `opus`).
    pub payload: Vec<u8>,
    /// Timestamp property: wall-clock capture time in microseconds.
    pub timestamp_us: u64,
    /// Video Config property: the decoder configuration record, set on key frames.
    pub video_config: Option<Vec<u8>>,
    /// True if a decoder can start at this object (a new group starts here).
    pub key_frame: bool,
}
