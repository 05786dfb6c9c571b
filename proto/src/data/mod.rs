//! The data plane of draft-16 §10: subgroup streams, object datagrams and fetch streams.
//!
//! Every unidirectional MoQT stream starts with a varint type: `0x10..=0x1D` and
//! `0x30..=0x3D` (minus the reserved Subgroup ID mode) open a subgroup stream
//! ([`SubgroupHeader`]), `0x05` a fetch stream ([`FetchHeader`]). Anything else closes the
//! session ([`StreamKind::peek`]). Datagrams carry one object each ([`Datagram`]).
//!
//! Each format has a one-shot decoder working on `&mut &[u8]` (it returns
//! [`Error::Short`] until the input holds the whole value, and consumes nothing then) and a
//! writer that picks the compact wire form. Streams also have an incremental reader
//! ([`SubgroupReader`], [`FetchReader`]) that is fed bytes as they arrive and yields each
//! object as soon as its payload is complete, as a shared [`bytes::Bytes`];
//! [`StreamReader`] picks the right one from the stream type.
//!
//! Errors ([`Error`]) tell the session whether to wait, close the session with a code, or
//! treat the track as malformed. [`Object`] holds the canonical properties of an object
//! whatever form it came in, and [`TrackChecker`] finds the malformed-track conditions that
//! only show across several streams and datagrams of a track.

mod datagram;
mod fetch;
mod object;
mod subgroup;
mod track;

pub use datagram::{Datagram, DatagramBody};
pub use fetch::{
    EndOfRange, FetchHeader, FetchItem, FetchObject, FetchPrior, FetchReader, FetchWriter,
    RangeKind, decode_fetch_stream,
};
pub use object::{Forwarding, Object};
pub use subgroup::{
    SubgroupHeader, SubgroupIdMode, SubgroupObject, SubgroupReader, SubgroupWriter,
    decode_subgroup_stream,
};
pub use track::TrackChecker;

use crate::coding::{DecodeError, TerminationCode, get_varint};

/// Stream type of a FETCH_HEADER (draft-16 §10.4.4).
pub const FETCH_HEADER_TYPE: u64 = 0x05;

/// Why data-plane input could not be used.
///
/// The variants tell the session what to do: wait for bytes, close the session with a code,
/// treat the track as malformed (draft-16 §2.4.2), or cancel a stream that exceeds a local
/// resource limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input ends before the value does: wait for more bytes.
    #[error("need more bytes")]
    Short,
    /// The peer broke a rule whose penalty is closing the session with `code`.
    #[error("session error ({code:?}): {reason}")]
    Session {
        /// The session termination code the draft names.
        code: TerminationCode,
        /// What was wrong, for the log and the reason phrase.
        reason: &'static str,
    },
    /// The track is malformed (draft-16 §2.4.2): a subscriber unsubscribes, a relay ends
    /// downstream subscriptions with PUBLISH_DONE and resets fetch streams with
    /// `MALFORMED_TRACK` (0x12); the offending object must not be cached. The session stays up.
    #[error("malformed track: {reason}")]
    MalformedTrack {
        /// Which condition of §2.4.2 (or of an extension's definition) was met.
        reason: &'static str,
    },
    /// An object or extension block is larger than the configured limit. The draft asks an
    /// endpoint that reaches a resource limit to cancel the stream (§12.1).
    #[error("{what} of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// What was too large ("object payload", "extension headers").
        what: &'static str,
        /// The length the peer announced.
        len: u64,
        /// The configured limit.
        max: u64,
    },
}

impl Error {
    /// A session error with PROTOCOL_VIOLATION.
    pub fn violation(reason: &'static str) -> Self {
        Error::Session { code: TerminationCode::ProtocolViolation, reason }
    }

    /// A malformed-track error.
    pub fn malformed_track(reason: &'static str) -> Self {
        Error::MalformedTrack { reason }
    }

    /// The code to close the session with, if this error closes it.
    ///
    /// [`Error::TooLarge`] answers PROTOCOL_VIOLATION: a peer that sends an object larger
    /// than this endpoint accepts is treated as misbehaving. A session that prefers to only
    /// cancel the stream can match the variant instead. [`Error::MalformedTrack`] and
    /// [`Error::Short`] answer `None`.
    pub fn session_code(&self) -> Option<TerminationCode> {
        match self {
            Error::Session { code, .. } => Some(*code),
            Error::TooLarge { .. } => Some(TerminationCode::ProtocolViolation),
            Error::Short | Error::MalformedTrack { .. } => None,
        }
    }
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Short => Error::Short,
            DecodeError::Malformed { code, reason } => Error::Session { code, reason },
        }
    }
}

/// Why a writer refused to encode: the caller asked for something the draft does not allow.
/// These are bugs in the caller, never peer input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Object IDs on a subgroup stream must strictly increase.
    #[error("object ID {id} does not follow {prev} on this subgroup stream")]
    ObjectIdNotIncreasing {
        /// The previous object ID written.
        prev: u64,
        /// The object ID that was refused.
        id: u64,
    },
    /// The subgroup header was written without the EXTENSIONS bit.
    #[error("object has extensions but the subgroup header says objects carry none")]
    ExtensionsNotAllowed,
    /// Objects whose status is not Normal carry neither extensions nor payload (§10.2.1).
    #[error("an object with status {0:?} must have no payload and no extensions")]
    StatusWithContent(ObjectStatus),
    /// Nothing follows an End of Group or End of Track object on a subgroup stream.
    #[error("object written after an End of Group or End of Track object")]
    AfterEnd,
    /// A status datagram cannot also carry the END_OF_GROUP bit (§10.3.1).
    #[error("a status datagram cannot signal end of group")]
    StatusWithEndOfGroup,
    /// An Immutable Extensions container cannot hold another one (§11).
    #[error("immutable extensions cannot contain immutable extensions")]
    NestedImmutable,
    /// A value does not fit its field.
    #[error("{0} is too large for its field")]
    TooBig(&'static str),
}

/// Object Status (draft-16 §10.2.1.1). Only objects delivered in a subscription carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u64)]
pub enum ObjectStatus {
    /// 0x0: a normal object (implicit for any non-empty payload).
    #[default]
    Normal = 0x0,
    /// 0x3: no object with this Group ID and an Object ID at or above this one exists.
    EndOfGroup = 0x3,
    /// 0x4: no object at or beyond this Location exists in the track.
    EndOfTrack = 0x4,
}

impl ObjectStatus {
    /// The wire value.
    pub fn code(self) -> u64 {
        self as u64
    }

    /// Parses a wire value; any value the draft does not define is a PROTOCOL_VIOLATION.
    pub fn from_code(code: u64) -> Result<Self, Error> {
        match code {
            0x0 => Ok(ObjectStatus::Normal),
            0x3 => Ok(ObjectStatus::EndOfGroup),
            0x4 => Ok(ObjectStatus::EndOfTrack),
            _ => Err(Error::violation("unknown object status")),
        }
    }
}

/// What a unidirectional stream carries, from its first varint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// A subgroup stream; the value is the SUBGROUP_HEADER type.
    Subgroup(u64),
    /// A fetch stream.
    Fetch,
}

impl StreamKind {
    /// Looks at the stream type without consuming it, so the caller can pick a reader.
    /// An unknown stream type closes the session (§10: "MUST close the session"); the
    /// draft names no code, PROTOCOL_VIOLATION is used.
    pub fn peek(buf: &[u8]) -> Result<Self, Error> {
        let mut cur = buf;
        let ty = get_varint(&mut cur)?;
        if ty == FETCH_HEADER_TYPE {
            Ok(StreamKind::Fetch)
        } else if subgroup::valid_type(ty) {
            Ok(StreamKind::Subgroup(ty))
        } else {
            Err(Error::violation("unknown data stream type"))
        }
    }
}

/// Reader of a unidirectional stream whose kind is not known yet: it waits for the
/// stream type, then reads it as a subgroup or a fetch stream. An unknown stream type is
/// a PROTOCOL_VIOLATION.
#[derive(Debug)]
pub struct StreamReader {
    cfg: ReaderConfig,
    state: StreamState,
}

#[derive(Debug)]
enum StreamState {
    Pending(Vec<u8>, bool),
    Subgroup(SubgroupReader, u64),
    Fetch(FetchReader),
    Failed(Error),
}

/// One item of a [`StreamReader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// An object of a subgroup stream.
    Subgroup(SubgroupObject),
    /// An object or End of Range of a fetch stream.
    Fetch(FetchItem),
}

impl Default for StreamReader {
    fn default() -> Self {
        Self::new(ReaderConfig::default())
    }
}

impl StreamReader {
    /// A reader with the given limits.
    pub fn new(cfg: ReaderConfig) -> Self {
        StreamReader { cfg, state: StreamState::Pending(Vec::new(), false) }
    }

    /// Appends bytes received on the stream.
    pub fn handle_bytes(&mut self, data: &[u8]) {
        match &mut self.state {
            StreamState::Subgroup(r, _) => r.handle_bytes(data),
            StreamState::Fetch(r) => r.handle_bytes(data),
            StreamState::Failed(_) => {}
            StreamState::Pending(buf, _) => {
                buf.extend_from_slice(data);
                self.settle();
            }
        }
    }

    /// The stream ended with FIN.
    pub fn handle_fin(&mut self) {
        match &mut self.state {
            StreamState::Subgroup(r, _) => r.handle_fin(),
            StreamState::Fetch(r) => r.handle_fin(),
            StreamState::Failed(_) => {}
            StreamState::Pending(_, fin) => *fin = true,
        }
    }

    fn settle(&mut self) {
        let StreamState::Pending(buf, fin) = &mut self.state else { return };
        let (buf, fin) = (std::mem::take(buf), *fin);
        self.state = match StreamKind::peek(&buf) {
            Err(Error::Short) => StreamState::Pending(buf, fin),
            Err(e) => StreamState::Failed(e),
            Ok(StreamKind::Subgroup(ty)) => {
                let mut r = SubgroupReader::new(self.cfg);
                r.handle_bytes(&buf);
                StreamState::Subgroup(r, ty)
            }
            Ok(StreamKind::Fetch) => {
                let mut r = FetchReader::new(self.cfg);
                r.handle_bytes(&buf);
                StreamState::Fetch(r)
            }
        };
        if fin {
            self.handle_fin();
        }
    }

    /// The stream's kind, once its type has arrived.
    pub fn kind(&self) -> Option<StreamKind> {
        match &self.state {
            StreamState::Subgroup(_, ty) => Some(StreamKind::Subgroup(*ty)),
            StreamState::Fetch(_) => Some(StreamKind::Fetch),
            _ => None,
        }
    }

    /// The subgroup reader, once the stream is known to be a subgroup stream (for its
    /// header and Subgroup ID).
    pub fn subgroup(&self) -> Option<&SubgroupReader> {
        match &self.state {
            StreamState::Subgroup(r, _) => Some(r),
            _ => None,
        }
    }

    /// The fetch reader, once the stream is known to be a fetch stream.
    pub fn fetch(&self) -> Option<&FetchReader> {
        match &self.state {
            StreamState::Fetch(r) => Some(r),
            _ => None,
        }
    }

    /// True once FIN has arrived and every item has been yielded without error.
    pub fn is_finished(&self) -> bool {
        match &self.state {
            StreamState::Subgroup(r, _) => r.is_finished(),
            StreamState::Fetch(r) => r.is_finished(),
            _ => false,
        }
    }

    /// The next item, `None` when more bytes are needed, or the error that ends the stream.
    pub fn poll_object(&mut self) -> Option<Result<StreamItem, Error>> {
        match &mut self.state {
            StreamState::Subgroup(r, _) => r.poll_object().map(|x| x.map(StreamItem::Subgroup)),
            StreamState::Fetch(r) => r.poll_object().map(|x| x.map(StreamItem::Fetch)),
            StreamState::Failed(e) => Some(Err(e.clone())),
            StreamState::Pending(_, true) => {
                let e = Error::violation("stream ended before its type");
                self.state = StreamState::Failed(e.clone());
                Some(Err(e))
            }
            StreamState::Pending(_, false) => None,
        }
    }
}

/// Limits for the incremental readers. Values announced by the peer are checked against
/// them before any byte of the value is buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderConfig {
    max_object_size: usize,
    max_extensions_size: usize,
}

impl Default for ReaderConfig {
    fn default() -> Self {
        ReaderConfig {
            // 16 MiB: far above a 4K key frame at broadcast bitrates (a few MiB), low enough
            // that one hostile stream cannot make a relay hold a large share of its memory.
            max_object_size: 16 << 20,
            // 64 KiB: one key-value pair is at most 2^16-1 bytes (§1.4.2); LOC properties
            // and gap headers take tens of bytes. A video config fits comfortably.
            max_extensions_size: 64 << 10,
        }
    }
}

impl ReaderConfig {
    /// The largest object payload accepted (default 16 MiB).
    pub fn max_object_size(&self) -> usize {
        self.max_object_size
    }

    /// Sets the largest object payload accepted.
    pub fn with_max_object_size(mut self, bytes: usize) -> Self {
        self.max_object_size = bytes;
        self
    }

    /// The largest Extension Headers block accepted (default 64 KiB).
    pub fn max_extensions_size(&self) -> usize {
        self.max_extensions_size
    }

    /// Sets the largest Extension Headers block accepted.
    pub fn with_max_extensions_size(mut self, bytes: usize) -> Self {
        self.max_extensions_size = bytes;
        self
    }
}

/// Reads a Publisher Priority byte.
fn get_priority(buf: &mut &[u8]) -> Result<u8, Error> {
    Ok(crate::coding::get_u8(buf)?)
}

/// Reads the Length-prefixed Extensions structure of an object (§10.2.1.2) and checks its
/// length against `max` before waiting for its bytes.
fn get_object_extensions(buf: &mut &[u8], max: usize) -> Result<crate::ext::Extensions, Error> {
    let len = get_varint(buf)?;
    if len > max as u64 {
        return Err(Error::TooLarge { what: "extension headers", len, max: max as u64 });
    }
    let block = crate::coding::get_bytes(buf, len as usize)?;
    crate::ext::Extensions::decode_object_block(block)
}

#[cfg(test)]
mod tests;
