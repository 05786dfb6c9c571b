//! CLIENT_SETUP and SERVER_SETUP (draft-16 §9.3) and their Setup Parameters.

use bytes::{BufMut, Bytes};

use crate::coding::{DecodeError, TerminationCode, get_varint, put_varint};
use crate::kvp::{self, KeyValue, Value};
use crate::message::params::{AliasType, AuthToken, bytes_pair, check_token_duplicates, set_once};
use crate::message::{MessageType, Payload};

/// Setup parameter type codes (draft-16 §9.3.1). They are a namespace of their own, the same
/// in every MoQT version.
pub mod setup_type {
    /// PATH: the path and query of a `moqt://` URI, an odd type.
    pub const PATH: u64 = 0x01;
    /// MAX_REQUEST_ID: the initial Maximum Request ID, an even type.
    pub const MAX_REQUEST_ID: u64 = 0x02;
    /// AUTHORIZATION_TOKEN: a Token structure, an odd type, may repeat.
    pub const AUTHORIZATION_TOKEN: u64 = 0x03;
    /// MAX_AUTH_TOKEN_CACHE_SIZE: bytes of registered tokens the sender stores, an even type.
    pub const MAX_AUTH_TOKEN_CACHE_SIZE: u64 = 0x04;
    /// AUTHORITY: the authority of a `moqt://` URI, an odd type.
    pub const AUTHORITY: u64 = 0x05;
    /// MOQT_IMPLEMENTATION: name and version of the sender's implementation, an odd type.
    pub const MOQT_IMPLEMENTATION: u64 = 0x07;
}

/// The parameters of CLIENT_SETUP or SERVER_SETUP (draft-16 §9.3.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetupParams {
    /// PATH (0x01): path-abempty and `?query` of the URI (client, raw QUIC only).
    pub path: Option<String>,
    /// AUTHORITY (0x05): the URI's authority (client, raw QUIC only).
    pub authority: Option<String>,
    /// MAX_REQUEST_ID (0x02); absent means 0: the peer may send no requests yet.
    pub max_request_id: Option<u64>,
    /// MAX_AUTH_TOKEN_CACHE_SIZE (0x04); absent means 0: no token aliases.
    pub max_auth_token_cache_size: Option<u64>,
    /// AUTHORIZATION_TOKEN (0x03), in the order received; may repeat.
    pub auth_tokens: Vec<AuthToken>,
    /// MOQT_IMPLEMENTATION (0x07), meant to be UTF-8.
    pub implementation: Option<Bytes>,
    /// Parameters this crate does not define (extensions, GREASE), kept as received so that
    /// negotiated extensions can be read; repeats are allowed.
    pub unknown: Vec<KeyValue>,
}

impl SetupParams {
    /// The initial Maximum Request ID the sender grants (0 when absent).
    pub fn max_request_id(&self) -> u64 {
        self.max_request_id.unwrap_or(0)
    }

    /// The token cache size the sender grants (0 when absent).
    pub fn max_auth_token_cache_size(&self) -> u64 {
        self.max_auth_token_cache_size.unwrap_or(0)
    }

    /// The unknown parameters of type `key`, in the order received.
    pub fn unknown_of(&self, key: u64) -> impl Iterator<Item = &KeyValue> {
        self.unknown.iter().filter(move |kv| kv.key == key)
    }

    /// Reads `Number of Parameters (i), Setup Parameters (..) ...`.
    ///
    /// Unknown types are kept; a repeated known type other than AUTHORIZATION_TOKEN closes
    /// with PROTOCOL_VIOLATION; a PATH or AUTHORITY that is not RFC 3986 syntax closes with
    /// MALFORMED_PATH or MALFORMED_AUTHORITY; a Token that does not parse closes with
    /// KEY_VALUE_FORMATTING_ERROR.
    pub fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        use setup_type::*;
        let count = get_varint(buf)?;
        let pairs = kvp::get_pairs(buf, count)?;
        let mut p = SetupParams::default();
        let dup = || DecodeError::violation("repeated setup parameter");
        for kv in pairs {
            match (kv.key, &kv.value) {
                (PATH, Value::Bytes(b)) => {
                    let s = check_path(b)?;
                    set_once(&mut p.path, s).ok_or_else(dup)?;
                }
                (AUTHORITY, Value::Bytes(b)) => {
                    let s = check_authority(b)?;
                    set_once(&mut p.authority, s).ok_or_else(dup)?;
                }
                (MAX_REQUEST_ID, Value::Int(v)) => {
                    set_once(&mut p.max_request_id, *v).ok_or_else(dup)?
                }
                (MAX_AUTH_TOKEN_CACHE_SIZE, Value::Int(v)) => {
                    set_once(&mut p.max_auth_token_cache_size, *v).ok_or_else(dup)?
                }
                (AUTHORIZATION_TOKEN, Value::Bytes(b)) => {
                    p.auth_tokens.push(AuthToken::decode_value(b)?)
                }
                (MOQT_IMPLEMENTATION, Value::Bytes(b)) => {
                    set_once(&mut p.implementation, b.clone()).ok_or_else(dup)?
                }
                _ => p.unknown.push(kv),
            }
        }
        check_token_duplicates(&p.auth_tokens)?;
        Ok(p)
    }

    /// Writes the count and the parameters, sorted by type.
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        use setup_type::*;
        let mut pairs = Vec::new();
        if let Some(s) = &self.path {
            pairs.push(bytes_pair(PATH, Bytes::copy_from_slice(s.as_bytes())));
        }
        if let Some(v) = self.max_request_id {
            pairs.push(KeyValue::int(MAX_REQUEST_ID, v));
        }
        for t in &self.auth_tokens {
            pairs.push(bytes_pair(AUTHORIZATION_TOKEN, t.encode_value()));
        }
        if let Some(v) = self.max_auth_token_cache_size {
            pairs.push(KeyValue::int(MAX_AUTH_TOKEN_CACHE_SIZE, v));
        }
        if let Some(s) = &self.authority {
            pairs.push(bytes_pair(AUTHORITY, Bytes::copy_from_slice(s.as_bytes())));
        }
        if let Some(b) = &self.implementation {
            pairs.push(bytes_pair(MOQT_IMPLEMENTATION, b.clone()));
        }
        pairs.extend(self.unknown.iter().cloned());
        kvp::sort(&mut pairs);
        put_varint(buf, pairs.len() as u64);
        kvp::put_pairs(buf, &pairs);
    }
}

/// CLIENT_SETUP (0x20): the client's first message on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientSetup {
    /// The setup parameters.
    pub params: SetupParams,
}

impl Payload for ClientSetup {
    const TYPE: MessageType = MessageType::ClientSetup;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        self.params.encode(buf);
    }

    /// Decoded by a server: a token with alias type DELETE or USE_ALIAS closes with
    /// PROTOCOL_VIOLATION (draft-16 §9.2.2.1).
    fn decode_payload(buf: &mut &[u8], _ext: &[u64]) -> Result<Self, DecodeError> {
        let params = SetupParams::decode(buf)?;
        if params
            .auth_tokens
            .iter()
            .any(|t| matches!(t.alias_type(), AliasType::Delete | AliasType::UseAlias))
        {
            return Err(DecodeError::violation("CLIENT_SETUP token with DELETE or USE_ALIAS"));
        }
        Ok(ClientSetup { params })
    }
}

/// SERVER_SETUP (0x21): the server's answer to CLIENT_SETUP.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerSetup {
    /// The setup parameters.
    pub params: SetupParams,
}

impl Payload for ServerSetup {
    const TYPE: MessageType = MessageType::ServerSetup;

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        self.params.encode(buf);
    }

    /// Decoded by a client: PATH closes with INVALID_PATH and AUTHORITY with
    /// INVALID_AUTHORITY, since a server must not send them (draft-16 §9.3.1).
    fn decode_payload(buf: &mut &[u8], _ext: &[u64]) -> Result<Self, DecodeError> {
        let params = SetupParams::decode(buf)?;
        if params.path.is_some() {
            return Err(DecodeError::Malformed {
                code: TerminationCode::InvalidPath,
                reason: "PATH sent by a server",
            });
        }
        if params.authority.is_some() {
            return Err(DecodeError::Malformed {
                code: TerminationCode::InvalidAuthority,
                reason: "AUTHORITY sent by a server",
            });
        }
        Ok(ServerSetup { params })
    }
}

/// RFC 3986 `unreserved`.
fn unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `sub-delims`.
fn sub_delim(c: u8) -> bool {
    matches!(c, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=')
}

/// True if every byte of `s` is allowed by `ok` or starts a `%XX` escape.
fn chars_ok(s: &[u8], ok: impl Fn(u8) -> bool) -> bool {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = |j: usize| s.get(j).is_some_and(|c| c.is_ascii_hexdigit());
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else if ok(s[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Checks a PATH value: RFC 3986 `path-abempty [ "?" query ]`, else MALFORMED_PATH.
pub fn check_path(v: &[u8]) -> Result<String, DecodeError> {
    let bad = DecodeError::Malformed {
        code: TerminationCode::MalformedPath,
        reason: "PATH is not path-abempty [?query]",
    };
    let (path, query) = match v.iter().position(|&c| c == b'?') {
        Some(i) => (&v[..i], Some(&v[i + 1..])),
        None => (v, None),
    };
    let pchar = |c: u8| unreserved(c) || sub_delim(c) || c == b':' || c == b'@';
    if !path.is_empty() && path[0] != b'/' {
        return Err(bad);
    }
    if !chars_ok(path, |c| pchar(c) || c == b'/') {
        return Err(bad);
    }
    if query.is_some_and(|q| !chars_ok(q, |c| pchar(c) || c == b'/' || c == b'?')) {
        return Err(bad);
    }
    // Only ASCII passed the checks above.
    String::from_utf8(v.to_vec()).map_err(|_| bad)
}

/// Checks an AUTHORITY value: RFC 3986 `[userinfo "@"] host [":" port]` with a non-empty
/// host (the `moqt` scheme forbids an empty one), else MALFORMED_AUTHORITY.
pub fn check_authority(v: &[u8]) -> Result<String, DecodeError> {
    let bad = DecodeError::Malformed {
        code: TerminationCode::MalformedAuthority,
        reason: "AUTHORITY is not [userinfo@]host[:port]",
    };
    let (userinfo, hostport) = match v.iter().rposition(|&c| c == b'@') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (&v[..0], v),
    };
    if !chars_ok(userinfo, |c| unreserved(c) || sub_delim(c) || c == b':') {
        return Err(bad);
    }
    let (host, port) = if hostport.first() == Some(&b'[') {
        let end = hostport.iter().position(|&c| c == b']').ok_or(bad.clone())?;
        let literal = &hostport[1..end];
        let literal_ok = !literal.is_empty()
            && literal.iter().all(|&c| {
                c.is_ascii_hexdigit() || matches!(c, b':' | b'.') || unreserved(c) || sub_delim(c)
            });
        if !literal_ok {
            return Err(bad);
        }
        match &hostport[end + 1..] {
            [] => (&hostport[..=end], None),
            [b':', port @ ..] => (&hostport[..=end], Some(port)),
            _ => return Err(bad),
        }
    } else {
        match hostport.iter().position(|&c| c == b':') {
            Some(i) => (&hostport[..i], Some(&hostport[i + 1..])),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(bad);
    }
    if host[0] != b'[' && !chars_ok(host, |c| unreserved(c) || sub_delim(c)) {
        return Err(bad);
    }
    if port.is_some_and(|p| !p.iter().all(u8::is_ascii_digit)) {
        return Err(bad);
    }
    String::from_utf8(v.to_vec()).map_err(|_| bad)
}
