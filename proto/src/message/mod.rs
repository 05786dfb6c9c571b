//! Control messages (draft-16 §9): one struct per message, the [`Message`] enum over all of
//! them, and the framing `Type (i), Length (16), Payload (..)`.
//!
//! [`Message::decode`] never panics: it returns [`DecodeError::Short`] until a whole frame is
//! present and [`DecodeError::Malformed`] with the draft's termination code for anything that
//! must close the session. A payload is parsed only within its length, and nothing is
//! reserved from a count the peer sent.
//!
//! Rules enforced here: unknown message type, length mismatch, unknown or repeated message
//! parameter (extension parameters allowed through [`Message::decode_with`]), parameter
//! values out of range, namespace field count and lengths, name and reason-phrase limits,
//! key-value lengths and delta overflow, Token structure, Fetch Type, End Of Track,
//! Subscribe Options, Track Extension values, SETUP PATH/AUTHORITY syntax, PATH or
//! AUTHORITY from a server, DELETE/USE_ALIAS tokens in CLIENT_SETUP.
//!
//! Rules that need session state stay with the session: Request ID order and parity and
//! the Maximum Request ID, duplicate track aliases, token alias registration and cache size,
//! repeated GOAWAY and a GOAWAY URI sent to a server, PATH/AUTHORITY over WebTransport, a
//! decreasing MAX_REQUEST_ID, REQUEST_UPDATE parameters against the request they update
//! ([`MessageParams::check_update`]), tokens repeated after alias resolution, and which
//! stream a message may arrive on.

use bytes::BufMut;

use crate::coding::{Decode, DecodeError, Encode, get_bytes, get_u16, get_varint, put_varint};
use crate::ext::Extensions;
use crate::types::RequestId;

mod control;
mod fetch;
mod namespace;
pub mod params;
mod publish;
pub mod setup;
mod subscribe;

#[cfg(test)]
mod tests;

pub use control::{
    GoAway, MAX_GOAWAY_URI_LEN, MaxRequestId, RequestError, RequestErrorCode, RequestOk,
    RequestsBlocked,
};
pub use fetch::{Fetch, FetchCancel, FetchOk, FetchType, JoiningFetch, StandaloneFetch};
pub use namespace::{
    Namespace, NamespaceDone, PublishNamespace, PublishNamespaceCancel, PublishNamespaceDone,
    SubscribeNamespace, SubscribeOptions,
};
pub use params::{AliasType, AuthToken, MessageParams, TokenValue, UpdateTarget};
pub use publish::{Publish, PublishDone, PublishDoneCode, PublishOk, STREAM_COUNT_UNKNOWN};
pub use setup::{ClientSetup, ServerSetup, SetupParams};
pub use subscribe::{RequestUpdate, Subscribe, SubscribeOk, TrackStatus, Unsubscribe};

/// The largest control message payload: its length is a 16-bit field.
pub const MAX_PAYLOAD_LEN: usize = u16::MAX as usize;

/// Why a message could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The payload is longer than the 16-bit Length field can state.
    #[error("{message:?} payload of {len} bytes exceeds 65535")]
    TooLong {
        /// The message type.
        message: MessageType,
        /// The payload length it would have had.
        len: usize,
    },
}

/// One message's payload codec. Implemented by every message struct.
pub(crate) trait Payload: Sized {
    /// The message type code.
    const TYPE: MessageType;
    /// Appends the payload (without type and length).
    fn encode_payload(&self, buf: &mut Vec<u8>);
    /// Reads the payload from exactly the frame's payload bytes; `ext` lists the parameter
    /// types of extensions negotiated in SETUP.
    fn decode_payload(buf: &mut &[u8], ext: &[u64]) -> Result<Self, DecodeError>;
}

/// A control message frame cut from the stream, its payload not yet parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The Message Type as received (possibly one negotiated by an extension).
    pub message_type: u64,
    /// Exactly `Length` bytes of payload.
    pub payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Cuts one frame from the front of `buf`, or `Short` (leaving `buf` untouched) until the
    /// whole frame is present. The type is not checked: this is the hook for message types
    /// negotiated by an extension; [`Message::decode`] is the usual entry point.
    pub fn read(buf: &mut &'a [u8]) -> Result<Self, DecodeError> {
        let mut cur = *buf;
        let message_type = get_varint(&mut cur)?;
        let len = get_u16(&mut cur)?;
        let payload = get_bytes(&mut cur, usize::from(len))?;
        *buf = cur;
        Ok(Frame { message_type, payload })
    }
}

macro_rules! messages {
    ($($(#[$doc:meta])* $name:ident = $code:literal, $wire:literal,)*) => {
        /// A control message type code (draft-16 §9, the Message Types table).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum MessageType {
            $($(#[$doc])* $name,)*
        }

        impl MessageType {
            /// The wire value.
            pub fn code(self) -> u64 {
                match self {
                    $(MessageType::$name => $code,)*
                }
            }

            /// The message type for a wire value, if draft-16 defines it.
            pub fn from_code(v: u64) -> Option<Self> {
                match v {
                    $($code => Some(MessageType::$name),)*
                    _ => None,
                }
            }

            /// The draft's name, such as `SUBSCRIBE_OK`, for logs and reason phrases.
            pub fn name(self) -> &'static str {
                match self {
                    $(MessageType::$name => $wire,)*
                }
            }
        }

        impl std::fmt::Display for MessageType {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        /// Any draft-16 control message.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Message {
            $($(#[$doc])* $name($name),)*
        }

        impl Message {
            /// The message's type.
            pub fn message_type(&self) -> MessageType {
                match self {
                    $(Message::$name(_) => MessageType::$name,)*
                }
            }

            fn encode_payload(&self, buf: &mut Vec<u8>) {
                match self {
                    $(Message::$name(m) => m.encode_payload(buf),)*
                }
            }

            fn decode_typed(
                t: MessageType,
                buf: &mut &[u8],
                ext: &[u64],
            ) -> Result<Self, DecodeError> {
                match t {
                    $(MessageType::$name => $name::decode_payload(buf, ext).map(Message::$name),)*
                }
            }
        }

        $(
            impl From<$name> for Message {
                fn from(m: $name) -> Self {
                    Message::$name(m)
                }
            }

            impl Encode for $name {
                /// Writes the whole frame (type, length, payload).
                ///
                /// # Panics
                /// If the payload exceeds 65535 bytes; use [`Message::try_encode`] to get an
                /// error instead.
                fn encode<B: BufMut>(&self, buf: &mut B) {
                    let mut payload = Vec::new();
                    self.encode_payload(&mut payload);
                    put_frame(buf, MessageType::$name, &payload)
                        .expect("control message payload exceeds 65535 bytes");
                }
            }
        )*
    };
}

messages! {
    /// CLIENT_SETUP (0x20).
    ClientSetup = 0x20, "CLIENT_SETUP",
    /// SERVER_SETUP (0x21).
    ServerSetup = 0x21, "SERVER_SETUP",
    /// GOAWAY (0x10).
    GoAway = 0x10, "GOAWAY",
    /// MAX_REQUEST_ID (0x15).
    MaxRequestId = 0x15, "MAX_REQUEST_ID",
    /// REQUESTS_BLOCKED (0x1A).
    RequestsBlocked = 0x1A, "REQUESTS_BLOCKED",
    /// REQUEST_OK (0x7).
    RequestOk = 0x7, "REQUEST_OK",
    /// REQUEST_ERROR (0x5).
    RequestError = 0x5, "REQUEST_ERROR",
    /// SUBSCRIBE (0x3).
    Subscribe = 0x3, "SUBSCRIBE",
    /// SUBSCRIBE_OK (0x4).
    SubscribeOk = 0x4, "SUBSCRIBE_OK",
    /// REQUEST_UPDATE (0x2).
    RequestUpdate = 0x2, "REQUEST_UPDATE",
    /// UNSUBSCRIBE (0xA).
    Unsubscribe = 0xA, "UNSUBSCRIBE",
    /// PUBLISH (0x1D).
    Publish = 0x1D, "PUBLISH",
    /// PUBLISH_OK (0x1E).
    PublishOk = 0x1E, "PUBLISH_OK",
    /// PUBLISH_DONE (0xB).
    PublishDone = 0xB, "PUBLISH_DONE",
    /// FETCH (0x16).
    Fetch = 0x16, "FETCH",
    /// FETCH_OK (0x18).
    FetchOk = 0x18, "FETCH_OK",
    /// FETCH_CANCEL (0x17).
    FetchCancel = 0x17, "FETCH_CANCEL",
    /// TRACK_STATUS (0xD).
    TrackStatus = 0xD, "TRACK_STATUS",
    /// PUBLISH_NAMESPACE (0x6).
    PublishNamespace = 0x6, "PUBLISH_NAMESPACE",
    /// NAMESPACE (0x8).
    Namespace = 0x8, "NAMESPACE",
    /// PUBLISH_NAMESPACE_DONE (0x9).
    PublishNamespaceDone = 0x9, "PUBLISH_NAMESPACE_DONE",
    /// NAMESPACE_DONE (0xE).
    NamespaceDone = 0xE, "NAMESPACE_DONE",
    /// PUBLISH_NAMESPACE_CANCEL (0xC).
    PublishNamespaceCancel = 0xC, "PUBLISH_NAMESPACE_CANCEL",
    /// SUBSCRIBE_NAMESPACE (0x11).
    SubscribeNamespace = 0x11, "SUBSCRIBE_NAMESPACE",
}

fn put_frame<B: BufMut>(buf: &mut B, t: MessageType, payload: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(payload.len())
        .map_err(|_| EncodeError::TooLong { message: t, len: payload.len() })?;
    put_varint(buf, t.code());
    buf.put_u16(len);
    buf.put_slice(payload);
    Ok(())
}

impl MessageType {
    /// True for the messages that open a new request and so take the sender's next Request
    /// ID (draft-16 §9.1): SUBSCRIBE, FETCH, REQUEST_UPDATE, SUBSCRIBE_NAMESPACE, PUBLISH,
    /// PUBLISH_NAMESPACE and TRACK_STATUS.
    pub fn is_request(self) -> bool {
        use MessageType::*;
        matches!(
            self,
            Subscribe
                | Fetch
                | RequestUpdate
                | SubscribeNamespace
                | Publish
                | PublishNamespace
                | TrackStatus
        )
    }
}

impl Message {
    /// The message's Request ID field: the new ID for a request (see
    /// [`MessageType::is_request`]), the referenced ID for responses and other messages.
    /// `None` for messages without one (SETUP, GOAWAY, MAX_REQUEST_ID, REQUESTS_BLOCKED,
    /// NAMESPACE, NAMESPACE_DONE).
    pub fn request_id(&self) -> Option<RequestId> {
        use Message::*;
        Some(match self {
            ClientSetup(_) | ServerSetup(_) | GoAway(_) | MaxRequestId(_) | RequestsBlocked(_)
            | Namespace(_) | NamespaceDone(_) => return None,
            RequestOk(m) => m.request_id,
            RequestError(m) => m.request_id,
            Subscribe(m) => m.request_id,
            SubscribeOk(m) => m.request_id,
            RequestUpdate(m) => m.request_id,
            Unsubscribe(m) => m.request_id,
            Publish(m) => m.request_id,
            PublishOk(m) => m.request_id,
            PublishDone(m) => m.request_id,
            Fetch(m) => m.request_id,
            FetchOk(m) => m.request_id,
            FetchCancel(m) => m.request_id,
            TrackStatus(m) => m.request_id,
            PublishNamespace(m) => m.request_id,
            PublishNamespaceDone(m) => m.request_id,
            PublishNamespaceCancel(m) => m.request_id,
            SubscribeNamespace(m) => m.request_id,
        })
    }

    /// Reads one message from the front of `buf`, allowing no extension parameters.
    ///
    /// `Short` (with `buf` untouched) until the whole frame is present; an unknown message
    /// type closes with PROTOCOL_VIOLATION as soon as the type is read; a payload that ends
    /// before its fields or has bytes left after them closes with PROTOCOL_VIOLATION.
    pub fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        Self::decode_with(buf, &[])
    }

    /// Like [`Self::decode`], also accepting (and keeping raw) message parameters of the
    /// types in `extension_params`, which extensions negotiated in SETUP define.
    pub fn decode_with(buf: &mut &[u8], extension_params: &[u64]) -> Result<Self, DecodeError> {
        let mut cur = *buf;
        let code = get_varint(&mut cur)?;
        if MessageType::from_code(code).is_none() {
            return Err(DecodeError::violation("unknown control message type"));
        }
        let frame = Frame::read(buf)?;
        Self::decode_payload(frame.message_type, frame.payload, extension_params)
    }

    /// Parses a payload already cut by [`Frame::read`]. Every byte of `payload` must belong
    /// to the message: fewer or more closes with PROTOCOL_VIOLATION.
    pub fn decode_payload(
        message_type: u64,
        payload: &[u8],
        extension_params: &[u64],
    ) -> Result<Self, DecodeError> {
        let t = MessageType::from_code(message_type)
            .ok_or(DecodeError::violation("unknown control message type"))?;
        let mut cur = payload;
        let m = Self::decode_typed(t, &mut cur, extension_params).map_err(|e| match e {
            DecodeError::Short => {
                DecodeError::violation("control message length shorter than its payload")
            }
            e => e,
        })?;
        if !cur.is_empty() {
            return Err(DecodeError::violation("control message length longer than its payload"));
        }
        Ok(m)
    }

    /// Writes the frame, or an error if the payload exceeds 65535 bytes (nothing is written
    /// then).
    ///
    /// # Panics
    /// If an integer field holds more than 2^62-1, which no varint can carry (values
    /// decoded from the wire never do).
    pub fn try_encode<B: BufMut>(&self, buf: &mut B) -> Result<(), EncodeError> {
        let mut payload = Vec::new();
        self.encode_payload(&mut payload);
        put_frame(buf, self.message_type(), &payload)
    }
}

impl Encode for Message {
    /// Writes the frame.
    ///
    /// # Panics
    /// If the payload exceeds 65535 bytes; use [`Message::try_encode`] to get an error.
    fn encode<B: BufMut>(&self, buf: &mut B) {
        self.try_encode(buf).expect("control message payload exceeds 65535 bytes");
    }
}

impl Decode for Message {
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        Message::decode(buf)
    }
}

/// Reads Track Extensions: Key-Value-Pairs up to the end of the payload, interpreted by
/// [`Extensions`] (which closes the session for values the draft forbids).
fn decode_extensions(buf: &mut &[u8]) -> Result<Extensions, DecodeError> {
    let ext = Extensions::decode_track_block(buf)?;
    *buf = &[];
    Ok(ext)
}

/// Writes Track Extensions, sorted by type as the delta encoding needs.
fn encode_extensions(buf: &mut Vec<u8>, ext: &Extensions) {
    ext.encode_block(buf);
}
