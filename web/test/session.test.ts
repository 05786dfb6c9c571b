// Guards: two sessions joined by an in-memory transport run SETUP, SUBSCRIBE (Largest
// Object) plus a relative Joining FETCH, and deliver every object of the current group once
// and in order, so a player starts at a key frame; unknown tracks are refused with
// DOES_NOT_EXIST; UNSUBSCRIBE stops the publisher forwarding; messages that arrive right
// behind the answer that creates a subscription (in the same read) find it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { memoryPair } from '../src/transport.js';
import { RequestError, Session } from '../src/session.js';
import { RequestErrorCode } from '../src/wire/message.js';
import { captureTimestampUs, locToExtensions } from '../src/wire/ext.js';
import type { MoqObject } from '../src/wire/data.js';
import type { Message } from '../src/wire/message.js';

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

/**
 * A client session whose peer is driven by hand (as a relay would answer): `next()` reads
 * the session's next control message, `send(...msgs)` writes messages to it in ONE chunk,
 * so they are read back to back, as when they arrive in one packet. The peer grants
 * `maxRequestId` in its SETUP.
 */
async function handDriven(maxRequestId = 100) {
  const { encodeMessage, decodeMessage } = await import('../src/wire/message.js');
  const { Reader, Short } = await import('../src/wire/coding.js');
  const { a, b } = memoryPair();
  const writer = b.control.writable.getWriter();
  const reader = b.control.readable.getReader();
  let buf = new Uint8Array(0);
  const next = async (): Promise<Message> => {
    const deadline = setTimeout(() => reader.cancel('no control message within 2 s').catch(() => undefined), 2000);
    try {
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
        if (done) throw new Error('control stream ended (or no message within 2 s)');
        buf = new Uint8Array([...buf, ...value]);
      }
    } finally {
      clearTimeout(deadline);
    }
  };
  const send = (...msgs: Message[]) => writer.write(new Uint8Array(msgs.flatMap((m) => [...encodeMessage(m)])));
  const opening = Session.open(a, 'client');
  assert.equal((await next()).type, 'client_setup');
  await send({ type: 'server_setup', params: { maxRequestId } });
  const session = await opening;
  return { session, next, send, peer: b };
}

/** Reads the next control message, which must be of type `type`. */
async function expectMessage<T extends Message['type']>(next: () => Promise<Message>, type: T): Promise<Extract<Message, { type: T }>> {
  const m = await next();
  assert.equal(m.type, type, `expected ${type}, got ${JSON.stringify(m)}`);
  return m as Extract<Message, { type: T }>;
}

test('an object written while PUBLISH awaits PUBLISH_OK reaches the peer once it answers', async () => {
  // PUBLISH_OK comes only after the publisher wrote its one catalog object.
  const { SubgroupReader } = await import('../src/wire/data.js');
  const { session: pub, next, send, peer } = await handDriven();
  const track = pub.publishTrack(['room', 'patient', 'source'], 'catalog', { priority: 0 });
  const publish = await expectMessage(next, 'publish');
  track.write(0, 0, new TextEncoder().encode('{"version":1}'));
  await new Promise((r) => setTimeout(r, 20));
  await send({ type: 'publish_ok', requestId: publish.requestId, params: { forward: true } });
  const streams = peer.incoming.getReader();
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

// Draft-16: a PUBLISH-initiated subscription is Established once the subscriber sends
// PUBLISH_OK, so a relay may follow it at once with REQUEST_UPDATE (forward, NEW GROUP
// REQUEST), a Joining FETCH or UNSUBSCRIBE, often in the same packet. Each must find the
// subscription, not be answered "no such request".
test('REQUEST_UPDATE right behind PUBLISH_OK (one read) updates the subscription', async () => {
  const { session: pub, next, send } = await handDriven();
  const track = pub.publishTrack(['room', 'doctor', 'source'], 'video/720p', { priority: 32 });
  let keyFrames = 0;
  track.onNewGroupRequest = () => keyFrames++;
  const publish = await expectMessage(next, 'publish');
  await send(
    { type: 'publish_ok', requestId: publish.requestId, params: { forward: false } },
    { type: 'request_update', requestId: 1, existingRequestId: publish.requestId, params: { forward: true, newGroupRequest: 0 } },
  );
  const answer = await next();
  assert.deepEqual([answer.type, 'requestId' in answer ? answer.requestId : -1], ['request_ok', 1], `answer ${JSON.stringify(answer)}`);
  assert.equal(track.stats().subscribers, 1, 'forwarding after the update');
  assert.equal(keyFrames, 1, 'NEW GROUP REQUEST reached the track');
  pub.close();
});

test('a Joining FETCH and an UNSUBSCRIBE right behind PUBLISH_OK find the subscription', async () => {
  // No request credit at first, so the track has objects by the time its PUBLISH leaves
  // and the PUBLISH carries a Largest Location for the Joining FETCH to count from.
  const { session: pub, next, send } = await handDriven(0);
  const track = pub.publishTrack(['room', 'doctor', 'source'], 'audio', { priority: 16 });
  for (let g = 0; g < 3; g++) track.write(g, 0, new Uint8Array([g]));
  await expectMessage(next, 'requests_blocked');
  await send({ type: 'max_request_id', maxRequestId: 2 });
  const publish = await expectMessage(next, 'publish');
  assert.deepEqual(publish.params.largestObject, { group: 2, object: 0 });
  await send(
    { type: 'publish_ok', requestId: publish.requestId, params: { forward: true } },
    { type: 'fetch', requestId: 1, fetch: { kind: 'relative', joiningRequestId: publish.requestId, joiningStart: 0 }, params: {} },
    { type: 'unsubscribe', requestId: publish.requestId },
  );
  const ok = await expectMessage(next, 'fetch_ok');
  assert.equal(ok.requestId, 1);
  assert.deepEqual(ok.endLocation, { group: 2, object: 1 });
  const done = await expectMessage(next, 'publish_done');
  assert.equal(done.requestId, publish.requestId);
  assert.equal(track.outlets.length, 0, 'UNSUBSCRIBE removed the outlet');
  track.write(3, 0, new Uint8Array([3]));
  assert.equal(track.stats().subscribers, 0);
  pub.close();
});

test('NEW GROUP REQUEST in PUBLISH_OK asks the track for a new group', async () => {
  const { session: pub, next, send } = await handDriven();
  const track = pub.publishTrack(['x'], 'video/360p', { priority: 48 });
  track.write(4, 0, new Uint8Array([4]));
  const asked: string[] = [];
  track.onNewGroupRequest = () => asked.push('new group');
  const publish = await expectMessage(next, 'publish');
  // The subscriber knows group 4 (value 5): past the current group, so a new one starts.
  // The REQUEST_UPDATE behind it (forward only) is answered once both were handled.
  await send(
    { type: 'publish_ok', requestId: publish.requestId, params: { forward: true, newGroupRequest: 5 } },
    { type: 'request_update', requestId: 1, existingRequestId: publish.requestId, params: { forward: true } },
  );
  await expectMessage(next, 'request_ok');
  assert.deepEqual(asked, ['new group']);
  // A NEW GROUP REQUEST for a group the track has already passed asks for nothing.
  track.write(5, 0, new Uint8Array([5]));
  await send({ type: 'request_update', requestId: 3, existingRequestId: publish.requestId, params: { newGroupRequest: 5 } });
  await expectMessage(next, 'request_ok');
  assert.deepEqual(asked, ['new group']);
  pub.close();
});

test('PUBLISH_DONE right behind SUBSCRIBE_OK (one read) ends the subscription', async () => {
  const { session: sub, next, send } = await handDriven();
  let ended = '';
  const subscribing = sub.subscribe(['x'], 'catalog', { onObject: () => undefined, onDone: (_c, r) => (ended = r) });
  const req = await expectMessage(next, 'subscribe');
  await send(
    { type: 'subscribe_ok', requestId: req.requestId, trackAlias: 7, params: {}, extensions: [] },
    { type: 'publish_done', requestId: req.requestId, statusCode: 2, streamCount: 0, reason: 'track ended' },
  );
  const s = await subscribing;
  assert.equal(s.done, true);
  assert.equal(ended, 'track ended');
  sub.close();
});
