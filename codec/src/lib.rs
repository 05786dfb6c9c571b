//! tiermesh codec: the tier ladder.
//!
//! A source picture goes in; every rung of the ladder scales it ([`scale`]), encodes it
//! ([`h264`] with OpenH264, [`av1`] with rav1e) and hands back one [`ladder::EncodedFrame`]
//! per rung, ready to be sent as one LOC object ([`loc`]). Key frames of every rung fall on
//! the same input frame, so group N of every tier covers the same media time. The
//! [`catalog`] module describes the rungs as an MSF catalog; [`opus`] carries 20 ms audio
//! frames with in-band FEC; [`test_pattern`] draws a moving picture with a clock, a frame
//! counter and a machine-readable barcode, plus a tone.
//!
//! This crate does no network I/O and reads no clock: capture times are passed in.

pub mod av1;
pub mod catalog;
pub mod frame;
pub mod h264;
pub mod ladder;
pub mod loc;
pub mod media;
pub mod opus;
pub mod scale;
pub mod test_pattern;

pub use frame::{Audio, I420};
pub use ladder::{Codec, EncodedFrame, Ladder, LadderConfig, Rung};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A picture's size or planes are inconsistent, or a size is unsupported.
    #[error("invalid frame: {0}")]
    InvalidFrame(String),
    /// A configuration value is out of range or contradicts another one.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An encoder refused a setting or failed on a frame.
    #[error("{codec} encoder: {message}")]
    Encode {
        /// Which encoder ("h264", "av1", "opus").
        codec: &'static str,
        /// What it reported.
        message: String,
    },
    /// A decoder rejected its input.
    #[error("{codec} decoder: {message}")]
    Decode {
        /// Which decoder ("h264", "av1", "opus").
        codec: &'static str,
        /// What it reported.
        message: String,
    },
    /// Bytes that should hold a bitstream or a configuration record are malformed.
    #[error("malformed {what}: {message}")]
    Malformed {
        /// What was being parsed ("avcC", "AV1 sequence header", ...).
        what: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

pub(crate) fn malformed(what: &'static str, message: impl Into<String>) -> Error {
    Error::Malformed { what, message: message.into() }
}
