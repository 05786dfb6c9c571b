//! OBJECT_DATAGRAM (draft-16 §10.3.1): one object in one QUIC datagram.

use bytes::{BufMut, Bytes};

use super::{Error, ObjectStatus, WriteError, get_object_extensions, get_priority};
use crate::coding::{VARINT_MAX, get_varint, put_varint};
use crate::ext::Extensions;
use crate::types::TrackAlias;

/// EXTENSIONS bit: the Extensions field is present (and then not empty).
const EXTENSIONS: u64 = 0x01;
/// END_OF_GROUP bit: no object with a larger Object ID exists in the group.
const END_OF_GROUP: u64 = 0x02;
/// ZERO_OBJECT_ID bit: the Object ID field is absent and the Object ID is 0.
const ZERO_OBJECT_ID: u64 = 0x04;
/// DEFAULT_PRIORITY bit: the Publisher Priority field is absent.
const DEFAULT_PRIORITY: u64 = 0x08;
/// STATUS bit: an Object Status instead of a payload.
const STATUS: u64 = 0x20;

/// Whether `ty` is a valid OBJECT_DATAGRAM type: of the form 0b00X0XXXX, and not STATUS
/// together with END_OF_GROUP.
fn valid_type(ty: u64) -> bool {
    ty <= 0x2f && ty & 0x10 == 0 && !(ty & STATUS != 0 && ty & END_OF_GROUP != 0)
}

/// What follows the header fields of a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatagramBody {
    /// The payload: the rest of the datagram (STATUS bit clear). May be empty.
    Payload(Bytes),
    /// An Object Status and no payload (STATUS bit set).
    Status(ObjectStatus),
}

/// One OBJECT_DATAGRAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The track, as the publisher numbered it.
    pub track_alias: TrackAlias,
    /// The Group ID.
    pub group_id: u64,
    /// The Object ID (sent as the ZERO_OBJECT_ID bit when 0).
    pub object_id: u64,
    /// The Publisher Priority; `None` inherits the subscription's default.
    pub publisher_priority: Option<u8>,
    /// Extension Headers (the EXTENSIONS bit is set exactly when they are not empty).
    pub extensions: Extensions,
    /// END_OF_GROUP: no object with a larger Object ID exists in this group. Not allowed
    /// with a status body.
    pub end_of_group: bool,
    /// Payload or status.
    pub body: DatagramBody,
}

impl Datagram {
    /// The datagram type value for this datagram's fields.
    pub fn datagram_type(&self) -> u64 {
        let mut ty = 0;
        if !self.extensions.is_empty() {
            ty |= EXTENSIONS;
        }
        if self.end_of_group {
            ty |= END_OF_GROUP;
        }
        if self.object_id == 0 {
            ty |= ZERO_OBJECT_ID;
        }
        if self.publisher_priority.is_none() {
            ty |= DEFAULT_PRIORITY;
        }
        if matches!(self.body, DatagramBody::Status(_)) {
            ty |= STATUS;
        }
        ty
    }

    /// The object status: the status body, or Normal for a payload.
    pub fn status(&self) -> ObjectStatus {
        match self.body {
            DatagramBody::Status(s) => s,
            DatagramBody::Payload(_) => ObjectStatus::Normal,
        }
    }

    /// The payload (empty for a status datagram).
    pub fn payload(&self) -> Bytes {
        match &self.body {
            DatagramBody::Payload(p) => p.clone(),
            DatagramBody::Status(_) => Bytes::new(),
        }
    }

    /// Writes the datagram. Nothing is written on error.
    pub fn encode<B: BufMut>(&self, buf: &mut B) -> Result<(), WriteError> {
        if let DatagramBody::Status(s) = self.body {
            if self.end_of_group {
                return Err(WriteError::StatusWithEndOfGroup);
            }
            if s != ObjectStatus::Normal && !self.extensions.is_empty() {
                return Err(WriteError::StatusWithContent(s));
            }
        }
        if self.track_alias.0 > VARINT_MAX || self.group_id > VARINT_MAX {
            return Err(WriteError::TooBig("track alias or group ID"));
        }
        if self.object_id > VARINT_MAX {
            return Err(WriteError::TooBig("object ID"));
        }
        let ty = self.datagram_type();
        put_varint(buf, ty);
        put_varint(buf, self.track_alias.0);
        put_varint(buf, self.group_id);
        if ty & ZERO_OBJECT_ID == 0 {
            put_varint(buf, self.object_id);
        }
        if let Some(p) = self.publisher_priority {
            buf.put_u8(p);
        }
        if ty & EXTENSIONS != 0 {
            self.extensions.encode_object(buf);
        }
        match &self.body {
            DatagramBody::Status(s) => put_varint(buf, s.code()),
            DatagramBody::Payload(p) => buf.put_slice(p),
        }
        Ok(())
    }

    /// The encoded datagram as a fresh vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, WriteError> {
        let mut v = Vec::new();
        self.encode(&mut v)?;
        Ok(v)
    }

    /// Decodes a received datagram, sharing its payload with `datagram` (no copy). A
    /// datagram too short for its header fields is a PROTOCOL_VIOLATION.
    pub fn decode_bytes(datagram: Bytes) -> Result<Self, Error> {
        let mut cur = &datagram[..];
        let (mut d, payload_len) = Self::decode_fields(&mut cur).map_err(|e| match e {
            Error::Short => Error::violation("datagram ends inside its header"),
            e => e,
        })?;
        if let DatagramBody::Payload(_) = d.body {
            d.body = DatagramBody::Payload(datagram.slice(datagram.len() - payload_len..));
        }
        Ok(d)
    }

    /// Decodes a datagram held in `buf`, all of which belongs to it: the payload is the
    /// rest of the input (copied). [`Error::Short`] if the header fields are cut. Consumes
    /// all of `buf` on success and nothing otherwise.
    pub fn decode(buf: &mut &[u8]) -> Result<Self, Error> {
        let mut cur = *buf;
        let (mut d, _) = Self::decode_fields(&mut cur)?;
        if let DatagramBody::Payload(_) = d.body {
            d.body = DatagramBody::Payload(Bytes::copy_from_slice(cur));
        }
        *buf = &[];
        Ok(d)
    }

    /// Reads the fields; for a payload datagram returns the payload length (the rest of
    /// the input, which stays unread) and an empty placeholder body.
    fn decode_fields(cur: &mut &[u8]) -> Result<(Self, usize), Error> {
        let ty = get_varint(cur)?;
        if !valid_type(ty) {
            return Err(Error::violation("invalid OBJECT_DATAGRAM type"));
        }
        let track_alias = TrackAlias(get_varint(cur)?);
        let group_id = get_varint(cur)?;
        let object_id = if ty & ZERO_OBJECT_ID != 0 { 0 } else { get_varint(cur)? };
        let publisher_priority =
            if ty & DEFAULT_PRIORITY == 0 { Some(get_priority(cur)?) } else { None };
        let extensions = if ty & EXTENSIONS != 0 {
            let mut peek = *cur;
            if get_varint(&mut peek)? == 0 {
                // §10.3.1: EXTENSIONS bit with an Extension Headers Length of 0.
                return Err(Error::violation("datagram EXTENSIONS bit with empty extensions"));
            }
            get_object_extensions(cur, usize::MAX)?
        } else {
            Extensions::default()
        };
        let (body, payload_len) = if ty & STATUS != 0 {
            let status = ObjectStatus::from_code(get_varint(cur)?)?;
            if !cur.is_empty() {
                return Err(Error::violation("status datagram carries bytes after its status"));
            }
            (DatagramBody::Status(status), 0)
        } else {
            (DatagramBody::Payload(Bytes::new()), cur.len())
        };
        if let DatagramBody::Status(s) = body
            && s != ObjectStatus::Normal
            && !extensions.is_empty()
        {
            return Err(Error::violation(
                "extension headers on an object whose status is not Normal",
            ));
        }
        extensions.check_gaps(group_id, object_id)?;
        let d = Datagram {
            track_alias,
            group_id,
            object_id,
            publisher_priority,
            extensions,
            end_of_group: ty & END_OF_GROUP != 0,
            body,
        };
        Ok((d, payload_len))
    }
}
