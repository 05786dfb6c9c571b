//! Errors of the scheduler's inputs. They all mean the caller broke the stream life cycle;
//! none comes from network input.

use super::types::{StreamKey, TrackKey};

/// A call the scheduler refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `open_stream` with a key that is already open.
    #[error("stream {0:?} is already open")]
    DuplicateStream(StreamKey),
    /// A key that was never opened, or whose stream already ended (`Finish`, `Reset` or
    /// `Abandon` was returned for it): the object belongs to a dropped subgroup.
    #[error("stream {0:?} is not open")]
    UnknownStream(StreamKey),
    /// `push_object` after `finish_stream`.
    #[error("stream {0:?} was already finished")]
    Finished(StreamKey),
    /// `open_stream` for a subgroup whose earlier stream was reset or abandoned: the draft
    /// says not to open a new stream for it.
    #[error("subgroup {subgroup} of group {group} of {track:?} was dropped; no new stream for it")]
    SubgroupAbandoned {
        /// The track.
        track: TrackKey,
        /// The Group ID.
        group: u64,
        /// The Subgroup ID.
        subgroup: u64,
    },
}
