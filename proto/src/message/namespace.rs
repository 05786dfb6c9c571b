//! PUBLISH_NAMESPACE, NAMESPACE, PUBLISH_NAMESPACE_DONE, NAMESPACE_DONE,
//! PUBLISH_NAMESPACE_CANCEL and SUBSCRIBE_NAMESPACE (draft-16 §9.20 to §9.25).

use crate::coding::{DecodeError, get_varint, put_varint};
use crate::message::{MessageParams, MessageType, Payload, RequestErrorCode};
use crate::types::{ReasonPhrase, RequestId, TrackNamespace};

/// PUBLISH_NAMESPACE (0x6): the publisher has tracks in a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishNamespace {
    /// This request's ID.
    pub request_id: RequestId,
    /// The namespace (1 to 32 fields).
    pub namespace: TrackNamespace,
    /// Parameters (AUTHORIZATION_TOKEN).
    pub params: MessageParams,
}

impl Payload for PublishNamespace {
    const TYPE: MessageType = MessageType::PublishNamespace;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        self.request_id.encode(buf);
        self.namespace.encode(buf);
        self.params.encode(buf);
    }

    fn decode_payload(buf: &mut &[u8], ext: &[u64]) -> Result<Self, DecodeError> {
        let request_id = RequestId::decode(buf)?;
        let namespace = TrackNamespace::decode(buf)?;
        let params = MessageParams::decode(buf, Self::TYPE, ext)?;
        Ok(PublishNamespace { request_id, namespace, params })
    }
}

/// NAMESPACE (0x8): on a SUBSCRIBE_NAMESPACE stream, a matching namespace appeared.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Namespace {
    /// The fields after the subscription's prefix. May be empty when the namespace equals
    /// the prefix.
    pub suffix: TrackNamespace,
}

impl Payload for Namespace {
    const TYPE: MessageType = MessageType::Namespace;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        self.suffix.encode(buf);
    }

    fn decode_payload(buf: &mut &[u8], _ext: &[u64]) -> Result<Self, DecodeError> {
        Ok(Namespace { suffix: TrackNamespace::decode_prefix(buf)? })
    }
}

/// PUBLISH_NAMESPACE_DONE (0x9): the publisher withdraws a PUBLISH_NAMESPACE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishNamespaceDone {
    /// The PUBLISH_NAMESPACE withdrawn.
    pub request_id: RequestId,
}

impl Payload for PublishNamespaceDone {
    const TYPE: MessageType = MessageType::PublishNamespaceDone;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        self.request_id.encode(buf);
    }

    fn decode_payload(buf: &mut &[u8], _ext: &[u64]) -> Result<Self, DecodeError> {
        Ok(PublishNamespaceDone { request_id: RequestId::decode(buf)? })
    }
}

/// NAMESPACE_DONE (0xE): on a SUBSCRIBE_NAMESPACE stream, a namespace went away.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NamespaceDone {
    /// The fields after the subscription's prefix (may be empty, as in NAMESPACE).
    pub suffix: TrackNamespace,
}

impl Payload for NamespaceDone {
    const TYPE: MessageType = MessageType::NamespaceDone;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        self.suffix.encode(buf);
    }

    fn decode_payload(buf: &mut &[u8], _ext: &[u64]) -> Result<Self, DecodeError> {
        Ok(NamespaceDone { suffix: TrackNamespace::decode_prefix(buf)? })
    }
}

/// PUBLISH_NAMESPACE_CANCEL (0xC): the subscriber stops sending subscriptions for a
/// published namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishNamespaceCancel {
    /// The PUBLISH_NAMESPACE cancelled.
    pub request_id: RequestId,
    /// Why, with the REQUEST_ERROR codes.
    pub error_code: RequestErrorCode,
    /// Diagnostic text.
    pub reason: ReasonPhrase,
}

impl Payload for PublishNamespaceCancel {
    const TYPE: MessageType = MessageType::PublishNamespaceCancel;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        self.request_id.encode(buf);
        put_varint(buf, self.error_code.code());
        self.reason.encode(buf);
    }

    fn decode_payload(buf: &mut &[u8], _ext: &[u64]) -> Result<Self, DecodeError> {
        let request_id = RequestId::decode(buf)?;
        let error_code = RequestErrorCode::from_code(get_varint(buf)?);
        let reason = ReasonPhrase::decode(buf)?;
        Ok(PublishNamespaceCancel { request_id, error_code, reason })
    }
}

/// What a SUBSCRIBE_NAMESPACE asks to be told about (Subscribe Options).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SubscribeOptions {
    /// 0x00: PUBLISH messages for matching tracks.
    Publish,
    /// 0x01: NAMESPACE messages for matching namespaces.
    Namespace,
    /// 0x02: both.
    #[default]
    Both,
}

impl SubscribeOptions {
    /// The wire value.
    pub fn code(self) -> u64 {
        match self {
            SubscribeOptions::Publish => 0x0,
            SubscribeOptions::Namespace => 0x1,
            SubscribeOptions::Both => 0x2,
        }
    }

    /// The options for a wire value, if the draft defines it.
    pub fn from_code(v: u64) -> Option<Self> {
        match v {
            0x0 => Some(SubscribeOptions::Publish),
            0x1 => Some(SubscribeOptions::Namespace),
            0x2 => Some(SubscribeOptions::Both),
            _ => None,
        }
    }

    /// True if PUBLISH messages are wanted.
    pub fn wants_publish(self) -> bool {
        matches!(self, SubscribeOptions::Publish | SubscribeOptions::Both)
    }

    /// True if NAMESPACE messages are wanted.
    pub fn wants_namespace(self) -> bool {
        matches!(self, SubscribeOptions::Namespace | SubscribeOptions::Both)
    }
}

/// SUBSCRIBE_NAMESPACE (0x11): sent on its own bidirectional stream; asks for namespaces
/// and/or tracks under a prefix, now and as they change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeNamespace {
    /// This request's ID.
    pub request_id: RequestId,
    /// The prefix matched (0 to 32 fields; empty matches everything).
    pub prefix: TrackNamespace,
    /// What to be told about.
    pub options: SubscribeOptions,
    /// Parameters (AUTHORIZATION_TOKEN, FORWARD).
    pub params: MessageParams,
}

impl Payload for SubscribeNamespace {
    const TYPE: MessageType = MessageType::SubscribeNamespace;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        self.request_id.encode(buf);
        self.prefix.encode(buf);
        put_varint(buf, self.options.code());
        self.params.encode(buf);
    }

    /// Subscribe Options other than 0, 1 or 2 close with PROTOCOL_VIOLATION.
    fn decode_payload(buf: &mut &[u8], ext: &[u64]) -> Result<Self, DecodeError> {
        let request_id = RequestId::decode(buf)?;
        let prefix = TrackNamespace::decode_prefix(buf)?;
        let options = SubscribeOptions::from_code(get_varint(buf)?)
            .ok_or(DecodeError::violation("unknown SUBSCRIBE_NAMESPACE options"))?;
        let params = MessageParams::decode(buf, Self::TYPE, ext)?;
        Ok(SubscribeNamespace { request_id, prefix, options, params })
    }
}
