//! Hand-written wire fixtures for every control message and parameter, derived field by
//! field from the draft-16 figures, checked against both the encoder and the decoder; the
//! session-closing rules at the decode level; and decode robustness on arbitrary input.

use bytes::Bytes;

use super::*;
use crate::coding::{Encode, TerminationCode};
use crate::ext::Extensions;
use crate::kvp::KeyValue;
use crate::types::*;

/// Hex with spaces allowed.
fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(s).expect("fixture is hex")
}

/// Asserts encode(msg) == fixture, decode(fixture) == msg (consuming the whole frame, and
/// only it), and that every proper prefix is Short with the input untouched.
fn check(fixture_hex: &str, msg: impl Into<Message>) {
    let msg = msg.into();
    let fixture = hex(fixture_hex);
    assert_eq!(hex::encode(msg.to_vec()), hex::encode(&fixture), "encoder vs fixture for {msg:?}");
    let mut cur = &fixture[..];
    assert_eq!(Message::decode(&mut cur).as_ref(), Ok(&msg), "decoder vs fixture");
    assert!(cur.is_empty(), "decode consumed the whole frame");
    // A following frame stays in the buffer.
    let mut two = fixture.clone();
    two.extend_from_slice(&[0x0a, 0x00, 0x01, 0x02]);
    let mut cur = &two[..];
    assert_eq!(Message::decode(&mut cur).as_ref(), Ok(&msg));
    assert_eq!(cur, &[0x0a, 0x00, 0x01, 0x02]);
    for k in 0..fixture.len() {
        let mut cur = &fixture[..k];
        assert_eq!(Message::decode(&mut cur), Err(DecodeError::Short), "prefix of {k} bytes");
        assert_eq!(cur.len(), k, "a Short decode must not consume input");
    }
}

/// Asserts the input decodes as Malformed with `code`.
fn closes(input: &[u8], code: TerminationCode) {
    let mut cur = input;
    match Message::decode(&mut cur) {
        Err(DecodeError::Malformed { code: c, reason }) => {
            assert_eq!(c, code, "wrong termination code (reason: {reason})")
        }
        other => panic!("expected Malformed({code:?}), got {other:?}"),
    }
}

fn closes_hex(input: &str, code: TerminationCode) {
    closes(&hex(input), code);
}

/// Frames a payload built in code (for inputs too large to write out by hand).
fn frame(t: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![t];
    v.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn ns(fields: &[&str]) -> TrackNamespace {
    TrackNamespace::new(fields.iter().map(|f| Bytes::copy_from_slice(f.as_bytes()))).unwrap()
}

/// ("clinic", "r42") / "video": the full track name used by most fixtures.
fn video() -> FullTrackName {
    FullTrackName::new(ns(&["clinic", "r42"]), "video").unwrap()
}

/// The wire form of `video()`: 18 bytes.
const VIDEO: &str = concat!(
    "02",              // Number of Track Namespace Fields = 2
    "06 636c696e6963", // Field Length 6, "clinic"
    "03 723432",       // Field Length 3, "r42"
    "05 766964656f",   // Track Name Length 5, "video"
);

fn reason(s: &str) -> ReasonPhrase {
    ReasonPhrase::new(Bytes::copy_from_slice(s.as_bytes())).unwrap()
}

fn token(b: &str) -> TokenValue {
    TokenValue(Bytes::copy_from_slice(b.as_bytes()))
}

// ---------------------------------------------------------------------------------------
// One fixture per message.
// ---------------------------------------------------------------------------------------

#[test]
fn client_setup() {
    let fixture = [
        "20",                                       // Type CLIENT_SETUP
        "0030",                                     // Length 48
        "08",                                       // Number of Parameters 8
        "01 04 2f6d6f71",                           // delta 1 -> PATH (0x01), len 4, "/moq"
        "01 4064",                                  // delta 1 -> MAX_REQUEST_ID (0x02) = 100
        "01 06",                                    // delta 1 -> AUTHORIZATION TOKEN, len 6
        "01 01 00 746f6b",                          //   REGISTER, alias 1, type 0, "tok"
        "01 5000",                                  // delta 1 -> MAX_AUTH_TOKEN_CACHE_SIZE 4096
        "01 11 72656c61792e6578616d706c653a343433", // delta 1 -> AUTHORITY, len 17
        "02 02 746d",                               // delta 2 -> MOQT_IMPLEMENTATION "tm"
        "37 01",                                    // delta 0x37 -> unknown 0x3e = 1
        "00 02",                                    // delta 0 -> unknown 0x3e again = 2
    ]
    .concat();
    let params = SetupParams {
        path: Some("/moq".into()),
        authority: Some("relay.example:443".into()),
        max_request_id: Some(100),
        max_auth_token_cache_size: Some(4096),
        auth_tokens: vec![AuthToken::Register { alias: 1, token_type: 0, value: token("tok") }],
        implementation: Some(Bytes::from_static(b"tm")),
        unknown: vec![KeyValue::int(0x3e, 1), KeyValue::int(0x3e, 2)],
    };
    check(&fixture, ClientSetup { params });
}

#[test]
fn server_setup() {
    let fixture = [
        "21",                     // Type SERVER_SETUP
        "0014",                   // Length 20
        "04",                     // Number of Parameters 4
        "02 4040",                // delta 2 -> MAX_REQUEST_ID = 64 (two-byte varint)
        "02 00",                  // delta 2 -> MAX_AUTH_TOKEN_CACHE_SIZE = 0
        "03 08 746965726d657368", // delta 3 -> MOQT_IMPLEMENTATION, len 8, "tiermesh"
        "40fa 01 78",             // delta 0xfa -> unknown odd 0x101, len 1, "x"
    ]
    .concat();
    let params = SetupParams {
        max_request_id: Some(64),
        max_auth_token_cache_size: Some(0),
        implementation: Some(Bytes::from_static(b"tiermesh")),
        unknown: vec![KeyValue::bytes(0x101, &b"x"[..])],
        ..SetupParams::default()
    };
    check(&fixture, ServerSetup { params });
}

#[test]
fn goaway() {
    // Type GOAWAY, Length 10, URI Length 9, "moqt://r2".
    check("10 000a 09 6d6f71743a2f2f7232", GoAway { new_session_uri: "moqt://r2".into() });
    // Type GOAWAY, Length 1, URI Length 0: reuse the current URI.
    check("10 0001 00", GoAway::default());
}

#[test]
fn max_request_id() {
    // Type 0x15, Length 2, Max Request ID 200 (two-byte varint 0x40c8).
    check("15 0002 40c8", MaxRequestId { max_request_id: RequestId(200) });
}

#[test]
fn requests_blocked() {
    // Type 0x1A, Length 4, Maximum Request ID 20000 (four-byte varint 0x80004e20).
    check("1a 0004 80004e20", RequestsBlocked { max_request_id: RequestId(20000) });
}

#[test]
fn request_ok() {
    let fixture = [
        "07",          // Type REQUEST_OK
        "000b",        // Length 11
        "04",          // Request ID 4
        "02",          // Number of Parameters 2
        "08 80007530", // delta 8 -> EXPIRES = 30000 (four-byte varint)
        "01 02 05 07", // delta 1 -> LARGEST_OBJECT, len 2, {5, 7}
    ]
    .concat();
    let params = MessageParams {
        expires_ms: Some(30000),
        largest_object: Some(Location::new(5, 7)),
        ..MessageParams::default()
    };
    check(&fixture, RequestOk { request_id: RequestId(4), params });
}

#[test]
fn request_error() {
    let fixture = [
        "05",                  // Type REQUEST_ERROR
        "000d",                // Length 13
        "03",                  // Request ID 3
        "10",                  // Error Code DOES_NOT_EXIST (0x10)
        "43e9",                // Retry Interval 1001 (retry after 1000 ms)
        "08 6e6f20747261636b", // Reason Phrase Length 8, "no track"
    ]
    .concat();
    let m = RequestError {
        request_id: RequestId(3),
        error_code: RequestErrorCode::DoesNotExist,
        retry_interval: 1001,
        reason: reason("no track"),
    };
    assert_eq!(m.retry_after_ms(), Some(1000));
    check(&fixture, m);
    // An error code draft-16 does not define stays representable: 0x99, no retry, no reason.
    check(
        "05 0005 03 4099 00 00",
        RequestError {
            request_id: RequestId(3),
            error_code: RequestErrorCode::Other(0x99),
            retry_interval: 0,
            reason: ReasonPhrase::default(),
        },
    );
}

#[test]
fn subscribe() {
    let fixture = [
        "03",         // Type SUBSCRIBE
        "0028",       // Length 40
        "02",         // Request ID 2
        VIDEO,        // Track Namespace + Track Name (18 bytes)
        "07",         // Number of Parameters 7
        "02 41f4",    // delta 2 -> DELIVERY_TIMEOUT = 500
        "01 04",      // delta 1 -> AUTHORIZATION TOKEN, len 4
        "03 01 6162", //   USE_VALUE, token type 1, "ab"
        "0d 01",      // delta 0x0d -> FORWARD (0x10) = 1
        "10 20",      // delta 0x10 -> SUBSCRIBER_PRIORITY (0x20) = 32
        "01 01 02",   // delta 1 -> SUBSCRIPTION_FILTER, len 1, Largest Object (0x2)
        "01 02",      // delta 1 -> GROUP_ORDER (0x22) = Descending
        "10 00",      // delta 0x10 -> NEW_GROUP_REQUEST (0x32) = 0
    ]
    .concat();
    let params = MessageParams {
        auth_tokens: vec![AuthToken::UseValue { token_type: 1, value: token("ab") }],
        delivery_timeout_ms: Some(500),
        subscriber_priority: Some(32),
        group_order: Some(GroupOrder::Descending),
        subscription_filter: Some(SubscriptionFilter::LargestObject),
        forward: Some(true),
        new_group_request: Some(0),
        ..MessageParams::default()
    };
    check(&fixture, Subscribe { request_id: RequestId(2), track: video(), params });
}

#[test]
fn subscribe_ok() {
    let fixture = [
        "04",         // Type SUBSCRIBE_OK
        "0010",       // Length 16
        "02",         // Request ID 2
        "07",         // Track Alias 7
        "02",         // Number of Parameters 2
        "08 00",      // delta 8 -> EXPIRES = 0
        "01 02 0a03", // delta 1 -> LARGEST_OBJECT, len 2, {10, 3}
        "02 40c8",    // Track Extension delta 2 -> DELIVERY_TIMEOUT = 200
        "0c 20",      // delta 0x0c -> DEFAULT_PUBLISHER_PRIORITY (0x0e) = 32
        "14 02",      // delta 0x14 -> DEFAULT_PUBLISHER_GROUP_ORDER (0x22) = 2
    ]
    .concat();
    let m = SubscribeOk {
        request_id: RequestId(2),
        track_alias: TrackAlias(7),
        params: MessageParams {
            expires_ms: Some(0),
            largest_object: Some(Location::new(10, 3)),
            ..MessageParams::default()
        },
        extensions: Extensions {
            delivery_timeout: Some(200),
            default_publisher_priority: Some(32),
            default_publisher_group_order: Some(GroupOrder::Descending),
            ..Extensions::default()
        },
    };
    check(&fixture, m);
}

#[test]
fn request_update() {
    let fixture = [
        "02",             // Type REQUEST_UPDATE
        "0016",           // Length 22
        "06",             // Request ID 6
        "02",             // Existing Request ID 2
        "06",             // Number of Parameters 6
        "02 4064",        // delta 2 -> DELIVERY_TIMEOUT = 100
        "01 02 02 01",    // delta 1 -> AUTHORIZATION TOKEN, len 2, USE_ALIAS, alias 1
        "0d 00",          // delta 0x0d -> FORWARD = 0
        "10 01",          // delta 0x10 -> SUBSCRIBER_PRIORITY = 1
        "01 04 04050009", // delta 1 -> SUBSCRIPTION_FILTER, len 4, AbsoluteRange {5,0}..9
        "11 0b",          // delta 0x11 -> NEW_GROUP_REQUEST (0x32) = 11
    ]
    .concat();
    let params = MessageParams {
        auth_tokens: vec![AuthToken::UseAlias { alias: 1 }],
        delivery_timeout_ms: Some(100),
        subscriber_priority: Some(1),
        subscription_filter: Some(SubscriptionFilter::AbsoluteRange {
            start: Location::new(5, 0),
            end_group: GroupId(9),
        }),
        forward: Some(false),
        new_group_request: Some(11),
        ..MessageParams::default()
    };
    let m = RequestUpdate {
        request_id: RequestId(6),
        existing_request_id: RequestId(2),
        params: params.clone(),
    };
    check(&fixture, m);
    assert_eq!(params.check_update(UpdateTarget::Subscription), Ok(()));
    assert!(matches!(
        params.check_update(UpdateTarget::Fetch),
        Err(DecodeError::Malformed { code: TerminationCode::ProtocolViolation, .. })
    ));
    let fetch_update = MessageParams {
        subscriber_priority: Some(3),
        auth_tokens: vec![AuthToken::UseAlias { alias: 1 }],
        ..MessageParams::default()
    };
    assert_eq!(fetch_update.check_update(UpdateTarget::Fetch), Ok(()));
    assert!(fetch_update.check_update(UpdateTarget::Other).is_err());
}

#[test]
fn unsubscribe() {
    // Type 0xA, Length 1, Request ID 2.
    check("0a 0001 02", Unsubscribe { request_id: RequestId(2) });
}

#[test]
fn publish() {
    let fixture = [
        "1d",          // Type PUBLISH
        "0029",        // Length 41
        "01",          // Request ID 1
        VIDEO,         // Track Namespace + Track Name (18 bytes)
        "03",          // Track Alias 3
        "04",          // Number of Parameters 4
        "03 02 0005",  // delta 3 -> AUTHORIZATION TOKEN, len 2, DELETE, alias 5
        "05 8000ea60", // delta 5 -> EXPIRES = 60000
        "01 02 0102",  // delta 1 -> LARGEST_OBJECT, len 2, {1, 2}
        "07 00",       // delta 7 -> FORWARD = 0
        "04 5388",     // Track Extension delta 4 -> MAX_CACHE_DURATION = 5000
        "2c 01",       // delta 0x2c -> DYNAMIC_GROUPS (0x30) = 1
    ]
    .concat();
    let m = Publish {
        request_id: RequestId(1),
        track: video(),
        track_alias: TrackAlias(3),
        params: MessageParams {
            auth_tokens: vec![AuthToken::Delete { alias: 5 }],
            expires_ms: Some(60000),
            largest_object: Some(Location::new(1, 2)),
            forward: Some(false),
            ..MessageParams::default()
        },
        extensions: Extensions {
            max_cache_duration: Some(5000),
            dynamic_groups: Some(true),
            ..Extensions::default()
        },
    };
    check(&fixture, m);
}

#[test]
fn publish_ok() {
    let fixture = [
        "1e",       // Type PUBLISH_OK
        "0013",     // Length 19
        "01",       // Request ID 1
        "07",       // Number of Parameters 7
        "02 43e8",  // delta 2 -> DELIVERY_TIMEOUT = 1000
        "06 05",    // delta 6 -> EXPIRES = 5
        "08 01",    // delta 8 -> FORWARD = 1
        "10 40c8",  // delta 0x10 -> SUBSCRIBER_PRIORITY = 200
        "01 01 01", // delta 1 -> SUBSCRIPTION_FILTER, len 1, Next Group Start (0x1)
        "01 01",    // delta 1 -> GROUP_ORDER = Ascending
        "10 04",    // delta 0x10 -> NEW_GROUP_REQUEST = 4
    ]
    .concat();
    let params = MessageParams {
        delivery_timeout_ms: Some(1000),
        subscriber_priority: Some(200),
        group_order: Some(GroupOrder::Ascending),
        subscription_filter: Some(SubscriptionFilter::NextGroupStart),
        expires_ms: Some(5),
        forward: Some(true),
        new_group_request: Some(4),
        ..MessageParams::default()
    };
    check(&fixture, PublishOk { request_id: RequestId(1), params });
}

#[test]
fn publish_done() {
    let fixture = [
        "0b",               // Type PUBLISH_DONE
        "000e",             // Length 14
        "02",               // Request ID 2
        "02",               // Status Code TRACK_ENDED
        "ffffffffffffffff", // Stream Count 2^62-1 (not counted)
        "03 627965",        // Reason Phrase "bye"
    ]
    .concat();
    let m = PublishDone {
        request_id: RequestId(2),
        status_code: PublishDoneCode::TrackEnded,
        stream_count: STREAM_COUNT_UNKNOWN,
        reason: reason("bye"),
    };
    check(&fixture, m);
    // Unknown status code 0x7 stays representable.
    check(
        "0b 0004 02 07 00 00",
        PublishDone {
            request_id: RequestId(2),
            status_code: PublishDoneCode::Other(7),
            stream_count: 0,
            reason: ReasonPhrase::default(),
        },
    );
}

#[test]
fn fetch_standalone() {
    let fixture = [
        "16",         // Type FETCH
        "0021",       // Length 33
        "04",         // Request ID 4
        "01",         // Fetch Type Standalone
        VIDEO,        // Track Namespace + Track Name (18 bytes)
        "01 00",      // Start Location {1, 0}
        "03 00",      // End Location {3, 0}: all of group 3
        "03",         // Number of Parameters 3
        "03 02 0300", // delta 3 -> AUTHORIZATION TOKEN, len 2, USE_VALUE type 0, empty value
        "1d 0a",      // delta 0x1d -> SUBSCRIBER_PRIORITY = 10
        "02 02",      // delta 2 -> GROUP_ORDER = Descending
    ]
    .concat();
    let m = Fetch {
        request_id: RequestId(4),
        fetch_type: FetchType::Standalone(StandaloneFetch {
            track: video(),
            start: Location::new(1, 0),
            end: Location::new(3, 0),
        }),
        params: MessageParams {
            auth_tokens: vec![AuthToken::UseValue { token_type: 0, value: token("") }],
            subscriber_priority: Some(10),
            group_order: Some(GroupOrder::Descending),
            ..MessageParams::default()
        },
    };
    check(&fixture, m);
}

#[test]
fn fetch_joining() {
    // Type FETCH, Length 5, Request ID 6, Fetch Type 2 (relative), Joining Request ID 2,
    // Joining Start 3, Number of Parameters 0.
    check(
        "16 0005 06 02 02 03 00",
        Fetch {
            request_id: RequestId(6),
            fetch_type: FetchType::RelativeJoining(JoiningFetch {
                joining_request_id: RequestId(2),
                joining_start: 3,
            }),
            params: MessageParams::default(),
        },
    );
    // Type FETCH, Length 6, Request ID 8, Fetch Type 3 (absolute), Joining Request ID 2,
    // Joining Start 100 (two-byte varint), Number of Parameters 0.
    check(
        "16 0006 08 03 02 4064 00",
        Fetch {
            request_id: RequestId(8),
            fetch_type: FetchType::AbsoluteJoining(JoiningFetch {
                joining_request_id: RequestId(2),
                joining_start: 100,
            }),
            params: MessageParams::default(),
        },
    );
}

#[test]
fn fetch_ok() {
    let fixture = [
        "18",    // Type FETCH_OK
        "0007",  // Length 7
        "04",    // Request ID 4
        "01",    // End Of Track (8) = 1
        "03 00", // End Location {3, 0}
        "00",    // Number of Parameters 0
        "04 0a", // Track Extension delta 4 -> MAX_CACHE_DURATION = 10
    ]
    .concat();
    let m = FetchOk {
        request_id: RequestId(4),
        end_of_track: true,
        end_location: Location::new(3, 0),
        params: MessageParams::default(),
        extensions: Extensions { max_cache_duration: Some(10), ..Extensions::default() },
    };
    check(&fixture, m);
}

#[test]
fn fetch_cancel() {
    // Type 0x17, Length 1, Request ID 4.
    check("17 0001 04", FetchCancel { request_id: RequestId(4) });
}

#[test]
fn track_status() {
    let fixture = [
        "0d",              // Type TRACK_STATUS
        "0013",            // Length 19
        "0a",              // Request ID 10
        "02",              // Number of Track Namespace Fields 2
        "06 636c696e6963", // "clinic"
        "03 723432",       // "r42"
        "00",              // Track Name Length 0 (empty name)
        "01",              // Number of Parameters 1
        "03 02 0203",      // delta 3 -> AUTHORIZATION TOKEN, len 2, USE_ALIAS, alias 3
    ]
    .concat();
    let m = TrackStatus {
        request_id: RequestId(10),
        track: FullTrackName::new(ns(&["clinic", "r42"]), "").unwrap(),
        params: MessageParams {
            auth_tokens: vec![AuthToken::UseAlias { alias: 3 }],
            ..MessageParams::default()
        },
    };
    check(&fixture, m);
}

#[test]
fn publish_namespace() {
    let fixture = [
        "06",              // Type PUBLISH_NAMESPACE
        "0013",            // Length 19
        "01",              // Request ID 1
        "02",              // Number of Track Namespace Fields 2
        "06 636c696e6963", // "clinic"
        "03 723432",       // "r42"
        "01",              // Number of Parameters 1
        "03 03 03 02 6b",  // delta 3 -> AUTHORIZATION TOKEN, len 3: USE_VALUE, type 2, "k"
    ]
    .concat();
    let m = PublishNamespace {
        request_id: RequestId(1),
        namespace: ns(&["clinic", "r42"]),
        params: MessageParams {
            auth_tokens: vec![AuthToken::UseValue { token_type: 2, value: token("k") }],
            ..MessageParams::default()
        },
    };
    check(&fixture, m);
}

#[test]
fn namespace() {
    // Type NAMESPACE, Length 8, 1 field, Field Length 6, "dr-lee".
    check("08 0008 01 06 64722d6c6565", Namespace { suffix: ns(&["dr-lee"]) });
    // The namespace equals the prefix: an empty suffix.
    check("08 0001 00", Namespace { suffix: TrackNamespace::default() });
}

#[test]
fn publish_namespace_done() {
    // Type 0x9, Length 1, Request ID 1.
    check("09 0001 01", PublishNamespaceDone { request_id: RequestId(1) });
}

#[test]
fn namespace_done() {
    // Type NAMESPACE_DONE, Length 8, 1 field, Field Length 6, "dr-lee".
    check("0e 0008 01 06 64722d6c6565", NamespaceDone { suffix: ns(&["dr-lee"]) });
}

#[test]
fn publish_namespace_cancel() {
    // Type 0xC, Length 3, Request ID 1, Error Code UNINTERESTED (0x20), empty reason.
    check(
        "0c 0003 01 20 00",
        PublishNamespaceCancel {
            request_id: RequestId(1),
            error_code: RequestErrorCode::Uninterested,
            reason: ReasonPhrase::default(),
        },
    );
}

#[test]
fn subscribe_namespace() {
    let fixture = [
        "11",              // Type SUBSCRIBE_NAMESPACE
        "000d",            // Length 13
        "04",              // Request ID 4
        "01",              // Track Namespace Prefix: 1 field
        "06 636c696e6963", // "clinic"
        "01",              // Subscribe Options NAMESPACE (0x01)
        "01",              // Number of Parameters 1
        "10 00",           // delta 0x10 -> FORWARD = 0
    ]
    .concat();
    let m = SubscribeNamespace {
        request_id: RequestId(4),
        prefix: ns(&["clinic"]),
        options: SubscribeOptions::Namespace,
        params: MessageParams { forward: Some(false), ..MessageParams::default() },
    };
    check(&fixture, m);
    // Empty prefix (everything), options both, no parameters.
    check(
        "11 0004 04 00 02 00",
        SubscribeNamespace {
            request_id: RequestId(4),
            prefix: TrackNamespace::default(),
            options: SubscribeOptions::Both,
            params: MessageParams::default(),
        },
    );
}

// ---------------------------------------------------------------------------------------
// One fixture per parameter, alone, as `Number of Parameters` + the pair.
// ---------------------------------------------------------------------------------------

#[test]
fn each_message_parameter_alone() {
    let d = MessageParams::default;
    let cases: Vec<(&str, MessageType, MessageParams)> = vec![
        // 1 param; delta 2 DELIVERY_TIMEOUT = 1 ms.
        ("01 02 01", MessageType::Subscribe, MessageParams { delivery_timeout_ms: Some(1), ..d() }),
        // 1 param; delta 3 AUTHORIZATION TOKEN len 5: REGISTER alias 0x40 (2 bytes), type 7, "z".
        (
            "01 03 05 01 4040 07 7a",
            MessageType::Fetch,
            MessageParams {
                auth_tokens: vec![AuthToken::Register {
                    alias: 0x40,
                    token_type: 7,
                    value: token("z"),
                }],
                ..d()
            },
        ),
        // delta 8 EXPIRES = 63 (largest one-byte varint).
        ("01 08 3f", MessageType::SubscribeOk, MessageParams { expires_ms: Some(63), ..d() }),
        // delta 9 LARGEST_OBJECT len 3: {64 (two bytes), 0}.
        (
            "01 09 03 4040 00",
            MessageType::RequestOk,
            MessageParams { largest_object: Some(Location::new(64, 0)), ..d() },
        ),
        // delta 0x10 FORWARD = 1.
        ("01 10 01", MessageType::SubscribeNamespace, MessageParams { forward: Some(true), ..d() }),
        // delta 0x20 SUBSCRIBER_PRIORITY = 255 (two-byte varint 0x40ff).
        ("01 20 40ff", MessageType::Fetch, MessageParams { subscriber_priority: Some(255), ..d() }),
        // delta 0x21 SUBSCRIPTION_FILTER len 3: AbsoluteStart {2, 1}.
        (
            "01 21 03 03 02 01",
            MessageType::Subscribe,
            MessageParams {
                subscription_filter: Some(SubscriptionFilter::AbsoluteStart(Location::new(2, 1))),
                ..d()
            },
        ),
        // delta 0x22 GROUP_ORDER = Ascending.
        (
            "01 22 01",
            MessageType::PublishOk,
            MessageParams { group_order: Some(GroupOrder::Ascending), ..d() },
        ),
        // delta 0x32 NEW_GROUP_REQUEST = 16384 (four-byte varint).
        (
            "01 32 80004000",
            MessageType::RequestUpdate,
            MessageParams { new_group_request: Some(16384), ..d() },
        ),
        // Two tokens, the second delta 0: USE_VALUE type 1 "a", then USE_VALUE type 1 "b".
        (
            "02 03 03 03 01 61 00 03 03 01 62",
            MessageType::Subscribe,
            MessageParams {
                auth_tokens: vec![
                    AuthToken::UseValue { token_type: 1, value: token("a") },
                    AuthToken::UseValue { token_type: 1, value: token("b") },
                ],
                ..d()
            },
        ),
    ];
    for (h, t, want) in cases {
        let bytes = hex(h);
        let mut cur = &bytes[..];
        assert_eq!(MessageParams::decode(&mut cur, t, &[]).as_ref(), Ok(&want), "decode {h}");
        assert!(cur.is_empty());
        let mut out = Vec::new();
        want.encode(&mut out);
        assert_eq!(hex::encode(out), hex::encode(&bytes), "encode {h}");
        for k in 0..bytes.len() {
            let mut cur = &bytes[..k];
            assert_eq!(
                MessageParams::decode(&mut cur, t, &[]),
                Err(DecodeError::Short),
                "{h}[..{k}]"
            );
        }
    }
}

#[test]
fn known_parameter_in_another_message_is_ignored() {
    // PUBLISH_NAMESPACE (Request ID 1, namespace "a") with SUBSCRIBER_PRIORITY = 300: the
    // parameter is not defined for PUBLISH_NAMESPACE, so it is ignored, out of range or not.
    let input = hex("06 0008 01 01 01 61 01 20 412c");
    let mut cur = &input[..];
    let Message::PublishNamespace(m) = Message::decode(&mut cur).unwrap() else { panic!() };
    assert!(m.params.is_empty());
    // TRACK_STATUS carries no delivery parameters: FORWARD is dropped.
    let input = hex("0d 0008 00 01 01 61 00 01 10 01");
    let Message::TrackStatus(m) = Message::decode(&mut &input[..]).unwrap() else { panic!() };
    assert!(m.params.is_empty());
}

#[test]
fn extension_parameters_are_kept_when_negotiated() {
    // UNSUBSCRIBE has no parameters; use PUBLISH_OK (Request ID 1) with parameter type 0x40
    // (delta 0x40, two-byte varint 0x4040) = 5.
    let input = hex("1e 0005 01 01 4040 05");
    closes(&input, TerminationCode::ProtocolViolation);
    let mut cur = &input[..];
    let m = Message::decode_with(&mut cur, &[0x40]).unwrap();
    let Message::PublishOk(p) = &m else { panic!() };
    assert_eq!(p.params.extension, vec![KeyValue::int(0x40, 5)]);
    assert_eq!(m.to_vec(), input, "kept raw, written back unchanged");
}

#[test]
fn setup_helpers() {
    let p = SetupParams::default();
    assert_eq!(p.max_request_id(), 0, "absent MAX_REQUEST_ID means 0");
    assert_eq!(p.max_auth_token_cache_size(), 0);
    let p = SetupParams {
        unknown: vec![KeyValue::int(0x3e, 1), KeyValue::int(0x40, 1), KeyValue::int(0x3e, 2)],
        ..p
    };
    assert_eq!(p.unknown_of(0x3e).count(), 2);
}

// ---------------------------------------------------------------------------------------
// Rules that close the session at the decode level.
// ---------------------------------------------------------------------------------------

use TerminationCode::{KeyValueFormattingError as KVF, ProtocolViolation as PV};

#[test]
fn unknown_message_type_closes() {
    closes_hex("40 0000", PV); // reserved: CLIENT_SETUP of versions <= 10
    closes_hex("41 0000", PV); // reserved: SERVER_SETUP of versions <= 10
    closes_hex("01 0000", PV); // reserved: SETUP of version 00
    closes_hex("3f 0000", PV);
    // The type alone is enough to refuse: no need to wait for the length and payload.
    closes_hex("4040", PV);
    // A known type in a longer varint form than needed is still that type.
    check_nonminimal();
}

fn check_nonminimal() {
    let input = hex("400a 0001 02"); // UNSUBSCRIBE as a two-byte varint
    assert_eq!(
        Message::decode(&mut &input[..]),
        Ok(Message::Unsubscribe(Unsubscribe { request_id: RequestId(2) }))
    );
}

#[test]
fn message_type_table() {
    // The draft's Message Types table, code by code.
    let table: &[(u64, &str)] = &[
        (0x20, "CLIENT_SETUP"),
        (0x21, "SERVER_SETUP"),
        (0x10, "GOAWAY"),
        (0x15, "MAX_REQUEST_ID"),
        (0x1a, "REQUESTS_BLOCKED"),
        (0x07, "REQUEST_OK"),
        (0x05, "REQUEST_ERROR"),
        (0x03, "SUBSCRIBE"),
        (0x04, "SUBSCRIBE_OK"),
        (0x02, "REQUEST_UPDATE"),
        (0x0a, "UNSUBSCRIBE"),
        (0x1d, "PUBLISH"),
        (0x1e, "PUBLISH_OK"),
        (0x0b, "PUBLISH_DONE"),
        (0x16, "FETCH"),
        (0x18, "FETCH_OK"),
        (0x17, "FETCH_CANCEL"),
        (0x0d, "TRACK_STATUS"),
        (0x06, "PUBLISH_NAMESPACE"),
        (0x08, "NAMESPACE"),
        (0x09, "PUBLISH_NAMESPACE_DONE"),
        (0x0e, "NAMESPACE_DONE"),
        (0x0c, "PUBLISH_NAMESPACE_CANCEL"),
        (0x11, "SUBSCRIBE_NAMESPACE"),
    ];
    for &(code, name) in table {
        let t = MessageType::from_code(code).expect(name);
        assert_eq!((t.code(), t.name()), (code, name));
    }
    let defined = (0..0x100).filter(|c| MessageType::from_code(*c).is_some()).count();
    assert_eq!(defined, table.len(), "no other code is a message type");
    let requests: Vec<_> = table
        .iter()
        .filter(|(c, _)| MessageType::from_code(*c).unwrap().is_request())
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(
        requests,
        [
            "SUBSCRIBE",
            "REQUEST_UPDATE",
            "PUBLISH",
            "FETCH",
            "TRACK_STATUS",
            "PUBLISH_NAMESPACE",
            "SUBSCRIBE_NAMESPACE"
        ]
    );
    let m: Message = Unsubscribe { request_id: RequestId(8) }.into();
    assert_eq!(m.request_id(), Some(RequestId(8)));
    assert_eq!(Message::from(GoAway::default()).request_id(), None);
}

#[test]
fn frame_hook_reads_unknown_types() {
    let input = hex("4040 0002 abcd 0a");
    let mut cur = &input[..];
    let f = Frame::read(&mut cur).unwrap();
    assert_eq!(f.message_type, 0x40);
    assert_eq!(f.payload, &[0xab, 0xcd]);
    assert_eq!(cur, &[0x0a]);
    assert_eq!(Frame::read(&mut &input[..4]), Err(DecodeError::Short));
}

#[test]
fn length_mismatch_closes() {
    closes_hex("0a 0002 02 00", PV); // UNSUBSCRIBE with a byte after its Request ID
    closes_hex("0a 0000", PV); // UNSUBSCRIBE without its Request ID
    closes_hex("03 0003 02 01 01", PV); // SUBSCRIBE cut inside the namespace
    closes_hex("15 0001 40", PV); // MAX_REQUEST_ID whose varint runs past the length
    closes_hex("0b 0003 02 02 00", PV); // PUBLISH_DONE without a reason phrase
}

#[test]
fn unknown_message_parameter_closes() {
    // SUBSCRIBE, Request ID 0, namespace ("a"), name "", 1 param: type 0x04 = 0.
    closes_hex("03 0008 00 01 01 61 00 01 04 00", PV);
    // Odd unknown type 0x05, len 0.
    closes_hex("03 0008 00 01 01 61 00 01 05 00", PV);
}

#[test]
fn duplicate_parameter_closes() {
    // SUBSCRIBE with DELIVERY_TIMEOUT twice (delta 2, then delta 0).
    closes_hex("03 000a 00 01 01 61 00 02 02 05 00 06", PV);
    // The same explicit token twice: USE_VALUE type 1 "a".
    closes_hex("03 0010 00 01 01 61 00 02 03 03 03 01 61 00 03 03 01 61", PV);
    // The same REGISTER type+value under two aliases is a repeat too.
    closes_hex("03 0012 00 01 01 61 00 02 03 04 01 01 01 61 00 04 01 02 01 61", PV);
    // Two LARGEST_OBJECT in SUBSCRIBE_OK.
    closes_hex("04 000b 00 01 02 09 02 00 00 00 02 00 00", PV);
}

#[test]
fn namespace_limits_close() {
    // SUBSCRIBE with a namespace of 0 fields.
    closes_hex("03 0004 00 00 00 00", PV);
    // PUBLISH_NAMESPACE with 0 fields.
    closes_hex("06 0003 00 00 00", PV);
    // A field of length 0.
    closes_hex("03 0005 00 01 00 00 00", PV);
    // 33 fields: refused at the count, before any field is read.
    let mut p = vec![0x00, 33];
    for _ in 0..33 {
        p.extend_from_slice(&[1, b'x']);
    }
    p.extend_from_slice(&[0, 0]);
    closes(&frame(0x03, &p), PV);
    // 32 fields is fine.
    let mut p = vec![0x00, 32];
    for _ in 0..32 {
        p.extend_from_slice(&[1, b'x']);
    }
    p.extend_from_slice(&[0, 0]);
    let Message::Subscribe(s) = Message::decode(&mut &frame(0x03, &p)[..]).unwrap() else {
        panic!()
    };
    assert_eq!(s.track.namespace.len(), 32);
    // SUBSCRIBE_NAMESPACE prefix of 33 fields.
    let mut p = vec![0x00, 33];
    for _ in 0..33 {
        p.extend_from_slice(&[1, b'x']);
    }
    p.extend_from_slice(&[0, 0]);
    closes(&frame(0x11, &p), PV);
}

#[test]
fn name_length_limits_close() {
    // A namespace of two fields, 2048 + 2049 bytes: 4097 > 4096.
    let mut p = vec![0x00, 2];
    p.extend_from_slice(&[0x48, 0x00]); // 2048
    p.extend(std::iter::repeat_n(b'a', 2048));
    p.extend_from_slice(&[0x48, 0x01]); // 2049
    p.extend(std::iter::repeat_n(b'b', 2049));
    p.extend_from_slice(&[0, 0]);
    closes(&frame(0x03, &p), PV);
    // Namespace of 4000 bytes and a name of 97 bytes: the full name is 4097.
    let mut p = vec![0x00, 1, 0x4f, 0xa0]; // 1 field of 4000
    p.extend(std::iter::repeat_n(b'a', 4000));
    p.push(97);
    p.extend(std::iter::repeat_n(b'n', 97));
    p.push(0);
    closes(&frame(0x03, &p), PV);
    // Exactly 4096 passes.
    let mut p = vec![0x00, 1, 0x4f, 0xa0];
    p.extend(std::iter::repeat_n(b'a', 4000));
    p.push(0x40);
    p.push(96);
    p.extend(std::iter::repeat_n(b'n', 96));
    p.push(0);
    assert!(Message::decode(&mut &frame(0x03, &p)[..]).is_ok());
    // A field claiming 5000 bytes is refused without waiting for them.
    closes_hex("03 0007 00 01 5388 61 00 00", PV);
}

#[test]
fn reason_phrase_limit_closes() {
    // REQUEST_ERROR whose reason claims 1025 bytes (0x4401).
    closes_hex("05 0006 00 00 00 4401 61", PV);
    // 1024 bytes pass.
    let mut p = vec![0x00, 0x00, 0x00, 0x44, 0x00];
    p.extend(std::iter::repeat_n(b'r', 1024));
    assert!(Message::decode(&mut &frame(0x05, &p)[..]).is_ok());
    // PUBLISH_DONE and PUBLISH_NAMESPACE_CANCEL too.
    closes_hex("0b 0006 00 00 00 4401 61", PV);
    closes_hex("0c 0005 00 00 4401 61", PV);
}

#[test]
fn goaway_uri_limit_closes() {
    // URI Length 8193 (0x6001).
    closes_hex("10 0003 6001 61", PV);
}

#[test]
fn key_value_limits_close() {
    // SUBSCRIBE with an AUTHORIZATION TOKEN whose length claims 65536 (0x80010000).
    closes_hex("03 000b 00 01 01 61 00 01 03 80010000", PV);
    // Track extension of SUBSCRIBE_OK with length 65536.
    closes_hex("04 0008 00 00 00 01 80010000", PV);
    // Delta types that sum past 2^64-1 (REQUEST_OK, Request ID 0, five deltas of 2^62-1).
    let mut p = vec![0x00, 0x05];
    for _ in 0..5 {
        p.extend_from_slice(&[0xff; 8]);
        p.push(0x00);
    }
    closes(&frame(0x07, &p), PV);
}

#[test]
fn auth_token_errors() {
    // SUBSCRIBE, token with alias type 4 (undefined): the Token cannot be decoded.
    closes_hex("03 000a 00 01 01 61 00 01 03 02 04 00", KVF);
    // REGISTER without a token type.
    closes_hex("03 000a 00 01 01 61 00 01 03 02 01 05", KVF);
    // DELETE with bytes after the alias.
    closes_hex("03 000b 00 01 01 61 00 01 03 03 00 05 00", KVF);
    // Empty token.
    closes_hex("03 0008 00 01 01 61 00 01 03 00", KVF);
    // CLIENT_SETUP with DELETE or USE_ALIAS.
    closes_hex("20 0005 01 03 02 00 01", PV);
    closes_hex("20 0005 01 03 02 02 01", PV);
    // CLIENT_SETUP with an undefined alias type.
    closes_hex("20 0005 01 03 02 07 01", KVF);
}

#[test]
fn parameter_value_errors() {
    // Each is SUBSCRIBE (Request ID 0, namespace ("a"), empty name) with one parameter.
    let sub = |param: &str| {
        let p = hex(&format!("00 01 01 61 00 01 {param}"));
        frame(0x03, &p)
    };
    closes(&sub("02 00"), PV); // DELIVERY_TIMEOUT 0
    closes(&sub("20 4100"), PV); // SUBSCRIBER_PRIORITY 256
    closes(&sub("22 00"), PV); // GROUP_ORDER 0
    closes(&sub("22 03"), PV); // GROUP_ORDER 3
    closes(&sub("10 02"), PV); // FORWARD 2
    closes(&sub("21 01 05"), PV); // SUBSCRIPTION_FILTER of type 5
    closes(&sub("21 02 03 02"), PV); // AbsoluteStart with only a group: length mismatch
    closes(&sub("21 02 02 00"), PV); // Largest Object with a byte more: length mismatch
    closes(&sub("21 00"), PV); // empty filter
    // LARGEST_OBJECT in SUBSCRIBE_OK that is not a Location.
    closes_hex("04 0006 00 00 01 09 01 05", KVF);
    closes_hex("04 0008 00 00 01 09 03 05 06 07", KVF);
}

#[test]
fn message_field_errors() {
    closes_hex("16 0004 00 04 00 00", PV); // FETCH type 4
    closes_hex("16 0003 00 00 00", PV); // FETCH type 0
    closes_hex("18 0005 00 02 00 00 00", PV); // FETCH_OK End Of Track 2
    closes_hex("11 0004 00 00 03 00", PV); // SUBSCRIBE_NAMESPACE options 3
}

#[test]
fn track_extensions() {
    // SUBSCRIBE_OK, Request ID 0, Track Alias 0, no parameters, then Track Extensions:
    //   delta 0x0b -> IMMUTABLE_EXTENSIONS, len 2: (delta 0x0e DEFAULT_PUBLISHER_PRIORITY 5)
    //   delta 0x35 -> unknown 0x40 (even) = 1
    let fixture = "04 0009 00 00 00 0b 02 0e 05 35 01";
    let Message::SubscribeOk(m) = Message::decode(&mut &hex(fixture)[..]).unwrap() else {
        panic!()
    };
    let imm = m.extensions.immutable.as_ref().expect("immutable block");
    assert_eq!(imm.extensions().default_publisher_priority, Some(5));
    assert_eq!(imm.raw().as_ref(), &[0x0e, 0x05]);
    assert_eq!(m.extensions.other, vec![KeyValue::int(0x40, 1)], "unknown kept raw");
    // Forwarded unchanged: the same bytes come out.
    check(fixture, m);
    // Values the draft forbids close the session (PUBLISH, FETCH_OK, SUBSCRIBE_OK):
    closes_hex("04 0005 00 00 00 02 00", PV); // DELIVERY_TIMEOUT extension 0
    closes_hex("04 0006 00 00 00 0e 4100", PV); // DEFAULT_PUBLISHER_PRIORITY 256
    closes_hex("18 0007 00 00 00 00 00 22 03", PV); // DEFAULT_PUBLISHER_GROUP_ORDER 3
    closes_hex("1d 0009 00 01 01 61 00 00 00 30 02", PV); // DYNAMIC_GROUPS 2
    // A pair cut off by the end of the message.
    closes_hex("04 0005 00 00 00 01 05", PV);
}

#[test]
fn setup_parameter_rules() {
    use TerminationCode::*;
    // SERVER_SETUP with PATH "/" or AUTHORITY "a".
    closes_hex("21 0004 01 01 01 2f", InvalidPath);
    closes_hex("21 0004 01 05 01 61", InvalidAuthority);
    // CLIENT_SETUP with a PATH that is not path-abempty.
    closes_hex("20 0006 01 01 03 6d6f71", MalformedPath); // "moq": no leading slash
    closes_hex("20 0005 01 01 02 2f20", MalformedPath); // "/ "
    closes_hex("20 0006 01 01 03 2f2541", MalformedPath); // "/%A": short escape
    // CLIENT_SETUP with bad AUTHORITY.
    closes_hex("20 0003 01 05 00", MalformedAuthority); // empty host
    closes_hex("20 0006 01 05 03 613a78", MalformedAuthority); // "a:x": port not digits
    closes_hex("20 0006 01 05 03 612062", MalformedAuthority); // "a b"
    // A repeated known setup parameter closes; repeated unknown ones do not.
    closes_hex("20 0005 02 02 01 00 02", ProtocolViolation);
    // Good PATH and AUTHORITY forms.
    for (path, auth) in [
        ("", "h"),
        ("/a/b?x=1&y=/2?", "user:pw@h.example:4443"),
        ("/%2F", "[::1]:443"),
        ("/", "192.0.2.1"),
    ] {
        let m = ClientSetup {
            params: SetupParams {
                path: Some(path.into()),
                authority: Some(auth.into()),
                ..SetupParams::default()
            },
        };
        let bytes = m.to_vec();
        assert_eq!(Message::decode(&mut &bytes[..]), Ok(Message::ClientSetup(m)));
    }
}

#[test]
fn encode_refuses_oversized_payload() {
    let m = Message::GoAway(GoAway { new_session_uri: Bytes::from(vec![b'u'; 70_000]) });
    let mut out = Vec::new();
    assert!(matches!(m.try_encode(&mut out), Err(EncodeError::TooLong { len: 70_004, .. })));
    assert!(out.is_empty(), "nothing written on error");
}

// ---------------------------------------------------------------------------------------
// Robustness: no input makes the decoder panic.
// ---------------------------------------------------------------------------------------

/// Every fixture above, for mutation.
fn all_fixtures() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let msgs: Vec<Message> = vec![
        ClientSetup::default().into(),
        GoAway { new_session_uri: "moqt://r2".into() }.into(),
        Subscribe { request_id: RequestId(2), track: video(), params: MessageParams::default() }
            .into(),
    ];
    for m in msgs {
        out.push(m.to_vec());
    }
    for h in [
        "1d 0029 01 02 06 636c696e6963 03 723432 05 766964656f 03 04 03 02 0005 05 8000ea60 \
         01 02 0102 07 00 04 5388 2c 01",
        "1e 0013 01 07 02 43e8 06 05 08 01 10 40c8 01 01 01 01 01 10 04",
        "02 0016 06 02 06 02 4064 01 02 02 01 0d 00 10 01 01 04 04050009 11 0b",
        "04 0010 02 07 02 08 00 01 02 0a03 02 40c8 0c 20 14 02",
        "18 0007 04 01 03 00 00 04 0a",
        "04 0009 00 00 00 0b 02 0e 05 35 01",
        "16 0021 04 01 02 06 636c696e6963 03 723432 05 766964656f 01 00 03 00 03 03 02 0300 \
         1d 0a 02 02",
        "03 0028 02 02 06 636c696e6963 03 723432 05 766964656f 07 02 41f4 01 04 03 01 6162 \
         0d 01 10 20 01 01 02 01 02 10 00",
        "05 000d 03 10 43e9 08 6e6f20747261636b",
        "11 000d 04 01 06 636c696e6963 01 01 10 00",
        "20 001a 02 01 04 2f6d6f71 04 11 72656c61792e6578616d706c653a343433",
    ] {
        out.push(hex(h));
    }
    out
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Outcome counts of a robustness run.
#[derive(Default, Debug)]
struct Outcomes {
    ok: usize,
    short: usize,
    malformed: usize,
}

/// Decodes `input`; a value that decodes must re-encode to bytes that decode to it again,
/// and a Short decode must leave the input untouched.
fn decode_never_panics(input: &[u8], seen: &mut Outcomes) {
    let mut cur = input;
    match Message::decode_with(&mut cur, &[0x40, 0x41]) {
        Ok(m) => {
            seen.ok += 1;
            let mut out = Vec::new();
            m.try_encode(&mut out).expect("a decoded message fits a frame again");
            assert_eq!(Message::decode_with(&mut &out[..], &[0x40, 0x41]), Ok(m));
        }
        Err(DecodeError::Short) => {
            seen.short += 1;
            assert_eq!(cur.len(), input.len());
        }
        Err(DecodeError::Malformed { .. }) => seen.malformed += 1,
    }
}

#[test]
fn decoder_survives_mutated_fixtures() {
    let fixtures = all_fixtures();
    let mut rng = Rng(0x7165_726d_6573_6821);
    let mut seen = Outcomes::default();
    // 60k mutations: enough to reach every branch of every payload parser many times while
    // keeping the unoptimized test under a few seconds.
    for _ in 0..60_000 {
        let mut v = fixtures[rng.below(fixtures.len())].clone();
        for _ in 0..=rng.below(4) {
            match rng.below(4) {
                0 => {
                    let i = rng.below(v.len());
                    v[i] = rng.next() as u8;
                }
                1 => {
                    let i = rng.below(v.len());
                    v[i] ^= 1 << rng.below(8);
                }
                2 => {
                    let i = rng.below(v.len() + 1);
                    v.insert(i, rng.next() as u8);
                }
                _ => {
                    if v.len() > 1 {
                        let i = rng.below(v.len());
                        v.remove(i);
                    }
                }
            }
        }
        // Keep the Length field honest half of the time so payload parsers see the mutation.
        if rng.below(2) == 0 && v.len() >= 3 && v[0] < 0x40 {
            let len = (v.len() - 3) as u16;
            v[1..3].copy_from_slice(&len.to_be_bytes());
        }
        decode_never_panics(&v, &mut seen);
    }
    // The mutations reach all three outcomes, so payload parsers were really exercised.
    eprintln!("mutated fixtures: {seen:?}");
    assert!(seen.ok > 1000 && seen.short > 1000 && seen.malformed > 1000, "{seen:?}");
}

#[test]
fn decoder_survives_random_bytes() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut seen = Outcomes::default();
    for _ in 0..60_000 {
        let len = rng.below(40);
        let mut v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Bias the first byte toward defined message types.
        if !v.is_empty() && rng.below(2) == 0 {
            const TYPES: [u8; 24] = [
                0x20, 0x21, 0x10, 0x15, 0x1a, 0x07, 0x05, 0x03, 0x04, 0x02, 0x0a, 0x1d, 0x1e, 0x0b,
                0x16, 0x18, 0x17, 0x0d, 0x06, 0x08, 0x09, 0x0e, 0x0c, 0x11,
            ];
            v[0] = TYPES[rng.below(TYPES.len())];
            if v.len() >= 3 {
                let plen = (v.len() - 3) as u16;
                v[1..3].copy_from_slice(&plen.to_be_bytes());
            }
        }
        decode_never_panics(&v, &mut seen);
    }
    eprintln!("random bytes: {seen:?}");
    assert!(seen.ok > 100 && seen.malformed > 1000, "{seen:?}");
}

#[test]
fn error_code_tables() {
    use RequestErrorCode as R;
    // IANA "REQUEST_ERROR Codes".
    let request = [
        (R::InternalError, 0x0),
        (R::Unauthorized, 0x1),
        (R::Timeout, 0x2),
        (R::NotSupported, 0x3),
        (R::MalformedAuthToken, 0x4),
        (R::ExpiredAuthToken, 0x5),
        (R::DoesNotExist, 0x10),
        (R::InvalidRange, 0x11),
        (R::MalformedTrack, 0x12),
        (R::DuplicateSubscription, 0x19),
        (R::Uninterested, 0x20),
        (R::PrefixOverlap, 0x30),
        (R::InvalidJoiningRequestId, 0x32),
    ];
    for (c, v) in request {
        assert_eq!((c.code(), R::from_code(v)), (v, c));
    }
    assert_eq!(R::from_code(0x6), R::Other(0x6));
    use PublishDoneCode as P;
    // IANA "PUBLISH_DONE Codes".
    let done = [
        (P::InternalError, 0x0),
        (P::Unauthorized, 0x1),
        (P::TrackEnded, 0x2),
        (P::SubscriptionEnded, 0x3),
        (P::GoingAway, 0x4),
        (P::Expired, 0x5),
        (P::TooFarBehind, 0x6),
        (P::UpdateFailed, 0x8),
        (P::MalformedTrack, 0x12),
    ];
    for (c, v) in done {
        assert_eq!((c.code(), P::from_code(v)), (v, c));
    }
    assert_eq!(P::from_code(0x7), P::Other(0x7));
    // IANA "Authorization Token Alias Type".
    for (a, v) in [
        (AliasType::Delete, 0),
        (AliasType::Register, 1),
        (AliasType::UseAlias, 2),
        (AliasType::UseValue, 3),
    ] {
        assert_eq!((a.code(), AliasType::from_code(v)), (v, Some(a)));
    }
    assert_eq!(AliasType::from_code(4), None);
}

#[test]
fn token_values_never_reach_debug_output() {
    let t = AuthToken::UseValue { token_type: 1, value: token("secret-jwt") };
    let shown = format!(
        "{t:?} {:?}",
        MessageParams { auth_tokens: vec![t.clone()], ..MessageParams::default() }
    );
    assert!(!shown.contains("secret"), "{shown}");
    assert!(shown.contains("<10 bytes>"));
}
