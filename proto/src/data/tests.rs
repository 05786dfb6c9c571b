//! Hand-written wire fixtures for the data plane, derived field by field from the figures of
//! draft-16 §10 (each byte group is commented). Every fixture is checked against the decoder
//! and the encoder, every proper prefix must decode as Short, and the incremental readers
//! fed one byte at a time must yield what the one-shot decoders yield.

use bytes::Bytes;

use super::*;
use crate::coding::{Decode, Encode};
use crate::ext::Extensions;
use crate::kvp::KeyValue;
use crate::priority::GroupOrder;
use crate::types::{RequestId, TrackAlias};

/// Hex with optional spaces to bytes.
fn h(s: &str) -> Vec<u8> {
    hex::decode(s.split_whitespace().collect::<String>()).unwrap()
}

fn code(e: Error) -> TerminationCode {
    e.session_code().unwrap_or_else(|| panic!("expected a session error, got {e:?}"))
}

fn violation<T: std::fmt::Debug>(r: Result<T, Error>) {
    match r {
        Err(Error::Session { code: TerminationCode::ProtocolViolation, .. }) => {}
        other => panic!("expected PROTOCOL_VIOLATION, got {other:?}"),
    }
}

fn malformed_track<T: std::fmt::Debug>(r: Result<T, Error>) {
    match r {
        Err(Error::MalformedTrack { .. }) => {}
        other => panic!("expected MALFORMED_TRACK, got {other:?}"),
    }
}

/// Extensions holding one LOC Timestamp (type 0x10) of 0x25.
fn ts_ext() -> Extensions {
    Extensions { other: vec![KeyValue::int(0x10, 0x25)], ..Default::default() }
}

/// Audio Level (type 0x0C) of 0x1e.
fn level_ext() -> Extensions {
    Extensions { other: vec![KeyValue::int(0x0c, 0x1e)], ..Default::default() }
}

// ---------------------------------------------------------------------------------------
// Subgroup streams
// ---------------------------------------------------------------------------------------

/// Decodes a whole stream with the one-shot decoder.
fn one_shot(stream: &[u8]) -> (SubgroupHeader, Vec<SubgroupObject>) {
    let mut cur = stream;
    let r = decode_subgroup_stream(&mut cur).unwrap();
    assert!(cur.is_empty());
    r
}

/// Encodes with the writer.
fn write_subgroup(header: &SubgroupHeader, objects: &[SubgroupObject]) -> Vec<u8> {
    let mut w = SubgroupWriter::new(*header);
    let mut out = Vec::new();
    w.encode_header(&mut out);
    for o in objects {
        w.encode_object(o, &mut out).unwrap();
    }
    out
}

/// Feeds `stream` to a reader in chunks of `chunk` bytes, then FIN; collects the objects.
fn read_in_chunks(
    stream: &[u8],
    chunk: usize,
) -> (SubgroupHeader, Vec<SubgroupObject>, Option<u64>) {
    let mut r = SubgroupReader::default();
    let mut objects = Vec::new();
    for piece in stream.chunks(chunk) {
        r.handle_bytes(piece);
        while let Some(o) = r.poll_object() {
            objects.push(o.unwrap());
        }
    }
    r.handle_fin();
    while let Some(o) = r.poll_object() {
        objects.push(o.unwrap());
    }
    assert!(r.is_finished());
    (*r.header().unwrap(), objects, r.subgroup_id())
}

/// Checks one stream fixture every way: decoder, encoder, prefixes, incremental reader.
fn check_subgroup_stream(stream: &[u8], header: &SubgroupHeader, objects: &[SubgroupObject]) {
    // One-shot decoder.
    let (h2, o2) = one_shot(stream);
    assert_eq!(&h2, header);
    assert_eq!(o2, objects);
    // Encoder.
    assert_eq!(hex::encode(write_subgroup(header, objects)), hex::encode(stream));
    // Every proper prefix of the header and of each object is Short and consumes nothing.
    let hdr_len = {
        let mut cur = stream;
        SubgroupHeader::decode_data(&mut cur).unwrap();
        stream.len() - cur.len()
    };
    for n in 0..hdr_len {
        let mut cur = &stream[..n];
        assert_eq!(SubgroupHeader::decode_data(&mut cur), Err(Error::Short), "header prefix {n}");
        assert_eq!(cur.len(), n);
        assert_eq!(SubgroupHeader::decode(&mut &stream[..n]), Err(crate::DecodeError::Short));
    }
    let mut start = hdr_len;
    let mut prev = None;
    for o in objects {
        let mut cur = &stream[start..];
        let got = SubgroupObject::decode(&mut cur, header, prev).unwrap();
        assert_eq!(&got, o);
        let end = stream.len() - cur.len();
        for n in start..end {
            let mut cur = &stream[start..n];
            assert_eq!(
                SubgroupObject::decode(&mut cur, header, prev),
                Err(Error::Short),
                "object prefix {n}"
            );
            assert_eq!(cur.len(), n - start);
        }
        start = end;
        prev = Some(o.object_id);
    }
    // The whole-stream decoder never panics on a prefix: Short, or fewer objects when the
    // cut falls between objects.
    for n in 0..stream.len() {
        let mut cur = &stream[..n];
        match decode_subgroup_stream(&mut cur) {
            Err(Error::Short) => {}
            Ok((_, objs)) => assert_eq!(objs[..], objects[..objs.len()], "prefix {n}"),
            Err(e) => panic!("prefix {n}: {e:?}"),
        }
    }
    // Incremental reader, one byte at a time and in uneven chunks.
    for chunk in [1, 2, 3, 7, stream.len()] {
        let (h3, o3, sub) = read_in_chunks(stream, chunk);
        assert_eq!(&h3, header, "chunk {chunk}");
        assert_eq!(o3, objects, "chunk {chunk}");
        let expected_sub = match header.subgroup_id {
            SubgroupIdMode::Zero => Some(0),
            SubgroupIdMode::Explicit(id) => Some(id),
            SubgroupIdMode::FirstObject => objects.first().map(|o| o.object_id),
        };
        assert_eq!(sub, expected_sub);
    }
}

fn object(id: u64, ext: Extensions, payload: &'static [u8]) -> SubgroupObject {
    SubgroupObject {
        object_id: id,
        extensions: ext,
        status: ObjectStatus::Normal,
        payload: Bytes::from_static(payload),
    }
}

fn status(id: u64, status: ObjectStatus) -> SubgroupObject {
    SubgroupObject { object_id: id, status, ..Default::default() }
}

/// draft-16 §10.5, first example: type 0x14, two objects on one stream.
#[test]
fn draft_example_subgroup_on_one_stream() {
    let stream = h(concat!(
        "14",       // type 0x14: SUBGROUP_ID_MODE 0b10 (field present), priority present
        "02",       // Track Alias 2
        "00",       // Group ID 0
        "00",       // Subgroup ID 0
        "00",       // Publisher Priority 0
        "00",       // Object ID Delta 0 (Object ID 0)
        "04",       // Object Payload Length 4
        "61626364", // "abcd"
        "00",       // Object ID Delta 0 (Object ID 1)
        "04",       // Object Payload Length 4
        "65666768", // "efgh"
    ));
    let header = SubgroupHeader {
        track_alias: TrackAlias(2),
        group_id: 0,
        subgroup_id: SubgroupIdMode::Explicit(0),
        publisher_priority: Some(0),
        extensions: false,
        end_of_group: false,
    };
    check_subgroup_stream(
        &stream,
        &header,
        &[object(0, Extensions::default(), b"abcd"), object(1, Extensions::default(), b"efgh")],
    );
}

/// draft-16 §10.5, second example: type 0x35 with two extension headers on the first
/// object. The draft gives the second header "Length = 21" for the 14-byte value
/// "traceID:123456"; the fixture uses the value's real length, which makes the Extension
/// Headers Length 26 rather than 33.
#[test]
fn draft_example_group_with_extension_headers() {
    let stream = h(concat!(
        "35",                           // type 0x35: EXTENSIONS, SUBGROUP_ID_MODE 0b10, DEFAULT_PRIORITY
        "02",                           // Track Alias 2
        "00",                           // Group ID 0
        "00",                           // Subgroup ID 0
        "00",                           // Object ID Delta 0 (Object ID 0)
        "1a",                           // Extension Headers Length 26
        "04",                           //   Delta Type 4 (type 4)
        "c00000008257dcd3",             //   value 2186796243, 8-byte varint
        "4049",                         //   Delta Type 73 (type 77, odd)
        "0e",                           //   Length 14
        "747261636549443a313233343536", //   "traceID:123456"
        "04",                           // Object Payload Length 4
        "61626364",                     // "abcd"
        "00",                           // Object ID Delta 0 (Object ID 1)
        "00",                           // Extension Headers Length 0
        "04",                           // Object Payload Length 4
        "65666768",                     // "efgh"
    ));
    let header = SubgroupHeader {
        track_alias: TrackAlias(2),
        group_id: 0,
        subgroup_id: SubgroupIdMode::Explicit(0),
        publisher_priority: None,
        extensions: true,
        end_of_group: false,
    };
    // Type 4 (MAX_CACHE_DURATION) is a track extension: on an object it is kept raw.
    let ext = Extensions {
        other: vec![KeyValue::int(4, 2_186_796_243), KeyValue::bytes(77, &b"traceID:123456"[..])],
        ..Default::default()
    };
    check_subgroup_stream(
        &stream,
        &header,
        &[object(0, ext, b"abcd"), object(1, Extensions::default(), b"efgh")],
    );
}

/// header hex, object hex, Subgroup ID mode, priority, extensions, end of group.
type HeaderRow = (&'static str, &'static str, SubgroupIdMode, Option<u8>, bool, bool);

/// Every valid SUBGROUP_HEADER type (0x10-0x15, 0x18-0x1D, 0x30-0x35, 0x38-0x3D), each
/// followed by one object with Object ID 4 and payload "hi".
#[test]
fn every_subgroup_header_type() {
    use SubgroupIdMode::{Explicit, FirstObject, Zero};
    // Fields: type | Track Alias 2 | Group ID 5 | [Subgroup ID 3] | [Priority 0x40].
    // Object without extensions: Delta 4 | Length 2 | "hi".
    // Object with extensions:    Delta 4 | Ext Length 2 | type 0x10 = 0x25 | Length 2 | "hi".
    const PLAIN: &str = "04 02 6869";
    const EXT: &str = "04 02 1025 02 6869";
    #[rustfmt::skip]
    let rows: &[HeaderRow] = &[
        // header hex,       object, mode,          priority,   ext,   end_of_group
        ("10 02 05 40",      PLAIN, Zero,           Some(0x40), false, false),
        ("11 02 05 40",      EXT,   Zero,           Some(0x40), true,  false),
        ("12 02 05 40",      PLAIN, FirstObject,    Some(0x40), false, false),
        ("13 02 05 40",      EXT,   FirstObject,    Some(0x40), true,  false),
        ("14 02 05 03 40",   PLAIN, Explicit(3),    Some(0x40), false, false),
        ("15 02 05 03 40",   EXT,   Explicit(3),    Some(0x40), true,  false),
        ("18 02 05 40",      PLAIN, Zero,           Some(0x40), false, true),
        ("19 02 05 40",      EXT,   Zero,           Some(0x40), true,  true),
        ("1a 02 05 40",      PLAIN, FirstObject,    Some(0x40), false, true),
        ("1b 02 05 40",      EXT,   FirstObject,    Some(0x40), true,  true),
        ("1c 02 05 03 40",   PLAIN, Explicit(3),    Some(0x40), false, true),
        ("1d 02 05 03 40",   EXT,   Explicit(3),    Some(0x40), true,  true),
        ("30 02 05",         PLAIN, Zero,           None,       false, false),
        ("31 02 05",         EXT,   Zero,           None,       true,  false),
        ("32 02 05",         PLAIN, FirstObject,    None,       false, false),
        ("33 02 05",         EXT,   FirstObject,    None,       true,  false),
        ("34 02 05 03",      PLAIN, Explicit(3),    None,       false, false),
        ("35 02 05 03",      EXT,   Explicit(3),    None,       true,  false),
        ("38 02 05",         PLAIN, Zero,           None,       false, true),
        ("39 02 05",         EXT,   Zero,           None,       true,  true),
        ("3a 02 05",         PLAIN, FirstObject,    None,       false, true),
        ("3b 02 05",         EXT,   FirstObject,    None,       true,  true),
        ("3c 02 05 03",      PLAIN, Explicit(3),    None,       false, true),
        ("3d 02 05 03",      EXT,   Explicit(3),    None,       true,  true),
    ];
    assert_eq!(rows.len(), 24);
    for (hdr, obj, mode, prio, ext, eog) in rows {
        let stream = h(&format!("{hdr} {obj}"));
        let header = SubgroupHeader {
            track_alias: TrackAlias(2),
            group_id: 5,
            subgroup_id: *mode,
            publisher_priority: *prio,
            extensions: *ext,
            end_of_group: *eog,
        };
        assert_eq!(StreamKind::peek(&stream), Ok(StreamKind::Subgroup(u64::from(stream[0]))));
        assert_eq!(header.stream_type(), u64::from(stream[0]));
        let e = if *ext { ts_ext() } else { Extensions::default() };
        check_subgroup_stream(&stream, &header, &[object(4, e, b"hi")]);
    }
}

/// Object Status on a subgroup stream: sent only when the payload length is 0 (§10.4.2).
#[test]
fn objects_with_status() {
    let header = SubgroupHeader {
        track_alias: TrackAlias(1),
        group_id: 9,
        subgroup_id: SubgroupIdMode::Zero,
        publisher_priority: Some(0x80),
        extensions: false,
        end_of_group: false,
    };
    let stream = h(concat!(
        "10 01 09 80", // type 0x10 | Track Alias 1 | Group ID 9 | Priority 0x80
        "00 00 00",    // Delta 0 (ID 0) | Length 0 | Status 0x0 Normal: an empty object
        "00 00 03",    // Delta 0 (ID 1) | Length 0 | Status 0x3 End of Group
    ));
    check_subgroup_stream(
        &stream,
        &header,
        &[status(0, ObjectStatus::Normal), status(1, ObjectStatus::EndOfGroup)],
    );
    let stream = h(concat!(
        "10 01 09 80", // as above
        "02 00 04",    // Delta 2 (ID 2) | Length 0 | Status 0x4 End of Track
    ));
    check_subgroup_stream(&stream, &header, &[status(2, ObjectStatus::EndOfTrack)]);
    // Status with extensions bit in the header: Extension Headers Length 0 then status.
    let header = SubgroupHeader { extensions: true, ..header };
    let stream = h(concat!(
        "11 01 09 80", // type 0x11 (EXTENSIONS) | Track Alias 1 | Group ID 9 | Priority 0x80
        "07 00 00 03", // Delta 7 (ID 7) | Ext Length 0 | Length 0 | End of Group
    ));
    check_subgroup_stream(&stream, &header, &[status(7, ObjectStatus::EndOfGroup)]);
}

/// Object ID Delta: "Object ID Delta + 1 is added to the previous Object ID".
#[test]
fn object_id_delta_with_gaps() {
    let header = SubgroupHeader {
        track_alias: TrackAlias(3),
        group_id: 1,
        subgroup_id: SubgroupIdMode::FirstObject,
        publisher_priority: None,
        extensions: true,
        end_of_group: false,
    };
    let gap = Extensions { prior_object_id_gap: Some(4), ..Default::default() };
    let stream = h(concat!(
        "33 03 01",         // type 0x33: EXTENSIONS, first-object Subgroup ID, default priority
        "02 00 01 61",      // Delta 2 -> ID 2 | Ext Length 0 | Length 1 | "a"
        "04 02 3e04 01 62", // Delta 4 -> ID 7 | Ext: Prior Object ID Gap 4 | "b"
        "00 00 01 63",      // Delta 0 -> ID 8 | "c"
    ));
    check_subgroup_stream(
        &stream,
        &header,
        &[
            object(2, Extensions::default(), b"a"),
            object(7, gap, b"b"),
            object(8, Extensions::default(), b"c"),
        ],
    );
}

#[test]
fn subgroup_stream_errors() {
    // §10.4.2: reserved SUBGROUP_ID_MODE 0b11 and types outside 0b00X1XXXX close the session.
    for ty in ["16", "17", "1e", "1f", "36", "37", "3e", "3f", "40 40", "00", "0f", "20", "2f"] {
        violation(SubgroupHeader::decode_data(&mut &h(&format!("{ty} 01 02 03 04"))[..]));
    }
    // Unknown stream types close the session; 0x05 and subgroup types do not.
    for ty in ["00", "04", "06", "0f", "16", "1f", "3e", "40 40", "80 00 01 10"] {
        violation(StreamKind::peek(&h(ty)));
    }
    assert_eq!(StreamKind::peek(&h("05")), Ok(StreamKind::Fetch));
    assert_eq!(StreamKind::peek(&h("")), Err(Error::Short));

    let hdr = |ext: bool| SubgroupHeader {
        track_alias: TrackAlias(1),
        group_id: 9,
        subgroup_id: SubgroupIdMode::Zero,
        publisher_priority: None,
        extensions: ext,
        end_of_group: false,
    };
    // Unknown object status (§10.2.1.1) -> PROTOCOL_VIOLATION.
    for st in ["01", "02", "05", "40 05"] {
        violation(SubgroupObject::decode(&mut &h(&format!("00 00 {st}"))[..], &hdr(false), None));
    }
    // Extension headers on a non-Normal object (§10.2.1.2) -> PROTOCOL_VIOLATION.
    violation(SubgroupObject::decode(&mut &h("00 02 1025 00 03")[..], &hdr(true), None));
    violation(SubgroupObject::decode(&mut &h("00 02 1025 00 04")[..], &hdr(true), None));
    // Key-value length above 2^16-1 inside the extensions (§1.4.2) -> PROTOCOL_VIOLATION.
    violation(SubgroupObject::decode(&mut &h("00 05 01 80010000 00")[..], &hdr(true), None));
    // Delta Types summing past 2^64-1 (§1.4.2): five pairs of delta 2^62-1, each with an
    // empty value (length 0 for odd types, value 0 for even ones): 45 bytes = 0x2d.
    violation(SubgroupObject::decode(
        &mut &h(concat!(
            "00 2d",
            "ffffffffffffffff 00",
            "ffffffffffffffff 00",
            "ffffffffffffffff 00",
            "ffffffffffffffff 00",
            "ffffffffffffffff 00",
            "01 61"
        ))[..],
        &hdr(true),
        None,
    ));
    // Object ID past 2^62-1.
    violation(SubgroupObject::decode(
        &mut &h("00 01 61")[..],
        &hdr(false),
        Some(crate::coding::VARINT_MAX),
    ));
    // Objects after End of Group on the same stream (§10.4.3).
    violation(decode_subgroup_stream(&mut &h("30 01 09 00 00 03 00 01 61")[..]));
    // Gap extension larger than the Object ID, or covering a received object: malformed.
    malformed_track(SubgroupObject::decode(&mut &h("00 02 3e01 01 61")[..], &hdr(true), None));
    malformed_track(SubgroupObject::decode(&mut &h("01 02 3e02 01 61")[..], &hdr(true), Some(0)));
    malformed_track(SubgroupObject::decode(&mut &h("00 02 3c0a 01 61")[..], &hdr(true), None));
}

#[test]
fn subgroup_reader_errors() {
    // FIN inside an object (§10.4: SHOULD close with PROTOCOL_VIOLATION).
    let mut r = SubgroupReader::default();
    r.handle_bytes(&h("30 01 09 00 04 6162"));
    assert_eq!(r.poll_object(), None);
    r.handle_fin();
    assert_eq!(code(r.poll_object().unwrap().unwrap_err()), TerminationCode::ProtocolViolation);
    // The error sticks.
    assert!(r.poll_object().unwrap().is_err());
    assert!(!r.is_finished());

    // FIN inside the header.
    let mut r = SubgroupReader::default();
    r.handle_bytes(&h("30 01"));
    r.handle_fin();
    violation(r.poll_object().unwrap());

    // A header followed directly by FIN is an empty subgroup, not an error.
    let mut r = SubgroupReader::default();
    r.handle_bytes(&h("38 01 09"));
    r.handle_fin();
    assert_eq!(r.poll_object(), None);
    assert!(r.is_finished());
    assert!(r.header().unwrap().end_of_group);

    // An invalid header type is reported by poll_object.
    let mut r = SubgroupReader::default();
    r.handle_bytes(&h("16 01 09"));
    violation(r.poll_object().unwrap());

    // Object after End of Track, fed byte by byte.
    let mut r = SubgroupReader::default();
    let mut results = Vec::new();
    for b in h("30 01 09 00 00 04 00 01 61") {
        r.handle_bytes(&[b]);
        while let Some(x) = r.poll_object() {
            let stop = x.is_err();
            results.push(x);
            if stop {
                break;
            }
        }
        if results.last().is_some_and(Result::is_err) {
            break;
        }
    }
    assert_eq!(results[0], Ok(status(0, ObjectStatus::EndOfTrack)));
    violation(results[1].clone());
}

/// The length field is checked before any payload byte is buffered.
#[test]
fn payload_larger_than_the_limit_is_refused_before_it_arrives() {
    let cfg = ReaderConfig::default().with_max_object_size(3);
    let mut r = SubgroupReader::new(cfg);
    // Header, then an object announcing 4 bytes: refused with no payload byte sent.
    r.handle_bytes(&h("30 01 09 00 04"));
    let e = r.poll_object().unwrap().unwrap_err();
    assert_eq!(e, Error::TooLarge { what: "object payload", len: 4, max: 3 });
    assert_eq!(e.session_code(), Some(TerminationCode::ProtocolViolation));
    // Default limit 16 MiB: a length of 2^62-1 is refused at once.
    let mut r = SubgroupReader::default();
    r.handle_bytes(&h("30 01 09 00 ffffffffffffffff"));
    assert!(matches!(
        r.poll_object(),
        Some(Err(Error::TooLarge { len: 0x3fff_ffff_ffff_ffff, .. }))
    ));
    // Within the limit, a large announced length only waits.
    let mut r = SubgroupReader::default();
    r.handle_bytes(&h("30 01 09 00 80ffffff"));
    assert_eq!(r.poll_object(), None);
    // Extension block limit.
    let cfg = ReaderConfig::default().with_max_extensions_size(2);
    let mut r = SubgroupReader::new(cfg);
    r.handle_bytes(&h("31 01 09 00 03"));
    assert!(matches!(
        r.poll_object(),
        Some(Err(Error::TooLarge { what: "extension headers", .. }))
    ));
}

#[test]
fn writer_refuses_what_the_draft_forbids() {
    let header = SubgroupHeader {
        track_alias: TrackAlias(1),
        group_id: 0,
        subgroup_id: SubgroupIdMode::Zero,
        publisher_priority: None,
        extensions: false,
        end_of_group: false,
    };
    let mut w = SubgroupWriter::new(header);
    let mut out = Vec::new();
    w.encode_object(&object(5, Extensions::default(), b"a"), &mut out).unwrap();
    assert_eq!(
        w.encode_object(&object(5, Extensions::default(), b"a"), &mut out),
        Err(WriteError::ObjectIdNotIncreasing { prev: 5, id: 5 })
    );
    assert_eq!(
        w.encode_object(&object(6, ts_ext(), b"a"), &mut out),
        Err(WriteError::ExtensionsNotAllowed)
    );
    let mut bad = status(6, ObjectStatus::EndOfGroup);
    bad.payload = Bytes::from_static(b"x");
    assert_eq!(
        w.encode_object(&bad, &mut out),
        Err(WriteError::StatusWithContent(ObjectStatus::EndOfGroup))
    );
    w.encode_object(&status(6, ObjectStatus::EndOfGroup), &mut out).unwrap();
    assert_eq!(
        w.encode_object(&object(7, Extensions::default(), b"a"), &mut out),
        Err(WriteError::AfterEnd)
    );
    assert_eq!(w.last_object_id(), Some(6));
}

// ---------------------------------------------------------------------------------------
// Datagrams
// ---------------------------------------------------------------------------------------

/// hex, Object ID, priority, extensions, end of group, body.
type DatagramRow = (&'static str, u64, Option<u8>, bool, bool, DatagramBody);

/// Every valid OBJECT_DATAGRAM type (0x00-0x0F, 0x20-0x21, 0x24-0x25, 0x28-0x29,
/// 0x2C-0x2D).
#[test]
fn every_datagram_type() {
    use DatagramBody::{Payload, Status};
    use ObjectStatus::*;
    let hi = || Payload(Bytes::from_static(b"hi"));
    // Fields: type | Track Alias 2 | Group ID 5 | [Object ID 7] | [Priority 0x80] |
    //         [Ext Length 2, Audio Level (0x0C) = 0x1e] | Status or payload "hi".
    #[rustfmt::skip]
    let rows: Vec<DatagramRow> = vec![
        // hex,                         object, priority,   ext,   eog,   body
        ("00 02 05 07 80 6869",          7, Some(0x80), false, false, hi()),
        ("01 02 05 07 80 020c1e 6869",   7, Some(0x80), true,  false, hi()),
        ("02 02 05 07 80 6869",          7, Some(0x80), false, true,  hi()),
        ("03 02 05 07 80 020c1e 6869",   7, Some(0x80), true,  true,  hi()),
        ("04 02 05 80 6869",             0, Some(0x80), false, false, hi()),
        ("05 02 05 80 020c1e 6869",      0, Some(0x80), true,  false, hi()),
        ("06 02 05 80 6869",             0, Some(0x80), false, true,  hi()),
        ("07 02 05 80 020c1e 6869",      0, Some(0x80), true,  true,  hi()),
        ("08 02 05 07 6869",             7, None,       false, false, hi()),
        ("09 02 05 07 020c1e 6869",      7, None,       true,  false, hi()),
        ("0a 02 05 07 6869",             7, None,       false, true,  hi()),
        ("0b 02 05 07 020c1e 6869",      7, None,       true,  true,  hi()),
        ("0c 02 05 6869",                0, None,       false, false, hi()),
        ("0d 02 05 020c1e 6869",         0, None,       true,  false, hi()),
        ("0e 02 05 6869",                0, None,       false, true,  hi()),
        ("0f 02 05 020c1e 6869",         0, None,       true,  true,  hi()),
        ("20 02 05 07 80 03",            7, Some(0x80), false, false, Status(EndOfGroup)),
        ("21 02 05 07 80 020c1e 00",     7, Some(0x80), true,  false, Status(Normal)),
        ("24 02 05 80 03",               0, Some(0x80), false, false, Status(EndOfGroup)),
        ("25 02 05 80 020c1e 00",        0, Some(0x80), true,  false, Status(Normal)),
        ("28 02 05 07 04",               7, None,       false, false, Status(EndOfTrack)),
        ("29 02 05 07 020c1e 00",        7, None,       true,  false, Status(Normal)),
        ("2c 02 05 03",                  0, None,       false, false, Status(EndOfGroup)),
        ("2d 02 05 020c1e 00",           0, None,       true,  false, Status(Normal)),
    ];
    assert_eq!(rows.len(), 24);
    for (hex_str, object_id, prio, ext, eog, body) in rows {
        let bytes = h(hex_str);
        let expected = Datagram {
            track_alias: TrackAlias(2),
            group_id: 5,
            object_id,
            publisher_priority: prio,
            extensions: if ext { level_ext() } else { Extensions::default() },
            end_of_group: eog,
            body,
        };
        assert_eq!(
            Datagram::decode_bytes(Bytes::from(bytes.clone())).unwrap(),
            expected,
            "{hex_str}"
        );
        let mut cur = &bytes[..];
        assert_eq!(Datagram::decode(&mut cur).unwrap(), expected);
        assert!(cur.is_empty());
        assert_eq!(hex::encode(expected.to_vec().unwrap()), hex::encode(&bytes), "{hex_str}");
        assert_eq!(expected.datagram_type(), u64::from(bytes[0]));
        // Prefixes: Short while inside the header fields. A payload datagram's header ends
        // two bytes before its end ("hi"); a status datagram's proper prefixes are all Short.
        let header_len =
            if matches!(expected.body, Payload(_)) { bytes.len() - 2 } else { bytes.len() };
        for n in 0..header_len {
            assert_eq!(
                Datagram::decode(&mut &bytes[..n]),
                Err(Error::Short),
                "{hex_str} prefix {n}"
            );
            violation(Datagram::decode_bytes(Bytes::copy_from_slice(&bytes[..n])));
        }
    }
}

#[test]
fn datagram_payload_is_shared_not_copied() {
    let bytes = Bytes::from(h("0c 02 05 6869"));
    let d = Datagram::decode_bytes(bytes.clone()).unwrap();
    let p = d.payload();
    assert_eq!(p.as_ptr(), bytes[3..].as_ptr());
    // An empty payload datagram is a Normal, empty object.
    let d = Datagram::decode_bytes(Bytes::from(h("0c 02 05"))).unwrap();
    assert_eq!((d.status(), d.payload().len()), (ObjectStatus::Normal, 0));
}

#[test]
fn datagram_errors() {
    // §10.3.1: STATUS with END_OF_GROUP, and types outside 0b00X0XXXX.
    for ty in ["22", "23", "26", "27", "2a", "2b", "2e", "2f", "10", "1f", "30", "40 40"] {
        violation(Datagram::decode_bytes(Bytes::from(h(&format!("{ty} 02 05 07 80 03")))));
    }
    // EXTENSIONS bit with Extension Headers Length 0 (also in a non-shortest form).
    violation(Datagram::decode_bytes(Bytes::from(h("01 02 05 07 80 00 6869"))));
    violation(Datagram::decode_bytes(Bytes::from(h("01 02 05 07 80 4000 6869"))));
    // Extension headers with a non-Normal status.
    violation(Datagram::decode_bytes(Bytes::from(h("21 02 05 07 80 020c1e 03"))));
    violation(Datagram::decode_bytes(Bytes::from(h("21 02 05 07 80 020c1e 04"))));
    // Unknown status.
    violation(Datagram::decode_bytes(Bytes::from(h("20 02 05 07 80 01"))));
    // Bytes after the status.
    violation(Datagram::decode_bytes(Bytes::from(h("20 02 05 07 80 03 00"))));
    // Prior Group ID Gap larger than the Group ID: malformed track.
    malformed_track(Datagram::decode_bytes(Bytes::from(h("09 02 05 07 02 3c06 6869"))));
    // Writer refusals.
    let mut d = Datagram {
        track_alias: TrackAlias(1),
        group_id: 1,
        object_id: 1,
        publisher_priority: None,
        extensions: Extensions::default(),
        end_of_group: true,
        body: DatagramBody::Status(ObjectStatus::EndOfTrack),
    };
    assert_eq!(d.to_vec(), Err(WriteError::StatusWithEndOfGroup));
    d.end_of_group = false;
    d.extensions = level_ext();
    assert_eq!(d.to_vec(), Err(WriteError::StatusWithContent(ObjectStatus::EndOfTrack)));
}

// ---------------------------------------------------------------------------------------
// Object status values
// ---------------------------------------------------------------------------------------

#[test]
fn object_status_values() {
    assert_eq!(ObjectStatus::from_code(0x0), Ok(ObjectStatus::Normal));
    assert_eq!(ObjectStatus::from_code(0x3), Ok(ObjectStatus::EndOfGroup));
    assert_eq!(ObjectStatus::from_code(0x4), Ok(ObjectStatus::EndOfTrack));
    for v in [0x1, 0x2, 0x5, 0x3f, 1 << 40] {
        violation(ObjectStatus::from_code(v));
    }
    assert_eq!(ObjectStatus::EndOfTrack.code(), 4);
}

// ---------------------------------------------------------------------------------------
// Fetch streams
// ---------------------------------------------------------------------------------------

fn fobj(
    group_id: u64,
    subgroup_id: Option<u64>,
    object_id: u64,
    publisher_priority: u8,
    extensions: Extensions,
    payload: &'static [u8],
) -> FetchItem {
    FetchItem::Object(FetchObject {
        group_id,
        subgroup_id,
        object_id,
        publisher_priority,
        extensions,
        payload: Bytes::from_static(payload),
    })
}

/// A fetch stream exercising every Serialization Flags bit and both End of Range values.
fn fetch_fixture() -> (Vec<u8>, FetchHeader, Vec<FetchItem>) {
    let stream = h(concat!(
        "05", // FETCH_HEADER type 0x05
        "07", // Request ID 7
        // 0x1F: Subgroup field (0x03) | Object ID (0x04) | Group ID (0x08) | Priority (0x10)
        "1f 01 02 03 40 02 6162", // Group 1 | Subgroup 2 | Object 3 | Priority 0x40 | "ab"
        // 0x01: Subgroup = prior (2), Object = prior + 1 (4), Group and Priority = prior
        "01 00", // Length 0: an empty object (fetch objects carry no status)
        // 0x02: Subgroup = prior + 1 (3), Object 5
        "02 01 63", // Length 1 | "c"
        // 0x30: Subgroup zero (0x00) | Priority (0x10) | Extensions (0x20), Object 6
        "30 50 02 1025 00", // Priority 0x50 | Ext Length 2, type 0x10 = 0x25 | Length 0
        // 0x4C: Datagram (0x40) | Group ID (0x08) | Object ID (0x04), a 2-byte varint
        "404c 02 00 01 64", // Group 2 | Object 0 | Length 1 | "d"
        // End of Non-Existent Range: flags 0x8C as a 2-byte varint, Group 2, Object 5
        "408c 02 05",
        // 0x00: Subgroup zero, Object = 5 + 1 after the marker, Group 2, Priority 0x50
        "00 01 65", // Length 1 | "e"
        // End of Unknown Range: flags 0x10C as a 2-byte varint, Group 3, Object 2
        "410c 03 02",
        // 0x0B: Subgroup field | Group ID: Group 4, Subgroup 9, Object = 2 + 1
        "0b 04 09 00", // Length 0
    ));
    let items = vec![
        fobj(1, Some(2), 3, 0x40, Extensions::default(), b"ab"),
        fobj(1, Some(2), 4, 0x40, Extensions::default(), b""),
        fobj(1, Some(3), 5, 0x40, Extensions::default(), b"c"),
        fobj(1, Some(0), 6, 0x50, ts_ext(), b""),
        fobj(2, None, 0, 0x50, Extensions::default(), b"d"),
        FetchItem::EndOfRange(EndOfRange {
            kind: RangeKind::NonExistent,
            group_id: 2,
            object_id: 5,
        }),
        fobj(2, Some(0), 6, 0x50, Extensions::default(), b"e"),
        FetchItem::EndOfRange(EndOfRange { kind: RangeKind::Unknown, group_id: 3, object_id: 2 }),
        fobj(4, Some(9), 3, 0x50, Extensions::default(), b""),
    ];
    (stream, FetchHeader { request_id: RequestId(7) }, items)
}

fn read_fetch_in_chunks(stream: &[u8], chunk: usize) -> (FetchHeader, Vec<FetchItem>) {
    let mut r = FetchReader::default().with_group_order(GroupOrder::Ascending);
    let mut items = Vec::new();
    for piece in stream.chunks(chunk) {
        r.handle_bytes(piece);
        while let Some(i) = r.poll_object() {
            items.push(i.unwrap());
        }
    }
    r.handle_fin();
    assert_eq!(r.poll_object(), None);
    assert!(r.is_finished());
    (*r.header().unwrap(), items)
}

#[test]
fn fetch_stream_fixture() {
    let (stream, header, items) = fetch_fixture();
    // One-shot decoder.
    let mut cur = &stream[..];
    let (h2, i2) = decode_fetch_stream(&mut cur, Some(GroupOrder::Ascending)).unwrap();
    assert!(cur.is_empty());
    assert_eq!((h2, &i2), (header, &items));
    // Encoder.
    let mut out = Vec::new();
    header.encode(&mut out);
    let mut w = FetchWriter::new();
    for i in &items {
        w.encode_item(i, &mut out).unwrap();
    }
    assert_eq!(hex::encode(out), hex::encode(&stream));
    // Prefixes of the header and of every item are Short.
    assert_eq!(FetchHeader::decode(&mut &stream[..0]), Err(crate::DecodeError::Short));
    assert_eq!(FetchHeader::decode(&mut &stream[..1]), Err(crate::DecodeError::Short));
    let mut start = 2;
    let mut prior = FetchPrior::default();
    for item in &items {
        let before = prior;
        let mut cur = &stream[start..];
        assert_eq!(&FetchItem::decode(&mut cur, &mut prior).unwrap(), item);
        let end = stream.len() - cur.len();
        for n in start..end {
            let mut p = before;
            let mut cur = &stream[start..n];
            assert_eq!(FetchItem::decode(&mut cur, &mut p), Err(Error::Short), "prefix {n}");
            assert_eq!(p, before, "a Short decode leaves the prior untouched");
        }
        start = end;
    }
    // Incremental reader.
    for chunk in [1, 2, 5, stream.len()] {
        assert_eq!(read_fetch_in_chunks(&stream, chunk), (header, items.clone()), "chunk {chunk}");
    }
    assert_eq!(items[5].location(), crate::types::Location::new(2, 5));
}

#[test]
fn fetch_first_object_must_not_refer_to_a_prior_object() {
    // Each of these flags refers to a field of a prior object that does not exist.
    for obj in [
        "1d 01 03 40 00", // 0x1D: Subgroup = prior (0x01), Object, Group, Priority present
        "1e 01 03 40 00", // 0x1E: Subgroup = prior + 1 (0x02)
        "1b 01 02 40 00", // 0x1B: no Object ID flag: prior + 1
        "17 02 03 40 00", // 0x17: no Group ID flag: prior group
        "0f 01 02 03 00", // 0x0F: no Priority flag: prior priority
    ] {
        violation(FetchItem::decode(&mut &h(obj)[..], &mut FetchPrior::default()));
    }
    // After only an End of Range, Group and Object may refer to it, but Subgroup and
    // Priority have no prior object.
    let mut prior = FetchPrior::default();
    FetchItem::decode(&mut &h("408c 02 05")[..], &mut prior).unwrap();
    let (mut p1, mut p2, mut p3) = (prior, prior, prior);
    let ok = FetchItem::decode(&mut &h("10 40 00")[..], &mut p1).unwrap();
    assert_eq!(ok, fobj(2, Some(0), 6, 0x40, Extensions::default(), b""));
    violation(FetchItem::decode(&mut &h("00 00")[..], &mut p2));
    violation(FetchItem::decode(&mut &h("11 40 00")[..], &mut p3));
    // A datagram object has no Subgroup ID for the next object to refer to.
    let mut prior = FetchPrior::default();
    // 0x5C (2-byte varint): Datagram | Priority | Group ID | Object ID.
    FetchItem::decode(&mut &h("405c 01 00 40 00")[..], &mut prior).unwrap();
    violation(FetchItem::decode(&mut &h("01 00")[..], &mut prior));
}

#[test]
fn fetch_flag_errors_and_datagram_bits() {
    // Serialization Flags of 128 or more other than 0x8C and 0x10C.
    for flags in ["4080", "408d", "4100", "410d", "410b", "80008c00"] {
        violation(FetchItem::decode(
            &mut &h(&format!("{flags} 01 02"))[..],
            &mut FetchPrior::default(),
        ));
    }
    // With 0x40 set the subgroup bits are ignored: 0x5F (2-byte varint 0x405f) reads no
    // Subgroup ID field.
    let item =
        FetchItem::decode(&mut &h("405f 01 02 40 00")[..], &mut FetchPrior::default()).unwrap();
    assert_eq!(item, fobj(1, None, 2, 0x40, Extensions::default(), b""));
}

#[test]
fn fetch_malformed_track_conditions() {
    let run = |body: &str, order: Option<GroupOrder>| {
        let bytes = h(&format!("05 07 {body}"));
        let stream = decode_fetch_stream(&mut &bytes[..], order);
        let mut r = FetchReader::default();
        if let Some(o) = order {
            r = r.with_group_order(o);
        }
        let mut last = None;
        for b in &bytes {
            r.handle_bytes(&[*b]);
            while let Some(x) = r.poll_object() {
                let err = x.is_err();
                last = Some(x);
                if err {
                    break;
                }
            }
        }
        // Both decoders agree.
        assert_eq!(stream.as_ref().err(), last.as_ref().and_then(|x| x.as_ref().err()));
        stream
    };
    // Condition 1: same group, Object ID not strictly larger (explicit Object ID 3, then 3).
    malformed_track(run("1c 01 03 40 00   04 03 00", None));
    // ... and not below an End of Range either.
    malformed_track(run("1c 01 05 40 00   408c 01 07   04 06 00", None));
    // Condition 2: same subgroup, different priority.
    malformed_track(run("1c 01 03 40 00   10 41 00", None));
    // Conditions 3 and 4: group order.
    malformed_track(run("1c 05 00 40 00   0c 04 00 00", Some(GroupOrder::Ascending)));
    malformed_track(run("1c 04 00 40 00   0c 05 00 00", Some(GroupOrder::Descending)));
    // Without a known order, either direction is accepted.
    run("1c 05 00 40 00   0c 04 00 00", None).unwrap();
    run("1c 04 00 40 00   0c 05 00 00", Some(GroupOrder::Ascending)).unwrap();
    // A new group may reuse a subgroup number with another priority.
    run("1c 01 00 40 00   1c 02 00 41 00", None).unwrap();
}

#[test]
fn fetch_reader_errors() {
    let mut r = FetchReader::default();
    r.handle_bytes(&h("05 07 1c 01 00 40 05 6162"));
    assert_eq!(r.poll_object(), None);
    r.handle_fin();
    violation(r.poll_object().unwrap());
    let mut r = FetchReader::default();
    r.handle_bytes(&h("05"));
    r.handle_fin();
    violation(r.poll_object().unwrap());
    let mut r = FetchReader::default();
    r.handle_bytes(&h("06 07"));
    violation(r.poll_object().unwrap());
    // The limit applies to fetch payloads too.
    let mut r = FetchReader::new(ReaderConfig::default().with_max_object_size(1));
    r.handle_bytes(&h("05 07 1c 01 00 40 02"));
    assert!(matches!(r.poll_object(), Some(Err(Error::TooLarge { len: 2, max: 1, .. }))));
}

/// Bytes that are not a valid stream never panic any decoder: a small deterministic sweep
/// of mutated fixtures.
#[test]
fn mutated_fixtures_never_panic() {
    let (fetch, _, _) = fetch_fixture();
    let sub =
        h("35 02 00 00 00 1a 04 c00000008257dcd3 4049 0e 747261636549443a313233343536 04 61626364");
    let dg = h("2d 02 05 020c1e 00");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3000 {
        for base in [&fetch, &sub, &dg] {
            let mut m = base.clone();
            let flips = 1 + (next() % 3) as usize;
            for _ in 0..flips {
                let i = (next() % m.len() as u64) as usize;
                m[i] = next() as u8;
            }
            let cut = (next() % (m.len() as u64 + 1)) as usize;
            let m = &m[..cut];
            let _ = decode_subgroup_stream(&mut &m[..]);
            let _ = decode_fetch_stream(&mut &m[..], Some(GroupOrder::Ascending));
            let _ = Datagram::decode_bytes(Bytes::copy_from_slice(m));
            let mut r = SubgroupReader::default();
            r.handle_bytes(m);
            r.handle_fin();
            while let Some(Ok(_)) = r.poll_object() {}
            let mut r = FetchReader::default();
            r.handle_bytes(m);
            r.handle_fin();
            while let Some(Ok(_)) = r.poll_object() {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// Canonical objects
// ---------------------------------------------------------------------------------------

/// A relay reads an object in one form and writes it in another without losing a
/// canonical property (§10.2.1).
#[test]
fn canonical_object_conversions() {
    // Subgroup stream with a default priority: the subscription's (here 16) applies.
    let (header, objects) = one_shot(&h("33 03 01   02 02 1025 01 61"));
    let o = Object::from_subgroup(&header, 2, objects[0].clone(), 16);
    assert_eq!(o.location(), crate::types::Location::new(1, 2));
    assert_eq!((o.forwarding, o.publisher_priority), (Forwarding::Subgroup(2), 16));
    assert_eq!(o.to_subgroup_object(), objects[0]);
    // As a fetch object and back.
    let f = o.to_fetch_object().unwrap();
    assert_eq!(f.subgroup_id, Some(2));
    assert_eq!(Object::from_fetch(f), o);
    // As a datagram and back; the priority is omitted when it is the default.
    let d = o.to_datagram(TrackAlias(9), Some(16));
    assert_eq!(d.publisher_priority, None);
    let back = Object::from_datagram(d, 16);
    assert_eq!(
        (back.forwarding, &back.payload, &back.extensions),
        (Forwarding::Datagram, &o.payload, &o.extensions)
    );
    assert_eq!(o.to_datagram(TrackAlias(9), Some(1)).publisher_priority, Some(16));
    // Status objects: a datagram with a status body; no fetch form.
    let eog = Object::from_subgroup(&header, 2, status(3, ObjectStatus::EndOfGroup), 16);
    assert_eq!(eog.to_fetch_object(), None);
    let d = eog.to_datagram(TrackAlias(9), None);
    assert_eq!(d.body, DatagramBody::Status(ObjectStatus::EndOfGroup));
    // type 0x20 (STATUS) | Track Alias 9 | Group 1 | Object 3 | Priority 16 | End of Group
    assert_eq!(d.to_vec().unwrap(), h("20 09 01 03 10 03"));
}

// ---------------------------------------------------------------------------------------
// Malformed tracks across streams
// ---------------------------------------------------------------------------------------

fn obj_at(group_id: u64, object_id: u64, forwarding: Forwarding) -> Object {
    Object {
        group_id,
        object_id,
        forwarding,
        publisher_priority: 128,
        status: ObjectStatus::Normal,
        extensions: Extensions::default(),
        payload: Bytes::from_static(b"x"),
    }
}

fn with_status(mut o: Object, s: ObjectStatus) -> Object {
    o.status = s;
    o.payload = Bytes::new();
    o
}

fn with_ext(mut o: Object, ext: Extensions) -> Object {
    o.extensions = ext;
    o
}

const SG0: Forwarding = Forwarding::Subgroup(0);

#[test]
fn track_checker_final_objects() {
    // Condition 7: an object beyond the End of Group object, in either arrival order.
    let mut t = TrackChecker::new();
    t.handle_object(&obj_at(1, 0, SG0)).unwrap();
    t.handle_object(&with_status(obj_at(1, 3, Forwarding::Subgroup(1)), ObjectStatus::EndOfGroup))
        .unwrap();
    t.handle_object(&obj_at(1, 2, SG0)).unwrap();
    malformed_track(t.handle_object(&obj_at(1, 4, SG0)));
    t.handle_object(&obj_at(2, 9, SG0)).unwrap();
    let mut t = TrackChecker::new();
    t.handle_object(&obj_at(1, 5, SG0)).unwrap();
    malformed_track(t.handle_object(&with_status(obj_at(1, 3, SG0), ObjectStatus::EndOfGroup)));
    // ... and beyond a datagram's END_OF_GROUP bit.
    let mut t = TrackChecker::new();
    t.handle_end_of_group(4, 2).unwrap();
    malformed_track(t.handle_object(&obj_at(4, 3, Forwarding::Datagram)));
    t.handle_object(&obj_at(4, 2, Forwarding::Datagram)).unwrap();
    malformed_track(t.handle_end_of_group(4, 1));

    // Condition 8: beyond the End of Track, in either order.
    let mut t = TrackChecker::new();
    t.handle_object(&with_status(obj_at(7, 0, SG0), ObjectStatus::EndOfTrack)).unwrap();
    assert_eq!(t.end_of_track(), Some(crate::types::Location::new(7, 0)));
    t.handle_object(&obj_at(6, 30, SG0)).unwrap();
    malformed_track(t.handle_object(&obj_at(7, 1, SG0)));
    malformed_track(t.handle_object(&obj_at(8, 0, SG0)));
    let mut t = TrackChecker::new();
    t.handle_object(&obj_at(8, 0, SG0)).unwrap();
    malformed_track(t.handle_object(&with_status(obj_at(7, 0, SG0), ObjectStatus::EndOfTrack)));

    // Conditions 5 and 6: subgroup final objects.
    let mut t = TrackChecker::new();
    t.handle_object(&obj_at(1, 0, Forwarding::Subgroup(2))).unwrap();
    t.handle_subgroup_fin(1, 2, 0).unwrap();
    t.handle_subgroup_fin(1, 2, 0).unwrap();
    malformed_track(t.handle_subgroup_fin(1, 2, 1));
    malformed_track(t.handle_object(&obj_at(1, 1, Forwarding::Subgroup(2))));
    t.handle_object(&obj_at(1, 1, Forwarding::Subgroup(3))).unwrap();
    malformed_track(t.handle_subgroup_fin(1, 3, 0));

    // Condition 10: one Location, two forwarding preferences.
    let mut t = TrackChecker::new();
    t.handle_object(&obj_at(1, 1, SG0)).unwrap();
    t.handle_object(&obj_at(1, 1, SG0)).unwrap();
    malformed_track(t.handle_object(&obj_at(1, 1, Forwarding::Datagram)));
}

#[test]
fn track_checker_gap_extensions() {
    let ggap = |g| Extensions { prior_group_id_gap: Some(g), ..Default::default() };
    let ogap = |g| Extensions { prior_object_id_gap: Some(g), ..Default::default() };
    // Group 10 says groups 8 and 9 never exist.
    let mut t = TrackChecker::new();
    t.handle_object(&obj_at(7, 0, SG0)).unwrap();
    t.handle_object(&with_ext(obj_at(10, 0, SG0), ggap(2))).unwrap();
    malformed_track(t.handle_object(&obj_at(9, 0, SG0)));
    malformed_track(t.handle_object(&obj_at(8, 4, SG0)));
    // Same value again in the group is fine, another value is not.
    t.handle_object(&with_ext(obj_at(10, 1, SG0), ggap(2))).unwrap();
    malformed_track(t.handle_object(&with_ext(obj_at(10, 2, SG0), ggap(1))));
    // A gap covering a received group.
    malformed_track(t.handle_object(&with_ext(obj_at(12, 0, SG0), ggap(5))));

    // Object 10 says objects 8 and 9 never exist.
    let mut t = TrackChecker::new();
    t.handle_object(&obj_at(3, 7, SG0)).unwrap();
    t.handle_object(&with_ext(obj_at(3, 10, Forwarding::Subgroup(1)), ogap(2))).unwrap();
    malformed_track(t.handle_object(&obj_at(3, 9, Forwarding::Subgroup(2))));
    malformed_track(t.handle_object(&with_ext(obj_at(3, 12, SG0), ogap(5))));
    t.handle_object(&with_ext(obj_at(3, 12, SG0), ogap(1))).unwrap();
}

#[test]
fn track_checker_keeps_a_bounded_window() {
    let mut t = TrackChecker::new().with_group_window(4);
    t.handle_object(&with_status(obj_at(0, 0, SG0), ObjectStatus::EndOfGroup)).unwrap();
    for g in 1..=10 {
        t.handle_object(&obj_at(g, 0, SG0)).unwrap();
    }
    // Group 0 is forgotten: a late object there is no longer judged.
    t.handle_object(&obj_at(0, 5, SG0)).unwrap();
    // Recent groups still are.
    t.handle_object(&with_status(obj_at(10, 1, SG0), ObjectStatus::EndOfGroup)).unwrap();
    malformed_track(t.handle_object(&obj_at(10, 2, SG0)));
}

#[test]
fn stream_reader_detects_the_kind() {
    // A subgroup stream (draft example 1) and the fetch fixture, byte by byte.
    let sub = h("14 02 00 00 00 00 04 61626364 00 04 65666768");
    let mut r = StreamReader::default();
    let mut items = Vec::new();
    for b in &sub {
        assert!(r.kind().is_none() || r.subgroup().is_some());
        r.handle_bytes(&[*b]);
        while let Some(i) = r.poll_object() {
            items.push(i.unwrap());
        }
    }
    r.handle_fin();
    assert_eq!(r.poll_object(), None);
    assert!(r.is_finished());
    assert_eq!(r.kind(), Some(StreamKind::Subgroup(0x14)));
    let (_, objs) = one_shot(&sub);
    assert_eq!(items, objs.into_iter().map(StreamItem::Subgroup).collect::<Vec<_>>());

    let (fetch, header, fetch_items) = fetch_fixture();
    let mut r = StreamReader::default();
    let mut items = Vec::new();
    for b in &fetch {
        r.handle_bytes(&[*b]);
        while let Some(i) = r.poll_object() {
            items.push(i.unwrap());
        }
    }
    r.handle_fin();
    assert!(r.is_finished());
    assert_eq!(r.fetch().unwrap().header(), Some(&header));
    assert_eq!(items, fetch_items.into_iter().map(StreamItem::Fetch).collect::<Vec<_>>());

    // A two-byte stream type split across calls, then an unknown type.
    let mut r = StreamReader::default();
    r.handle_bytes(&h("40"));
    assert_eq!(r.poll_object(), None);
    r.handle_bytes(&h("06"));
    violation(r.poll_object().unwrap());
    // FIN before the type.
    let mut r = StreamReader::default();
    r.handle_fin();
    violation(r.poll_object().unwrap());
    // FIN that arrives while the type is incomplete, then the rest never comes.
    let mut r = StreamReader::default();
    r.handle_bytes(&h("40"));
    r.handle_fin();
    violation(r.poll_object().unwrap());
}
