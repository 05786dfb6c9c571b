//! Small protocol values shared by control messages, data streams and the session: request
//! and track identifiers, locations, track names, reason phrases, group order and
//! subscription filters (draft-16 §1.4, §2.4, §5.1.2).

use std::fmt;

use bytes::{BufMut, Bytes};

use crate::coding::{DecodeError, get_bytes, get_varint, put_len_bytes, put_varint};

/// Why a value cannot be built: it would break a limit the draft sets on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A track namespace was given more than [`MAX_NAMESPACE_FIELDS`] fields.
    #[error("a track namespace has at most 32 fields, got {0}")]
    TooManyFields(usize),
    /// A track namespace field was empty (every field carries at least one byte).
    #[error("a track namespace field is empty")]
    EmptyField,
    /// A namespace or full track name is longer than [`MAX_FULL_NAME_LEN`] bytes.
    #[error("a full track name is at most 4096 bytes, got {0}")]
    NameTooLong(usize),
    /// A reason phrase is longer than [`MAX_REASON_LEN`] bytes.
    #[error("a reason phrase is at most 1024 bytes, got {0}")]
    ReasonTooLong(usize),
}

/// The most fields a track namespace carries (draft-16 §2.4.1).
pub const MAX_NAMESPACE_FIELDS: usize = 32;

/// The longest namespace or full track name, in bytes of fields and name (draft-16 §2.4.1).
pub const MAX_FULL_NAME_LEN: usize = 4096;

/// The longest reason phrase in bytes (draft-16 §1.4.3).
pub const MAX_REASON_LEN: usize = 1024;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<u64> for $name {
            fn from(v: u64) -> Self {
                $name(v)
            }
        }

        impl $name {
            /// Reads the value as one varint.
            pub fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
                get_varint(buf).map($name)
            }

            /// Writes the value as one varint.
            pub fn encode<B: BufMut>(&self, buf: &mut B) {
                put_varint(buf, self.0)
            }
        }
    };
}

id_newtype!(
    /// A request identifier (draft-16 §9.1): even from the client, odd from the server, each
    /// new request two above the last.
    RequestId
);
id_newtype!(
    /// The session-local number that stands for a track on data streams and datagrams
    /// (draft-16 §10.1).
    TrackAlias
);
id_newtype!(
    /// A group number within a track.
    GroupId
);
id_newtype!(
    /// An object number within a group.
    ObjectId
);

/// The position of an object in a track (draft-16 §1.4.1): ordered by group, then object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Location {
    /// The group.
    pub group: GroupId,
    /// The object within the group.
    pub object: ObjectId,
}

impl Location {
    /// The location `{group, object}`.
    pub fn new(group: u64, object: u64) -> Self {
        Location { group: GroupId(group), object: ObjectId(object) }
    }

    /// Reads `Group (i), Object (i)`.
    pub fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        let group = get_varint(buf)?;
        let object = get_varint(buf)?;
        Ok(Location::new(group, object))
    }

    /// Writes `Group (i), Object (i)`.
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        put_varint(buf, self.group.0);
        put_varint(buf, self.object.0);
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}, {}}}", self.group, self.object)
    }
}

/// Writes bytes in the draft's recommended safe form (§1.5): `a-z A-Z 0-9 _` as is,
/// every other byte as `.` and two lower-case hex digits.
fn render_bytes(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b == b'_' {
            write!(f, "{}", b as char)?;
        } else {
            write!(f, ".{b:02x}")?;
        }
    }
    Ok(())
}

/// A track namespace: an ordered tuple of byte fields (draft-16 §2.4.1).
///
/// A namespace in SUBSCRIBE, PUBLISH, FETCH and PUBLISH_NAMESPACE has 1 to 32 fields; the
/// prefix of SUBSCRIBE_NAMESPACE and the suffix of NAMESPACE / NAMESPACE_DONE may have none.
/// Every field is non-empty and the fields together are at most 4096 bytes; [`Self::new`]
/// and the decoders enforce that, so a value of this type always fits the wire.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TrackNamespace {
    fields: Vec<Bytes>,
}

impl TrackNamespace {
    /// A namespace of the given fields (0 to 32 non-empty fields, at most 4096 bytes).
    pub fn new<I, F>(fields: I) -> Result<Self, ValueError>
    where
        I: IntoIterator<Item = F>,
        F: Into<Bytes>,
    {
        let fields: Vec<Bytes> = fields.into_iter().map(Into::into).collect();
        if fields.len() > MAX_NAMESPACE_FIELDS {
            return Err(ValueError::TooManyFields(fields.len()));
        }
        if fields.iter().any(|f| f.is_empty()) {
            return Err(ValueError::EmptyField);
        }
        let len: usize = fields.iter().map(Bytes::len).sum();
        if len > MAX_FULL_NAME_LEN {
            return Err(ValueError::NameTooLong(len));
        }
        Ok(TrackNamespace { fields })
    }

    /// A namespace from a `/`-separated path such as `clinic/room-42/dr-lee` (empty segments
    /// are skipped).
    pub fn from_path(path: &str) -> Result<Self, ValueError> {
        TrackNamespace::new(
            path.split('/').filter(|s| !s.is_empty()).map(|s| Bytes::copy_from_slice(s.as_bytes())),
        )
    }

    /// The fields in order.
    pub fn fields(&self) -> &[Bytes] {
        &self.fields
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True for the empty tuple (valid only as a prefix or suffix).
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The sum of the field lengths: the namespace's length as the draft counts it.
    pub fn byte_len(&self) -> usize {
        self.fields.iter().map(Bytes::len).sum()
    }

    /// True if `prefix`'s fields are the first fields of `self` (field-wise, byte-exact).
    pub fn has_prefix(&self, prefix: &TrackNamespace) -> bool {
        self.fields.starts_with(&prefix.fields)
    }

    /// The fields after `prefix`, if `prefix` is a prefix of `self`.
    pub fn strip_prefix(&self, prefix: &TrackNamespace) -> Option<TrackNamespace> {
        self.fields
            .strip_prefix(prefix.fields.as_slice())
            .map(|rest| TrackNamespace { fields: rest.to_vec() })
    }

    /// `self` followed by the fields of `suffix`, if the result stays within the limits.
    pub fn join(&self, suffix: &TrackNamespace) -> Result<TrackNamespace, ValueError> {
        TrackNamespace::new(self.fields.iter().chain(suffix.fields.iter()).cloned())
    }

    /// Reads a namespace of 1 to 32 fields.
    pub fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        Self::decode_range(buf, 1)
    }

    /// Reads a namespace of 0 to 32 fields (the prefix of SUBSCRIBE_NAMESPACE, the suffix of
    /// NAMESPACE and NAMESPACE_DONE).
    pub fn decode_prefix(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        Self::decode_range(buf, 0)
    }

    fn decode_range(buf: &mut &[u8], min_fields: u64) -> Result<Self, DecodeError> {
        let count = get_varint(buf)?;
        if count < min_fields {
            return Err(DecodeError::violation("track namespace has no fields"));
        }
        if count > MAX_NAMESPACE_FIELDS as u64 {
            return Err(DecodeError::violation("track namespace has more than 32 fields"));
        }
        let mut fields = Vec::new();
        let mut total = 0usize;
        for _ in 0..count {
            let len = get_varint(buf)?;
            if len == 0 {
                return Err(DecodeError::violation("track namespace field is empty"));
            }
            if len > (MAX_FULL_NAME_LEN - total) as u64 {
                return Err(DecodeError::violation("track namespace longer than 4096 bytes"));
            }
            total += len as usize;
            fields.push(Bytes::copy_from_slice(get_bytes(buf, len as usize)?));
        }
        Ok(TrackNamespace { fields })
    }

    /// Writes `Number of Fields (i)` and each field as `Length (i), Value (..)`.
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        put_varint(buf, self.fields.len() as u64);
        for f in &self.fields {
            put_len_bytes(buf, f);
        }
    }
}

impl fmt::Display for TrackNamespace {
    /// The draft's safe rendering: fields joined by `-`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, field) in self.fields.iter().enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            render_bytes(f, field)?;
        }
        Ok(())
    }
}

/// A track name: bytes, possibly empty (draft-16 §2.4.1).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TrackName(pub Bytes);

impl TrackName {
    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for TrackName {
    fn from(s: &str) -> Self {
        TrackName(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl fmt::Display for TrackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        render_bytes(f, &self.0)
    }
}

/// A track's full name: namespace (1 to 32 fields) and name, at most 4096 bytes together.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FullTrackName {
    /// The namespace.
    pub namespace: TrackNamespace,
    /// The name within the namespace.
    pub name: TrackName,
}

impl FullTrackName {
    /// The full name, if namespace and name together are at most 4096 bytes.
    pub fn new(namespace: TrackNamespace, name: impl Into<TrackName>) -> Result<Self, ValueError> {
        let name = name.into();
        let len = namespace.byte_len() + name.0.len();
        if len > MAX_FULL_NAME_LEN {
            return Err(ValueError::NameTooLong(len));
        }
        Ok(FullTrackName { namespace, name })
    }

    /// Reads `Track Namespace (..), Track Name Length (i), Track Name (..)`.
    pub fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        let namespace = TrackNamespace::decode(buf)?;
        let len = get_varint(buf)?;
        if len > (MAX_FULL_NAME_LEN - namespace.byte_len()) as u64 {
            return Err(DecodeError::violation("full track name longer than 4096 bytes"));
        }
        let name = TrackName(Bytes::copy_from_slice(get_bytes(buf, len as usize)?));
        Ok(FullTrackName { namespace, name })
    }

    /// Writes the namespace, then the name's length and bytes.
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        self.namespace.encode(buf);
        put_len_bytes(buf, &self.name.0);
    }
}

impl fmt::Display for FullTrackName {
    /// The draft's safe rendering: `ns1-ns2--name`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}--{}", self.namespace, self.name)
    }
}

/// Diagnostic text sent with an error (draft-16 §1.4.3): at most 1024 bytes, meant to be
/// UTF-8 but kept as received.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ReasonPhrase(Bytes);

impl ReasonPhrase {
    /// A reason phrase of at most 1024 bytes.
    pub fn new(text: impl Into<Bytes>) -> Result<Self, ValueError> {
        let b = text.into();
        if b.len() > MAX_REASON_LEN {
            return Err(ValueError::ReasonTooLong(b.len()));
        }
        Ok(ReasonPhrase(b))
    }

    /// A reason phrase from text, cut at a character boundary to fit 1024 bytes.
    pub fn truncated(text: &str) -> Self {
        let mut end = text.len().min(MAX_REASON_LEN);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        ReasonPhrase(Bytes::copy_from_slice(&text.as_bytes()[..end]))
    }

    /// The bytes as received.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text, with invalid UTF-8 replaced.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    /// Reads `Reason Phrase Length (i), Reason Phrase Value (..)`; a length above 1024 closes
    /// the session with PROTOCOL_VIOLATION.
    pub fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        let len = get_varint(buf)?;
        if len > MAX_REASON_LEN as u64 {
            return Err(DecodeError::violation("reason phrase longer than 1024 bytes"));
        }
        Ok(ReasonPhrase(Bytes::copy_from_slice(get_bytes(buf, len as usize)?)))
    }

    /// Writes the length and bytes.
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        put_len_bytes(buf, &self.0);
    }
}

impl fmt::Display for ReasonPhrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// The order in which groups of one subscription or fetch are delivered (draft-16 §9.2.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupOrder {
    /// Lower group numbers first (0x1).
    Ascending,
    /// Higher group numbers (newer groups) first (0x2).
    Descending,
}

impl GroupOrder {
    /// The wire value.
    pub fn code(self) -> u64 {
        match self {
            GroupOrder::Ascending => 0x1,
            GroupOrder::Descending => 0x2,
        }
    }

    /// The order for a wire value, if it is one the draft allows.
    pub fn from_code(v: u64) -> Option<Self> {
        match v {
            0x1 => Some(GroupOrder::Ascending),
            0x2 => Some(GroupOrder::Descending),
            _ => None,
        }
    }
}

/// The filter type code of a [`SubscriptionFilter`] (draft-16 §5.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterType {
    /// Next Group Start (0x1).
    NextGroupStart,
    /// Largest Object (0x2).
    LargestObject,
    /// AbsoluteStart (0x3).
    AbsoluteStart,
    /// AbsoluteRange (0x4).
    AbsoluteRange,
}

impl FilterType {
    /// The wire value.
    pub fn code(self) -> u64 {
        match self {
            FilterType::NextGroupStart => 0x1,
            FilterType::LargestObject => 0x2,
            FilterType::AbsoluteStart => 0x3,
            FilterType::AbsoluteRange => 0x4,
        }
    }

    /// The filter type for a wire value, if the draft defines it.
    pub fn from_code(v: u64) -> Option<Self> {
        Some(match v {
            0x1 => FilterType::NextGroupStart,
            0x2 => FilterType::LargestObject,
            0x3 => FilterType::AbsoluteStart,
            0x4 => FilterType::AbsoluteRange,
            _ => return None,
        })
    }
}

/// Which objects of a track a subscription passes (draft-16 §5.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionFilter {
    /// Start at `{Largest.Group + 1, 0}`, open ended.
    NextGroupStart,
    /// Start at `{Largest.Group, Largest.Object + 1}`, open ended.
    LargestObject,
    /// Start at the given location, open ended.
    AbsoluteStart(Location),
    /// From `start` to the end of group `end_group` (inclusive).
    AbsoluteRange {
        /// The first location that passes.
        start: Location,
        /// The last group that passes; the draft requires `end_group >= start.group`.
        end_group: GroupId,
    },
}

impl SubscriptionFilter {
    /// The filter's type code.
    pub fn filter_type(&self) -> FilterType {
        match self {
            SubscriptionFilter::NextGroupStart => FilterType::NextGroupStart,
            SubscriptionFilter::LargestObject => FilterType::LargestObject,
            SubscriptionFilter::AbsoluteStart(_) => FilterType::AbsoluteStart,
            SubscriptionFilter::AbsoluteRange { .. } => FilterType::AbsoluteRange,
        }
    }

    /// Reads `Filter Type (i), [Start Location], [End Group (i)]`. An unknown filter type
    /// closes the session with PROTOCOL_VIOLATION.
    pub fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        let t = get_varint(buf)?;
        Ok(match FilterType::from_code(t) {
            Some(FilterType::NextGroupStart) => SubscriptionFilter::NextGroupStart,
            Some(FilterType::LargestObject) => SubscriptionFilter::LargestObject,
            Some(FilterType::AbsoluteStart) => {
                SubscriptionFilter::AbsoluteStart(Location::decode(buf)?)
            }
            Some(FilterType::AbsoluteRange) => {
                let start = Location::decode(buf)?;
                let end_group = GroupId::decode(buf)?;
                SubscriptionFilter::AbsoluteRange { start, end_group }
            }
            None => return Err(DecodeError::violation("unknown subscription filter type")),
        })
    }

    /// Writes the filter.
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        put_varint(buf, self.filter_type().code());
        match self {
            SubscriptionFilter::NextGroupStart | SubscriptionFilter::LargestObject => {}
            SubscriptionFilter::AbsoluteStart(start) => start.encode(buf),
            SubscriptionFilter::AbsoluteRange { start, end_group } => {
                start.encode(buf);
                end_group.encode(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_orders_by_group_then_object() {
        // draft-16 §1.4.1: A < B if A.Group < B.Group, or same group and A.Object < B.Object.
        assert!(Location::new(1, 9) < Location::new(2, 0));
        assert!(Location::new(2, 0) < Location::new(2, 1));
        assert_eq!(Location::new(3, 3).max(Location::new(3, 2)), Location::new(3, 3));
        assert_eq!(Location::new(4, 5).to_string(), "{4, 5}");
    }

    #[test]
    fn names_render_as_the_draft_recommends() {
        // The example of draft-16 §1.5.
        let ns = TrackNamespace::new(["example.net", "team2", "project_x"]).unwrap();
        let full = FullTrackName::new(ns, "report").unwrap();
        assert_eq!(full.to_string(), "example.2enet-team2-project_x--report");
        let binary = TrackNamespace::new([Bytes::from_static(&[0x00, 0xff, b'A'])]).unwrap();
        assert_eq!(binary.to_string(), ".00.ffA");
    }

    #[test]
    fn namespace_limits_on_construction() {
        assert_eq!(TrackNamespace::new((0..33).map(|_| "x")), Err(ValueError::TooManyFields(33)));
        assert!(TrackNamespace::new((0..32).map(|_| "x")).is_ok());
        assert_eq!(TrackNamespace::new(["a", ""]), Err(ValueError::EmptyField));
        let big = Bytes::from(vec![b'a'; 4097]);
        assert_eq!(TrackNamespace::new([big]), Err(ValueError::NameTooLong(4097)));
        let ns = TrackNamespace::new([Bytes::from(vec![b'a'; 4000])]).unwrap();
        assert_eq!(
            FullTrackName::new(ns.clone(), TrackName(Bytes::from(vec![b'n'; 97]))),
            Err(ValueError::NameTooLong(4097))
        );
        assert!(FullTrackName::new(ns, TrackName(Bytes::from(vec![b'n'; 96]))).is_ok());
    }

    #[test]
    fn namespace_prefixes() {
        let full = TrackNamespace::from_path("clinic/room-42/dr-lee").unwrap();
        let prefix = TrackNamespace::from_path("clinic/room-42").unwrap();
        assert_eq!(full.len(), 3);
        assert!(full.has_prefix(&prefix));
        assert!(full.has_prefix(&TrackNamespace::default()));
        // Field-wise, not byte-wise: "clinic/room-4" is no prefix of "clinic/room-42".
        assert!(!full.has_prefix(&TrackNamespace::from_path("clinic/room-4").unwrap()));
        let suffix = full.strip_prefix(&prefix).unwrap();
        assert_eq!(suffix, TrackNamespace::from_path("dr-lee").unwrap());
        assert_eq!(prefix.join(&suffix).unwrap(), full);
        assert_eq!(full.strip_prefix(&full), Some(TrackNamespace::default()));
    }

    #[test]
    fn reason_phrase_limits() {
        assert_eq!(
            ReasonPhrase::new(Bytes::from(vec![b'r'; 1025])),
            Err(ValueError::ReasonTooLong(1025))
        );
        assert!(ReasonPhrase::new(Bytes::from(vec![b'r'; 1024])).is_ok());
        // Cut at a character boundary: 1023 ASCII bytes then a 2-byte character.
        let text = format!("{}é", "a".repeat(1023));
        let cut = ReasonPhrase::truncated(&text);
        assert_eq!(cut.as_bytes().len(), 1023);
        assert_eq!(cut.to_string(), "a".repeat(1023));
        assert_eq!(ReasonPhrase::truncated("short").to_string(), "short");
    }

    #[test]
    fn codes_round_trip() {
        for order in [GroupOrder::Ascending, GroupOrder::Descending] {
            assert_eq!(GroupOrder::from_code(order.code()), Some(order));
        }
        assert_eq!(GroupOrder::from_code(0), None);
        for t in 1..=4 {
            assert_eq!(FilterType::from_code(t).unwrap().code(), t);
        }
        assert_eq!(FilterType::from_code(5), None);
    }
}
