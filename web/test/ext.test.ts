// Guards: LOC properties and track extensions use the same bytes as the Rust proto crate's
// fixtures (proto/src/loc.rs, proto/src/ext.rs), so capture timestamps and decoder configs
// survive the trip between the browser and the relay.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ProtocolError, Reader, Writer, fromHex, toHex } from '../src/wire/coding.js';
import { readPairsToEnd, writePairs, readPairs } from '../src/wire/kvp.js';
import { captureTimestampUs, checkTrackExtensions, locFromExtensions, locToExtensions, type LocProperties } from '../src/wire/ext.js';

function block(hex: string) {
  return readPairsToEnd(new Reader(fromHex(hex)));
}

function encoded(p: LocProperties): string {
  const w = new Writer();
  writePairs(w, locToExtensions(p));
  return toHex(w.finish());
}

test('key-value delta encoding fixture', () => {
  const hex = '02050102686900003d4040';
  const pairs = readPairs(new Reader(fromHex(hex)), 4);
  assert.deepEqual(pairs, [
    { key: 2, value: 5 },
    { key: 3, value: new TextEncoder().encode('hi') },
    { key: 3, value: new Uint8Array(0) },
    { key: 0x40, value: 0x40 },
  ]);
  const w = new Writer();
  writePairs(w, pairs);
  assert.equal(toHex(w.finish()), hex);
});

test('LOC timestamp fixture: 8-byte varint wall clock microseconds', () => {
  const hex = '10c0063412a8c8af60';
  const p = locFromExtensions(block(hex));
  assert.equal(p.timestamp, 1_746_104_606_044_000);
  assert.equal(captureTimestampUs(block(hex)), 1_746_104_606_044_000);
  assert.equal(encoded(p), hex);
});

test('LOC timescale makes the timestamp media time, not wall clock', () => {
  const hex = '0880015f90088002bf20';
  const p = locFromExtensions(block(hex));
  assert.deepEqual([p.timescale, p.timestamp], [90_000, 180_000]);
  assert.equal(captureTimestampUs(block(hex)), undefined);
  assert.equal(encoded(p), hex);
});

test('LOC video config, audio config, frame marking, audio level', () => {
  for (const hex of ['0d040142c01e', '0f021190', '0901e0', '09039a0107', '0c409e', '088000bb80041e0301ab0143c0']) {
    assert.equal(encoded(locFromExtensions(block(hex))), hex);
  }
  assert.deepEqual(locFromExtensions(block('0d040142c01e')).videoConfig, fromHex('0142c01e'));
  assert.equal(locFromExtensions(block('0c409e')).audioLevel, 0x9e);
});

test('LOC properties inside Immutable Extensions are found', () => {
  assert.equal(captureTimestampUs(block('0b021025')), 0x25);
});

test('bad LOC values are errors', () => {
  assert.throws(() => locFromExtensions(block('0900')), /frame marking/);
  assert.throws(() => locFromExtensions(block('0c4100')), /audio level/);
  assert.throws(() => locFromExtensions(block('0800')), /timescale/);
});

test('track extension fixtures and forbidden values', () => {
  const all = block('024064025388' + '0a10' + '1402' + '0e01');
  assert.deepEqual(all, [
    { key: 0x02, value: 100 },
    { key: 0x04, value: 5000 },
    { key: 0x0e, value: 16 },
    { key: 0x22, value: 2 },
    { key: 0x30, value: 1 },
  ]);
  checkTrackExtensions(all);
  assert.throws(() => checkTrackExtensions(block('0200')), ProtocolError);
  assert.throws(() => checkTrackExtensions(block('0e4100')), ProtocolError);
  assert.throws(() => checkTrackExtensions(block('2203')), ProtocolError);
  assert.throws(() => checkTrackExtensions(block('3002')), ProtocolError);
  assert.throws(() => checkTrackExtensions(block('0e01 0001')), ProtocolError, 'repeated');
});

test('a pair cut by the end of its block is malformed, not short', () => {
  assert.throws(() => block('0105ab'), ProtocolError);
});
