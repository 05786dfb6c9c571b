//! Primitive encodings shared by control messages and data streams: QUIC variable-length
//! integers (RFC 9000 §16), length-prefixed byte strings, and the decode outcome that tells
//! "need more bytes" apart from "malformed".

use bytes::BufMut;

/// The largest value a QUIC varint can carry (2^62 - 1).
pub const VARINT_MAX: u64 = (1 << 62) - 1;

/// Session termination error codes (draft-16 §3.4, IANA "Session Termination Error Codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum TerminationCode {
    /// The session is being terminated without an error.
    NoError = 0x0,
    /// An implementation specific error occurred.
    InternalError = 0x1,
    /// The client is not authorized to establish a session.
    Unauthorized = 0x2,
    /// The remote endpoint performed an action the specification disallows.
    ProtocolViolation = 0x3,
    /// A Request ID was invalid for the peer or out of sequence.
    InvalidRequestId = 0x4,
    /// A Track Alias already in use was used again.
    DuplicateTrackAlias = 0x5,
    /// A key-value pair did not match the serialization its type defines.
    KeyValueFormattingError = 0x6,
    /// A Request ID at or above the current maximum was used.
    TooManyRequests = 0x7,
    /// The PATH parameter was used where it is not allowed or is unsupported.
    InvalidPath = 0x8,
    /// The PATH parameter does not conform to its rules.
    MalformedPath = 0x9,
    /// The peer took too long to close the session after GOAWAY.
    GoawayTimeout = 0x10,
    /// The peer took too long to respond to a control message.
    ControlMessageTimeout = 0x11,
    /// The peer took too long to send expected data on a data stream.
    DataStreamTimeout = 0x12,
    /// The registered authorization tokens exceed MAX_AUTH_TOKEN_CACHE_SIZE.
    AuthTokenCacheOverflow = 0x13,
    /// An authorization token tried to register an alias already in use.
    DuplicateAuthTokenAlias = 0x14,
    /// The client did not offer a version the server supports.
    VersionNegotiationFailed = 0x15,
    /// An authorization token's serialization was invalid during registration.
    MalformedAuthToken = 0x16,
    /// No registered token exists for the alias used.
    UnknownAuthTokenAlias = 0x17,
    /// An authorization token has expired.
    ExpiredAuthToken = 0x18,
    /// The AUTHORITY does not correspond to this server or cannot be used here.
    InvalidAuthority = 0x19,
    /// The AUTHORITY value is syntactically invalid.
    MalformedAuthority = 0x1A,
}

impl TerminationCode {
    /// The code as sent on the wire (QUIC CONNECTION_CLOSE or WebTransport close capsule).
    pub fn code(self) -> u64 {
        self as u64
    }

    /// The code for a received wire value, if the draft defines it.
    pub fn from_code(code: u64) -> Option<Self> {
        use TerminationCode::*;
        Some(match code {
            0x0 => NoError,
            0x1 => InternalError,
            0x2 => Unauthorized,
            0x3 => ProtocolViolation,
            0x4 => InvalidRequestId,
            0x5 => DuplicateTrackAlias,
            0x6 => KeyValueFormattingError,
            0x7 => TooManyRequests,
            0x8 => InvalidPath,
            0x9 => MalformedPath,
            0x10 => GoawayTimeout,
            0x11 => ControlMessageTimeout,
            0x12 => DataStreamTimeout,
            0x13 => AuthTokenCacheOverflow,
            0x14 => DuplicateAuthTokenAlias,
            0x15 => VersionNegotiationFailed,
            0x16 => MalformedAuthToken,
            0x17 => UnknownAuthTokenAlias,
            0x18 => ExpiredAuthToken,
            0x19 => InvalidAuthority,
            0x1A => MalformedAuthority,
            _ => return None,
        })
    }
}

/// Why a decode did not produce a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ends before the value does: wait for more bytes and try again from the start.
    #[error("need more bytes")]
    Short,
    /// The input can never decode: the session must be closed with `code`.
    #[error("malformed ({code:?}): {reason}")]
    Malformed {
        /// The session termination code the draft names for this error.
        code: TerminationCode,
        /// What was wrong, for the log and the reason phrase.
        reason: &'static str,
    },
}

impl DecodeError {
    /// A malformed input that closes the session with PROTOCOL_VIOLATION.
    pub fn violation(reason: &'static str) -> Self {
        DecodeError::Malformed { code: TerminationCode::ProtocolViolation, reason }
    }

    /// A malformed input that closes the session with KEY_VALUE_FORMATTING_ERROR.
    pub fn key_value(reason: &'static str) -> Self {
        DecodeError::Malformed { code: TerminationCode::KeyValueFormattingError, reason }
    }
}

/// A value that can be written to the wire.
pub trait Encode {
    /// Appends the wire form of `self` to `buf`.
    fn encode<B: BufMut>(&self, buf: &mut B);

    /// The wire form as a fresh vector.
    fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

/// A value that can be read from the wire.
///
/// `decode` advances `buf` past the value only when it returns `Ok`; on `Short` the caller
/// keeps its bytes and retries with more.
pub trait Decode: Sized {
    /// Reads one value from the front of `buf`.
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError>;
}

/// Number of bytes the shortest varint encoding of `v` takes.
pub fn varint_len(v: u64) -> usize {
    match v {
        0..=0x3f => 1,
        0x40..=0x3fff => 2,
        0x4000..=0x3fff_ffff => 4,
        _ => 8,
    }
}

/// Writes `v` as a QUIC varint in its shortest form.
///
/// # Panics
/// If `v` exceeds [`VARINT_MAX`]: values come from our own code, so that is a bug here.
pub fn put_varint<B: BufMut>(buf: &mut B, v: u64) {
    assert!(v <= VARINT_MAX, "varint out of range: {v}");
    match varint_len(v) {
        1 => buf.put_u8(v as u8),
        2 => buf.put_u16(0x4000 | v as u16),
        4 => buf.put_u32(0x8000_0000 | v as u32),
        _ => buf.put_u64(0xc000_0000_0000_0000 | v),
    }
}

/// Reads a QUIC varint (any of its four forms) from the front of `buf`.
pub fn get_varint(buf: &mut &[u8]) -> Result<u64, DecodeError> {
    let first = *buf.first().ok_or(DecodeError::Short)?;
    let len = 1usize << (first >> 6);
    if buf.len() < len {
        return Err(DecodeError::Short);
    }
    let mut v = u64::from(first & 0x3f);
    for b in &buf[1..len] {
        v = (v << 8) | u64::from(*b);
    }
    *buf = &buf[len..];
    Ok(v)
}

/// Reads one byte.
pub fn get_u8(buf: &mut &[u8]) -> Result<u8, DecodeError> {
    let b = *buf.first().ok_or(DecodeError::Short)?;
    *buf = &buf[1..];
    Ok(b)
}

/// Reads a big-endian u16.
pub fn get_u16(buf: &mut &[u8]) -> Result<u16, DecodeError> {
    if buf.len() < 2 {
        return Err(DecodeError::Short);
    }
    let v = u16::from_be_bytes([buf[0], buf[1]]);
    *buf = &buf[2..];
    Ok(v)
}

/// Reads exactly `n` bytes, borrowing them from `buf`.
pub fn get_bytes<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
    if buf.len() < n {
        return Err(DecodeError::Short);
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Ok(head)
}

/// Reads a varint length, refusing one above `max` with PROTOCOL_VIOLATION before any
/// allocation, then that many bytes.
pub fn get_len_bytes<'a>(
    buf: &mut &'a [u8],
    max: usize,
    what: &'static str,
) -> Result<&'a [u8], DecodeError> {
    let len = get_varint(buf)?;
    if len > max as u64 {
        return Err(DecodeError::violation(what));
    }
    get_bytes(buf, len as usize)
}

/// Writes a varint length followed by the bytes.
pub fn put_len_bytes<B: BufMut>(buf: &mut B, bytes: &[u8]) {
    put_varint(buf, bytes.len() as u64);
    buf.put_slice(bytes);
}

/// Runs `f` on a copy of the cursor and commits the advance only on success, so that a
/// `Short` leaves the caller's input untouched.
pub fn transact<T>(
    buf: &mut &[u8],
    f: impl FnOnce(&mut &[u8]) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let mut cur = *buf;
    let v = f(&mut cur)?;
    *buf = cur;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9000 Appendix A.1 sample encodings.
    #[test]
    fn varint_rfc9000_samples() {
        let cases: &[(&str, u64)] = &[
            ("c2197c5eff14e88c", 151_288_809_941_952_652),
            ("9d7f3e7d", 494_878_333),
            ("7bbd", 15_293),
            ("25", 37),
        ];
        for (hex, v) in cases {
            let bytes = hex::decode(hex).unwrap();
            let mut cur = &bytes[..];
            assert_eq!(get_varint(&mut cur).unwrap(), *v);
            assert!(cur.is_empty());
            let mut out = Vec::new();
            put_varint(&mut out, *v);
            assert_eq!(&out, &bytes, "shortest form of {v}");
        }
        // A non-shortest form still decodes (RFC 9000 allows it).
        let mut cur = &[0x40u8, 0x25][..];
        assert_eq!(get_varint(&mut cur).unwrap(), 37);
    }

    #[test]
    fn varint_short_input_is_short_not_malformed() {
        let mut cur = &[0x9du8, 0x7f][..];
        assert_eq!(get_varint(&mut cur), Err(DecodeError::Short));
        assert_eq!(cur.len(), 2, "a short read must not consume input");
        let mut empty: &[u8] = &[];
        assert_eq!(get_varint(&mut empty), Err(DecodeError::Short));
    }

    #[test]
    fn length_prefix_is_bounded_before_allocation() {
        // Length 2^30 claimed with three bytes of payload: refused as malformed, not Short.
        let mut input = Vec::new();
        put_varint(&mut input, 1 << 30);
        input.extend_from_slice(b"abc");
        let mut cur = &input[..];
        assert!(matches!(
            get_len_bytes(&mut cur, 1024, "too long"),
            Err(DecodeError::Malformed { code: TerminationCode::ProtocolViolation, .. })
        ));
    }

    #[test]
    fn termination_codes_round_trip() {
        for code in 0..0x40 {
            if let Some(c) = TerminationCode::from_code(code) {
                assert_eq!(c.code(), code);
            }
        }
        assert_eq!(TerminationCode::MalformedAuthority.code(), 0x1a);
        assert_eq!(TerminationCode::from_code(0xb), None);
    }
}
