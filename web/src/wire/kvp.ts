/**
 * Key-Value-Pairs (draft-16 §1.4.2): setup parameters, message parameters and extension
 * headers. Types are delta-encoded from the previous type; an even type carries one varint,
 * an odd type a length (at most 2^16-1) and that many bytes.
 */
import { ProtocolError, Reader, Short, Writer } from './coding.js';

/** The longest value of an odd-typed pair. */
export const MAX_VALUE_LEN = 0xffff;

/** One pair with its absolute type: a number for an even type, bytes for an odd type. */
export interface KeyValue {
  /** The absolute type. */
  key: number;
  /** The value; a number exactly when `key` is even. */
  value: number | Uint8Array;
}

/** Pairs sorted by type, stable (the delta encoding cannot go down). */
export function sortPairs(pairs: KeyValue[]): KeyValue[] {
  return pairs
    .map((p, i) => [p, i] as const)
    .sort((a, b) => a[0].key - b[0].key || a[1] - b[1])
    .map(([p]) => p);
}

/** Writes pairs (sorting them first), without a count. */
export function writePairs(w: Writer, pairs: KeyValue[]): void {
  let prev = 0;
  for (const p of sortPairs(pairs)) {
    w.varint(p.key - prev);
    prev = p.key;
    if (p.key % 2 === 0) {
      if (typeof p.value !== 'number') throw new TypeError(`pair type ${p.key} needs a number`);
      w.varint(p.value);
    } else {
      if (typeof p.value === 'number') throw new TypeError(`pair type ${p.key} needs bytes`);
      if (p.value.length > MAX_VALUE_LEN) throw new RangeError(`pair type ${p.key} too long`);
      w.lenBytes(p.value);
    }
  }
}

/** Writes the count then the pairs. */
export function writeCountedPairs(w: Writer, pairs: KeyValue[]): void {
  w.varint(pairs.length);
  writePairs(w, pairs);
}

/** Reads one pair whose type is a delta from `prev`. */
export function readPair(r: Reader, prev: number): KeyValue {
  const key = prev + r.varint();
  if (key > Number.MAX_SAFE_INTEGER) throw new ProtocolError('key-value type overflows');
  if (key % 2 === 0) return { key, value: r.varint() };
  const len = r.varint();
  if (len > MAX_VALUE_LEN) throw new ProtocolError('key-value length above 2^16-1');
  return { key, value: r.bytes(len).slice() };
}

/** Reads `count` pairs. Nothing is reserved from the count: it comes from the peer. */
export function readPairs(r: Reader, count: number): KeyValue[] {
  const out: KeyValue[] = [];
  let prev = 0;
  for (let i = 0; i < count; i++) {
    const p = readPair(r, prev);
    prev = p.key;
    out.push(p);
  }
  return out;
}

/** Reads a count then that many pairs. */
export function readCountedPairs(r: Reader): KeyValue[] {
  return readPairs(r, r.varint());
}

/** Reads pairs to the end of `r` (a length-delimited block); a cut pair is malformed. */
export function readPairsToEnd(r: Reader): KeyValue[] {
  const out: KeyValue[] = [];
  let prev = 0;
  while (!r.done) {
    let p: KeyValue;
    try {
      p = readPair(r, prev);
    } catch (e) {
      if (e instanceof Short) throw new ProtocolError('key-value pair overruns its block');
      throw e;
    }
    prev = p.key;
    out.push(p);
  }
  return out;
}

/** The integer value of the first pair of type `key`, if any. */
export function intOf(pairs: readonly KeyValue[], key: number): number | undefined {
  const p = pairs.find((x) => x.key === key);
  return p && typeof p.value === 'number' ? p.value : undefined;
}

/** The byte value of the first pair of type `key`, if any. */
export function bytesOf(pairs: readonly KeyValue[], key: number): Uint8Array | undefined {
  const p = pairs.find((x) => x.key === key);
  return p && typeof p.value !== 'number' ? p.value : undefined;
}
