// Guards: two sessions joined by an in-memory transport run SETUP, SUBSCRIBE (Largest
// Object) plus a relative Joining FETCH, and deliver every object of the current group once
// and in order, so a player starts at a key frame; unknown tracks are refused with
// DOES_NOT_EXIST; UNSUBSCRIBE stops the publisher forwarding.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { memoryPair } from '../src/transport.js';
import { RequestError, Session } from '../src/session.js';
import { RequestErrorCode } from '../src/wire/message.js';
import { captureTimestampUs, locToExtensions } from '../src/wire/ext.js';
import type { MoqObject } from '../src/wire/data.js';

async function pair() {
  const { a, b } = memoryPair();
  const [sub, pub] = await Promise.all([Session.open(a, 'client'), Session.open(b, 'server')]);
  return { sub, pub };
}

/** Resolves when `cond()` holds, polling each macrotask; rejects after `ms`. */
async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setImmediate(r));
  }
}

const bytes = (g: number, o: number) => new TextEncoder().encode(`g${g}o${o}`);

test('subscribe + joining fetch deliver the current group from its start, then live objects', async () => {
  const { sub, pub } = await pair();
  const track = pub.publishTrack(['clinic', 'room-42'], 'video/360p', { priority: 48, push: false });
  for (let o = 0; o < 5; o++) track.write(0, o, bytes(0, o), locToExtensions({ timestamp: 1000 + o }));
  for (let o = 0; o < 3; o++) track.write(1, o, bytes(1, o), locToExtensions({ timestamp: 2000 + o }));

  const got: [number, number, string, string][] = [];
  const s = await sub.subscribe(['clinic', 'room-42'], 'video/360p', {
    onObject: (obj: MoqObject, source) => got.push([obj.groupId, obj.objectId, new TextDecoder().decode(obj.payload), source]),
  });
  assert.deepEqual(s.largest, { group: 1, object: 2 });
  const f = await s.joiningFetch(0);
  assert.ok(f);
  await f.done;
  track.write(1, 3, bytes(1, 3));
  track.write(2, 0, bytes(2, 0), locToExtensions({ timestamp: 3000 }));
  track.write(2, 1, bytes(2, 1));
  await until(() => got.length === 6);
  got.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  assert.deepEqual(got.map((g) => `${g[0]}/${g[1]}:${g[2]}:${g[3]}`), [
    '1/0:g1o0:fetch',
    '1/1:g1o1:fetch',
    '1/2:g1o2:fetch',
    '1/3:g1o3:subgroup',
    '2/0:g2o0:subgroup',
    '2/1:g2o1:subgroup',
  ]);
  assert.equal(track.stats().subscribers, 1);
  sub.close();
});

test('LOC timestamps survive the trip', async () => {
  const { sub, pub } = await pair();
  const track = pub.publishTrack(['a'], 'audio', { priority: 16, push: false });
  const stamps: (number | undefined)[] = [];
  await sub.subscribe(['a'], 'audio', { onObject: (o) => stamps.push(captureTimestampUs(o.extensions)) });
  const now = 1_764_000_000_000_000;
  for (let g = 0; g < 5; g++) track.write(g, 0, new Uint8Array([g]), locToExtensions({ timestamp: now + g * 20000 }));
  await until(() => stamps.length === 5);
  assert.deepEqual([...stamps].sort(), [0, 1, 2, 3, 4].map((g) => now + g * 20000));
  sub.close();
});

test('an unknown track is refused with DOES_NOT_EXIST', async () => {
  const { sub } = await pair();
  await assert.rejects(
    sub.subscribe(['nobody', 'here'], 'catalog', { onObject: () => undefined }),
    (e: unknown) => e instanceof RequestError && e.code === RequestErrorCode.DoesNotExist && /DoesNotExist/.test(e.message),
  );
  sub.close();
});

test('unsubscribe stops forwarding and ends the publisher side', async () => {
  const { sub, pub } = await pair();
  const track = pub.publishTrack(['x'], 'video/180p', { priority: 32, push: false });
  let n = 0;
  const s = await sub.subscribe(['x'], 'video/180p', { onObject: () => n++ });
  track.write(0, 0, new Uint8Array(10));
  await until(() => n === 1);
  s.unsubscribe();
  await until(() => track.stats().subscribers === 0);
  track.write(0, 1, new Uint8Array(10));
  track.write(1, 0, new Uint8Array(10));
  assert.equal(n, 1);
  sub.close();
});

test('closing the session sends PUBLISH_DONE, then the close reason reaches the peer', async () => {
  const { sub, pub } = await pair();
  pub.publishTrack(['x'], 'audio', { priority: 16, push: false });
  let ended = '';
  await sub.subscribe(['x'], 'audio', { onObject: () => undefined, onDone: (_c, r) => (ended = r) });
  pub.close(0, 'publisher left');
  const info = await sub.closed;
  assert.equal(info.by, 'remote');
  assert.equal(info.reason, 'publisher left');
  assert.equal(ended, 'track ended', 'PUBLISH_DONE came before the close');
});

test('a group that waits too long in the send queue is reset and newer groups still arrive', async () => {
  const { MemoryLink } = await import('../src/transport.js');
  const link = new MemoryLink(200_000); // 200 kb/s: 25 kB take a second
  const { a, b } = memoryPair({ bToA: link });
  const [sub, pub] = await Promise.all([Session.open(a, 'client'), Session.open(b, 'server')]);
  const track = pub.publishTrack(['x'], 'video/720p', { priority: 64, push: false, maxQueueMs: 300 });
  const dropped: number[] = [];
  track.onGroupDropped = (g) => dropped.push(g);
  const groups = new Set<number>();
  await sub.subscribe(['x'], 'video/720p', { onObject: (o) => groups.add(o.groupId) });
  const big = new Uint8Array(20_000);
  // Group 0: five 20 kB objects, far more than the link carries in 300 ms.
  for (let o = 0; o < 5; o++) {
    track.write(0, o, big);
    await new Promise((r) => setTimeout(r, 100));
  }
  await until(() => dropped.length > 0, 5000);
  assert.deepEqual(dropped, [0]);
  assert.equal(track.stats().groupsDropped, 1);
  link.bps = 0;
  track.write(1, 0, new Uint8Array(100));
  await until(() => groups.has(1), 5000);
  sub.close();
});

test('requests wait for MAX_REQUEST_ID credit and fail clearly without it', async () => {
  const { a, b } = memoryPair();
  // The publisher side grants the subscriber one request (ID 0), and more only once it is
  // past half of its credit: with a window of 2 that never happens here.
  const [sub, pub] = await Promise.all([Session.open(a, 'client', { requestTimeoutMs: 300 }), Session.open(b, 'server', { maxRequestId: 2 })]);
  pub.publishTrack(['x'], 'a', { priority: 16, push: false });
  pub.publishTrack(['x'], 'b', { priority: 16, push: false });
  await sub.subscribe(['x'], 'a', { onObject: () => undefined });
  await assert.rejects(sub.subscribe(['x'], 'b', { onObject: () => undefined }), /allows no more requests \(MAX_REQUEST_ID 2\)/);

  // With a window of 4 the grant comes before the subscriber runs out.
  const p2 = memoryPair();
  const [sub2, pub2] = await Promise.all([Session.open(p2.a, 'client', { requestTimeoutMs: 300 }), Session.open(p2.b, 'server', { maxRequestId: 4 })]);
  for (const n of ['a', 'b', 'c', 'd', 'e']) pub2.publishTrack(['x'], n, { priority: 16, push: false });
  for (const n of ['a', 'b', 'c', 'd', 'e']) await sub2.subscribe(['x'], n, { onObject: () => undefined });
  sub2.close();
  sub.close();
});

test('a malformed data stream closes the session with PROTOCOL_VIOLATION', async () => {
  const { a, b } = memoryPair();
  const [sub, pub] = await Promise.all([Session.open(a, 'client'), Session.open(b, 'server')]);
  const ws = await pub.transport.createStream(0);
  const w = ws.getWriter();
  await w.write(new Uint8Array([0x01, 0x02, 0x03])); // 0x01 is no data stream type
  const info = await sub.closed;
  assert.equal(info.code, 0x3);
  assert.match(info.reason, /unknown data stream type/);
});

test('an answer that comes after the request timed out is undone, not a protocol error', async () => {
  const { MemoryLink } = await import('../src/transport.js');
  const slow = new MemoryLink(0, 300); // answers take 300 ms
  const { a, b } = memoryPair({ bToA: slow });
  const [sub, pub] = await Promise.all([Session.open(a, 'client', { requestTimeoutMs: 100 }), Session.open(b, 'server')]);
  const track = pub.publishTrack(['x'], 'video/360p', { priority: 48, push: false });
  const pending = sub.subscribe(['x'], 'video/360p', { onObject: () => undefined });
  await until(() => track.outlets.length === 1);
  await assert.rejects(pending, /Timeout/);
  // The late SUBSCRIBE_OK arrives; the subscriber answers it with UNSUBSCRIBE.
  await until(() => track.outlets.length === 0, 3000);
  let closed = false;
  void sub.closed.then(() => (closed = true));
  // A message round trip later the session is still open.
  await sub.subscribe(['x'], 'video/360p', { onObject: () => undefined }).catch(() => undefined);
  assert.equal(closed, false, 'the session is still open');
  sub.close();
});

test('an object written while PUBLISH awaits PUBLISH_OK reaches the peer once it answers', async () => {
  // The peer is driven by hand here (a relay accepting PUBLISH), so PUBLISH_OK comes only
  // after the publisher wrote its one catalog object.
  const { encodeMessage, decodeMessage } = await import('../src/wire/message.js');
  const { Reader, Short } = await import('../src/wire/coding.js');
  const { SubgroupReader } = await import('../src/wire/data.js');
  const { a, b } = memoryPair();
  const writer = b.control.writable.getWriter();
  const reader = b.control.readable.getReader();
  let buf = new Uint8Array(0);
  const nextMessage = async () => {
    for (;;) {
      try {
        const r = new Reader(buf);
        const m = decodeMessage(r);
        buf = buf.slice(r.pos);
        return m;
      } catch (e) {
        if (!(e instanceof Short)) throw e;
      }
      const { value, done } = await reader.read();
      if (done) throw new Error('control stream ended');
      buf = new Uint8Array([...buf, ...value]);
    }
  };
  const opening = Session.open(a, 'client');
  assert.equal((await nextMessage()).type, 'client_setup');
  await writer.write(encodeMessage({ type: 'server_setup', params: { maxRequestId: 100 } }));
  const pub = await opening;
  const track = pub.publishTrack(['room', 'patient', 'source'], 'catalog', { priority: 0 });
  const publish = await nextMessage();
  assert.equal(publish.type, 'publish');
  track.write(0, 0, new TextEncoder().encode('{"version":1}'));
  await new Promise((r) => setTimeout(r, 20));
  if (publish.type !== 'publish') return;
  await writer.write(encodeMessage({ type: 'publish_ok', requestId: publish.requestId, params: { forward: true } }));
  const streams = b.incoming.getReader();
  const { value: stream } = await Promise.race([
    streams.read(),
    new Promise<never>((_, rej) => setTimeout(() => rej(new Error('no data stream within 2 s')), 2000)),
  ]);
  const sr = new SubgroupReader();
  const data = stream!.getReader();
  let obj: MoqObject | undefined;
  while (!obj) {
    const { value, done } = await data.read();
    if (done) break;
    sr.push(value);
    obj = sr.poll();
  }
  assert.equal(sr.header?.trackAlias, publish.trackAlias);
  assert.deepEqual([obj?.groupId, obj?.objectId, new TextDecoder().decode(obj?.payload)], [0, 0, '{"version":1}']);
  pub.close();
});
