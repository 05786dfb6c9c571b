//! PUBLISH, PUBLISH_OK and PUBLISH_DONE (draft-16 §9.13 to §9.15).

use crate::coding::{DecodeError, get_varint, put_varint};
use crate::ext::Extensions;
use crate::message::{MessageParams, MessageType, Payload, decode_extensions, encode_extensions};
use crate::types::{FullTrackName, ReasonPhrase, RequestId, TrackAlias};

/// PUBLISH (0x1D): the publisher starts a subscription to one of its tracks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publish {
    /// This request's ID.
    pub request_id: RequestId,
    /// The track.
    pub track: FullTrackName,
    /// The alias the track's data streams and datagrams carry.
    pub track_alias: TrackAlias,
    /// Parameters (AUTHORIZATION_TOKEN, EXPIRES, LARGEST_OBJECT, FORWARD).
    pub params: MessageParams,
    /// Track Extensions: extension headers to the end of the message.
    pub extensions: Extensions,
}

impl Payload for Publish {
    const TYPE: MessageType = MessageType::Publish;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        self.request_id.encode(buf);
        self.track.encode(buf);
        self.track_alias.encode(buf);
        self.params.encode(buf);
        encode_extensions(buf, &self.extensions);
    }

    fn decode_payload(buf: &mut &[u8], ext: &[u64]) -> Result<Self, DecodeError> {
        let request_id = RequestId::decode(buf)?;
        let track = FullTrackName::decode(buf)?;
        let track_alias = TrackAlias::decode(buf)?;
        let params = MessageParams::decode(buf, Self::TYPE, ext)?;
        let extensions = decode_extensions(buf)?;
        Ok(Publish { request_id, track, track_alias, params, extensions })
    }
}

/// PUBLISH_OK (0x1E): the subscriber accepts a PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishOk {
    /// The PUBLISH answered.
    pub request_id: RequestId,
    /// Parameters (DELIVERY_TIMEOUT, SUBSCRIBER_PRIORITY, GROUP_ORDER, SUBSCRIPTION_FILTER,
    /// EXPIRES, FORWARD, NEW_GROUP_REQUEST).
    pub params: MessageParams,
}

impl Payload for PublishOk {
    const TYPE: MessageType = MessageType::PublishOk;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        self.request_id.encode(buf);
        self.params.encode(buf);
    }

    fn decode_payload(buf: &mut &[u8], ext: &[u64]) -> Result<Self, DecodeError> {
        let request_id = RequestId::decode(buf)?;
        let params = MessageParams::decode(buf, Self::TYPE, ext)?;
        Ok(PublishOk { request_id, params })
    }
}

/// A PUBLISH_DONE status code (draft-16 §9.15, IANA "PUBLISH_DONE Codes"). Codes the draft
/// does not define are kept in [`Self::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublishDoneCode {
    /// 0x0: an implementation specific or generic error.
    InternalError,
    /// 0x1: the subscriber is no longer authorized.
    Unauthorized,
    /// 0x2: the track is no longer published.
    TrackEnded,
    /// 0x3: the end of the subscription filter was reached.
    SubscriptionEnded,
    /// 0x4: a GOAWAY was sent.
    GoingAway,
    /// 0x5: the subscription expired.
    Expired,
    /// 0x6: the subscriber fell too far behind.
    TooFarBehind,
    /// 0x8: a REQUEST_UPDATE on the subscription failed.
    UpdateFailed,
    /// 0x12: the track was found malformed.
    MalformedTrack,
    /// A code draft-16 does not define. Build codes with [`Self::from_code`] so that a
    /// defined code never lands here.
    Other(u64),
}

impl PublishDoneCode {
    /// The wire value.
    pub fn code(self) -> u64 {
        use PublishDoneCode::*;
        match self {
            InternalError => 0x0,
            Unauthorized => 0x1,
            TrackEnded => 0x2,
            SubscriptionEnded => 0x3,
            GoingAway => 0x4,
            Expired => 0x5,
            TooFarBehind => 0x6,
            UpdateFailed => 0x8,
            MalformedTrack => 0x12,
            Other(v) => v,
        }
    }

    /// The code for a wire value.
    pub fn from_code(v: u64) -> Self {
        use PublishDoneCode::*;
        match v {
            0x0 => InternalError,
            0x1 => Unauthorized,
            0x2 => TrackEnded,
            0x3 => SubscriptionEnded,
            0x4 => GoingAway,
            0x5 => Expired,
            0x6 => TooFarBehind,
            0x8 => UpdateFailed,
            0x12 => MalformedTrack,
            v => Other(v),
        }
    }
}

/// The Stream Count a publisher sends when it cannot count its streams exactly (2^62-1).
pub const STREAM_COUNT_UNKNOWN: u64 = crate::coding::VARINT_MAX;

/// PUBLISH_DONE (0xB): the publisher has finished a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishDone {
    /// The subscription's request ID.
    pub request_id: RequestId,
    /// Why it ended.
    pub status_code: PublishDoneCode,
    /// Data streams opened for the subscription; [`STREAM_COUNT_UNKNOWN`] if not counted.
    pub stream_count: u64,
    /// Diagnostic text.
    pub reason: ReasonPhrase,
}

impl Payload for PublishDone {
    const TYPE: MessageType = MessageType::PublishDone;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        self.request_id.encode(buf);
        put_varint(buf, self.status_code.code());
        put_varint(buf, self.stream_count);
        self.reason.encode(buf);
    }

    fn decode_payload(buf: &mut &[u8], _ext: &[u64]) -> Result<Self, DecodeError> {
        let request_id = RequestId::decode(buf)?;
        let status_code = PublishDoneCode::from_code(get_varint(buf)?);
        let stream_count = get_varint(buf)?;
        let reason = ReasonPhrase::decode(buf)?;
        Ok(PublishDone { request_id, status_code, stream_count, reason })
    }
}
