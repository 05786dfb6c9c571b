//! Key-Value-Pairs (draft-16 §1.4.2): the encoding of setup parameters, message parameters
//! and extension headers. Types are delta-encoded from the previous type; an even type
//! carries one varint, an odd type a length (at most 2^16-1) and that many bytes.

use bytes::{BufMut, Bytes};

use crate::coding::{DecodeError, get_bytes, get_varint, put_varint};

/// The largest value of an odd-typed pair (2^16-1 bytes, draft-16 §1.4.2).
pub const MAX_VALUE_LEN: usize = u16::MAX as usize;

/// The value of one pair: a varint for an even type, bytes for an odd type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    /// The value of an even type.
    Int(u64),
    /// The value of an odd type.
    Bytes(Bytes),
}

/// One decoded pair with its absolute type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyValue {
    /// The absolute type (after undoing the delta encoding).
    pub key: u64,
    /// The value; its variant always matches the parity of `key`.
    pub value: Value,
}

impl KeyValue {
    /// An even-typed pair.
    ///
    /// # Panics
    /// If `key` is odd: that is a bug in the caller.
    pub fn int(key: u64, v: u64) -> Self {
        assert!(key.is_multiple_of(2), "integer key-value pairs have even types");
        KeyValue { key, value: Value::Int(v) }
    }

    /// An odd-typed pair.
    ///
    /// # Panics
    /// If `key` is even or the value is longer than [`MAX_VALUE_LEN`]: a bug in the caller.
    pub fn bytes(key: u64, v: impl Into<Bytes>) -> Self {
        let v = v.into();
        assert!(key % 2 == 1, "byte key-value pairs have odd types");
        assert!(v.len() <= MAX_VALUE_LEN, "key-value pair longer than 2^16-1 bytes");
        KeyValue { key, value: Value::Bytes(v) }
    }

    /// The integer value, if this is an even type.
    pub fn as_int(&self) -> Option<u64> {
        match self.value {
            Value::Int(v) => Some(v),
            Value::Bytes(_) => None,
        }
    }

    /// The byte value, if this is an odd type.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match &self.value {
            Value::Bytes(b) => Some(b),
            Value::Int(_) => None,
        }
    }
}

/// Writes pairs in order, delta-encoding their types.
///
/// # Panics
/// If the types are not in non-decreasing order: the delta encoding cannot express a
/// decrease, so callers sort first (see [`sort`]).
pub fn put_pairs<B: BufMut>(buf: &mut B, pairs: &[KeyValue]) {
    let mut prev = 0u64;
    for p in pairs {
        assert!(p.key >= prev, "key-value pairs must be sorted by type before encoding");
        put_varint(buf, p.key - prev);
        prev = p.key;
        match &p.value {
            Value::Int(v) => put_varint(buf, *v),
            Value::Bytes(b) => {
                put_varint(buf, b.len() as u64);
                buf.put_slice(b);
            }
        }
    }
}

/// Sorts pairs by type (stable, so repeated types keep their order) for [`put_pairs`].
pub fn sort(pairs: &mut [KeyValue]) {
    pairs.sort_by_key(|p| p.key);
}

/// Reads one pair whose type is a delta from `prev`; returns it with its absolute type.
pub fn get_pair(buf: &mut &[u8], prev: u64) -> Result<KeyValue, DecodeError> {
    let delta = get_varint(buf)?;
    let key = prev
        .checked_add(delta)
        .ok_or(DecodeError::violation("key-value delta type overflows 2^64-1"))?;
    let value = if key % 2 == 0 {
        Value::Int(get_varint(buf)?)
    } else {
        let len = get_varint(buf)?;
        if len > MAX_VALUE_LEN as u64 {
            return Err(DecodeError::violation("key-value length above 2^16-1"));
        }
        Value::Bytes(Bytes::copy_from_slice(get_bytes(buf, len as usize)?))
    };
    Ok(KeyValue { key, value })
}

/// Reads `count` pairs. The count comes from the peer, so nothing is reserved up front:
/// the vector grows only as pairs actually decode from bytes that are present.
pub fn get_pairs(buf: &mut &[u8], count: u64) -> Result<Vec<KeyValue>, DecodeError> {
    let mut out = Vec::new();
    let mut prev = 0u64;
    for _ in 0..count {
        let p = get_pair(buf, prev)?;
        prev = p.key;
        out.push(p);
    }
    Ok(out)
}

/// Reads pairs until `buf` is empty (for a length-delimited block such as object
/// extension headers, where the caller has already cut out exactly the block's bytes).
/// A pair cut off by the end of the block is malformed, not short.
pub fn get_pairs_to_end(buf: &mut &[u8]) -> Result<Vec<KeyValue>, DecodeError> {
    let mut out = Vec::new();
    let mut prev = 0u64;
    while !buf.is_empty() {
        let p = get_pair(buf, prev).map_err(|e| match e {
            DecodeError::Short => DecodeError::violation("key-value pair overruns its block"),
            e => e,
        })?;
        prev = p.key;
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_encoding_fixture() {
        // Types 2 (int 5), 3 (bytes "hi"), 3 again (bytes ""), 0x40 (int 0x40):
        // deltas 2, 1, 0, 0x3d; the last value 0x40 needs a two-byte varint.
        let pairs = vec![
            KeyValue::int(2, 5),
            KeyValue::bytes(3, &b"hi"[..]),
            KeyValue::bytes(3, &b""[..]),
            KeyValue::int(0x40, 0x40),
        ];
        let expected = hex::decode("02050102686900003d4040").unwrap();
        let mut out = Vec::new();
        put_pairs(&mut out, &pairs);
        assert_eq!(out, expected);
        let mut cur = &expected[..];
        assert_eq!(get_pairs(&mut cur, 4).unwrap(), pairs);
        assert!(cur.is_empty());
    }

    #[test]
    fn overlong_value_is_protocol_violation() {
        // Type 1, length 0x10000.
        let input = hex::decode("0180010000").unwrap();
        let mut cur = &input[..];
        assert!(matches!(
            get_pairs(&mut cur, 1),
            Err(DecodeError::Malformed { code: crate::TerminationCode::ProtocolViolation, .. })
        ));
    }

    #[test]
    fn delta_overflow_is_protocol_violation() {
        let mut input = Vec::new();
        put_varint(&mut input, (1 << 62) - 1);
        put_varint(&mut input, 0);
        // Four more deltas of 2^62-1 overflow u64.
        for _ in 0..4 {
            put_varint(&mut input, (1 << 62) - 1);
            put_varint(&mut input, 0);
        }
        let mut cur = &input[..];
        assert!(matches!(get_pairs(&mut cur, 5), Err(DecodeError::Malformed { .. })));
    }

    #[test]
    fn huge_count_with_few_bytes_is_short_not_an_allocation() {
        let input = hex::decode("0205").unwrap();
        let mut cur = &input[..];
        assert_eq!(get_pairs(&mut cur, u64::MAX >> 2), Err(DecodeError::Short));
    }

    #[test]
    fn truncated_pair_in_block_is_malformed() {
        let input = hex::decode("0105ab").unwrap();
        let mut cur = &input[..];
        assert!(matches!(get_pairs_to_end(&mut cur), Err(DecodeError::Malformed { .. })));
    }
}
