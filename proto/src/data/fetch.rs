//! Fetch streams (draft-16 §10.4.4): a FETCH_HEADER followed by objects whose fields may
//! refer to the prior object, and End of Range markers.
//!
//! Two points the draft-16 text leaves to inference are read as the working group later
//! clarified them (moq-transport #1513, #1861) and as implementations agree:
//! an End of Range carries absolute Group and Object IDs and no Object Payload Length; an
//! object after it takes the prior Group ID and Object ID from the marker, and the prior
//! Subgroup ID and Publisher Priority from the last actual object. Referring to a field no
//! prior object has (none yet, or a Subgroup ID after a datagram-preference object) is a
//! PROTOCOL_VIOLATION, like the first object referring to a prior one.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{
    Error, FETCH_HEADER_TYPE, ReaderConfig, WriteError, get_object_extensions, get_priority,
};
use crate::coding::{Decode, DecodeError, Encode, VARINT_MAX, get_bytes, get_varint, put_varint};
use crate::ext::Extensions;
use crate::priority::GroupOrder;
use crate::types::{Location, RequestId};

/// Subgroup encoding (two least significant bits): Subgroup ID is zero.
const SUBGROUP_ZERO: u64 = 0x00;
/// Subgroup ID is the prior object's.
const SUBGROUP_PRIOR: u64 = 0x01;
/// Subgroup ID is the prior object's plus one.
const SUBGROUP_NEXT: u64 = 0x02;
/// Subgroup ID field present.
const SUBGROUP_FIELD: u64 = 0x03;
/// Object ID field present (else prior + 1).
const OBJECT_ID: u64 = 0x04;
/// Group ID field present (else prior).
const GROUP_ID: u64 = 0x08;
/// Priority field present (else prior).
const PRIORITY: u64 = 0x10;
/// Extensions field present.
const EXTENSIONS: u64 = 0x20;
/// Datagram forwarding preference: the subgroup bits are ignored.
const DATAGRAM: u64 = 0x40;
/// Serialization Flags value of End of Non-Existent Range.
const END_OF_NON_EXISTENT_RANGE: u64 = 0x8c;
/// Serialization Flags value of End of Unknown Range.
const END_OF_UNKNOWN_RANGE: u64 = 0x10c;

/// FETCH_HEADER: the start of a fetch stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FetchHeader {
    /// The Request ID of the FETCH this stream answers.
    pub request_id: RequestId,
}

impl Encode for FetchHeader {
    fn encode<B: BufMut>(&self, buf: &mut B) {
        put_varint(buf, FETCH_HEADER_TYPE);
        put_varint(buf, self.request_id.0);
    }
}

impl Decode for FetchHeader {
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        let mut cur = *buf;
        if get_varint(&mut cur)? != FETCH_HEADER_TYPE {
            return Err(DecodeError::violation("not a FETCH_HEADER"));
        }
        let request_id = RequestId(get_varint(&mut cur)?);
        *buf = cur;
        Ok(FetchHeader { request_id })
    }
}

/// One object of a fetch response. Objects delivered by FETCH carry no Object Status: an
/// empty payload is a Normal, empty object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchObject {
    /// The Group ID.
    pub group_id: u64,
    /// The Subgroup ID; `None` for an object whose forwarding preference is Datagram.
    pub subgroup_id: Option<u64>,
    /// The Object ID.
    pub object_id: u64,
    /// The Publisher Priority.
    pub publisher_priority: u8,
    /// Extension Headers.
    pub extensions: Extensions,
    /// The payload.
    pub payload: Bytes,
}

/// What an End of Range says about the objects it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RangeKind {
    /// 0x8C: the objects do not exist.
    NonExistent,
    /// 0x10C: the publisher does not know their status.
    Unknown,
}

/// End of Range: every Location after the last serialized object (if any) up to and
/// including this one does not exist, or is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndOfRange {
    /// Non-existent or unknown.
    pub kind: RangeKind,
    /// Group ID of the last Location of the range.
    pub group_id: u64,
    /// Object ID of the last Location of the range.
    pub object_id: u64,
}

/// One serialized entry of a fetch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchItem {
    /// An object.
    Object(FetchObject),
    /// An End of Range marker.
    EndOfRange(EndOfRange),
}

impl FetchItem {
    /// The item's Location: the object's, or the last Location of the range.
    pub fn location(&self) -> Location {
        let (g, o) = self.ids();
        Location::new(g, o)
    }

    fn ids(&self) -> (u64, u64) {
        match self {
            FetchItem::Object(o) => (o.group_id, o.object_id),
            FetchItem::EndOfRange(r) => (r.group_id, r.object_id),
        }
    }
}

/// The fields of earlier items that the next item may refer to. Start with
/// [`FetchPrior::default`] after the header; [`FetchItem::decode`] updates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FetchPrior {
    /// Location of the prior object or End of Range.
    location: Option<(u64, u64)>,
    /// Subgroup ID (None: Datagram preference) and priority of the last actual object.
    last_object: Option<(Option<u64>, u8)>,
}

impl FetchPrior {
    fn update(&mut self, item: &FetchItem) {
        self.location = Some(item.ids());
        if let FetchItem::Object(o) = item {
            self.last_object = Some((o.subgroup_id, o.publisher_priority));
        }
    }

    fn location(&self) -> Result<(u64, u64), Error> {
        self.location
            .ok_or(Error::violation("fetch object refers to a prior object that does not exist"))
    }

    fn subgroup(&self) -> Result<u64, Error> {
        match self.last_object {
            Some((Some(s), _)) => Ok(s),
            _ => Err(Error::violation(
                "fetch object refers to a prior Subgroup ID that does not exist",
            )),
        }
    }

    fn priority(&self) -> Result<u8, Error> {
        match self.last_object {
            Some((_, p)) => Ok(p),
            None => {
                Err(Error::violation("fetch object refers to a prior priority that does not exist"))
            }
        }
    }
}

/// An item up to its payload.
#[derive(Debug)]
enum Head {
    Object(FetchObject, usize),
    EndOfRange(EndOfRange),
}

fn decode_head(buf: &mut &[u8], prior: &FetchPrior, cfg: &ReaderConfig) -> Result<Head, Error> {
    let flags = get_varint(buf)?;
    if flags >= 0x80 {
        let kind = match flags {
            END_OF_NON_EXISTENT_RANGE => RangeKind::NonExistent,
            END_OF_UNKNOWN_RANGE => RangeKind::Unknown,
            _ => return Err(Error::violation("invalid fetch Serialization Flags")),
        };
        let group_id = get_varint(buf)?;
        let object_id = get_varint(buf)?;
        return Ok(Head::EndOfRange(EndOfRange { kind, group_id, object_id }));
    }
    let group_id = if flags & GROUP_ID != 0 { get_varint(buf)? } else { prior.location()?.0 };
    let subgroup_id = if flags & DATAGRAM != 0 {
        None
    } else {
        Some(match flags & 0x03 {
            SUBGROUP_ZERO => 0,
            SUBGROUP_PRIOR => prior.subgroup()?,
            SUBGROUP_NEXT => prior
                .subgroup()?
                .checked_add(1)
                .filter(|v| *v <= VARINT_MAX)
                .ok_or(Error::violation("fetch Subgroup ID overflows"))?,
            _ => get_varint(buf)?,
        })
    };
    let object_id = if flags & OBJECT_ID != 0 {
        get_varint(buf)?
    } else {
        prior
            .location()?
            .1
            .checked_add(1)
            .filter(|v| *v <= VARINT_MAX)
            .ok_or(Error::violation("fetch Object ID overflows"))?
    };
    let publisher_priority =
        if flags & PRIORITY != 0 { get_priority(buf)? } else { prior.priority()? };
    let extensions = if flags & EXTENSIONS != 0 {
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
    extensions.check_gaps(group_id, object_id)?;
    let obj = FetchObject {
        group_id,
        subgroup_id,
        object_id,
        publisher_priority,
        extensions,
        payload: Bytes::new(),
    };
    Ok(Head::Object(obj, len as usize))
}

impl FetchItem {
    /// Reads one item after the items summarized by `prior`, which is updated on success.
    /// Consumes nothing unless the item is complete.
    pub fn decode(buf: &mut &[u8], prior: &mut FetchPrior) -> Result<Self, Error> {
        Self::decode_with(buf, prior, &ReaderConfig::default())
    }

    /// [`FetchItem::decode`] with explicit limits.
    pub fn decode_with(
        buf: &mut &[u8],
        prior: &mut FetchPrior,
        cfg: &ReaderConfig,
    ) -> Result<Self, Error> {
        let mut cur = *buf;
        let item = match decode_head(&mut cur, prior, cfg)? {
            Head::EndOfRange(r) => FetchItem::EndOfRange(r),
            Head::Object(mut o, len) => {
                o.payload = Bytes::copy_from_slice(get_bytes(&mut cur, len)?);
                FetchItem::Object(o)
            }
        };
        *buf = cur;
        prior.update(&item);
        Ok(item)
    }
}

/// Detects the malformed-track conditions of draft-16 §2.4.2 that one fetch stream shows.
#[derive(Debug, Clone, Default)]
struct Checker {
    order: Option<GroupOrder>,
    last: Option<(u64, u64)>,
    /// Publisher priority per Subgroup ID in the current group.
    priorities: HashMap<u64, u8>,
}

impl Checker {
    fn check(&mut self, item: &FetchItem) -> Result<(), Error> {
        let (g, o) = item.ids();
        if let Some((lg, lo)) = self.last {
            if g == lg {
                if o <= lo {
                    // Condition 1: same group, Object ID not strictly larger.
                    return Err(Error::malformed_track(
                        "fetch Object ID not increasing in a group",
                    ));
                }
            } else {
                match self.order {
                    // Conditions 3 and 4: groups out of the requested order.
                    Some(GroupOrder::Ascending) if g < lg => {
                        return Err(Error::malformed_track(
                            "fetch Group ID decreases in an Ascending fetch",
                        ));
                    }
                    Some(GroupOrder::Descending) if g > lg => {
                        return Err(Error::malformed_track(
                            "fetch Group ID increases in a Descending fetch",
                        ));
                    }
                    _ => {}
                }
                self.priorities.clear();
            }
        }
        if let FetchItem::Object(obj) = item
            && let Some(s) = obj.subgroup_id
            && *self.priorities.entry(s).or_insert(obj.publisher_priority) != obj.publisher_priority
        {
            // Condition 2: one subgroup, two publisher priorities.
            return Err(Error::malformed_track("fetch subgroup with two publisher priorities"));
        }
        self.last = Some((g, o));
        Ok(())
    }
}

/// Decodes a whole fetch stream held in `buf`, as received up to its FIN, checking the
/// malformed-track conditions (and the group order, when given).
///
/// Returns [`Error::Short`] if the input ends inside the header or an item.
pub fn decode_fetch_stream(
    buf: &mut &[u8],
    order: Option<GroupOrder>,
) -> Result<(FetchHeader, Vec<FetchItem>), Error> {
    let mut cur = *buf;
    let header = FetchHeader::decode(&mut cur)?;
    let mut prior = FetchPrior::default();
    let mut checker = Checker { order, ..Default::default() };
    let mut items = Vec::new();
    while !cur.is_empty() {
        let item = FetchItem::decode(&mut cur, &mut prior)?;
        checker.check(&item)?;
        items.push(item);
    }
    *buf = cur;
    Ok((header, items))
}

/// Writes the items of a fetch stream, choosing the shortest Serialization Flags.
#[derive(Debug, Clone, Default)]
pub struct FetchWriter {
    prior: FetchPrior,
}

impl FetchWriter {
    /// A writer for the items that follow a FETCH_HEADER.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the next item. Nothing is written on error.
    pub fn encode_item<B: BufMut>(
        &mut self,
        item: &FetchItem,
        buf: &mut B,
    ) -> Result<(), WriteError> {
        let (g, o) = item.ids();
        if g > VARINT_MAX || o > VARINT_MAX {
            return Err(WriteError::TooBig("group or object ID"));
        }
        match item {
            FetchItem::EndOfRange(r) => {
                put_varint(
                    buf,
                    match r.kind {
                        RangeKind::NonExistent => END_OF_NON_EXISTENT_RANGE,
                        RangeKind::Unknown => END_OF_UNKNOWN_RANGE,
                    },
                );
                put_varint(buf, g);
                put_varint(buf, o);
            }
            FetchItem::Object(obj) => {
                if obj.subgroup_id.is_some_and(|s| s > VARINT_MAX) {
                    return Err(WriteError::TooBig("subgroup ID"));
                }
                let prior_loc = self.prior.location;
                let prior_sub = match self.prior.last_object {
                    Some((Some(s), _)) => Some(s),
                    _ => None,
                };
                let prior_prio = self.prior.last_object.map(|(_, p)| p);
                let mut flags = 0;
                let group_field = prior_loc.is_none_or(|(pg, _)| pg != g);
                if group_field {
                    flags |= GROUP_ID;
                }
                let object_field = prior_loc.is_none_or(|(_, po)| po.checked_add(1) != Some(o));
                if object_field {
                    flags |= OBJECT_ID;
                }
                let mut subgroup_field = None;
                match obj.subgroup_id {
                    None => flags |= DATAGRAM,
                    Some(0) => flags |= SUBGROUP_ZERO,
                    Some(s) if prior_sub == Some(s) => flags |= SUBGROUP_PRIOR,
                    Some(s) if prior_sub.and_then(|p| p.checked_add(1)) == Some(s) => {
                        flags |= SUBGROUP_NEXT
                    }
                    Some(s) => {
                        flags |= SUBGROUP_FIELD;
                        subgroup_field = Some(s);
                    }
                }
                let priority_field = prior_prio != Some(obj.publisher_priority);
                if priority_field {
                    flags |= PRIORITY;
                }
                if !obj.extensions.is_empty() {
                    flags |= EXTENSIONS;
                }
                put_varint(buf, flags);
                if group_field {
                    put_varint(buf, g);
                }
                if let Some(s) = subgroup_field {
                    put_varint(buf, s);
                }
                if object_field {
                    put_varint(buf, o);
                }
                if priority_field {
                    buf.put_u8(obj.publisher_priority);
                }
                if flags & EXTENSIONS != 0 {
                    obj.extensions.encode_object(buf);
                }
                put_varint(buf, obj.payload.len() as u64);
                buf.put_slice(&obj.payload);
            }
        }
        self.prior.update(item);
        Ok(())
    }
}

/// Incremental reader of one fetch stream: feed it bytes, drain items. Each object is
/// yielded as soon as its payload is complete, as a [`Bytes`] slice of the receive buffer.
/// Checks the malformed-track conditions of §2.4.2 that a single stream shows, including
/// the group order when [`FetchReader::with_group_order`] gave it. After an error the
/// reader keeps returning that error.
#[derive(Debug)]
pub struct FetchReader {
    cfg: ReaderConfig,
    buf: BytesMut,
    header: Option<FetchHeader>,
    prior: FetchPrior,
    checker: Checker,
    pending: Option<(FetchObject, usize)>,
    fin: bool,
    error: Option<Error>,
}

impl Default for FetchReader {
    fn default() -> Self {
        Self::new(ReaderConfig::default())
    }
}

impl FetchReader {
    /// A reader with the given limits.
    pub fn new(cfg: ReaderConfig) -> Self {
        FetchReader {
            cfg,
            buf: BytesMut::new(),
            header: None,
            prior: FetchPrior::default(),
            checker: Checker::default(),
            pending: None,
            fin: false,
            error: None,
        }
    }

    /// Also checks that groups arrive in `order` (the FETCH's GROUP ORDER).
    pub fn with_group_order(mut self, order: GroupOrder) -> Self {
        self.checker.order = Some(order);
        self
    }

    /// Appends bytes received on the stream. They stay buffered until the objects they
    /// complete are drained with `poll_object`, so call it until it returns `None`.
    pub fn handle_bytes(&mut self, data: &[u8]) {
        if self.error.is_some() || self.fin {
            return;
        }
        self.buf.extend_from_slice(data);
        if self.header.is_none() {
            let mut cur = &self.buf[..];
            match FetchHeader::decode(&mut cur) {
                Ok(h) => {
                    let used = self.buf.len() - cur.len();
                    self.buf.advance(used);
                    self.header = Some(h);
                }
                Err(DecodeError::Short) => {}
                Err(e) => self.error = Some(e.into()),
            }
        }
    }

    /// The stream ended with FIN.
    pub fn handle_fin(&mut self) {
        self.fin = true;
    }

    /// The header, once its bytes have arrived.
    pub fn header(&self) -> Option<&FetchHeader> {
        self.header.as_ref()
    }

    /// True once FIN has arrived and every item has been yielded without error.
    pub fn is_finished(&self) -> bool {
        self.fin
            && self.error.is_none()
            && self.header.is_some()
            && self.pending.is_none()
            && self.buf.is_empty()
    }

    fn fail(&mut self, e: Error) -> Option<Result<FetchItem, Error>> {
        self.error = Some(e.clone());
        Some(Err(e))
    }

    /// The next complete item, `None` when more bytes are needed (or the stream is done),
    /// or the error that ends the stream.
    pub fn poll_object(&mut self) -> Option<Result<FetchItem, Error>> {
        if let Some(e) = &self.error {
            return Some(Err(e.clone()));
        }
        if self.header.is_none() {
            if self.fin {
                return self.fail(Error::violation("stream ended inside the fetch header"));
            }
            return None;
        }
        if self.pending.is_none() {
            if self.buf.is_empty() {
                return None;
            }
            let mut cur = &self.buf[..];
            match decode_head(&mut cur, &self.prior, &self.cfg) {
                Ok(head) => {
                    let used = self.buf.len() - cur.len();
                    self.buf.advance(used);
                    match head {
                        Head::EndOfRange(r) => {
                            let item = FetchItem::EndOfRange(r);
                            return Some(self.finish(item));
                        }
                        Head::Object(o, len) => self.pending = Some((o, len)),
                    }
                }
                Err(Error::Short) if self.fin => {
                    return self.fail(Error::violation("stream ended inside a fetch object"));
                }
                Err(Error::Short) => return None,
                Err(e) => return self.fail(e),
            }
        }
        let len = self.pending.as_ref().map_or(0, |p| p.1);
        if self.buf.len() < len {
            if self.fin {
                return self.fail(Error::violation("stream ended inside an object payload"));
            }
            return None;
        }
        let (mut obj, _) = self.pending.take()?;
        obj.payload = self.buf.split_to(len).freeze();
        Some(self.finish(FetchItem::Object(obj)))
    }

    fn finish(&mut self, item: FetchItem) -> Result<FetchItem, Error> {
        self.prior.update(&item);
        if let Err(e) = self.checker.check(&item) {
            self.error = Some(e.clone());
            return Err(e);
        }
        Ok(item)
    }
}
