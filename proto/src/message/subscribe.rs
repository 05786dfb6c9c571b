//! SUBSCRIBE, SUBSCRIBE_OK, REQUEST_UPDATE, UNSUBSCRIBE and TRACK_STATUS
//! (draft-16 §9.9 to §9.12, §9.19).

use crate::coding::DecodeError;
use crate::ext::Extensions;
use crate::message::{MessageParams, MessageType, Payload, decode_extensions, encode_extensions};
use crate::types::{FullTrackName, RequestId, TrackAlias};

/// SUBSCRIBE (0x3): asks for newly published objects of a track.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscribe {
    /// This request's ID.
    pub request_id: RequestId,
    /// The track.
    pub track: FullTrackName,
    /// Parameters (AUTHORIZATION_TOKEN, DELIVERY_TIMEOUT, SUBSCRIBER_PRIORITY, GROUP_ORDER,
    /// SUBSCRIPTION_FILTER, FORWARD, NEW_GROUP_REQUEST).
    pub params: MessageParams,
}

impl Payload for Subscribe {
    const TYPE: MessageType = MessageType::Subscribe;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        self.request_id.encode(buf);
        self.track.encode(buf);
        self.params.encode(buf);
    }

    fn decode_payload(buf: &mut &[u8], ext: &[u64]) -> Result<Self, DecodeError> {
        let request_id = RequestId::decode(buf)?;
        let track = FullTrackName::decode(buf)?;
        let params = MessageParams::decode(buf, Self::TYPE, ext)?;
        Ok(Subscribe { request_id, track, params })
    }
}

/// SUBSCRIBE_OK (0x4): the subscription is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeOk {
    /// The SUBSCRIBE answered.
    pub request_id: RequestId,
    /// The alias the track's data streams and datagrams will carry.
    pub track_alias: TrackAlias,
    /// Parameters (EXPIRES, LARGEST_OBJECT).
    pub params: MessageParams,
    /// Track Extensions: extension headers to the end of the message.
    pub extensions: Extensions,
}

impl Payload for SubscribeOk {
    const TYPE: MessageType = MessageType::SubscribeOk;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        self.request_id.encode(buf);
        self.track_alias.encode(buf);
        self.params.encode(buf);
        encode_extensions(buf, &self.extensions);
    }

    fn decode_payload(buf: &mut &[u8], ext: &[u64]) -> Result<Self, DecodeError> {
        let request_id = RequestId::decode(buf)?;
        let track_alias = TrackAlias::decode(buf)?;
        let params = MessageParams::decode(buf, Self::TYPE, ext)?;
        let extensions = decode_extensions(buf)?;
        Ok(SubscribeOk { request_id, track_alias, params, extensions })
    }
}

/// REQUEST_UPDATE (0x2): changes the parameters of an earlier request.
///
/// The decoder admits every parameter some REQUEST_UPDATE may carry; the receiver then
/// checks them against the updated request with [`MessageParams::check_update`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestUpdate {
    /// This request's ID.
    pub request_id: RequestId,
    /// The request being updated.
    pub existing_request_id: RequestId,
    /// The changed parameters; absent ones keep their value.
    pub params: MessageParams,
}

impl Payload for RequestUpdate {
    const TYPE: MessageType = MessageType::RequestUpdate;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        self.request_id.encode(buf);
        self.existing_request_id.encode(buf);
        self.params.encode(buf);
    }

    fn decode_payload(buf: &mut &[u8], ext: &[u64]) -> Result<Self, DecodeError> {
        let request_id = RequestId::decode(buf)?;
        let existing_request_id = RequestId::decode(buf)?;
        let params = MessageParams::decode(buf, Self::TYPE, ext)?;
        Ok(RequestUpdate { request_id, existing_request_id, params })
    }
}

/// UNSUBSCRIBE (0xA): the subscriber ends a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unsubscribe {
    /// The subscription's request ID.
    pub request_id: RequestId,
}

impl Payload for Unsubscribe {
    const TYPE: MessageType = MessageType::Unsubscribe;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        self.request_id.encode(buf);
    }

    fn decode_payload(buf: &mut &[u8], _ext: &[u64]) -> Result<Self, DecodeError> {
        Ok(Unsubscribe { request_id: RequestId::decode(buf)? })
    }
}

/// TRACK_STATUS (0xD): asks for a track's status without subscribing. Same layout as
/// SUBSCRIBE; only AUTHORIZATION_TOKEN applies, other parameters are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrackStatus {
    /// This request's ID.
    pub request_id: RequestId,
    /// The track.
    pub track: FullTrackName,
    /// Parameters (AUTHORIZATION_TOKEN).
    pub params: MessageParams,
}

impl Payload for TrackStatus {
    const TYPE: MessageType = MessageType::TrackStatus;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        self.request_id.encode(buf);
        self.track.encode(buf);
        self.params.encode(buf);
    }

    fn decode_payload(buf: &mut &[u8], ext: &[u64]) -> Result<Self, DecodeError> {
        let request_id = RequestId::decode(buf)?;
        let track = FullTrackName::decode(buf)?;
        let params = MessageParams::decode(buf, Self::TYPE, ext)?;
        Ok(TrackStatus { request_id, track, params })
    }
}
