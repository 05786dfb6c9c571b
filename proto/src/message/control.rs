//! GOAWAY, MAX_REQUEST_ID, REQUESTS_BLOCKED, REQUEST_OK and REQUEST_ERROR
//! (draft-16 §9.4 to §9.8).

use bytes::Bytes;

use crate::coding::{DecodeError, get_len_bytes, get_varint, put_len_bytes, put_varint};
use crate::message::{MessageParams, MessageType, Payload};
use crate::types::{ReasonPhrase, RequestId};

/// The longest New Session URI of GOAWAY (draft-16 §9.4).
pub const MAX_GOAWAY_URI_LEN: usize = 8192;

/// GOAWAY (0x10): the sender will close the session soon.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GoAway {
    /// Where the client should reconnect; empty means the current URI. At most 8192 bytes.
    /// A server that receives a non-empty URI closes with PROTOCOL_VIOLATION (a session rule:
    /// the decoder does not know who receives).
    pub new_session_uri: Bytes,
}

impl Payload for GoAway {
    const TYPE: MessageType = MessageType::GoAway;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        put_len_bytes(buf, &self.new_session_uri);
    }

    fn decode_payload(buf: &mut &[u8], _ext: &[u64]) -> Result<Self, DecodeError> {
        let uri = get_len_bytes(buf, MAX_GOAWAY_URI_LEN, "GOAWAY URI longer than 8192 bytes")?;
        Ok(GoAway { new_session_uri: Bytes::copy_from_slice(uri) })
    }
}

/// MAX_REQUEST_ID (0x15): raises the peer's request limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaxRequestId {
    /// The new Maximum Request ID plus one: the peer may use Request IDs below it.
    pub max_request_id: RequestId,
}

impl Payload for MaxRequestId {
    const TYPE: MessageType = MessageType::MaxRequestId;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        self.max_request_id.encode(buf);
    }

    fn decode_payload(buf: &mut &[u8], _ext: &[u64]) -> Result<Self, DecodeError> {
        Ok(MaxRequestId { max_request_id: RequestId::decode(buf)? })
    }
}

/// REQUESTS_BLOCKED (0x1A): the sender wants to send a request but the limit stops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestsBlocked {
    /// The Maximum Request ID the sender is blocked on.
    pub max_request_id: RequestId,
}

impl Payload for RequestsBlocked {
    const TYPE: MessageType = MessageType::RequestsBlocked;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        self.max_request_id.encode(buf);
    }

    fn decode_payload(buf: &mut &[u8], _ext: &[u64]) -> Result<Self, DecodeError> {
        Ok(RequestsBlocked { max_request_id: RequestId::decode(buf)? })
    }
}

/// REQUEST_OK (0x7): success for REQUEST_UPDATE, TRACK_STATUS, SUBSCRIBE_NAMESPACE and
/// PUBLISH_NAMESPACE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestOk {
    /// The request answered.
    pub request_id: RequestId,
    /// Parameters (LARGEST_OBJECT, EXPIRES).
    pub params: MessageParams,
}

impl Payload for RequestOk {
    const TYPE: MessageType = MessageType::RequestOk;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        self.request_id.encode(buf);
        self.params.encode(buf);
    }

    fn decode_payload(buf: &mut &[u8], ext: &[u64]) -> Result<Self, DecodeError> {
        let request_id = RequestId::decode(buf)?;
        let params = MessageParams::decode(buf, Self::TYPE, ext)?;
        Ok(RequestOk { request_id, params })
    }
}

/// A REQUEST_ERROR (and PUBLISH_NAMESPACE_CANCEL) error code (draft-16 §9.8, IANA
/// "REQUEST_ERROR Codes"). Codes the draft does not define are kept in [`Self::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestErrorCode {
    /// 0x0: an implementation specific or generic error.
    InternalError,
    /// 0x1: not authorized for the request.
    Unauthorized,
    /// 0x2: not completed in time.
    Timeout,
    /// 0x3: the request type is not supported.
    NotSupported,
    /// 0x4: invalid auth token serialization.
    MalformedAuthToken,
    /// 0x5: the auth token has expired.
    ExpiredAuthToken,
    /// 0x10: the track or namespace does not exist here.
    DoesNotExist,
    /// 0x11: the filter or range cannot be satisfied.
    InvalidRange,
    /// 0x12: the track was found malformed.
    MalformedTrack,
    /// 0x19: a subscription with the same role already exists.
    DuplicateSubscription,
    /// 0x20: the receiver is not interested in the track or namespace.
    Uninterested,
    /// 0x30: the namespace prefix overlaps another SUBSCRIBE_NAMESPACE.
    PrefixOverlap,
    /// 0x32: the joining fetch names no usable subscription.
    InvalidJoiningRequestId,
    /// A code draft-16 does not define. Build codes with [`Self::from_code`] so that a
    /// defined code never lands here.
    Other(u64),
}

impl RequestErrorCode {
    /// The wire value.
    pub fn code(self) -> u64 {
        use RequestErrorCode::*;
        match self {
            InternalError => 0x0,
            Unauthorized => 0x1,
            Timeout => 0x2,
            NotSupported => 0x3,
            MalformedAuthToken => 0x4,
            ExpiredAuthToken => 0x5,
            DoesNotExist => 0x10,
            InvalidRange => 0x11,
            MalformedTrack => 0x12,
            DuplicateSubscription => 0x19,
            Uninterested => 0x20,
            PrefixOverlap => 0x30,
            InvalidJoiningRequestId => 0x32,
            Other(v) => v,
        }
    }

    /// The code for a wire value.
    pub fn from_code(v: u64) -> Self {
        use RequestErrorCode::*;
        match v {
            0x0 => InternalError,
            0x1 => Unauthorized,
            0x2 => Timeout,
            0x3 => NotSupported,
            0x4 => MalformedAuthToken,
            0x5 => ExpiredAuthToken,
            0x10 => DoesNotExist,
            0x11 => InvalidRange,
            0x12 => MalformedTrack,
            0x19 => DuplicateSubscription,
            0x20 => Uninterested,
            0x30 => PrefixOverlap,
            0x32 => InvalidJoiningRequestId,
            v => Other(v),
        }
    }
}

/// REQUEST_ERROR (0x5): failure of any request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// The request answered.
    pub request_id: RequestId,
    /// Why it failed.
    pub error_code: RequestErrorCode,
    /// Minimum milliseconds before a retry, plus one; 0 means do not retry.
    pub retry_interval: u64,
    /// Diagnostic text.
    pub reason: ReasonPhrase,
}

impl RequestError {
    /// Milliseconds to wait before retrying, or `None` if the request should not be retried.
    pub fn retry_after_ms(&self) -> Option<u64> {
        self.retry_interval.checked_sub(1)
    }
}

impl Payload for RequestError {
    const TYPE: MessageType = MessageType::RequestError;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        self.request_id.encode(buf);
        put_varint(buf, self.error_code.code());
        put_varint(buf, self.retry_interval);
        self.reason.encode(buf);
    }

    fn decode_payload(buf: &mut &[u8], _ext: &[u64]) -> Result<Self, DecodeError> {
        let request_id = RequestId::decode(buf)?;
        let error_code = RequestErrorCode::from_code(get_varint(buf)?);
        let retry_interval = get_varint(buf)?;
        let reason = ReasonPhrase::decode(buf)?;
        Ok(RequestError { request_id, error_code, retry_interval, reason })
    }
}
