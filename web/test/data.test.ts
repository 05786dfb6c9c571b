// Guards: subgroup and fetch streams are read and written exactly as draft-16 §10.4 lays
// them out (the draft's own subgroup example, byte for byte), whatever the chunking of the
// stream, and malformed streams are refused rather than misread.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ProtocolError, fromHex, toHex, utf8 } from '../src/wire/coding.js';
import {
  FetchReader,
  FetchWriter,
  ObjectStatus,
  SubgroupReader,
  SubgroupWriter,
  decodeSubgroupHeader,
  encodeFetchHeader,
  encodeSubgroupHeader,
  streamKind,
  type MoqObject,
  type FetchItem,
} from '../src/wire/data.js';
import { Reader } from '../src/wire/coding.js';

/** Feeds `bytes` in chunks of `size` and drains every object. */
function readSubgroup(bytes: Uint8Array, size: number): MoqObject[] {
  const r = new SubgroupReader();
  const out: MoqObject[] = [];
  for (let i = 0; i < bytes.length; i += size) {
    r.push(bytes.subarray(i, i + size), i);
    for (let o = r.poll(); o; o = r.poll()) out.push(o);
  }
  r.finish();
  for (let o = r.poll(); o; o = r.poll()) out.push(o);
  assert.ok(r.finished, 'stream finished cleanly');
  return out;
}

// draft-16 §10.5 "Sending a subgroup on one stream": Type 0x14, Track Alias 2, Group 0,
// Subgroup 0, Priority 0; objects 0 "abcd" and 1 "efgh".
const DRAFT_EXAMPLE = '14 02 00 00 00' + '00 04 61626364' + '00 04 65666768';

test('the draft subgroup example reads in any chunking', () => {
  const bytes = fromHex(DRAFT_EXAMPLE);
  for (const size of [1, 2, 3, 5, 100]) {
    const objs = readSubgroup(bytes, size);
    assert.deepEqual(
      objs.map((o) => [o.groupId, o.subgroupId, o.objectId, o.publisherPriority, new TextDecoder().decode(o.payload)]),
      [
        [0, 0, 0, 0, 'abcd'],
        [0, 0, 1, 0, 'efgh'],
      ],
      `chunk size ${size}`,
    );
  }
});

test('the draft subgroup example is what the writer produces', () => {
  const w = new SubgroupWriter({ trackAlias: 2, groupId: 0, subgroupId: 0, publisherPriority: 0, extensions: false, endOfGroup: false });
  const bytes = [w.encodeHeader(), w.object({ objectId: 0, payload: utf8('abcd') }), w.object({ objectId: 1, payload: utf8('efgh') })];
  assert.equal(bytes.map(toHex).join(''), toHex(fromHex(DRAFT_EXAMPLE)));
});

test('extension headers, default priority and end of group round-trip', () => {
  // Type 0x35: extensions, explicit Subgroup ID, default priority. Object 0 carries
  // type 4 = 2186796243 (8-byte varint) and type 77 (delta 0x49) "traceID:123456".
  const hex =
    '35 02 00 00' +
    '00 1a 04 c000000082 57dcd3 4049 0e 74726163654944 3a313233343536 04 61626364' +
    '00 00 04 65666768' +
    '00 00 00 03';
  const objs = readSubgroup(fromHex(hex), 7);
  assert.equal(objs.length, 3);
  assert.deepEqual(objs[0].extensions, [
    { key: 4, value: 2186796243 },
    { key: 77, value: utf8('traceID:123456') },
  ]);
  assert.equal(objs[0].publisherPriority, undefined);
  assert.deepEqual([objs[1].objectId, objs[1].extensions], [1, []]);
  assert.deepEqual([objs[2].objectId, objs[2].status, objs[2].payload.length], [2, ObjectStatus.EndOfGroup, 0]);

  const w = new SubgroupWriter({ trackAlias: 2, groupId: 0, subgroupId: 0, extensions: true, endOfGroup: false });
  const out = [
    w.encodeHeader(),
    w.object({ objectId: 0, payload: utf8('abcd'), extensions: objs[0].extensions }),
    w.object({ objectId: 1, payload: utf8('efgh') }),
    w.object({ objectId: 2, status: ObjectStatus.EndOfGroup }),
  ];
  assert.equal(out.map(toHex).join(''), toHex(fromHex(hex)));
  assert.throws(() => w.object({ objectId: 3, payload: utf8('x') }), /after an End of Group/);
});

test('header forms: subgroup ID zero, first object, explicit; end-of-group bit', () => {
  for (const h of [
    { trackAlias: 9, groupId: 300, subgroupId: 'zero' as const, extensions: false, endOfGroup: true },
    { trackAlias: 9, groupId: 300, subgroupId: 'first-object' as const, publisherPriority: 48, extensions: true, endOfGroup: false },
    { trackAlias: 1, groupId: 2, subgroupId: 77, publisherPriority: 255, extensions: false, endOfGroup: true },
  ]) {
    const bytes = encodeSubgroupHeader(h);
    assert.equal(streamKind(bytes), 'subgroup');
    assert.deepEqual(decodeSubgroupHeader(new Reader(bytes)), h);
  }
  assert.equal(toHex(encodeSubgroupHeader({ trackAlias: 9, groupId: 1, subgroupId: 'zero', extensions: false, endOfGroup: true })), '38' + '09' + '01');
  assert.throws(() => streamKind(fromHex('16')), ProtocolError, 'reserved Subgroup ID mode');
  assert.throws(() => streamKind(fromHex('01')), ProtocolError, 'not a data stream type');
});

test('a truncated stream and an object after End of Group are protocol violations', () => {
  const r = new SubgroupReader();
  r.push(fromHex('14 02 00 00 00 00 04 6162'));
  assert.equal(r.poll(), undefined, 'waits for the payload');
  r.finish();
  assert.throws(() => r.poll(), ProtocolError);

  const r2 = new SubgroupReader();
  r2.push(fromHex('10 01 00 00 00 00 03 00 01 61'));
  assert.equal(r2.poll()?.status, ObjectStatus.EndOfGroup);
  assert.throws(() => r2.poll(), /after End of Group/);
});

test('an object larger than the limit is refused before its payload arrives', () => {
  const r = new SubgroupReader({ maxObjectSize: 1000, maxExtensionsSize: 100 });
  r.push(fromHex('10 01 00 00 00 8000ffff'));
  assert.throws(() => r.poll(), /exceeds 1000/);
});

// A fetch stream: header for Request ID 4; object {3, sub 0, 0} priority 0x20 with a LOC
// timestamp 960 and payload "ab"; the next object {3, 0, 1} in the compact form; an End of
// Unknown Range at {5, 0}; an object {6, 0, 0} taking the prior priority.
const FETCH_STREAM =
  '05 04' + '3c 03 00 20 03 1043c0 02 6162' + '00 01 63' + '410c 05 00' + '0c 06 00 01 64';

test('a fetch stream reads in any chunking', () => {
  const bytes = fromHex(FETCH_STREAM);
  for (const size of [1, 3, 64]) {
    const r = new FetchReader();
    const items: FetchItem[] = [];
    for (let i = 0; i < bytes.length; i += size) {
      r.push(bytes.subarray(i, i + size));
      for (let it = r.poll(); it; it = r.poll()) items.push(it);
    }
    r.finish();
    assert.ok(r.finished);
    assert.equal(r.requestId, 4);
    const summary = items.map((it) =>
      it.type === 'object'
        ? [it.object.groupId, it.object.subgroupId, it.object.objectId, it.object.publisherPriority, toHex(it.object.payload)]
        : [it.kind, it.groupId, it.objectId],
    );
    assert.deepEqual(summary, [
      [3, 0, 0, 0x20, '6162'],
      [3, 0, 1, 0x20, '63'],
      ['unknown', 5, 0],
      [6, 0, 0, 0x20, '64'],
    ]);
    const first = items[0];
    assert.ok(first.type === 'object');
    assert.deepEqual(first.object.extensions, [{ key: 0x10, value: 960 }]);
  }
});

test('the fetch writer picks the same compact forms', () => {
  const w = new FetchWriter();
  const out = [
    encodeFetchHeader(4),
    w.object({ groupId: 3, subgroupId: 0, objectId: 0, publisherPriority: 0x20, extensions: [{ key: 0x10, value: 960 }], payload: utf8('ab') }),
    w.object({ groupId: 3, subgroupId: 0, objectId: 1, publisherPriority: 0x20, payload: utf8('c') }),
    w.endOfRange({ kind: 'unknown', groupId: 5, objectId: 0 }),
    w.object({ groupId: 6, subgroupId: 0, objectId: 0, publisherPriority: 0x20, payload: utf8('d') }),
  ];
  assert.equal(out.map(toHex).join(''), toHex(fromHex(FETCH_STREAM)));
});

test('a first fetch object that refers to a prior object is a protocol violation', () => {
  const r = new FetchReader();
  r.push(fromHex('05 04 00 01 63'));
  assert.throws(() => r.poll(), /prior/);
  const r2 = new FetchReader();
  r2.push(fromHex('05 04 4085 00'));
  assert.throws(() => r2.poll(), /Serialization Flags/);
});

test('random bytes on a data stream give objects or a ProtocolError, never anything else', () => {
  let seed = 7;
  const rand = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed;
  };
  for (let i = 0; i < 3000; i++) {
    const len = 1 + (rand() % 40);
    const b = new Uint8Array(len);
    for (let j = 0; j < len; j++) b[j] = rand() & 0xff;
    b[0] = [0x10, 0x11, 0x14, 0x15, 0x31, 0x35, 0x38, 0x05][rand() % 8];
    const r = b[0] === 0x05 ? new FetchReader() : new SubgroupReader();
    try {
      r.push(b.subarray(0, len >> 1));
      r.push(b.subarray(len >> 1));
      r.finish();
      for (let k = 0; k < 100 && r.poll(); k++);
    } catch (e) {
      assert.ok(e instanceof ProtocolError, `unexpected ${String(e)}`);
    }
  }
});
