/**
 * Primitive encodings of MoQT draft-16: QUIC variable-length integers (RFC 9000 §16),
 * length-prefixed byte strings, and the decode outcomes "need more bytes" ({@link Short})
 * and "malformed" ({@link ProtocolError}).
 *
 * Integers are JavaScript numbers. Every ID, length and timestamp tiermesh uses stays far
 * below 2^53, where numbers are exact. The one field that uses the top of the varint range
 * (a Stream Count of 2^62-1 meaning "unknown") reads as 2^62 and is written back as 2^62-1:
 * {@link VARINT_MAX} compares equal to both.
 */

/** The largest value a QUIC varint carries (2^62-1; as a number it rounds to 2^62). */
export const VARINT_MAX = 2 ** 62 - 1;

/** Session termination codes (draft-16 §3.4) that this client sends or reports. */
export const TerminationCode = {
  /** The session ends without an error. */
  NoError: 0x0,
  /** An implementation specific error. */
  InternalError: 0x1,
  /** The client is not authorized to establish a session. */
  Unauthorized: 0x2,
  /** The peer did something the draft forbids. */
  ProtocolViolation: 0x3,
  /** A Request ID was invalid or out of sequence. */
  InvalidRequestId: 0x4,
  /** A Track Alias already in use was used again. */
  DuplicateTrackAlias: 0x5,
  /** A key-value pair did not match its type's serialization. */
  KeyValueFormattingError: 0x6,
  /** A Request ID at or above the maximum was used. */
  TooManyRequests: 0x7,
  /** PATH was used where it is not allowed. */
  InvalidPath: 0x8,
  /** PATH does not conform to its rules. */
  MalformedPath: 0x9,
  /** The peer took too long to close after GOAWAY. */
  GoawayTimeout: 0x10,
  /** The peer took too long to answer a control message. */
  ControlMessageTimeout: 0x11,
  /** The peer took too long to send expected data. */
  DataStreamTimeout: 0x12,
  /** No version the server supports was offered. */
  VersionNegotiationFailed: 0x15,
  /** AUTHORITY was sent by a server or is unusable. */
  InvalidAuthority: 0x19,
} as const;

/** Thrown by decoders when the input ends before the value does: retry with more bytes. */
export class Short extends Error {
  constructor() {
    super('need more bytes');
    this.name = 'Short';
  }
}

/** Thrown by decoders for input that can never decode: the session closes with `code`. */
export class ProtocolError extends Error {
  /** The session termination code the draft names for this error. */
  readonly code: number;
  constructor(reason: string, code: number = TerminationCode.ProtocolViolation) {
    super(reason);
    this.name = 'ProtocolError';
    this.code = code;
  }
}

/** Number of bytes the shortest varint encoding of `v` takes. */
export function varintLen(v: number): number {
  if (v <= 0x3f) return 1;
  if (v <= 0x3fff) return 2;
  if (v <= 0x3fffffff) return 4;
  return 8;
}

/** A growable byte buffer with MoQT primitive writers. */
export class Writer {
  private buf: Uint8Array;
  private len = 0;

  constructor(capacity = 64) {
    this.buf = new Uint8Array(capacity);
  }

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  /** Bytes written so far. */
  get length(): number {
    return this.len;
  }

  /** A copy of the bytes written. */
  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }

  /** Appends one byte. */
  u8(v: number): this {
    this.reserve(1);
    this.buf[this.len++] = v & 0xff;
    return this;
  }

  /** Appends a big-endian 16-bit integer. */
  u16(v: number): this {
    this.reserve(2);
    this.buf[this.len++] = (v >> 8) & 0xff;
    this.buf[this.len++] = v & 0xff;
    return this;
  }

  /** Appends `v` as a QUIC varint in its shortest form. Throws RangeError outside 0..2^62-1. */
  varint(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > VARINT_MAX) {
      throw new RangeError(`varint out of range: ${v}`);
    }
    const n = varintLen(v);
    this.reserve(n);
    if (n === 1) {
      this.buf[this.len++] = v;
    } else if (n === 2) {
      this.buf[this.len++] = 0x40 | (v >> 8);
      this.buf[this.len++] = v & 0xff;
    } else if (n === 4) {
      this.buf[this.len++] = 0x80 | ((v >>> 24) & 0x3f);
      this.buf[this.len++] = (v >>> 16) & 0xff;
      this.buf[this.len++] = (v >>> 8) & 0xff;
      this.buf[this.len++] = v & 0xff;
    } else {
      // 2^62 (the rounded VARINT_MAX) is written as 2^62-1.
      let b = v >= 2 ** 62 ? (1n << 62n) - 1n : BigInt(v);
      b |= 0xc000000000000000n;
      for (let i = 7; i >= 0; i--) {
        this.buf[this.len + i] = Number(b & 0xffn);
        b >>= 8n;
      }
      this.len += 8;
    }
    return this;
  }

  /** Appends raw bytes. */
  bytes(b: Uint8Array): this {
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
    return this;
  }

  /** Appends a varint length then the bytes. */
  lenBytes(b: Uint8Array): this {
    return this.varint(b.length).bytes(b);
  }

  /** Appends a varint length then the UTF-8 bytes of `s`. */
  string(s: string): this {
    return this.lenBytes(utf8(s));
  }
}

/** A cursor over received bytes. Every read throws {@link Short} past the end. */
export class Reader {
  /** Current offset into `buf`. */
  pos: number;
  private readonly end: number;

  constructor(
    readonly buf: Uint8Array,
    start = 0,
    end = buf.length,
  ) {
    this.pos = start;
    this.end = end;
  }

  /** Bytes left to read. */
  get remaining(): number {
    return this.end - this.pos;
  }

  /** True when every byte has been read. */
  get done(): boolean {
    return this.pos >= this.end;
  }

  /** Reads one byte. */
  u8(): number {
    if (this.pos >= this.end) throw new Short();
    return this.buf[this.pos++];
  }

  /** Reads a big-endian 16-bit integer. */
  u16(): number {
    if (this.pos + 2 > this.end) throw new Short();
    const v = (this.buf[this.pos] << 8) | this.buf[this.pos + 1];
    this.pos += 2;
    return v;
  }

  /** Reads a QUIC varint in any of its four forms. */
  varint(): number {
    if (this.pos >= this.end) throw new Short();
    const first = this.buf[this.pos];
    const n = 1 << (first >> 6);
    if (this.pos + n > this.end) throw new Short();
    let v = first & 0x3f;
    for (let i = 1; i < n; i++) v = v * 256 + this.buf[this.pos + i];
    this.pos += n;
    return v;
  }

  /** Reads exactly `n` bytes (a view, not a copy). */
  bytes(n: number): Uint8Array {
    if (this.pos + n > this.end) throw new Short();
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  /** Reads a varint length, refusing one above `max` before reading, then that many bytes. */
  lenBytes(max: number, what: string): Uint8Array {
    const n = this.varint();
    if (n > max) throw new ProtocolError(`${what} longer than ${max} bytes`);
    return this.bytes(n);
  }

  /** A reader over the next `n` bytes; this reader moves past them. */
  sub(n: number): Reader {
    if (this.pos + n > this.end) throw new Short();
    const r = new Reader(this.buf, this.pos, this.pos + n);
    this.pos += n;
    return r;
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** UTF-8 bytes of a string. */
export function utf8(s: string): Uint8Array {
  return encoder.encode(s);
}

/** A string from UTF-8 bytes (invalid sequences become U+FFFD). */
export function fromUtf8(b: Uint8Array): string {
  return decoder.decode(b);
}

/** Hex of bytes, lower case. */
export function toHex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/** Bytes of a hex string; whitespace is ignored. Throws on odd length or a bad digit. */
export function fromHex(hex: string): Uint8Array {
  const s = hex.replace(/\s+/g, '');
  if (s.length % 2 !== 0 || /[^0-9a-fA-F]/.test(s)) throw new Error(`not hex: ${hex}`);
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Concatenates byte arrays. */
export function concat(parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
