//! Subgroup streams (draft-16 §10.4.2): a SUBGROUP_HEADER followed by objects whose IDs are
//! delta-encoded.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{Error, ObjectStatus, ReaderConfig, WriteError, get_object_extensions, get_priority};
use crate::coding::{Decode, DecodeError, Encode, VARINT_MAX, get_bytes, get_varint, put_varint};
use crate::ext::Extensions;
use crate::types::TrackAlias;

/// EXTENSIONS bit of the SUBGROUP_HEADER type: every object carries an Extensions field.
const EXTENSIONS: u64 = 0x01;
/// SUBGROUP_ID_MODE field (bits 1-2).
const SUBGROUP_ID_MODE: u64 = 0x06;
/// END_OF_GROUP bit: this subgroup holds the largest object of the group.
const END_OF_GROUP: u64 = 0x08;
/// Bit 4, always set in a SUBGROUP_HEADER type.
const SUBGROUP_BIT: u64 = 0x10;
/// DEFAULT_PRIORITY bit: the Publisher Priority field is absent.
const DEFAULT_PRIORITY: u64 = 0x20;

/// Whether `ty` is a valid SUBGROUP_HEADER type: of the form 0b00X1XXXX with a Subgroup ID
/// mode other than the reserved 0b11.
pub(super) fn valid_type(ty: u64) -> bool {
    ty <= 0x3f && ty & SUBGROUP_BIT != 0 && ty & SUBGROUP_ID_MODE != SUBGROUP_ID_MODE
}

/// How the Subgroup ID is conveyed (SUBGROUP_ID_MODE, bits 1-2 of the header type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubgroupIdMode {
    /// 0b00: no field, the Subgroup ID is 0.
    Zero,
    /// 0b01: no field, the Subgroup ID is the Object ID of the first object on the stream.
    FirstObject,
    /// 0b10: the Subgroup ID field is present.
    Explicit(u64),
}

/// SUBGROUP_HEADER: the start of a subgroup stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubgroupHeader {
    /// The track, as the publisher numbered it in SUBSCRIBE_OK or PUBLISH.
    pub track_alias: TrackAlias,
    /// The group of every object on the stream.
    pub group_id: u64,
    /// How the Subgroup ID is conveyed.
    pub subgroup_id: SubgroupIdMode,
    /// The Publisher Priority; `None` inherits the subscription's default (DEFAULT_PRIORITY
    /// bit set).
    pub publisher_priority: Option<u8>,
    /// Whether every object carries an Extensions field (EXTENSIONS bit).
    pub extensions: bool,
    /// Whether this subgroup holds the largest object of the group (END_OF_GROUP bit): on
    /// FIN, no object with a larger Object ID exists in the group.
    pub end_of_group: bool,
}

impl SubgroupHeader {
    /// The stream type value that encodes this header's flags.
    pub fn stream_type(&self) -> u64 {
        let mut ty = SUBGROUP_BIT;
        if self.extensions {
            ty |= EXTENSIONS;
        }
        ty |= match self.subgroup_id {
            SubgroupIdMode::Zero => 0b00,
            SubgroupIdMode::FirstObject => 0b01,
            SubgroupIdMode::Explicit(_) => 0b10,
        } << 1;
        if self.end_of_group {
            ty |= END_OF_GROUP;
        }
        if self.publisher_priority.is_none() {
            ty |= DEFAULT_PRIORITY;
        }
        ty
    }

    /// The Subgroup ID, when the header alone determines it.
    pub fn known_subgroup_id(&self) -> Option<u64> {
        match self.subgroup_id {
            SubgroupIdMode::Zero => Some(0),
            SubgroupIdMode::FirstObject => None,
            SubgroupIdMode::Explicit(id) => Some(id),
        }
    }

    fn decode_inner(buf: &mut &[u8]) -> Result<Self, Error> {
        let ty = get_varint(buf)?;
        if !valid_type(ty) {
            // §10.4.2: reserved Subgroup ID mode or not of the form 0b00X1XXXX.
            return Err(Error::violation("invalid SUBGROUP_HEADER type"));
        }
        let track_alias = TrackAlias(get_varint(buf)?);
        let group_id = get_varint(buf)?;
        let subgroup_id = match (ty & SUBGROUP_ID_MODE) >> 1 {
            0b00 => SubgroupIdMode::Zero,
            0b01 => SubgroupIdMode::FirstObject,
            _ => SubgroupIdMode::Explicit(get_varint(buf)?),
        };
        let publisher_priority =
            if ty & DEFAULT_PRIORITY == 0 { Some(get_priority(buf)?) } else { None };
        Ok(SubgroupHeader {
            track_alias,
            group_id,
            subgroup_id,
            publisher_priority,
            extensions: ty & EXTENSIONS != 0,
            end_of_group: ty & END_OF_GROUP != 0,
        })
    }

    /// Reads a header, consuming nothing unless it is complete.
    pub fn decode_data(buf: &mut &[u8]) -> Result<Self, Error> {
        let mut cur = *buf;
        let h = Self::decode_inner(&mut cur)?;
        *buf = cur;
        Ok(h)
    }
}

impl Encode for SubgroupHeader {
    fn encode<B: BufMut>(&self, buf: &mut B) {
        put_varint(buf, self.stream_type());
        put_varint(buf, self.track_alias.0);
        put_varint(buf, self.group_id);
        if let SubgroupIdMode::Explicit(id) = self.subgroup_id {
            put_varint(buf, id);
        }
        if let Some(p) = self.publisher_priority {
            buf.put_u8(p);
        }
    }
}

impl Decode for SubgroupHeader {
    /// Reads a header; a malformed-track or size error cannot occur here, so every error
    /// maps onto [`DecodeError`].
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        Self::decode_data(buf).map_err(|e| match e {
            Error::Short => DecodeError::Short,
            Error::Session { code, reason } => DecodeError::Malformed { code, reason },
            _ => DecodeError::violation("invalid SUBGROUP_HEADER"),
        })
    }
}

/// One object on a subgroup stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubgroupObject {
    /// The Object ID (absolute, after undoing the delta).
    pub object_id: u64,
    /// Extension Headers; always empty when the header has no EXTENSIONS bit, and for
    /// objects whose status is not Normal.
    pub extensions: Extensions,
    /// Normal, End of Group or End of Track.
    pub status: ObjectStatus,
    /// The payload; empty unless the status is Normal.
    pub payload: Bytes,
}

/// The fields before an object's payload.
#[derive(Debug)]
struct Head {
    object_id: u64,
    extensions: Extensions,
    status: ObjectStatus,
    len: usize,
}

fn decode_head(
    buf: &mut &[u8],
    header: &SubgroupHeader,
    prev: Option<u64>,
    cfg: &ReaderConfig,
) -> Result<Head, Error> {
    let delta = get_varint(buf)?;
    let object_id = match prev {
        None => delta,
        Some(p) => p
            .checked_add(delta)
            .and_then(|v| v.checked_add(1))
            .filter(|v| *v <= VARINT_MAX)
            .ok_or(Error::violation("object ID delta overflows 2^62-1"))?,
    };
    let extensions = if header.extensions {
        get_object_extensions(buf, cfg.max_extensions_size())?
    } else {
        Extensions::default()
    };
    let len = get_varint(buf)?;
    if len > cfg.max_object_size() as u64 {
        return Err(Error::TooLarge {
            what: "object payload",
            len,
            max: cfg.max_object_size() as u64,
        });
    }
    let status =
        if len == 0 { ObjectStatus::from_code(get_varint(buf)?)? } else { ObjectStatus::Normal };
    if status != ObjectStatus::Normal && !extensions.is_empty() {
        // §10.2.1.2: extension headers on a non-Normal object close the session.
        return Err(Error::violation("extension headers on an object whose status is not Normal"));
    }
    extensions.check_gaps(header.group_id, object_id)?;
    if let (Some(p), Some(gap)) = (prev, extensions.object_gap())
        && object_id - gap <= p
    {
        // §11 Prior Object ID Gap: a gap covering an object already received.
        return Err(Error::malformed_track("Prior Object ID Gap covers a received object"));
    }
    Ok(Head { object_id, extensions, status, len: len as usize })
}

impl SubgroupObject {
    /// Reads one object that follows `header` on a stream, after the object `prev` (or
    /// first when `None`). Consumes nothing unless the object is complete.
    pub fn decode(
        buf: &mut &[u8],
        header: &SubgroupHeader,
        prev: Option<u64>,
    ) -> Result<Self, Error> {
        Self::decode_with(buf, header, prev, &ReaderConfig::default())
    }

    /// [`SubgroupObject::decode`] with explicit limits.
    pub fn decode_with(
        buf: &mut &[u8],
        header: &SubgroupHeader,
        prev: Option<u64>,
        cfg: &ReaderConfig,
    ) -> Result<Self, Error> {
        let mut cur = *buf;
        let head = decode_head(&mut cur, header, prev, cfg)?;
        let payload = Bytes::copy_from_slice(get_bytes(&mut cur, head.len)?);
        *buf = cur;
        Ok(SubgroupObject {
            object_id: head.object_id,
            extensions: head.extensions,
            status: head.status,
            payload,
        })
    }

    /// Whether this object ends the stream's objects (End of Group or End of Track).
    pub fn is_end(&self) -> bool {
        self.status != ObjectStatus::Normal
    }
}

/// Decodes a whole subgroup stream held in `buf`, as received up to its FIN.
///
/// Returns [`Error::Short`] if the input ends inside the header or an object (at FIN, the
/// session should treat that as PROTOCOL_VIOLATION, §10.4).
pub fn decode_subgroup_stream(
    buf: &mut &[u8],
) -> Result<(SubgroupHeader, Vec<SubgroupObject>), Error> {
    let mut cur = *buf;
    let header = SubgroupHeader::decode_data(&mut cur)?;
    let mut objects: Vec<SubgroupObject> = Vec::new();
    while !cur.is_empty() {
        if objects.last().is_some_and(SubgroupObject::is_end) {
            return Err(Error::violation("object after End of Group or End of Track"));
        }
        let prev = objects.last().map(|o| o.object_id);
        objects.push(SubgroupObject::decode(&mut cur, &header, prev)?);
    }
    *buf = cur;
    Ok((header, objects))
}

/// Writes a subgroup stream: the header, then objects in increasing Object ID order.
#[derive(Debug, Clone)]
pub struct SubgroupWriter {
    header: SubgroupHeader,
    prev: Option<u64>,
    ended: bool,
}

impl SubgroupWriter {
    /// A writer for a stream that starts with `header`.
    pub fn new(header: SubgroupHeader) -> Self {
        SubgroupWriter { header, prev: None, ended: false }
    }

    /// The header this stream starts with.
    pub fn header(&self) -> &SubgroupHeader {
        &self.header
    }

    /// The last Object ID written, if any.
    pub fn last_object_id(&self) -> Option<u64> {
        self.prev
    }

    /// Writes the SUBGROUP_HEADER.
    pub fn encode_header<B: BufMut>(&self, buf: &mut B) {
        self.header.encode(buf);
    }

    /// Writes the next object, delta-encoding its ID. Nothing is written on error.
    pub fn encode_object<B: BufMut>(
        &mut self,
        obj: &SubgroupObject,
        buf: &mut B,
    ) -> Result<(), WriteError> {
        if self.ended {
            return Err(WriteError::AfterEnd);
        }
        if obj.object_id > VARINT_MAX {
            return Err(WriteError::TooBig("object ID"));
        }
        let delta = match self.prev {
            None => obj.object_id,
            Some(p) if obj.object_id > p => obj.object_id - p - 1,
            Some(p) => {
                return Err(WriteError::ObjectIdNotIncreasing { prev: p, id: obj.object_id });
            }
        };
        if !self.header.extensions && !obj.extensions.is_empty() {
            return Err(WriteError::ExtensionsNotAllowed);
        }
        if obj.status != ObjectStatus::Normal
            && (!obj.payload.is_empty() || !obj.extensions.is_empty())
        {
            return Err(WriteError::StatusWithContent(obj.status));
        }
        put_varint(buf, delta);
        if self.header.extensions {
            obj.extensions.encode_object(buf);
        }
        put_varint(buf, obj.payload.len() as u64);
        if obj.payload.is_empty() {
            put_varint(buf, obj.status.code());
        } else {
            buf.put_slice(&obj.payload);
        }
        self.prev = Some(obj.object_id);
        self.ended = obj.is_end();
        Ok(())
    }
}

/// Incremental reader of one subgroup stream: feed it bytes as they arrive, then drain
/// objects. The header is parsed as soon as its bytes are in ([`SubgroupReader::header`]),
/// so a session can look up the Track Alias before any object completes.
///
/// Payload lengths are checked against [`ReaderConfig::max_object_size`] when read; the
/// payload is buffered only as its bytes arrive and is handed out as a [`Bytes`] slice of
/// the receive buffer, without a further copy. After an error the reader keeps returning
/// that error.
#[derive(Debug)]
pub struct SubgroupReader {
    cfg: ReaderConfig,
    buf: BytesMut,
    header: Option<SubgroupHeader>,
    subgroup_id: Option<u64>,
    prev: Option<u64>,
    pending: Option<Head>,
    ended: bool,
    fin: bool,
    error: Option<Error>,
}

impl Default for SubgroupReader {
    fn default() -> Self {
        Self::new(ReaderConfig::default())
    }
}

impl SubgroupReader {
    /// A reader with the given limits.
    pub fn new(cfg: ReaderConfig) -> Self {
        SubgroupReader {
            cfg,
            buf: BytesMut::new(),
            header: None,
            subgroup_id: None,
            prev: None,
            pending: None,
            ended: false,
            fin: false,
            error: None,
        }
    }

    /// Appends bytes received on the stream. They stay buffered until the objects they
    /// complete are drained with `poll_object`, so call it until it returns `None`.
    pub fn handle_bytes(&mut self, data: &[u8]) {
        if self.error.is_some() || self.fin {
            return;
        }
        self.buf.extend_from_slice(data);
        if self.header.is_none() {
            self.try_header();
        }
    }

    /// The stream ended with FIN: whatever is incomplete now is an error.
    pub fn handle_fin(&mut self) {
        self.fin = true;
    }

    /// The header, once its bytes have arrived.
    pub fn header(&self) -> Option<&SubgroupHeader> {
        self.header.as_ref()
    }

    /// The Subgroup ID, once known (for mode FirstObject, after the first object).
    pub fn subgroup_id(&self) -> Option<u64> {
        self.subgroup_id
    }

    /// The Object ID of the last object yielded.
    pub fn last_object_id(&self) -> Option<u64> {
        self.prev
    }

    /// True once FIN has arrived and every object has been yielded without error. With the
    /// header's END_OF_GROUP bit, no object above [`SubgroupReader::last_object_id`]
    /// exists in the group then.
    pub fn is_finished(&self) -> bool {
        self.fin
            && self.error.is_none()
            && self.header.is_some()
            && self.pending.is_none()
            && self.buf.is_empty()
    }

    fn try_header(&mut self) {
        let mut cur = &self.buf[..];
        match SubgroupHeader::decode_data(&mut cur) {
            Ok(h) => {
                let used = self.buf.len() - cur.len();
                self.buf.advance(used);
                self.subgroup_id = h.known_subgroup_id();
                self.header = Some(h);
            }
            Err(Error::Short) => {}
            Err(e) => self.error = Some(e),
        }
    }

    fn fail(&mut self, e: Error) -> Option<Result<SubgroupObject, Error>> {
        self.error = Some(e.clone());
        Some(Err(e))
    }

    /// The next complete object, `None` when more bytes are needed (or the stream is done),
    /// or the error that ends the stream.
    pub fn poll_object(&mut self) -> Option<Result<SubgroupObject, Error>> {
        if let Some(e) = &self.error {
            return Some(Err(e.clone()));
        }
        let Some(header) = self.header else {
            if self.fin {
                return self.fail(Error::violation("stream ended inside the subgroup header"));
            }
            return None;
        };
        if self.pending.is_none() {
            if self.buf.is_empty() {
                return None;
            }
            if self.ended {
                // §10.4.3: objects after End of Group or End of Track are a violation.
                return self.fail(Error::violation("object after End of Group or End of Track"));
            }
            let mut cur = &self.buf[..];
            match decode_head(&mut cur, &header, self.prev, &self.cfg) {
                Ok(head) => {
                    let used = self.buf.len() - cur.len();
                    self.buf.advance(used);
                    self.pending = Some(head);
                }
                Err(Error::Short) if self.fin => {
                    return self.fail(Error::violation("stream ended inside an object"));
                }
                Err(Error::Short) => return None,
                Err(e) => return self.fail(e),
            }
        }
        let len = self.pending.as_ref().map_or(0, |h| h.len);
        if self.buf.len() < len {
            if self.fin {
                return self.fail(Error::violation("stream ended inside an object payload"));
            }
            return None;
        }
        let head = self.pending.take()?;
        let payload = self.buf.split_to(len).freeze();
        if self.prev.is_none() && self.subgroup_id.is_none() {
            self.subgroup_id = Some(head.object_id);
        }
        self.prev = Some(head.object_id);
        self.ended = head.status != ObjectStatus::Normal;
        Some(Ok(SubgroupObject {
            object_id: head.object_id,
            extensions: head.extensions,
            status: head.status,
            payload,
        }))
    }
}
