//! Extension Headers (draft-16 §2.5, §10.2.1.2, §11): relay-visible key-value pairs on
//! tracks (in PUBLISH, SUBSCRIBE_OK, FETCH_OK and REQUEST_OK) and on objects.
//!
//! [`Extensions`] holds every extension the draft defines as a typed field and keeps every
//! other pair raw in [`Extensions::other`], in arrival order, so a relay forwards what it
//! does not understand unchanged (§2.5: unknown extensions "MUST NOT be modified, MUST be
//! cached ... and MUST be forwarded"). LOC properties ([`crate::loc`]) live there too.
//!
//! | Type | Name | Scope |
//! |-----:|:-----|:------|
//! | 0x02 | DELIVERY_TIMEOUT | Track |
//! | 0x04 | MAX_CACHE_DURATION | Track |
//! | 0x0B | IMMUTABLE_EXTENSIONS | Track, Object |
//! | 0x0E | DEFAULT_PUBLISHER_PRIORITY | Track |
//! | 0x22 | DEFAULT_PUBLISHER_GROUP_ORDER | Track |
//! | 0x30 | DYNAMIC_GROUPS | Track |
//! | 0x3C | PRIOR_GROUP_ID_GAP | Object |
//! | 0x3E | PRIOR_OBJECT_ID_GAP | Object |
//!
//! Encoding writes every pair sorted by type, as the delta encoding requires. Integer
//! values are written in their shortest varint form (the same value a peer may have sent
//! in a longer form); byte values, and the Immutable Extensions container as a whole, are
//! written exactly as received.
//!
//! A known type met outside its scope (a track extension on an object, or the reverse) has
//! no meaning the draft defines and no error either: it is kept raw in `other` and
//! forwarded like an unknown extension.
//!
//! Errors: a value the draft forbids (DELIVERY_TIMEOUT 0, a priority above 255, a group
//! order other than 1 or 2, DYNAMIC_GROUPS above 1) closes the session with
//! PROTOCOL_VIOLATION. The rules the draft states as malformed-track conditions on objects
//! (two gap headers, a nested Immutable Extensions, an unparsable immutable block, a gap
//! larger than the ID) give [`Error::MalformedTrack`]. The draft says nothing about a
//! track-level extension repeated in one block: tiermesh closes the session with
//! PROTOCOL_VIOLATION, since it cannot tell which value the publisher meant.

use bytes::{BufMut, Bytes};

use crate::coding::{DecodeError, TerminationCode, varint_len};
use crate::data::{Error, WriteError};
use crate::kvp::{self, KeyValue, MAX_VALUE_LEN, Value};
use crate::priority::{DEFAULT_PRIORITY, GroupOrder};

/// Extension Header types registered by draft-16 (IANA "MOQ Extension Headers").
pub mod kind {
    /// Publisher's delivery timeout for the track, in milliseconds (Track).
    pub const DELIVERY_TIMEOUT: u64 = 0x02;
    /// How long an object may be served from a cache, in milliseconds (Track).
    pub const MAX_CACHE_DURATION: u64 = 0x04;
    /// A block of extensions that relays must not modify (Track, Object).
    pub const IMMUTABLE_EXTENSIONS: u64 = 0x0B;
    /// Default publisher priority of subgroups and datagrams (Track).
    pub const DEFAULT_PUBLISHER_PRIORITY: u64 = 0x0E;
    /// Publisher's preferred group order (Track).
    pub const DEFAULT_PUBLISHER_GROUP_ORDER: u64 = 0x22;
    /// Whether subscribers may ask for a new group (Track).
    pub const DYNAMIC_GROUPS: u64 = 0x30;
    /// Number of groups before this one that will never exist (Object).
    pub const PRIOR_GROUP_ID_GAP: u64 = 0x3C;
    /// Number of objects before this one that will never exist (Object).
    pub const PRIOR_OBJECT_ID_GAP: u64 = 0x3E;
}

/// Where an extension block was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Track Extensions of PUBLISH, SUBSCRIBE_OK, FETCH_OK or REQUEST_OK.
    Track,
    /// Object Extension Headers on a data stream or datagram.
    Object,
}

impl Scope {
    /// Whether the draft defines `key` for this scope; `None` for a type it does not
    /// register.
    pub fn allows(self, key: u64) -> Option<bool> {
        use kind::*;
        match key {
            DELIVERY_TIMEOUT
            | MAX_CACHE_DURATION
            | DEFAULT_PUBLISHER_PRIORITY
            | DEFAULT_PUBLISHER_GROUP_ORDER
            | DYNAMIC_GROUPS => Some(self == Scope::Track),
            PRIOR_GROUP_ID_GAP | PRIOR_OBJECT_ID_GAP => Some(self == Scope::Object),
            IMMUTABLE_EXTENSIONS => Some(true),
            _ => None,
        }
    }
}

/// The extensions of one track or object. Typed fields are `None` when absent; the
/// accessors such as [`Extensions::publisher_priority`] apply the draft's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// DELIVERY_TIMEOUT (0x02), milliseconds, never 0.
    pub delivery_timeout: Option<u64>,
    /// MAX_CACHE_DURATION (0x04), milliseconds.
    pub max_cache_duration: Option<u64>,
    /// IMMUTABLE_EXTENSIONS (0x0B).
    pub immutable: Option<Immutable>,
    /// DEFAULT_PUBLISHER_PRIORITY (0x0E).
    pub default_publisher_priority: Option<u8>,
    /// DEFAULT_PUBLISHER_GROUP_ORDER (0x22).
    pub default_publisher_group_order: Option<GroupOrder>,
    /// DYNAMIC_GROUPS (0x30).
    pub dynamic_groups: Option<bool>,
    /// PRIOR_GROUP_ID_GAP (0x3C).
    pub prior_group_id_gap: Option<u64>,
    /// PRIOR_OBJECT_ID_GAP (0x3E).
    pub prior_object_id_gap: Option<u64>,
    /// Every other pair, raw and in wire order: unknown extensions, LOC properties, and
    /// known types met outside their scope.
    pub other: Vec<KeyValue>,
}

/// The Immutable Extensions container (type 0x0B): extensions the original publisher
/// protects from relays. The exact received bytes are kept so forwarding never changes
/// them (they may be covered by end-to-end authentication).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Immutable {
    raw: Bytes,
    inner: Box<Extensions>,
}

impl Immutable {
    /// Builds the container from `inner` (which must not hold another container).
    ///
    /// Fails if `inner` has an Immutable Extensions of its own or encodes to more than
    /// 2^16-1 bytes, the largest value of a key-value pair.
    pub fn new(inner: Extensions) -> Result<Self, WriteError> {
        if inner.immutable.is_some() {
            return Err(WriteError::NestedImmutable);
        }
        let mut raw = Vec::new();
        inner.encode_block(&mut raw);
        if raw.len() > MAX_VALUE_LEN {
            return Err(WriteError::TooBig("immutable extensions"));
        }
        Ok(Immutable { raw: raw.into(), inner: Box::new(inner) })
    }

    /// The extensions inside, decoded.
    pub fn extensions(&self) -> &Extensions {
        &self.inner
    }

    /// The container's value exactly as received or built.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    fn decode(raw: Bytes, scope: Scope) -> Result<Self, Error> {
        let mut cur = &raw[..];
        let pairs = kvp::get_pairs_to_end(&mut cur).map_err(|_| match scope {
            // §11 Immutable Extensions: "A Key-Value-Pair cannot be parsed" makes the track
            // malformed.
            Scope::Object => Error::malformed_track("immutable extensions do not parse"),
            // In a control message the value does not match its type's serialization.
            Scope::Track => Error::Session {
                code: TerminationCode::KeyValueFormattingError,
                reason: "immutable track extensions do not parse",
            },
        })?;
        let inner = Extensions::from_pairs(pairs, scope, true)?;
        Ok(Immutable { raw, inner: Box::new(inner) })
    }
}

/// A rule broken inside a block: malformed track for objects, PROTOCOL_VIOLATION for
/// tracks.
fn scoped(scope: Scope, reason: &'static str) -> Error {
    match scope {
        Scope::Object => Error::malformed_track(reason),
        Scope::Track => Error::violation(reason),
    }
}

fn set_once<T>(slot: &mut Option<T>, v: T, scope: Scope, dup: &'static str) -> Result<(), Error> {
    if slot.is_some() {
        return Err(scoped(scope, dup));
    }
    *slot = Some(v);
    Ok(())
}

impl Extensions {
    /// True when there is no extension at all.
    pub fn is_empty(&self) -> bool {
        self.delivery_timeout.is_none()
            && self.max_cache_duration.is_none()
            && self.immutable.is_none()
            && self.default_publisher_priority.is_none()
            && self.default_publisher_group_order.is_none()
            && self.dynamic_groups.is_none()
            && self.prior_group_id_gap.is_none()
            && self.prior_object_id_gap.is_none()
            && self.other.is_empty()
    }

    /// Decodes a Track Extensions block that runs to the end of a control message.
    /// Errors carry the session termination code.
    pub fn decode_track_block(block: &[u8]) -> Result<Self, DecodeError> {
        let mut cur = block;
        Self::from_track_pairs(kvp::get_pairs_to_end(&mut cur)?)
    }

    /// Interprets Track Extensions already split into pairs (as control messages hold
    /// them). Errors carry the session termination code.
    pub fn from_track_pairs(pairs: Vec<KeyValue>) -> Result<Self, DecodeError> {
        Self::from_pairs(pairs, Scope::Track, false).map_err(|e| match e {
            Error::Session { code, reason } => DecodeError::Malformed { code, reason },
            _ => DecodeError::violation("invalid track extensions"),
        })
    }

    /// Decodes the Extension Headers of an object, `block` being exactly the bytes counted
    /// by Extension Headers Length.
    pub fn decode_object_block(block: &[u8]) -> Result<Self, Error> {
        let mut cur = block;
        let pairs = kvp::get_pairs_to_end(&mut cur)?;
        Self::from_pairs(pairs, Scope::Object, false)
    }

    fn from_pairs(pairs: Vec<KeyValue>, scope: Scope, nested: bool) -> Result<Self, Error> {
        use kind::*;
        let mut ext = Extensions::default();
        for p in pairs {
            if scope.allows(p.key) != Some(true) {
                ext.other.push(p);
                continue;
            }
            match (p.key, &p.value) {
                (DELIVERY_TIMEOUT, Value::Int(v)) => {
                    if *v == 0 {
                        return Err(Error::violation("DELIVERY_TIMEOUT extension is 0"));
                    }
                    set_once(&mut ext.delivery_timeout, *v, scope, "DELIVERY_TIMEOUT repeated")?;
                }
                (MAX_CACHE_DURATION, Value::Int(v)) => {
                    set_once(
                        &mut ext.max_cache_duration,
                        *v,
                        scope,
                        "MAX_CACHE_DURATION repeated",
                    )?;
                }
                (DEFAULT_PUBLISHER_PRIORITY, Value::Int(v)) => {
                    let v = u8::try_from(*v)
                        .map_err(|_| Error::violation("DEFAULT_PUBLISHER_PRIORITY above 255"))?;
                    set_once(
                        &mut ext.default_publisher_priority,
                        v,
                        scope,
                        "DEFAULT_PUBLISHER_PRIORITY repeated",
                    )?;
                }
                (DEFAULT_PUBLISHER_GROUP_ORDER, Value::Int(v)) => {
                    let v = GroupOrder::from_code(*v).ok_or(Error::violation(
                        "DEFAULT_PUBLISHER_GROUP_ORDER is neither 1 nor 2",
                    ))?;
                    set_once(
                        &mut ext.default_publisher_group_order,
                        v,
                        scope,
                        "DEFAULT_PUBLISHER_GROUP_ORDER repeated",
                    )?;
                }
                (DYNAMIC_GROUPS, Value::Int(v)) => {
                    let v = match v {
                        0 => false,
                        1 => true,
                        _ => return Err(Error::violation("DYNAMIC_GROUPS above 1")),
                    };
                    set_once(&mut ext.dynamic_groups, v, scope, "DYNAMIC_GROUPS repeated")?;
                }
                (PRIOR_GROUP_ID_GAP, Value::Int(v)) => {
                    set_once(
                        &mut ext.prior_group_id_gap,
                        *v,
                        scope,
                        "PRIOR_GROUP_ID_GAP repeated",
                    )?;
                }
                (PRIOR_OBJECT_ID_GAP, Value::Int(v)) => {
                    set_once(
                        &mut ext.prior_object_id_gap,
                        *v,
                        scope,
                        "PRIOR_OBJECT_ID_GAP repeated",
                    )?;
                }
                (IMMUTABLE_EXTENSIONS, Value::Bytes(b)) => {
                    if nested {
                        return Err(scoped(scope, "immutable extensions contain another"));
                    }
                    let imm = Immutable::decode(b.clone(), scope)?;
                    set_once(&mut ext.immutable, imm, scope, "IMMUTABLE_EXTENSIONS repeated")?;
                }
                // The parity of a type fixes its value's form, so every registered type
                // arrives in the form matched above.
                _ => ext.other.push(p),
            }
        }
        if !nested && let Some(imm) = &ext.immutable {
            let inner = imm.extensions();
            if (inner.prior_group_id_gap.is_some() && ext.prior_group_id_gap.is_some())
                || (inner.prior_object_id_gap.is_some() && ext.prior_object_id_gap.is_some())
            {
                return Err(scoped(scope, "gap extension both inside and outside immutable"));
            }
        }
        Ok(ext)
    }

    /// All pairs in wire order (sorted by type, stable, as the delta encoding requires).
    pub fn to_pairs(&self) -> Vec<KeyValue> {
        use kind::*;
        let mut out = Vec::with_capacity(self.other.len() + 8);
        if let Some(v) = self.delivery_timeout {
            out.push(KeyValue::int(DELIVERY_TIMEOUT, v));
        }
        if let Some(v) = self.max_cache_duration {
            out.push(KeyValue::int(MAX_CACHE_DURATION, v));
        }
        if let Some(v) = &self.immutable {
            out.push(KeyValue { key: IMMUTABLE_EXTENSIONS, value: Value::Bytes(v.raw.clone()) });
        }
        if let Some(v) = self.default_publisher_priority {
            out.push(KeyValue::int(DEFAULT_PUBLISHER_PRIORITY, v.into()));
        }
        if let Some(v) = self.default_publisher_group_order {
            out.push(KeyValue::int(DEFAULT_PUBLISHER_GROUP_ORDER, v.code()));
        }
        if let Some(v) = self.dynamic_groups {
            out.push(KeyValue::int(DYNAMIC_GROUPS, v.into()));
        }
        if let Some(v) = self.prior_group_id_gap {
            out.push(KeyValue::int(PRIOR_GROUP_ID_GAP, v));
        }
        if let Some(v) = self.prior_object_id_gap {
            out.push(KeyValue::int(PRIOR_OBJECT_ID_GAP, v));
        }
        out.extend(self.other.iter().cloned());
        kvp::sort(&mut out);
        out
    }

    /// Writes the pairs without a length (Track Extensions at the end of a control message,
    /// or the value of an Immutable Extensions container).
    pub fn encode_block<B: BufMut>(&self, buf: &mut B) {
        kvp::put_pairs(buf, &self.to_pairs());
    }

    /// Number of bytes [`Extensions::encode_block`] writes.
    pub fn block_len(&self) -> usize {
        let mut prev = 0;
        let mut n = 0;
        for p in self.to_pairs() {
            n += varint_len(p.key - prev);
            prev = p.key;
            n += match &p.value {
                Value::Int(v) => varint_len(*v),
                Value::Bytes(b) => varint_len(b.len() as u64) + b.len(),
            };
        }
        n
    }

    /// Writes the object form: Extension Headers Length, then the pairs (§10.2.1.2).
    pub fn encode_object<B: BufMut>(&self, buf: &mut B) {
        let mut block = Vec::with_capacity(self.block_len());
        self.encode_block(&mut block);
        crate::coding::put_len_bytes(buf, &block);
    }

    /// The first raw pair of type `key` in [`Extensions::other`].
    pub fn get(&self, key: u64) -> Option<&KeyValue> {
        self.other.iter().find(|p| p.key == key)
    }

    /// Replaces every raw pair of the pair's type in [`Extensions::other`] with `pair`.
    pub fn set(&mut self, pair: KeyValue) {
        self.remove(pair.key);
        self.other.push(pair);
    }

    /// Removes every raw pair of type `key` from [`Extensions::other`].
    pub fn remove(&mut self, key: u64) {
        self.other.retain(|p| p.key != key);
    }

    /// The raw pair of type `key`, looked up first outside and then inside the Immutable
    /// Extensions container.
    pub fn find(&self, key: u64) -> Option<&KeyValue> {
        self.get(key).or_else(|| self.immutable.as_ref().and_then(|i| i.extensions().get(key)))
    }

    /// The track's publisher priority: DEFAULT_PUBLISHER_PRIORITY or 128 when omitted.
    pub fn publisher_priority(&self) -> u8 {
        self.default_publisher_priority
            .or_else(|| self.immutable.as_ref()?.extensions().default_publisher_priority)
            .unwrap_or(DEFAULT_PRIORITY)
    }

    /// The publisher's group order: DEFAULT_PUBLISHER_GROUP_ORDER or Ascending when
    /// omitted.
    pub fn group_order(&self) -> GroupOrder {
        self.default_publisher_group_order
            .or_else(|| self.immutable.as_ref()?.extensions().default_publisher_group_order)
            .unwrap_or(GroupOrder::Ascending)
    }

    /// Whether the track accepts NEW_GROUP_REQUEST (DYNAMIC_GROUPS, false when omitted).
    pub fn dynamic_groups(&self) -> bool {
        self.dynamic_groups
            .or_else(|| self.immutable.as_ref()?.extensions().dynamic_groups)
            .unwrap_or(false)
    }

    /// The publisher's delivery timeout in milliseconds, if set.
    pub fn delivery_timeout_ms(&self) -> Option<u64> {
        self.delivery_timeout.or_else(|| self.immutable.as_ref()?.extensions().delivery_timeout)
    }

    /// The Prior Group ID Gap, inside or outside the immutable container.
    pub fn group_gap(&self) -> Option<u64> {
        self.prior_group_id_gap.or_else(|| self.immutable.as_ref()?.extensions().prior_group_id_gap)
    }

    /// The Prior Object ID Gap, inside or outside the immutable container.
    pub fn object_gap(&self) -> Option<u64> {
        self.prior_object_id_gap
            .or_else(|| self.immutable.as_ref()?.extensions().prior_object_id_gap)
    }

    /// Checks the gap headers against the object's Location: a gap larger than the Group ID
    /// or Object ID makes the track malformed (§11 Prior Group ID Gap, Prior Object ID Gap).
    pub fn check_gaps(&self, group_id: u64, object_id: u64) -> Result<(), Error> {
        if self.group_gap().is_some_and(|g| g > group_id) {
            return Err(Error::malformed_track("Prior Group ID Gap larger than the Group ID"));
        }
        if self.object_gap().is_some_and(|g| g > object_id) {
            return Err(Error::malformed_track("Prior Object ID Gap larger than the Object ID"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(hex_str: &str) -> Result<Extensions, Error> {
        Extensions::decode_object_block(&hex::decode(hex_str).unwrap())
    }

    fn track(hex_str: &str) -> Result<Extensions, DecodeError> {
        Extensions::decode_track_block(&hex::decode(hex_str).unwrap())
    }

    /// Round trip of a hand-written track block against decoder and encoder.
    fn track_fixture(hex_str: &str, expected: &Extensions) {
        let bytes = hex::decode(hex_str).unwrap();
        assert_eq!(&Extensions::decode_track_block(&bytes).unwrap(), expected);
        let mut out = Vec::new();
        expected.encode_block(&mut out);
        assert_eq!(hex::encode(&out), hex_str);
        assert_eq!(expected.block_len(), bytes.len());
    }

    #[test]
    fn delivery_timeout_fixture() {
        // Type 0x02 (delta 2), value 1000 ms = varint 0x43e8.
        let e = Extensions { delivery_timeout: Some(1000), ..Default::default() };
        track_fixture("0243e8", &e);
    }

    #[test]
    fn max_cache_duration_fixture() {
        // Type 0x04 (delta 4), value 60000 ms = 4-byte varint 0x8000ea60.
        let e = Extensions { max_cache_duration: Some(60_000), ..Default::default() };
        track_fixture("048000ea60", &e);
    }

    #[test]
    fn default_publisher_priority_fixture() {
        // Type 0x0E (delta 0x0e), value 32 = 0x20.
        let e = Extensions { default_publisher_priority: Some(32), ..Default::default() };
        track_fixture("0e20", &e);
        // 255 needs a two-byte varint: 0x40ff.
        let e = Extensions { default_publisher_priority: Some(255), ..Default::default() };
        track_fixture("0e40ff", &e);
    }

    #[test]
    fn default_publisher_group_order_fixture() {
        // Type 0x22 (delta 0x22), Descending = 0x02.
        let e = Extensions {
            default_publisher_group_order: Some(GroupOrder::Descending),
            ..Default::default()
        };
        track_fixture("2202", &e);
    }

    #[test]
    fn dynamic_groups_fixture() {
        // Type 0x30 (delta 0x30), value 1.
        let e = Extensions { dynamic_groups: Some(true), ..Default::default() };
        track_fixture("3001", &e);
    }

    #[test]
    fn all_track_extensions_delta_encoded() {
        // 0x02 = 100      -> delta 02, value 0x4064
        // 0x04 = 5000     -> delta 02, value 0x5388
        // 0x0E = 16       -> delta 0a, value 10
        // 0x22 = 2        -> delta 14, value 02
        // 0x30 = 1        -> delta 0e, value 01
        let e = Extensions {
            delivery_timeout: Some(100),
            max_cache_duration: Some(5000),
            default_publisher_priority: Some(16),
            default_publisher_group_order: Some(GroupOrder::Descending),
            dynamic_groups: Some(true),
            ..Default::default()
        };
        track_fixture(concat!("024064025388", "0a10", "1402", "0e01"), &e);
    }

    #[test]
    fn prior_gaps_fixture() {
        // Object block: 0x3C = 2 (delta 3c, value 02), 0x3E = 5 (delta 02, value 05).
        let bytes = hex::decode(concat!("3c02", "0205")).unwrap();
        let e = Extensions::decode_object_block(&bytes).unwrap();
        let expected = Extensions {
            prior_group_id_gap: Some(2),
            prior_object_id_gap: Some(5),
            ..Default::default()
        };
        assert_eq!(e, expected);
        let mut out = Vec::new();
        expected.encode_object(&mut out);
        // Object form: Extension Headers Length 4, then the block.
        assert_eq!(hex::encode(out), concat!("04", "3c020205"));
    }

    #[test]
    fn immutable_fixture_keeps_bytes_and_decodes_inside() {
        // Object block:
        //   0x0B immutable (delta 0b), length 6, value:
        //       0x3E gap = 1 (delta 3e, value 01)
        //       0x41 unknown odd (delta 03, length 2, "hi")
        //   0x10 LOC timestamp (delta 05 from 0x0b), value 0x25
        let hex_str = concat!("0b06", "3e01", "03026869", "0525");
        let e = object(hex_str).unwrap();
        let imm = e.immutable.as_ref().unwrap();
        assert_eq!(imm.raw().as_ref(), hex::decode("3e0103026869").unwrap());
        assert_eq!(imm.extensions().prior_object_id_gap, Some(1));
        assert_eq!(imm.extensions().other, vec![KeyValue::bytes(0x41, &b"hi"[..])]);
        assert_eq!(e.other, vec![KeyValue::int(0x10, 0x25)]);
        assert_eq!(e.object_gap(), Some(1));
        let mut out = Vec::new();
        e.encode_block(&mut out);
        assert_eq!(hex::encode(out), hex_str);
        // Built from parts, the container encodes the same bytes.
        let mut inner = Extensions { prior_object_id_gap: Some(1), ..Default::default() };
        inner.other.push(KeyValue::bytes(0x41, &b"hi"[..]));
        assert_eq!(Immutable::new(inner).unwrap(), *imm);
    }

    #[test]
    fn unknown_extensions_are_forwarded_unchanged() {
        // 0x07 (odd, 3 bytes "abc"), 0x07 again (empty), 0x4000 (even, 2-byte delta 0x7ff9,
        // value 7). Repeats and order survive.
        let hex_str = concat!("0703616263", "0000", "7ff907");
        let e = object(hex_str).unwrap();
        assert_eq!(e.other.len(), 3);
        let mut out = Vec::new();
        e.encode_block(&mut out);
        assert_eq!(hex::encode(out), hex_str);
    }

    #[test]
    fn track_extension_on_an_object_is_kept_raw() {
        // DELIVERY_TIMEOUT = 0 on an object: not a track, so not validated, kept raw.
        let e = object("0200").unwrap();
        assert_eq!(e.delivery_timeout, None);
        assert_eq!(e.other, vec![KeyValue::int(2, 0)]);
        // A gap in track extensions is kept raw as well.
        let e = track("3c05").unwrap();
        assert_eq!(e.prior_group_id_gap, None);
        assert_eq!(e.other, vec![KeyValue::int(0x3c, 5)]);
    }

    fn code_of(r: Result<Extensions, DecodeError>) -> TerminationCode {
        match r {
            Err(DecodeError::Malformed { code, .. }) => code,
            other => panic!("expected a malformed block, got {other:?}"),
        }
    }

    /// Every "MUST close the session with PROTOCOL_VIOLATION" of §11.
    #[test]
    fn invalid_track_values_close_the_session() {
        use TerminationCode::ProtocolViolation as PV;
        assert_eq!(code_of(track("0200")), PV, "DELIVERY_TIMEOUT 0");
        assert_eq!(code_of(track("0e4100")), PV, "DEFAULT_PUBLISHER_PRIORITY 256");
        assert_eq!(code_of(track("2200")), PV, "group order 0");
        assert_eq!(code_of(track("2203")), PV, "group order 3");
        assert_eq!(code_of(track("3002")), PV, "DYNAMIC_GROUPS 2");
        assert_eq!(code_of(track("02010001")), PV, "DELIVERY_TIMEOUT repeated");
        // Key-value framing: length above 2^16-1.
        assert_eq!(code_of(track("0b80010000")), PV);
    }

    #[test]
    fn immutable_rules() {
        // Nested immutable on an object: malformed track.
        // outer 0x0B len 2 { 0x0B len 0 }
        assert!(matches!(object("0b020b00"), Err(Error::MalformedTrack { .. })));
        // Unparsable inside: 0x0B len 2 { type 0x01 len 5 (cut) }.
        assert!(matches!(object("0b020105"), Err(Error::MalformedTrack { .. })));
        // Two containers.
        assert!(matches!(object(concat!("0b00", "0000")), Err(Error::MalformedTrack { .. })));
        // Same gap inside and outside.
        assert!(matches!(object(concat!("0b023e01", "3302")), Err(Error::MalformedTrack { .. })));
        // In track extensions an unparsable container is a KEY_VALUE_FORMATTING_ERROR.
        assert_eq!(code_of(track("0b020105")), TerminationCode::KeyValueFormattingError);
        // Building a nested one is refused.
        let inner = Extensions {
            immutable: Some(Immutable::new(Extensions::default()).unwrap()),
            ..Default::default()
        };
        assert_eq!(Immutable::new(inner), Err(WriteError::NestedImmutable));
    }

    #[test]
    fn gap_rules_are_malformed_track() {
        assert!(matches!(object(concat!("3c01", "0002")), Err(Error::MalformedTrack { .. })));
        assert!(matches!(object(concat!("3e01", "0002")), Err(Error::MalformedTrack { .. })));
        let e = object("3c05").unwrap();
        assert!(e.check_gaps(5, 0).is_ok());
        assert!(matches!(e.check_gaps(4, 0), Err(Error::MalformedTrack { .. })));
        let e = object("3e03").unwrap();
        assert!(e.check_gaps(0, 3).is_ok());
        assert!(matches!(e.check_gaps(9, 2), Err(Error::MalformedTrack { .. })));
    }

    #[test]
    fn defaults_apply_when_omitted() {
        let e = Extensions::default();
        assert!(e.is_empty());
        assert_eq!(e.publisher_priority(), 128);
        assert_eq!(e.group_order(), GroupOrder::Ascending);
        assert!(!e.dynamic_groups());
        assert_eq!(e.delivery_timeout_ms(), None);
    }

    #[test]
    fn prefix_of_a_block_is_malformed_not_short() {
        // The block length is known, so a cut pair is an error, never "need more".
        assert!(matches!(object("070361"), Err(Error::Session { .. })));
    }
}
