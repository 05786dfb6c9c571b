/**
 * The data plane of draft-16 §10: subgroup streams and fetch streams.
 *
 * Every unidirectional stream starts with a varint type: 0x10..0x3D (minus the reserved
 * Subgroup ID mode) opens a subgroup stream, 0x05 a fetch stream ({@link streamKind}).
 * {@link SubgroupReader} and {@link FetchReader} are fed bytes as they arrive and yield
 * each object once its payload is complete; {@link SubgroupWriter} writes objects.
 */
import { ProtocolError, Reader, Short, VARINT_MAX, Writer } from './coding.js';
import { type KeyValue, readPairsToEnd, writePairs } from './kvp.js';

/** The FETCH_HEADER stream type. */
export const FETCH_HEADER_TYPE = 0x05;

/** Object status (draft-16 §10.2.1.1). */
export const ObjectStatus = {
  /** A normal object with a payload. */
  Normal: 0x0,
  /** No objects follow in this group. */
  EndOfGroup: 0x3,
  /** No objects follow in this track. */
  EndOfTrack: 0x4,
} as const;

const EXTENSIONS = 0x01;
const SUBGROUP_ID_MODE = 0x06;
const END_OF_GROUP = 0x08;
const SUBGROUP_BIT = 0x10;
const DEFAULT_PRIORITY = 0x20;

/** How a subgroup header names its Subgroup ID. */
export type SubgroupIdMode = 'zero' | 'first-object' | number;

/** SUBGROUP_HEADER (draft-16 §10.4.2). */
export interface SubgroupHeader {
  /** The Track Alias the subscription or PUBLISH gave the track. */
  trackAlias: number;
  /** Group ID of every object on the stream. */
  groupId: number;
  /** Subgroup ID: 0, the first object's ID, or explicit. */
  subgroupId: SubgroupIdMode;
  /** Publisher Priority, or undefined to inherit the track's default. */
  publisherPriority?: number;
  /** True if objects carry an extension headers field. */
  extensions: boolean;
  /** True if the stream's end closes the group. */
  endOfGroup: boolean;
}

/** One object read from a data stream. */
export interface MoqObject {
  /** Group ID. */
  groupId: number;
  /** Subgroup ID (undefined while unknown, or for a datagram-preference fetch object). */
  subgroupId?: number;
  /** Object ID. */
  objectId: number;
  /** Object status ({@link ObjectStatus}). */
  status: number;
  /** Publisher priority, if known. */
  publisherPriority?: number;
  /** Extension headers in arrival order. */
  extensions: KeyValue[];
  /** The payload (empty for a status object). */
  payload: Uint8Array;
  /** When the first byte of the object arrived (the time passed to `push`). */
  firstByteAt: number;
  /** When the last byte of the object arrived. */
  receivedAt: number;
}

/** True for a valid subgroup stream type (0b00X1XXXX without the reserved ID mode). */
export function isSubgroupType(t: number): boolean {
  return t <= 0x3f && (t & SUBGROUP_BIT) !== 0 && (t & SUBGROUP_ID_MODE) !== SUBGROUP_ID_MODE;
}

/** What a unidirectional stream carries, from its first varint. Throws Short or ProtocolError. */
export function streamKind(first: Uint8Array): 'subgroup' | 'fetch' {
  const t = new Reader(first).varint();
  if (t === FETCH_HEADER_TYPE) return 'fetch';
  if (isSubgroupType(t)) return 'subgroup';
  throw new ProtocolError('unknown data stream type');
}

/** The stream type of a header. */
export function subgroupType(h: SubgroupHeader): number {
  let t = SUBGROUP_BIT;
  if (h.extensions) t |= EXTENSIONS;
  t |= (h.subgroupId === 'zero' ? 0 : h.subgroupId === 'first-object' ? 1 : 2) << 1;
  if (h.endOfGroup) t |= END_OF_GROUP;
  if (h.publisherPriority === undefined) t |= DEFAULT_PRIORITY;
  return t;
}

/** Writes a subgroup header. */
export function encodeSubgroupHeader(h: SubgroupHeader): Uint8Array {
  const w = new Writer(16);
  w.varint(subgroupType(h)).varint(h.trackAlias).varint(h.groupId);
  if (typeof h.subgroupId === 'number') w.varint(h.subgroupId);
  if (h.publisherPriority !== undefined) w.u8(h.publisherPriority);
  return w.finish();
}

/** Reads a subgroup header. */
export function decodeSubgroupHeader(r: Reader): SubgroupHeader {
  const t = r.varint();
  if (!isSubgroupType(t)) throw new ProtocolError('invalid SUBGROUP_HEADER type');
  const trackAlias = r.varint();
  const groupId = r.varint();
  const mode = (t & SUBGROUP_ID_MODE) >> 1;
  const subgroupId: SubgroupIdMode = mode === 0 ? 'zero' : mode === 1 ? 'first-object' : r.varint();
  const h: SubgroupHeader = {
    trackAlias,
    groupId,
    subgroupId,
    extensions: (t & EXTENSIONS) !== 0,
    endOfGroup: (t & END_OF_GROUP) !== 0,
  };
  if ((t & DEFAULT_PRIORITY) === 0) h.publisherPriority = r.u8();
  return h;
}

function readObjectExtensions(r: Reader, max: number): KeyValue[] {
  const len = r.varint();
  if (len > max) throw new ProtocolError(`extension headers of ${len} bytes exceed ${max}`);
  return readPairsToEnd(r.sub(len));
}

/** Limits a reader applies to what a peer sends. */
export interface ReaderLimits {
  /** Largest object payload accepted (default 16 MiB: far above a 4K key frame). */
  maxObjectSize: number;
  /** Largest extension block accepted (default 64 KiB: a video config fits comfortably). */
  maxExtensionsSize: number;
}

const DEFAULT_LIMITS: ReaderLimits = { maxObjectSize: 16 << 20, maxExtensionsSize: 64 << 10 };

/** Accumulates chunks in a buffer that grows geometrically; consumed bytes are dropped. */
class Accumulator {
  private buf = new Uint8Array(0);
  private start = 0;
  private end = 0;

  push(chunk: Uint8Array): void {
    if (this.end + chunk.length > this.buf.length) {
      const live = this.end - this.start;
      let cap = Math.max(1024, this.buf.length);
      while (cap < live + chunk.length) cap *= 2;
      const next = cap === this.buf.length ? this.buf : new Uint8Array(cap);
      next.set(this.buf.subarray(this.start, this.end), 0);
      this.buf = next;
      this.start = 0;
      this.end = live;
    }
    this.buf.set(chunk, this.end);
    this.end += chunk.length;
  }

  get length(): number {
    return this.end - this.start;
  }

  reader(): Reader {
    return new Reader(this.buf, this.start, this.end);
  }

  consume(n: number): void {
    this.start += n;
    if (this.start === this.end) this.start = this.end = 0;
  }

  take(n: number): Uint8Array {
    const out = this.buf.slice(this.start, this.start + n);
    this.consume(n);
    return out;
  }
}

interface PendingHead {
  objectId: number;
  extensions: KeyValue[];
  status: number;
  len: number;
  firstByteAt: number;
  subgroupId?: number;
  groupId: number;
  publisherPriority?: number;
}

/**
 * Reads a subgroup stream incrementally: feed chunks with {@link push} (with the time they
 * arrived), mark the end with {@link finish}, and drain objects with {@link poll}.
 * A malformed stream makes `poll` throw {@link ProtocolError}, and keep throwing it.
 */
export class SubgroupReader {
  private acc = new Accumulator();
  private hdr?: SubgroupHeader;
  private prev?: number;
  private pending?: PendingHead;
  private ended = false;
  private fin = false;
  private error?: ProtocolError;
  private sgid?: number;
  private lastChunkAt = 0;
  private headStartAt?: number;

  constructor(private readonly limits: ReaderLimits = DEFAULT_LIMITS) {}

  /** The header, once its bytes arrived. */
  get header(): SubgroupHeader | undefined {
    return this.hdr;
  }

  /** The ID of the last object returned by {@link poll}. */
  get lastObjectId(): number | undefined {
    return this.prev;
  }

  /** The Subgroup ID, once known. */
  get subgroupId(): number | undefined {
    return this.sgid;
  }

  /** True once the stream ended cleanly and every object was drained. */
  get finished(): boolean {
    return this.fin && !this.error && this.hdr !== undefined && !this.pending && this.acc.length === 0;
  }

  /** Feeds bytes that arrived at time `now` (milliseconds, any clock). */
  push(chunk: Uint8Array, now = 0): void {
    if (this.error || this.fin) return;
    if (this.acc.length === 0 && this.headStartAt === undefined) this.headStartAt = now;
    this.lastChunkAt = now;
    this.acc.push(chunk);
    if (!this.hdr) {
      const r = this.acc.reader();
      try {
        const h = decodeSubgroupHeader(r);
        this.acc.consume(r.pos - (this.acc.reader().pos));
        this.hdr = h;
        if (h.subgroupId === 'zero') this.sgid = 0;
        else if (typeof h.subgroupId === 'number') this.sgid = h.subgroupId;
        this.headStartAt = this.acc.length > 0 ? now : undefined;
      } catch (e) {
        if (!(e instanceof Short)) this.error = asProtocolError(e);
      }
    }
  }

  /** Marks the end of the stream (FIN). */
  finish(): void {
    this.fin = true;
  }

  private fail(e: unknown): never {
    this.error = asProtocolError(e);
    throw this.error;
  }

  /** The next complete object, or undefined if more bytes are needed. */
  poll(): MoqObject | undefined {
    if (this.error) throw this.error;
    const h = this.hdr;
    if (!h) {
      if (this.fin) this.fail(new ProtocolError('stream ended inside the subgroup header'));
      return undefined;
    }
    if (!this.pending) {
      if (this.acc.length === 0) return undefined;
      if (this.ended) this.fail(new ProtocolError('object after End of Group or End of Track'));
      const r = this.acc.reader();
      const base = r.pos;
      try {
        const delta = r.varint();
        let objectId = delta;
        if (this.prev !== undefined) {
          objectId = this.prev + delta + 1;
          if (objectId > VARINT_MAX) throw new ProtocolError('object ID delta overflows 2^62-1');
        }
        const extensions = h.extensions ? readObjectExtensions(r, this.limits.maxExtensionsSize) : [];
        const len = r.varint();
        if (len > this.limits.maxObjectSize) {
          throw new ProtocolError(`object payload of ${len} bytes exceeds ${this.limits.maxObjectSize}`);
        }
        let status: number = ObjectStatus.Normal;
        if (len === 0) {
          status = r.varint();
          if (status !== 0 && status !== 3 && status !== 4) throw new ProtocolError('unknown object status');
          if (status !== 0 && extensions.length > 0) {
            throw new ProtocolError('extension headers on an object whose status is not Normal');
          }
        }
        this.acc.consume(r.pos - base);
        this.pending = {
          objectId,
          extensions,
          status,
          len,
          firstByteAt: this.headStartAt ?? this.lastChunkAt,
          groupId: h.groupId,
        };
      } catch (e) {
        if (e instanceof Short) {
          if (this.fin) this.fail(new ProtocolError('stream ended inside an object'));
          return undefined;
        }
        this.fail(e);
      }
    }
    const p = this.pending!;
    if (this.acc.length < p.len) {
      if (this.fin) this.fail(new ProtocolError('stream ended inside an object payload'));
      return undefined;
    }
    this.pending = undefined;
    const payload = this.acc.take(p.len);
    this.headStartAt = this.acc.length > 0 ? this.lastChunkAt : undefined;
    if (this.prev === undefined && this.sgid === undefined) this.sgid = p.objectId;
    this.prev = p.objectId;
    this.ended = p.status !== ObjectStatus.Normal;
    const o: MoqObject = {
      groupId: h.groupId,
      subgroupId: this.sgid,
      objectId: p.objectId,
      status: p.status,
      extensions: p.extensions,
      payload,
      firstByteAt: p.firstByteAt,
      receivedAt: this.lastChunkAt,
    };
    if (h.publisherPriority !== undefined) o.publisherPriority = h.publisherPriority;
    return o;
  }
}

function asProtocolError(e: unknown): ProtocolError {
  if (e instanceof ProtocolError) return e;
  return new ProtocolError(e instanceof Error ? e.message : String(e));
}

/** What {@link SubgroupWriter.object} writes. */
export interface ObjectToWrite {
  /** Object ID, greater than the previous one on the stream. */
  objectId: number;
  /** Extension headers (only if the header says objects carry them). */
  extensions?: KeyValue[];
  /** Payload; empty together with a non-Normal `status`. */
  payload?: Uint8Array;
  /** Object status, Normal by default. */
  status?: number;
}

/** Writes one subgroup stream: the header, then objects with delta-encoded IDs. */
export class SubgroupWriter {
  private prev?: number;
  private ended = false;

  constructor(readonly header: SubgroupHeader) {}

  /** The header bytes, written first on the stream. */
  encodeHeader(): Uint8Array {
    return encodeSubgroupHeader(this.header);
  }

  /** The bytes of one object. Throws Error for IDs out of order or misuse. */
  object(o: ObjectToWrite): Uint8Array {
    if (this.ended) throw new Error('object written after an End of Group or End of Track object');
    if (this.prev !== undefined && o.objectId <= this.prev) {
      throw new Error(`object ID ${o.objectId} does not follow ${this.prev}`);
    }
    const ext = o.extensions ?? [];
    const payload = o.payload ?? new Uint8Array(0);
    const status = o.status ?? ObjectStatus.Normal;
    if (!this.header.extensions && ext.length > 0) throw new Error('object has extensions but the header says none');
    if (status !== ObjectStatus.Normal && (payload.length > 0 || ext.length > 0)) {
      throw new Error('a status object has no payload and no extensions');
    }
    const w = new Writer(payload.length + 32);
    w.varint(this.prev === undefined ? o.objectId : o.objectId - this.prev - 1);
    if (this.header.extensions) {
      const block = new Writer();
      writePairs(block, ext);
      w.lenBytes(block.finish());
    }
    w.varint(payload.length);
    if (payload.length === 0) w.varint(status);
    else w.bytes(payload);
    this.prev = o.objectId;
    this.ended = status !== ObjectStatus.Normal;
    return w.finish();
  }
}

// ---------------------------------------------------------------------------------------
// Fetch streams (draft-16 §10.4.4)
// ---------------------------------------------------------------------------------------

const F_SUBGROUP_FIELD = 0x03;
const F_OBJECT_ID = 0x04;
const F_GROUP_ID = 0x08;
const F_PRIORITY = 0x10;
const F_EXTENSIONS = 0x20;
const F_DATAGRAM = 0x40;
const END_OF_NON_EXISTENT_RANGE = 0x8c;
const END_OF_UNKNOWN_RANGE = 0x10c;

/** An End of Range marker on a fetch stream. */
export interface EndOfRange {
  /** 'non-existent' (0x8C) or 'unknown' (0x10C). */
  kind: 'non-existent' | 'unknown';
  /** Group ID of the range's last location. */
  groupId: number;
  /** Object ID of the range's last location. */
  objectId: number;
}

/** One item of a fetch stream. */
export type FetchItem = { type: 'object'; object: MoqObject } | ({ type: 'end-of-range' } & EndOfRange);

/** Writes a FETCH_HEADER. */
export function encodeFetchHeader(requestId: number): Uint8Array {
  return new Writer(8).varint(FETCH_HEADER_TYPE).varint(requestId).finish();
}

/** Writes fetch stream objects, choosing the compact form against the prior object. */
export class FetchWriter {
  private loc?: [number, number];
  private sub?: number;
  private prio?: number;

  /** The bytes of one object (subgroupId undefined: datagram preference). */
  object(o: {
    groupId: number;
    subgroupId?: number;
    objectId: number;
    publisherPriority: number;
    extensions?: KeyValue[];
    payload: Uint8Array;
  }): Uint8Array {
    let flags = 0;
    const ext = o.extensions ?? [];
    const w = new Writer(o.payload.length + 32);
    const groupField = !this.loc || this.loc[0] !== o.groupId;
    const objectField = !this.loc || this.loc[1] + 1 !== o.objectId;
    if (groupField) flags |= F_GROUP_ID;
    if (objectField) flags |= F_OBJECT_ID;
    let subField: number | undefined;
    if (o.subgroupId === undefined) flags |= F_DATAGRAM;
    else if (o.subgroupId === 0) flags |= 0x00;
    else if (this.sub === o.subgroupId) flags |= 0x01;
    else if (this.sub !== undefined && this.sub + 1 === o.subgroupId) flags |= 0x02;
    else {
      flags |= F_SUBGROUP_FIELD;
      subField = o.subgroupId;
    }
    if (this.prio !== o.publisherPriority) flags |= F_PRIORITY;
    if (ext.length > 0) flags |= F_EXTENSIONS;
    w.varint(flags);
    if (groupField) w.varint(o.groupId);
    if (subField !== undefined) w.varint(subField);
    if (objectField) w.varint(o.objectId);
    if (flags & F_PRIORITY) w.u8(o.publisherPriority);
    if (ext.length > 0) {
      const block = new Writer();
      writePairs(block, ext);
      w.lenBytes(block.finish());
    }
    w.lenBytes(o.payload);
    this.loc = [o.groupId, o.objectId];
    this.sub = o.subgroupId;
    this.prio = o.publisherPriority;
    return w.finish();
  }

  /** The bytes of an End of Range marker. */
  endOfRange(e: EndOfRange): Uint8Array {
    this.loc = [e.groupId, e.objectId];
    return new Writer(20)
      .varint(e.kind === 'non-existent' ? END_OF_NON_EXISTENT_RANGE : END_OF_UNKNOWN_RANGE)
      .varint(e.groupId)
      .varint(e.objectId)
      .finish();
  }
}

/**
 * Reads a fetch stream incrementally, like {@link SubgroupReader}: the FETCH_HEADER's
 * Request ID becomes known first ({@link requestId}), then items.
 */
export class FetchReader {
  private acc = new Accumulator();
  private reqId?: number;
  private loc?: [number, number];
  private lastObject?: { subgroupId?: number; priority: number };
  private pending?: PendingHead;
  private fin = false;
  private error?: ProtocolError;
  private lastChunkAt = 0;
  private headStartAt?: number;

  constructor(private readonly limits: ReaderLimits = DEFAULT_LIMITS) {}

  /** The Request ID of the FETCH this stream answers, once its header arrived. */
  get requestId(): number | undefined {
    return this.reqId;
  }

  /** True once the stream ended cleanly and every item was drained. */
  get finished(): boolean {
    return this.fin && !this.error && this.reqId !== undefined && !this.pending && this.acc.length === 0;
  }

  /** Feeds bytes that arrived at time `now`. */
  push(chunk: Uint8Array, now = 0): void {
    if (this.error || this.fin) return;
    if (this.acc.length === 0 && this.headStartAt === undefined) this.headStartAt = now;
    this.lastChunkAt = now;
    this.acc.push(chunk);
    if (this.reqId === undefined) {
      const r = this.acc.reader();
      const base = r.pos;
      try {
        if (r.varint() !== FETCH_HEADER_TYPE) throw new ProtocolError('not a FETCH_HEADER');
        this.reqId = r.varint();
        this.acc.consume(r.pos - base);
        this.headStartAt = this.acc.length > 0 ? now : undefined;
      } catch (e) {
        if (!(e instanceof Short)) this.error = asProtocolError(e);
      }
    }
  }

  /** Marks the end of the stream. */
  finish(): void {
    this.fin = true;
  }

  private fail(e: unknown): never {
    this.error = asProtocolError(e);
    throw this.error;
  }

  private priorLoc(): [number, number] {
    if (!this.loc) throw new ProtocolError('fetch object refers to a prior object that does not exist');
    return this.loc;
  }

  private priorSub(): number {
    const s = this.lastObject?.subgroupId;
    if (s === undefined) throw new ProtocolError('fetch object refers to a prior Subgroup ID that does not exist');
    return s;
  }

  /** The next complete item, or undefined if more bytes are needed. */
  poll(): FetchItem | undefined {
    if (this.error) throw this.error;
    if (this.reqId === undefined) {
      if (this.fin) this.fail(new ProtocolError('stream ended inside the fetch header'));
      return undefined;
    }
    if (!this.pending) {
      if (this.acc.length === 0) return undefined;
      const r = this.acc.reader();
      const base = r.pos;
      try {
        const flags = r.varint();
        if (flags >= 0x80) {
          let kind: EndOfRange['kind'];
          if (flags === END_OF_NON_EXISTENT_RANGE) kind = 'non-existent';
          else if (flags === END_OF_UNKNOWN_RANGE) kind = 'unknown';
          else throw new ProtocolError('invalid fetch Serialization Flags');
          const groupId = r.varint();
          const objectId = r.varint();
          this.acc.consume(r.pos - base);
          this.loc = [groupId, objectId];
          this.headStartAt = this.acc.length > 0 ? this.lastChunkAt : undefined;
          return { type: 'end-of-range', kind, groupId, objectId };
        }
        const groupId = flags & F_GROUP_ID ? r.varint() : this.priorLoc()[0];
        let subgroupId: number | undefined;
        if (!(flags & F_DATAGRAM)) {
          switch (flags & 0x03) {
            case 0:
              subgroupId = 0;
              break;
            case 1:
              subgroupId = this.priorSub();
              break;
            case 2:
              subgroupId = this.priorSub() + 1;
              break;
            default:
              subgroupId = r.varint();
          }
        }
        const objectId = flags & F_OBJECT_ID ? r.varint() : this.priorLoc()[1] + 1;
        let priority: number;
        if (flags & F_PRIORITY) priority = r.u8();
        else if (this.lastObject) priority = this.lastObject.priority;
        else throw new ProtocolError('fetch object refers to a prior priority that does not exist');
        const extensions = flags & F_EXTENSIONS ? readObjectExtensions(r, this.limits.maxExtensionsSize) : [];
        const len = r.varint();
        if (len > this.limits.maxObjectSize) {
          throw new ProtocolError(`object payload of ${len} bytes exceeds ${this.limits.maxObjectSize}`);
        }
        this.acc.consume(r.pos - base);
        this.pending = {
          objectId,
          extensions,
          status: ObjectStatus.Normal,
          len,
          firstByteAt: this.headStartAt ?? this.lastChunkAt,
          subgroupId,
          groupId,
          publisherPriority: priority,
        };
      } catch (e) {
        if (e instanceof Short) {
          if (this.fin) this.fail(new ProtocolError('stream ended inside a fetch object'));
          return undefined;
        }
        this.fail(e);
      }
    }
    const p = this.pending!;
    if (this.acc.length < p.len) {
      if (this.fin) this.fail(new ProtocolError('stream ended inside an object payload'));
      return undefined;
    }
    this.pending = undefined;
    const payload = this.acc.take(p.len);
    this.headStartAt = this.acc.length > 0 ? this.lastChunkAt : undefined;
    this.loc = [p.groupId, p.objectId];
    this.lastObject = { subgroupId: p.subgroupId, priority: p.publisherPriority! };
    const o: MoqObject = {
      groupId: p.groupId,
      objectId: p.objectId,
      status: ObjectStatus.Normal,
      publisherPriority: p.publisherPriority,
      extensions: p.extensions,
      payload,
      firstByteAt: p.firstByteAt,
      receivedAt: this.lastChunkAt,
    };
    if (p.subgroupId !== undefined) o.subgroupId = p.subgroupId;
    return { type: 'object', object: o };
  }
}
