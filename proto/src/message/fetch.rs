//! FETCH, FETCH_OK and FETCH_CANCEL (draft-16 §9.16 to §9.18).

use crate::coding::{DecodeError, get_u8, get_varint, put_varint};
use crate::ext::Extensions;
use crate::message::{MessageParams, MessageType, Payload, decode_extensions, encode_extensions};
use crate::types::{FullTrackName, Location, RequestId};

/// The fields of a Standalone Fetch (Fetch Type 0x1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StandaloneFetch {
    /// The track.
    pub track: FullTrackName,
    /// The first location requested.
    pub start: Location,
    /// The end location plus one; an object of 0 requests the whole end group.
    pub end: Location,
}

/// The fields of a Joining Fetch (Fetch Type 0x2 or 0x3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JoiningFetch {
    /// The subscription joined.
    pub joining_request_id: RequestId,
    /// Groups before the subscription's largest group (relative) or the start group
    /// (absolute).
    pub joining_start: u64,
}

/// What a FETCH asks for, by Fetch Type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchType {
    /// 0x1: a range of a named track.
    Standalone(StandaloneFetch),
    /// 0x2: `joining_start` groups before the joined subscription's largest group.
    RelativeJoining(JoiningFetch),
    /// 0x3: from group `joining_start` up to the joined subscription's start.
    AbsoluteJoining(JoiningFetch),
}

impl FetchType {
    /// The Fetch Type code.
    pub fn code(&self) -> u64 {
        match self {
            FetchType::Standalone(_) => 0x1,
            FetchType::RelativeJoining(_) => 0x2,
            FetchType::AbsoluteJoining(_) => 0x3,
        }
    }
}

/// FETCH (0x16): asks for already published objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// This request's ID.
    pub request_id: RequestId,
    /// What is fetched.
    pub fetch_type: FetchType,
    /// Parameters (AUTHORIZATION_TOKEN, SUBSCRIBER_PRIORITY, GROUP_ORDER).
    pub params: MessageParams,
}

impl Payload for Fetch {
    const TYPE: MessageType = MessageType::Fetch;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        self.request_id.encode(buf);
        put_varint(buf, self.fetch_type.code());
        match &self.fetch_type {
            FetchType::Standalone(s) => {
                s.track.encode(buf);
                s.start.encode(buf);
                s.end.encode(buf);
            }
            FetchType::RelativeJoining(j) | FetchType::AbsoluteJoining(j) => {
                j.joining_request_id.encode(buf);
                put_varint(buf, j.joining_start);
            }
        }
        self.params.encode(buf);
    }

    /// A Fetch Type other than 0x1, 0x2 or 0x3 closes with PROTOCOL_VIOLATION.
    fn decode_payload(buf: &mut &[u8], ext: &[u64]) -> Result<Self, DecodeError> {
        let request_id = RequestId::decode(buf)?;
        let code = get_varint(buf)?;
        let joining = |buf: &mut &[u8]| -> Result<JoiningFetch, DecodeError> {
            let joining_request_id = RequestId::decode(buf)?;
            let joining_start = get_varint(buf)?;
            Ok(JoiningFetch { joining_request_id, joining_start })
        };
        let fetch_type = match code {
            0x1 => {
                let track = FullTrackName::decode(buf)?;
                let start = Location::decode(buf)?;
                let end = Location::decode(buf)?;
                FetchType::Standalone(StandaloneFetch { track, start, end })
            }
            0x2 => FetchType::RelativeJoining(joining(buf)?),
            0x3 => FetchType::AbsoluteJoining(joining(buf)?),
            _ => return Err(DecodeError::violation("unknown fetch type")),
        };
        let params = MessageParams::decode(buf, Self::TYPE, ext)?;
        Ok(Fetch { request_id, fetch_type, params })
    }
}

/// FETCH_OK (0x18): the fetch is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchOk {
    /// The FETCH answered.
    pub request_id: RequestId,
    /// True if the track is complete and `end_location` is its final object.
    pub end_of_track: bool,
    /// The largest object covered by the response (see draft-16 §9.17 for the `+1` forms).
    pub end_location: Location,
    /// Parameters (draft-16 defines none for FETCH_OK; only negotiated ones are kept).
    pub params: MessageParams,
    /// Track Extensions: extension headers to the end of the message.
    pub extensions: Extensions,
}

impl Payload for FetchOk {
    const TYPE: MessageType = MessageType::FetchOk;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        self.request_id.encode(buf);
        buf.push(u8::from(self.end_of_track));
        self.end_location.encode(buf);
        self.params.encode(buf);
        encode_extensions(buf, &self.extensions);
    }

    /// End Of Track other than 0 or 1 closes with PROTOCOL_VIOLATION.
    fn decode_payload(buf: &mut &[u8], ext: &[u64]) -> Result<Self, DecodeError> {
        let request_id = RequestId::decode(buf)?;
        let end_of_track = match get_u8(buf)? {
            0 => false,
            1 => true,
            _ => return Err(DecodeError::violation("FETCH_OK End Of Track not 0 or 1")),
        };
        let end_location = Location::decode(buf)?;
        let params = MessageParams::decode(buf, Self::TYPE, ext)?;
        let extensions = decode_extensions(buf)?;
        Ok(FetchOk { request_id, end_of_track, end_location, params, extensions })
    }
}

/// FETCH_CANCEL (0x17): the subscriber no longer wants a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FetchCancel {
    /// The FETCH cancelled.
    pub request_id: RequestId,
}

impl Payload for FetchCancel {
    const TYPE: MessageType = MessageType::FetchCancel;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        self.request_id.encode(buf);
    }

    fn decode_payload(buf: &mut &[u8], _ext: &[u64]) -> Result<Self, DecodeError> {
        Ok(FetchCancel { request_id: RequestId::decode(buf)? })
    }
}
