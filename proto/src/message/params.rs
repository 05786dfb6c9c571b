//! Message Parameters (draft-16 §9.2): the typed optional fields of SUBSCRIBE, PUBLISH,
//! FETCH and the other requests and responses, and the Token structure of AUTHORIZATION
//! TOKEN, which setup parameters share.

use std::fmt;

use bytes::{BufMut, Bytes};

use crate::coding::{DecodeError, TerminationCode, get_varint, put_varint};
use crate::kvp::{self, KeyValue, Value};
use crate::message::MessageType;
use crate::types::{GroupOrder, Location, SubscriptionFilter};

/// Message parameter type codes (draft-16 §9.2, IANA "Message Parameters").
pub mod param_type {
    /// DELIVERY_TIMEOUT: milliseconds, an even type.
    pub const DELIVERY_TIMEOUT: u64 = 0x02;
    /// AUTHORIZATION_TOKEN: a Token structure, an odd type, may repeat.
    pub const AUTHORIZATION_TOKEN: u64 = 0x03;
    /// EXPIRES: milliseconds, an even type.
    pub const EXPIRES: u64 = 0x08;
    /// LARGEST_OBJECT: a Location, an odd type.
    pub const LARGEST_OBJECT: u64 = 0x09;
    /// FORWARD: 0 or 1, an even type.
    pub const FORWARD: u64 = 0x10;
    /// SUBSCRIBER_PRIORITY: 0 to 255, an even type.
    pub const SUBSCRIBER_PRIORITY: u64 = 0x20;
    /// SUBSCRIPTION_FILTER: a Subscription Filter, an odd type.
    pub const SUBSCRIPTION_FILTER: u64 = 0x21;
    /// GROUP_ORDER: 1 (ascending) or 2 (descending), an even type.
    pub const GROUP_ORDER: u64 = 0x22;
    /// NEW_GROUP_REQUEST: largest known group plus one, an even type.
    pub const NEW_GROUP_REQUEST: u64 = 0x32;
}

/// True if the draft defines message parameter `param` for messages of type `msg`.
///
/// A defined parameter that appears in another message type is ignored (draft-16 §9.2.2).
/// REQUEST_UPDATE admits the union of what its targets admit; see
/// [`MessageParams::check_update`] for the per-target rule.
pub fn param_allowed_in(param: u64, msg: MessageType) -> bool {
    use MessageType::*;
    use param_type::*;
    match param {
        AUTHORIZATION_TOKEN => matches!(
            msg,
            Publish
                | Subscribe
                | RequestUpdate
                | SubscribeNamespace
                | PublishNamespace
                | TrackStatus
                | Fetch
        ),
        DELIVERY_TIMEOUT => matches!(msg, PublishOk | Subscribe | RequestUpdate),
        SUBSCRIBER_PRIORITY => matches!(msg, Subscribe | Fetch | RequestUpdate | PublishOk),
        GROUP_ORDER => matches!(msg, Subscribe | PublishOk | Fetch),
        SUBSCRIPTION_FILTER => matches!(msg, Subscribe | PublishOk | RequestUpdate),
        // The draft lists SUBSCRIBE_OK, PUBLISH and PUBLISH_OK and notes REQUEST_OK as a
        // TODO; a REQUEST_OK answering TRACK_STATUS carries what SUBSCRIBE_OK would, so it
        // is accepted there too.
        EXPIRES => matches!(msg, SubscribeOk | Publish | PublishOk | RequestOk),
        LARGEST_OBJECT => matches!(msg, SubscribeOk | Publish | RequestOk),
        FORWARD => {
            matches!(msg, Subscribe | RequestUpdate | Publish | PublishOk | SubscribeNamespace)
        }
        NEW_GROUP_REQUEST => matches!(msg, PublishOk | Subscribe | RequestUpdate),
        _ => false,
    }
}

fn is_known(param: u64) -> bool {
    use param_type::*;
    matches!(
        param,
        DELIVERY_TIMEOUT
            | AUTHORIZATION_TOKEN
            | EXPIRES
            | LARGEST_OBJECT
            | FORWARD
            | SUBSCRIBER_PRIORITY
            | SUBSCRIPTION_FILTER
            | GROUP_ORDER
            | NEW_GROUP_REQUEST
    )
}

/// The Alias Type of a Token (draft-16 §9.2.2.1, IANA "Authorization Token Alias Type").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AliasType {
    /// 0x0: retire an alias.
    Delete,
    /// 0x1: register an alias for a type and value.
    Register,
    /// 0x2: use a registered alias.
    UseAlias,
    /// 0x3: use a type and value given inline.
    UseValue,
}

impl AliasType {
    /// The wire value.
    pub fn code(self) -> u64 {
        match self {
            AliasType::Delete => 0x0,
            AliasType::Register => 0x1,
            AliasType::UseAlias => 0x2,
            AliasType::UseValue => 0x3,
        }
    }

    /// The alias type for a wire value, if the draft defines it.
    pub fn from_code(v: u64) -> Option<Self> {
        Some(match v {
            0x0 => AliasType::Delete,
            0x1 => AliasType::Register,
            0x2 => AliasType::UseAlias,
            0x3 => AliasType::UseValue,
            _ => return None,
        })
    }
}

/// The payload of an authorization token. Its `Debug` and `Display` show only the length,
/// so a token never reaches a log.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct TokenValue(pub Bytes);

impl fmt::Debug for TokenValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenValue(<{} bytes>)", self.0.len())
    }
}

impl fmt::Display for TokenValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// One AUTHORIZATION TOKEN (draft-16 §9.2.2.1): the Token structure, by alias type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AuthToken {
    /// DELETE (0x0): retire `alias`.
    Delete {
        /// The alias to retire.
        alias: u64,
    },
    /// REGISTER (0x1): bind `alias` to the token type and value, and use them.
    Register {
        /// The alias to register.
        alias: u64,
        /// The token type (IANA "MOQT Auth Token Type"; 0 = negotiated out of band).
        token_type: u64,
        /// The token.
        value: TokenValue,
    },
    /// USE_ALIAS (0x2): use the type and value registered under `alias`.
    UseAlias {
        /// The registered alias.
        alias: u64,
    },
    /// USE_VALUE (0x3): use the type and value given here.
    UseValue {
        /// The token type.
        token_type: u64,
        /// The token.
        value: TokenValue,
    },
}

impl AuthToken {
    /// The token's alias type.
    pub fn alias_type(&self) -> AliasType {
        match self {
            AuthToken::Delete { .. } => AliasType::Delete,
            AuthToken::Register { .. } => AliasType::Register,
            AuthToken::UseAlias { .. } => AliasType::UseAlias,
            AuthToken::UseValue { .. } => AliasType::UseValue,
        }
    }

    /// The explicit type and value, for REGISTER and USE_VALUE.
    pub fn type_and_value(&self) -> Option<(u64, &TokenValue)> {
        match self {
            AuthToken::Register { token_type, value, .. }
            | AuthToken::UseValue { token_type, value } => Some((*token_type, value)),
            AuthToken::Delete { .. } | AuthToken::UseAlias { .. } => None,
        }
    }

    /// Decodes the Token structure from a whole parameter value. Anything that does not
    /// parse (an unknown alias type, a missing field, bytes after an alias-only token)
    /// closes the session with KEY_VALUE_FORMATTING_ERROR.
    pub fn decode_value(mut v: &[u8]) -> Result<Self, DecodeError> {
        let bad = |_| DecodeError::key_value("authorization token cannot be decoded");
        let buf = &mut v;
        let alias_type = AliasType::from_code(get_varint(buf).map_err(bad)?)
            .ok_or(DecodeError::key_value("unknown authorization token alias type"))?;
        let token = match alias_type {
            AliasType::Delete => AuthToken::Delete { alias: get_varint(buf).map_err(bad)? },
            AliasType::UseAlias => AuthToken::UseAlias { alias: get_varint(buf).map_err(bad)? },
            AliasType::Register => {
                let alias = get_varint(buf).map_err(bad)?;
                let token_type = get_varint(buf).map_err(bad)?;
                let value = TokenValue(Bytes::copy_from_slice(buf));
                *buf = &[];
                AuthToken::Register { alias, token_type, value }
            }
            AliasType::UseValue => {
                let token_type = get_varint(buf).map_err(bad)?;
                let value = TokenValue(Bytes::copy_from_slice(buf));
                *buf = &[];
                AuthToken::UseValue { token_type, value }
            }
        };
        if !buf.is_empty() {
            return Err(DecodeError::key_value("bytes after an alias-only authorization token"));
        }
        Ok(token)
    }

    /// The Token structure as a parameter value.
    pub fn encode_value(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, self.alias_type().code());
        match self {
            AuthToken::Delete { alias } | AuthToken::UseAlias { alias } => {
                put_varint(&mut out, *alias)
            }
            AuthToken::Register { alias, token_type, value } => {
                put_varint(&mut out, *alias);
                put_varint(&mut out, *token_type);
                out.put_slice(&value.0);
            }
            AuthToken::UseValue { token_type, value } => {
                put_varint(&mut out, *token_type);
                out.put_slice(&value.0);
            }
        }
        out
    }
}

/// Rejects two tokens in one message with the same explicit type and value (draft-16
/// §9.2.2.1: repeats must be unique). Tokens that use an alias can only be compared after
/// the session resolves the alias.
pub(crate) fn check_token_duplicates(tokens: &[AuthToken]) -> Result<(), DecodeError> {
    for (i, a) in tokens.iter().enumerate() {
        let Some(tv) = a.type_and_value() else { continue };
        if tokens[..i].iter().any(|b| b.type_and_value() == Some(tv)) {
            return Err(DecodeError::violation("repeated authorization token"));
        }
    }
    Ok(())
}

/// The kind of request a REQUEST_UPDATE modifies, for [`MessageParams::check_update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpdateTarget {
    /// A subscription, made with SUBSCRIBE or PUBLISH.
    Subscription,
    /// A FETCH.
    Fetch,
    /// Any other request (TRACK_STATUS, PUBLISH_NAMESPACE, SUBSCRIBE_NAMESPACE).
    Other,
}

/// The message parameters of one control message (draft-16 §9.2.2).
///
/// Fields left `None` were absent; the draft's defaults (priority 128, forward 1, ...)
/// apply at the session, not here. Integer durations are in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageParams {
    /// AUTHORIZATION_TOKEN (0x03), in the order received; may repeat.
    pub auth_tokens: Vec<AuthToken>,
    /// DELIVERY_TIMEOUT (0x02) in milliseconds, greater than 0.
    pub delivery_timeout_ms: Option<u64>,
    /// SUBSCRIBER_PRIORITY (0x20); lower is more important.
    pub subscriber_priority: Option<u8>,
    /// GROUP_ORDER (0x22).
    pub group_order: Option<GroupOrder>,
    /// SUBSCRIPTION_FILTER (0x21).
    pub subscription_filter: Option<SubscriptionFilter>,
    /// EXPIRES (0x08) in milliseconds; 0 means no known expiry.
    pub expires_ms: Option<u64>,
    /// LARGEST_OBJECT (0x09).
    pub largest_object: Option<Location>,
    /// FORWARD (0x10).
    pub forward: Option<bool>,
    /// NEW_GROUP_REQUEST (0x32): the largest group the subscriber knows, plus one.
    pub new_group_request: Option<u64>,
    /// Parameters of extensions negotiated in SETUP, kept as received (sorted by type).
    pub extension: Vec<KeyValue>,
}

impl MessageParams {
    /// True if no parameter is set.
    pub fn is_empty(&self) -> bool {
        *self == MessageParams::default()
    }

    /// Reads `Number of Parameters (i), Parameters (..) ...` of a message of type `msg`.
    ///
    /// - a type neither defined by the draft nor in `extension_types` closes the session
    ///   with PROTOCOL_VIOLATION; types in `extension_types` (parameters of extensions
    ///   negotiated in SETUP) are kept raw in [`Self::extension`];
    /// - a defined parameter that the draft does not define for `msg` is ignored;
    /// - a repeat of any parameter but AUTHORIZATION_TOKEN, an out-of-range value, or a
    ///   SUBSCRIPTION_FILTER whose length does not match closes with PROTOCOL_VIOLATION;
    /// - a LARGEST_OBJECT or Token that does not parse closes with
    ///   KEY_VALUE_FORMATTING_ERROR.
    pub fn decode(
        buf: &mut &[u8],
        msg: MessageType,
        extension_types: &[u64],
    ) -> Result<Self, DecodeError> {
        use param_type::*;
        let count = get_varint(buf)?;
        let pairs = kvp::get_pairs(buf, count)?;
        let mut p = MessageParams::default();
        let dup = || DecodeError::violation("repeated message parameter");
        for kv in pairs {
            if !is_known(kv.key) {
                if extension_types.contains(&kv.key) {
                    p.extension.push(kv);
                    continue;
                }
                return Err(DecodeError::violation("unknown message parameter"));
            }
            if !param_allowed_in(kv.key, msg) {
                continue;
            }
            match (kv.key, &kv.value) {
                (DELIVERY_TIMEOUT, Value::Int(v)) => {
                    if *v == 0 {
                        return Err(DecodeError::violation("DELIVERY_TIMEOUT of 0"));
                    }
                    set_once(&mut p.delivery_timeout_ms, *v).ok_or_else(dup)?;
                }
                (SUBSCRIBER_PRIORITY, Value::Int(v)) => {
                    let v = u8::try_from(*v)
                        .map_err(|_| DecodeError::violation("SUBSCRIBER_PRIORITY above 255"))?;
                    set_once(&mut p.subscriber_priority, v).ok_or_else(dup)?;
                }
                (GROUP_ORDER, Value::Int(v)) => {
                    let v = GroupOrder::from_code(*v)
                        .ok_or(DecodeError::violation("GROUP_ORDER not 1 or 2"))?;
                    set_once(&mut p.group_order, v).ok_or_else(dup)?;
                }
                (EXPIRES, Value::Int(v)) => set_once(&mut p.expires_ms, *v).ok_or_else(dup)?,
                (FORWARD, Value::Int(v)) => {
                    let v = match v {
                        0 => false,
                        1 => true,
                        _ => return Err(DecodeError::violation("FORWARD not 0 or 1")),
                    };
                    set_once(&mut p.forward, v).ok_or_else(dup)?;
                }
                (NEW_GROUP_REQUEST, Value::Int(v)) => {
                    set_once(&mut p.new_group_request, *v).ok_or_else(dup)?
                }
                (SUBSCRIPTION_FILTER, Value::Bytes(b)) => {
                    let mut cur = &b[..];
                    let f = SubscriptionFilter::decode(&mut cur).map_err(|e| match e {
                        DecodeError::Short => {
                            DecodeError::violation("SUBSCRIPTION_FILTER shorter than its length")
                        }
                        e => e,
                    })?;
                    if !cur.is_empty() {
                        return Err(DecodeError::violation(
                            "SUBSCRIPTION_FILTER longer than its filter",
                        ));
                    }
                    set_once(&mut p.subscription_filter, f).ok_or_else(dup)?;
                }
                (LARGEST_OBJECT, Value::Bytes(b)) => {
                    let mut cur = &b[..];
                    let loc = Location::decode(&mut cur)
                        .map_err(|_| DecodeError::key_value("LARGEST_OBJECT is not a Location"))?;
                    if !cur.is_empty() {
                        return Err(DecodeError::key_value("LARGEST_OBJECT is not a Location"));
                    }
                    set_once(&mut p.largest_object, loc).ok_or_else(dup)?;
                }
                (AUTHORIZATION_TOKEN, Value::Bytes(b)) => {
                    p.auth_tokens.push(AuthToken::decode_value(b)?);
                }
                // The parity of a type fixes its value's form, so a known type never arrives
                // with the other form.
                _ => return Err(DecodeError::key_value("parameter value of the wrong form")),
            }
        }
        check_token_duplicates(&p.auth_tokens)?;
        Ok(p)
    }

    /// Writes `Number of Parameters (i)` and the parameters, sorted by type for the delta
    /// encoding (repeated tokens keep their order).
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        use param_type::*;
        let mut pairs = Vec::new();
        for t in &self.auth_tokens {
            pairs.push(bytes_pair(AUTHORIZATION_TOKEN, t.encode_value()));
        }
        if let Some(v) = self.delivery_timeout_ms {
            pairs.push(KeyValue::int(DELIVERY_TIMEOUT, v));
        }
        if let Some(v) = self.subscriber_priority {
            pairs.push(KeyValue::int(SUBSCRIBER_PRIORITY, v.into()));
        }
        if let Some(v) = self.group_order {
            pairs.push(KeyValue::int(GROUP_ORDER, v.code()));
        }
        if let Some(f) = &self.subscription_filter {
            let mut v = Vec::new();
            f.encode(&mut v);
            pairs.push(bytes_pair(SUBSCRIPTION_FILTER, v));
        }
        if let Some(v) = self.expires_ms {
            pairs.push(KeyValue::int(EXPIRES, v));
        }
        if let Some(loc) = &self.largest_object {
            let mut v = Vec::new();
            loc.encode(&mut v);
            pairs.push(bytes_pair(LARGEST_OBJECT, v));
        }
        if let Some(v) = self.forward {
            pairs.push(KeyValue::int(FORWARD, v.into()));
        }
        if let Some(v) = self.new_group_request {
            pairs.push(KeyValue::int(NEW_GROUP_REQUEST, v));
        }
        pairs.extend(self.extension.iter().cloned());
        kvp::sort(&mut pairs);
        put_varint(buf, pairs.len() as u64);
        kvp::put_pairs(buf, &pairs);
    }

    /// Checks a REQUEST_UPDATE's parameters against the request it modifies (draft-16 §9.10:
    /// parameters invalid for that request close the session with PROTOCOL_VIOLATION).
    /// SUBSCRIPTION_FILTER, FORWARD and NEW_GROUP_REQUEST update only subscriptions;
    /// SUBSCRIBER_PRIORITY only subscriptions and fetches.
    pub fn check_update(&self, target: UpdateTarget) -> Result<(), DecodeError> {
        let sub_only = self.subscription_filter.is_some()
            || self.forward.is_some()
            || self.new_group_request.is_some();
        let ok = match target {
            UpdateTarget::Subscription => true,
            UpdateTarget::Fetch => !sub_only,
            UpdateTarget::Other => !sub_only && self.subscriber_priority.is_none(),
        };
        if ok {
            Ok(())
        } else {
            Err(DecodeError::Malformed {
                code: TerminationCode::ProtocolViolation,
                reason: "REQUEST_UPDATE parameter invalid for the request it updates",
            })
        }
    }
}

/// Sets `slot` to `v` if it was empty; `None` if it already held a value.
pub(crate) fn set_once<T>(slot: &mut Option<T>, v: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(v);
    Some(())
}

/// An odd-typed pair built without the length assertion of [`KeyValue::bytes`]: an
/// over-long value makes the whole message too long, which the framing reports as an error.
pub(crate) fn bytes_pair(key: u64, v: impl Into<Bytes>) -> KeyValue {
    KeyValue { key, value: Value::Bytes(v.into()) }
}
