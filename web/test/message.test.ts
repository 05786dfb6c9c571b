// Guards: the TypeScript control-message codec writes and reads exactly the bytes of the
// Rust proto crate's hand-written draft-16 fixtures (proto/src/message/tests.rs), so the
// browser and the relay agree on the wire.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ProtocolError, Reader, Short, TerminationCode, fromHex, toHex, utf8 } from '../src/wire/coding.js';
import { type Message, decodeMessage, encodeMessage } from '../src/wire/message.js';

const VIDEO = ['02', '06 636c696e6963', '03 723432', '05 766964656f'].join('');
const video = { namespace: ['clinic', 'r42'], name: 'video' };

/** encode(msg) == fixture; decode(fixture) == msg; every proper prefix is Short, untouched. */
function check(hex: string, msg: Message): void {
  const fixture = fromHex(hex);
  assert.equal(toHex(encodeMessage(msg)), toHex(fixture), `encoder vs fixture for ${msg.type}`);
  const r = new Reader(fixture);
  assert.deepEqual(decodeMessage(r), msg, `decoder vs fixture for ${msg.type}`);
  assert.ok(r.done, 'decode consumed the whole frame');
  const two = new Uint8Array([...fixture, 0x0a, 0x00, 0x01, 0x02]);
  const r2 = new Reader(two);
  assert.deepEqual(decodeMessage(r2), msg);
  assert.equal(r2.remaining, 4, 'the next frame stays unread');
  for (let k = 0; k < fixture.length; k++) {
    const rp = new Reader(fixture.subarray(0, k));
    assert.throws(() => decodeMessage(rp), Short, `prefix of ${k} bytes`);
    assert.equal(rp.pos, 0, 'a Short decode consumes nothing');
  }
}

function closes(hex: string, code: number): void {
  assert.throws(
    () => decodeMessage(new Reader(fromHex(hex))),
    (e: unknown) => e instanceof ProtocolError && e.code === code,
  );
}

test('client_setup', () => {
  const hex = [
    '20',
    '0030',
    '08',
    '01 04 2f6d6f71',
    '01 4064',
    '01 06',
    '01 01 00 746f6b',
    '01 5000',
    '01 11 72656c61792e6578616d706c653a343433',
    '02 02 746d',
    '37 01',
    '00 02',
  ].join('');
  check(hex, {
    type: 'client_setup',
    params: {
      path: '/moq',
      maxRequestId: 100,
      authTokens: [{ kind: 'register', alias: 1, tokenType: 0, value: utf8('tok') }],
      maxAuthTokenCacheSize: 4096,
      authority: 'relay.example:443',
      implementation: 'tm',
      unknown: [
        { key: 0x3e, value: 1 },
        { key: 0x3e, value: 2 },
      ],
    },
  });
});

test('server_setup', () => {
  const hex = ['21', '0014', '04', '02 4040', '02 00', '03 08 746965726d657368', '40fa 01 78'].join('');
  check(hex, {
    type: 'server_setup',
    params: {
      maxRequestId: 64,
      maxAuthTokenCacheSize: 0,
      implementation: 'tiermesh',
      unknown: [{ key: 0x101, value: utf8('x') }],
    },
  });
});

test('server_setup with PATH closes with INVALID_PATH', () => {
  closes('21 0004 01 01 01 2f', TerminationCode.InvalidPath);
});

test('goaway, max_request_id, requests_blocked', () => {
  check('10 000a 09 6d6f71743a2f2f7232', { type: 'goaway', newSessionUri: 'moqt://r2' });
  check('10 0001 00', { type: 'goaway', newSessionUri: '' });
  check('15 0002 40c8', { type: 'max_request_id', maxRequestId: 200 });
  check('1a 0004 80004e20', { type: 'requests_blocked', maxRequestId: 20000 });
});

test('request_ok and request_error', () => {
  check('07 000b 04 02 08 80007530 01 02 05 07', {
    type: 'request_ok',
    requestId: 4,
    params: { expiresMs: 30000, largestObject: { group: 5, object: 7 } },
  });
  check('05 000d 03 10 43e9 08 6e6f20747261636b', {
    type: 'request_error',
    requestId: 3,
    errorCode: 0x10,
    retryInterval: 1001,
    reason: 'no track',
  });
  check('05 0005 03 4099 00 00', { type: 'request_error', requestId: 3, errorCode: 0x99, retryInterval: 0, reason: '' });
});

test('subscribe', () => {
  const hex = ['03', '0028', '02', VIDEO, '07', '02 41f4', '01 04', '03 01 6162', '0d 01', '10 20', '01 01 02', '01 02', '10 00'].join(
    '',
  );
  check(hex, {
    type: 'subscribe',
    requestId: 2,
    ...video,
    params: {
      authTokens: [{ kind: 'use-value', tokenType: 1, value: utf8('ab') }],
      deliveryTimeoutMs: 500,
      subscriberPriority: 32,
      groupOrder: 'descending',
      subscriptionFilter: { type: 'largest-object' },
      forward: true,
      newGroupRequest: 0,
    },
  });
});

test('subscribe_ok with track extensions', () => {
  check('04 0010 02 07 02 08 00 01 02 0a03 02 40c8 0c 20 14 02', {
    type: 'subscribe_ok',
    requestId: 2,
    trackAlias: 7,
    params: { expiresMs: 0, largestObject: { group: 10, object: 3 } },
    extensions: [
      { key: 0x02, value: 200 },
      { key: 0x0e, value: 32 },
      { key: 0x22, value: 2 },
    ],
  });
});

test('request_update', () => {
  check('02 0016 06 02 06 02 4064 01 02 02 01 0d 00 10 01 01 04 04050009 11 0b', {
    type: 'request_update',
    requestId: 6,
    existingRequestId: 2,
    params: {
      authTokens: [{ kind: 'use-alias', alias: 1 }],
      deliveryTimeoutMs: 100,
      subscriberPriority: 1,
      subscriptionFilter: { type: 'absolute-range', start: { group: 5, object: 0 }, endGroup: 9 },
      forward: false,
      newGroupRequest: 11,
    },
  });
});

test('unsubscribe, fetch_cancel, publish_namespace_done', () => {
  check('0a 0001 02', { type: 'unsubscribe', requestId: 2 });
  check('17 0001 04', { type: 'fetch_cancel', requestId: 4 });
  check('09 0001 01', { type: 'publish_namespace_done', requestId: 1 });
});

test('publish', () => {
  const hex = ['1d', '0029', '01', VIDEO, '03', '04', '03 02 0005', '05 8000ea60', '01 02 0102', '07 00', '04 5388', '2c 01'].join('');
  check(hex, {
    type: 'publish',
    requestId: 1,
    ...video,
    trackAlias: 3,
    params: {
      authTokens: [{ kind: 'delete', alias: 5 }],
      expiresMs: 60000,
      largestObject: { group: 1, object: 2 },
      forward: false,
    },
    extensions: [
      { key: 0x04, value: 5000 },
      { key: 0x30, value: 1 },
    ],
  });
});

test('publish_ok', () => {
  check('1e 0013 01 07 02 43e8 06 05 08 01 10 40c8 01 01 01 01 01 10 04', {
    type: 'publish_ok',
    requestId: 1,
    params: {
      deliveryTimeoutMs: 1000,
      subscriberPriority: 200,
      groupOrder: 'ascending',
      subscriptionFilter: { type: 'next-group-start' },
      expiresMs: 5,
      forward: true,
      newGroupRequest: 4,
    },
  });
});

test('publish_done with an uncounted stream count', () => {
  check('0b 000e 02 02 ffffffffffffffff 03 627965', {
    type: 'publish_done',
    requestId: 2,
    statusCode: 2,
    streamCount: 2 ** 62 - 1,
    reason: 'bye',
  });
  check('0b 0004 02 07 00 00', { type: 'publish_done', requestId: 2, statusCode: 7, streamCount: 0, reason: '' });
});

test('fetch: standalone, relative and absolute joining', () => {
  const hex = ['16', '0021', '04', '01', VIDEO, '01 00', '03 00', '03', '03 02 0300', '1d 0a', '02 02'].join('');
  check(hex, {
    type: 'fetch',
    requestId: 4,
    fetch: { kind: 'standalone', ...video, start: { group: 1, object: 0 }, end: { group: 3, object: 0 } },
    params: {
      authTokens: [{ kind: 'use-value', tokenType: 0, value: new Uint8Array(0) }],
      subscriberPriority: 10,
      groupOrder: 'descending',
    },
  });
  check('16 0005 06 02 02 03 00', {
    type: 'fetch',
    requestId: 6,
    fetch: { kind: 'relative', joiningRequestId: 2, joiningStart: 3 },
    params: {},
  });
  check('16 0006 08 03 02 4064 00', {
    type: 'fetch',
    requestId: 8,
    fetch: { kind: 'absolute', joiningRequestId: 2, joiningStart: 100 },
    params: {},
  });
});

test('fetch_ok', () => {
  check('18 0007 04 01 03 00 00 04 0a', {
    type: 'fetch_ok',
    requestId: 4,
    endOfTrack: true,
    endLocation: { group: 3, object: 0 },
    params: {},
    extensions: [{ key: 0x04, value: 10 }],
  });
});

test('track_status with an empty track name', () => {
  check('0d 0013 0a 02 06 636c696e6963 03 723432 00 01 03 02 0203', {
    type: 'track_status',
    requestId: 10,
    namespace: ['clinic', 'r42'],
    name: '',
    params: { authTokens: [{ kind: 'use-alias', alias: 3 }] },
  });
});

test('publish_namespace and namespace messages', () => {
  check('06 0013 01 02 06 636c696e6963 03 723432 01 03 03 03 02 6b', {
    type: 'publish_namespace',
    requestId: 1,
    namespace: ['clinic', 'r42'],
    params: { authTokens: [{ kind: 'use-value', tokenType: 2, value: utf8('k') }] },
  });
  check('08 0008 01 06 64722d6c6565', { type: 'namespace', suffix: ['dr-lee'] });
  check('08 0001 00', { type: 'namespace', suffix: [] });
  check('0e 0008 01 06 64722d6c6565', { type: 'namespace_done', suffix: ['dr-lee'] });
  check('0c 0003 01 20 00', { type: 'publish_namespace_cancel', requestId: 1, errorCode: 0x20, reason: '' });
});

test('subscribe_namespace', () => {
  check('11 000d 04 01 06 636c696e6963 01 01 10 00', {
    type: 'subscribe_namespace',
    requestId: 4,
    prefix: ['clinic'],
    options: 'namespace',
    params: { forward: false },
  });
  check('11 0004 04 00 02 00', { type: 'subscribe_namespace', requestId: 4, prefix: [], options: 'both', params: {} });
});

test('malformed messages close the session with the right code', () => {
  // Unknown message type 0x3f.
  closes('3f 0000', TerminationCode.ProtocolViolation);
  // UNSUBSCRIBE whose length (2) is longer than its payload (1 varint).
  closes('0a 0002 02 00', TerminationCode.ProtocolViolation);
  // MAX_REQUEST_ID whose length (1) cuts a two-byte varint.
  closes('15 0001 40', TerminationCode.ProtocolViolation);
  // SUBSCRIBE with an unknown parameter type 0x40 (delta 0x40).
  closes(['03', '0017', '02', VIDEO, '01', '4040 00'].join(''), TerminationCode.ProtocolViolation);
  // SUBSCRIBE with DELIVERY_TIMEOUT 0.
  closes(['03', '0016', '02', VIDEO, '01', '02 00'].join(''), TerminationCode.ProtocolViolation);
  // A namespace field of length 0.
  closes('06 0004 01 01 00 00', TerminationCode.ProtocolViolation);
  // SUBSCRIBE_OK with DEFAULT_PUBLISHER_GROUP_ORDER 3.
  closes('04 0005 02 07 00 22 03', TerminationCode.ProtocolViolation);
  // A key-value length above 2^16-1 (type 1, length 0x10000).
  closes('21 0006 01 0180010000', TerminationCode.ProtocolViolation);
});

test('random bytes never decode to anything but a message, Short or ProtocolError', () => {
  let seed = 42;
  const rand = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed;
  };
  for (let i = 0; i < 3000; i++) {
    const len = rand() % 24;
    const b = new Uint8Array(len);
    for (let j = 0; j < len; j++) b[j] = rand() & 0xff;
    // Make the frame length match sometimes so payload parsing is exercised.
    if (len >= 3) {
      b[0] = [0x03, 0x04, 0x16, 0x18, 0x1d, 0x21, 0x05, 0x07][rand() % 8];
      b[1] = 0;
      b[2] = len - 3;
    }
    try {
      decodeMessage(new Reader(b));
    } catch (e) {
      assert.ok(e instanceof Short || e instanceof ProtocolError, `unexpected ${String(e)}`);
    }
  }
});
