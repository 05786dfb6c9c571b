/**
 * A MoQT draft-16 session over a {@link Transport}: setup, subscriptions and fetches (the
 * subscriber side), namespaces and tracks (the publisher side), and the data streams of
 * both.
 *
 * ```ts
 * const session = await Session.connect('https://127.0.0.1:4443/demo/live', { certificateHash });
 * const sub = await session.subscribe(['demo', 'live'], 'catalog', { onObject: (o) => … });
 * await sub.joiningFetch(0);
 * ```
 */
import { ProtocolError, Reader, Short, TerminationCode, utf8 } from './wire/coding.js';
import type { KeyValue } from './wire/kvp.js';
import {
  type GroupOrder,
  type Location,
  type Message,
  type MessageParams,
  type SubscriptionFilter,
  PublishDoneCode,
  RequestErrorCode,
  STREAM_COUNT_UNKNOWN,
  decodeMessage,
  encodeMessage,
} from './wire/message.js';
import {
  type MoqObject,
  FetchReader,
  FetchWriter,
  SubgroupReader,
  SubgroupWriter,
  encodeFetchHeader,
  streamKind,
} from './wire/data.js';
import { Ext } from './wire/ext.js';
import { type CloseInfo, type Transport, connectWebTransport } from './transport.js';

/** Token Type of an AUTHORIZATION TOKEN carrying a JWT (tiermesh's relay: "negotiated out of band"). */
export const JWT_TOKEN_TYPE = 0;

/** Options of {@link Session.connect}. */
export interface SessionOptions {
  /** SHA-256 of the relay's development certificate, 64 hex digits. */
  certificateHash?: string;
  /** A JWT sent in CLIENT_SETUP (the URL's `?jwt=` works too). */
  authToken?: string;
  /** Requests the peer may open before this side raises the limit (default 256). */
  maxRequestId?: number;
  /** Milliseconds to wait for SERVER_SETUP (default 5000). */
  setupTimeoutMs?: number;
  /** Milliseconds to wait for a response to a request (default 10000). */
  requestTimeoutMs?: number;
  /** The clock used to stamp arrivals, in milliseconds (default performance.now). */
  now?: () => number;
  /** Called when the peer sends GOAWAY. */
  onGoaway?: (newSessionUri: string) => void;
  /** Called for every control message sent and received (for debugging). */
  onMessage?: (direction: 'send' | 'recv', m: Message) => void;
}

/** A REQUEST_ERROR from the peer, or a request this side gave up on. */
export class RequestError extends Error {
  /** The REQUEST_ERROR code ({@link RequestErrorCode}); Timeout when no answer came. */
  readonly code: number;
  /** Milliseconds before a retry makes sense, if the peer said so. */
  readonly retryAfterMs?: number;
  constructor(what: string, code: number, reason: string, retryInterval = 0) {
    super(`${what} refused: ${errorName(code)}${reason ? ` (${reason})` : ''}`);
    this.name = 'RequestError';
    this.code = code;
    if (retryInterval > 0) this.retryAfterMs = retryInterval - 1;
  }
}

/** The session closed while something waited on it. */
export class SessionClosedError extends Error {
  /** How it closed. */
  readonly info: CloseInfo;
  constructor(info: CloseInfo) {
    super(`session closed by ${info.by}: ${info.reason || `code ${info.code}`}`);
    this.name = 'SessionClosedError';
    this.info = info;
  }
}

function errorName(code: number): string {
  const e = Object.entries(RequestErrorCode).find(([, v]) => v === code);
  return e ? e[0] : `error 0x${code.toString(16)}`;
}

/** Options of {@link Session.subscribe}. */
export interface SubscribeOptions {
  /** Filter; Largest Object by default (join at the live edge). */
  filter?: SubscriptionFilter;
  /** Subscriber priority, 0..255, lower is more important (default 128). */
  priority?: number;
  /** Group order to ask for (default: the publisher's). */
  groupOrder?: GroupOrder;
  /** Delivery timeout in milliseconds. */
  deliveryTimeoutMs?: number;
  /** Called for every object, from subgroup streams and from joining fetches. */
  onObject: (o: MoqObject, source: 'subgroup' | 'fetch') => void;
  /** Called when a subgroup stream ends cleanly: no more objects of that group come on it. */
  onGroupEnd?: (groupId: number, lastObjectId: number | undefined) => void;
  /** Called when the publisher ends the subscription (PUBLISH_DONE) or the session closes. */
  onDone?: (code: number, reason: string) => void;
}

/** A subscription that the publisher accepted. */
export class Subscription {
  /** Set once the publisher ended the subscription. */
  done = false;
  /** Bytes of object payload received. */
  bytesReceived = 0;
  /** @internal */
  opts: SubscribeOptions;
  /** @internal Readers of this subscription's data streams still open. */
  readers = new Set<ReadableStreamDefaultReader<Uint8Array>>();

  /** @internal */
  constructor(
    private readonly session: Session,
    /** The Request ID of the SUBSCRIBE. */
    readonly requestId: number,
    /** The track's namespace. */
    readonly namespace: string[],
    /** The track's name. */
    readonly name: string,
    /** The Track Alias data streams carry. */
    readonly trackAlias: number,
    /** The largest object when the subscription started, if the track had any. */
    readonly largest: Location | undefined,
    /** Track extensions from SUBSCRIBE_OK. */
    readonly extensions: KeyValue[],
    opts: SubscribeOptions,
  ) {
    this.opts = opts;
  }

  /**
   * Sends a relative Joining FETCH for the objects from the start of group
   * `largest.group - groupsBack` up to where the subscription starts, delivered to the
   * same `onObject`. Resolves when FETCH_OK arrives; the fetch's `done` when its stream ends.
   * Resolves to undefined when the track has no objects yet.
   */
  async joiningFetch(groupsBack = 0, priority?: number): Promise<FetchHandle | undefined> {
    if (this.largest === undefined) return undefined;
    return this.session.fetchJoining(this, groupsBack, priority ?? this.opts.priority);
  }

  /** Asks the publisher for a new group (a key frame) via REQUEST_UPDATE. */
  requestNewGroup(): void {
    this.session.requestUpdate(this.requestId, { newGroupRequest: 0 });
  }

  /** Ends the subscription (UNSUBSCRIBE). Objects already in flight are dropped. */
  unsubscribe(): void {
    this.session.unsubscribe(this);
  }
}

/** A fetch the publisher accepted. */
export interface FetchHandle {
  /** The Request ID of the FETCH. */
  requestId: number;
  /** The end location from FETCH_OK. */
  endLocation: Location;
  /** Resolves when the fetch stream ended (or rejects if it was reset or malformed). */
  done: Promise<void>;
  /** Cancels the fetch (FETCH_CANCEL). */
  cancel(): void;
}

/** Options of {@link Session.publishTrack}. */
export interface TrackOptions {
  /** Publisher priority of the track (lower is more important). */
  priority: number;
  /** Group order announced (default descending: newest first). */
  groupOrder?: GroupOrder;
  /** Send PUBLISH to push the track without waiting for a SUBSCRIBE (default true). */
  push?: boolean;
  /** Milliseconds a group's bytes may wait in the send queue before the rest of the group is dropped (default 1000). */
  maxQueueMs?: number;
  /** Groups kept for joining fetches (default 2). */
  cacheGroups?: number;
  /** Track extensions added to the defaults (priority, group order, dynamic groups). */
  extensions?: KeyValue[];
}

/** Send-side figures of a published track. */
export interface TrackStats {
  /** Subscribers (forwarding) right now. */
  subscribers: number;
  /** Bytes handed to streams and not yet accepted by the transport. */
  queuedBytes: number;
  /** Age in milliseconds of the oldest write still queued (0 when none). */
  queueAgeMs: number;
  /** Payload bytes accepted by the transport. */
  bytesSent: number;
  /** Group streams reset because their queue grew older than maxQueueMs. */
  groupsDropped: number;
}

interface CachedObject {
  objectId: number;
  payload: Uint8Array;
  extensions: KeyValue[];
}

class GroupStream {
  writer?: WritableStreamDefaultWriter<Uint8Array>;
  chain: Promise<void>;
  queued = 0;
  oldest = 0;
  pendingWrites: { t: number; n: number }[] = [];
  aborted = false;
  sgw: SubgroupWriter;

  constructor(
    readonly groupId: number,
    sgw: SubgroupWriter,
    open: Promise<WritableStream<Uint8Array>>,
  ) {
    this.sgw = sgw;
    this.chain = open.then((ws) => {
      this.writer = ws.getWriter();
    });
  }
}

interface Outlet {
  requestId: number;
  alias: number;
  kind: 'subscribe' | 'publish';
  forward: boolean;
  /** First group to forward (Next Group Start filter). */
  startGroup: number;
  /** Largest location when the subscription started. */
  largestAtStart?: Location;
  streams: Map<number, GroupStream>;
  streamsOpened: number;
  priority: number;
}

/** A track this side publishes. Write objects with {@link write}; subscribers come and go. */
export class PublishedTrack {
  /** Called when a subscriber asks for a new group (NEW GROUP REQUEST). */
  onNewGroupRequest?: () => void;
  /** Called when a group's stream was reset because the link could not keep up. */
  onGroupDropped?: (groupId: number) => void;
  /** @internal */
  outlets: Outlet[] = [];
  /** @internal */
  cache = new Map<number, CachedObject[]>();
  /** @internal */
  largest?: Location;
  private bytesSent = 0;
  private groupsDropped = 0;
  private closed = false;

  /** @internal */
  constructor(
    private readonly session: Session,
    /** The namespace. */
    readonly namespace: string[],
    /** The track name. */
    readonly name: string,
    /** The options. */
    readonly opts: TrackOptions,
  ) {}

  /** The track extensions sent in SUBSCRIBE_OK and PUBLISH. */
  trackExtensions(): KeyValue[] {
    return [
      { key: Ext.DEFAULT_PUBLISHER_PRIORITY, value: this.opts.priority },
      { key: Ext.DEFAULT_PUBLISHER_GROUP_ORDER, value: (this.opts.groupOrder ?? 'descending') === 'ascending' ? 1 : 2 },
      { key: Ext.DYNAMIC_GROUPS, value: 1 },
      ...(this.opts.extensions ?? []),
    ];
  }

  /**
   * @internal A subscriber's NEW_GROUP_REQUEST (draft-16, NEW GROUP REQUEST Parameter): a
   * new group is started for 0 (the subscriber knows no group) or a value past the current
   * group; a value the track already reached asks for nothing.
   */
  newGroupRequested(value: number): void {
    if (value === 0 || this.largest === undefined || value > this.largest.group) this.onNewGroupRequest?.();
  }

  /** Send-side figures. */
  stats(): TrackStats {
    const now = this.session.now();
    let queuedBytes = 0;
    let oldest = Infinity;
    for (const o of this.outlets) {
      for (const s of o.streams.values()) {
        queuedBytes += s.queued;
        if (s.pendingWrites.length > 0) oldest = Math.min(oldest, s.pendingWrites[0].t);
      }
    }
    return {
      subscribers: this.outlets.filter((o) => o.forward).length,
      queuedBytes,
      queueAgeMs: oldest === Infinity ? 0 : now - oldest,
      bytesSent: this.bytesSent,
      groupsDropped: this.groupsDropped,
    };
  }

  /**
   * Publishes one object. Objects of a group must come in increasing Object ID order and
   * groups in increasing Group ID order; a new Group ID closes the previous group's streams.
   */
  write(groupId: number, objectId: number, payload: Uint8Array, extensions: KeyValue[] = []): void {
    if (this.closed) throw new Error(`track ${this.name} is closed`);
    let objs = this.cache.get(groupId);
    if (!objs) {
      objs = [];
      this.cache.set(groupId, objs);
      const keep = this.opts.cacheGroups ?? 2;
      for (const g of [...this.cache.keys()].sort((a, b) => a - b)) {
        if (this.cache.size <= keep) break;
        this.cache.delete(g);
      }
    }
    objs.push({ objectId, payload, extensions });
    this.largest = { group: groupId, object: objectId };
    for (const o of this.outlets) {
      if (!o.forward || groupId < o.startGroup) continue;
      this.send(o, groupId, objectId, payload, extensions);
    }
  }

  private send(o: Outlet, groupId: number, objectId: number, payload: Uint8Array, ext: KeyValue[]): void {
    const now = this.session.now();
    const maxQueue = this.opts.maxQueueMs ?? 1000;
    for (const [g, s] of o.streams) {
      if (g === groupId) continue;
      // A newer group started: the older group is complete, close its stream (FIN) once
      // its bytes are written, or reset it if they have waited too long.
      o.streams.delete(g);
      if (s.pendingWrites.length > 0 && now - s.pendingWrites[0].t > maxQueue) this.drop(s);
      else s.chain = s.chain.then(() => s.writer?.close()).catch(() => undefined);
    }
    let s = o.streams.get(groupId);
    if (s?.aborted) return;
    if (!s) {
      // One stream per group, closed when the next group starts: its end is the group's
      // end, which the End of Group bit tells the subscriber.
      const sgw = new SubgroupWriter({
        trackAlias: o.alias,
        groupId,
        subgroupId: 'zero',
        extensions: true,
        endOfGroup: true,
      });
      // Newer groups and more important tracks first: sendOrder grows with both.
      const sendOrder = (255 - this.opts.priority) * 2 ** 32 + groupId;
      s = new GroupStream(groupId, sgw, this.session.transport.createStream(sendOrder));
      o.streams.set(groupId, s);
      o.streamsOpened++;
      this.enqueue(s, sgw.encodeHeader());
    } else if (s.pendingWrites.length > 0 && now - s.pendingWrites[0].t > maxQueue) {
      this.drop(s);
      return;
    }
    this.enqueue(s, s.sgw.object({ objectId, payload, extensions: ext }), payload.length);
  }

  private enqueue(s: GroupStream, bytes: Uint8Array, payloadBytes = 0): void {
    const entry = { t: this.session.now(), n: bytes.length };
    s.pendingWrites.push(entry);
    s.queued += bytes.length;
    s.chain = s.chain
      .then(() => (s.aborted ? undefined : s.writer!.write(bytes)))
      .then(() => {
        s.queued -= bytes.length;
        s.pendingWrites.shift();
        this.bytesSent += payloadBytes;
      })
      .catch(() => {
        s.aborted = true;
        s.queued = 0;
        s.pendingWrites = [];
      });
  }

  private drop(s: GroupStream): void {
    if (s.aborted) return;
    s.aborted = true;
    s.queued = 0;
    s.pendingWrites = [];
    this.groupsDropped++;
    s.writer?.abort('delivery timeout').catch(() => undefined);
    this.onGroupDropped?.(s.groupId);
  }

  /**
   * @internal Starts forwarding to a subscriber. With `after`, first sends the cached
   * objects written after that location (those a PUBLISH did not cover: written while its
   * PUBLISH_OK was on the way).
   */
  addOutlet(o: Outlet, after?: Location | null): void {
    this.outlets.push(o);
    if (after === undefined || !o.forward) return;
    for (const [g, objs] of [...this.cache.entries()].sort((a, b) => a[0] - b[0])) {
      if (g < o.startGroup || (after !== null && g < after.group)) continue;
      for (const x of objs) {
        if (after !== null && g === after.group && x.objectId <= after.object) continue;
        this.send(o, g, x.objectId, x.payload, x.extensions);
      }
    }
  }

  /** @internal */
  removeOutlet(requestId: number, reset: boolean): Outlet | undefined {
    const i = this.outlets.findIndex((o) => o.requestId === requestId);
    if (i < 0) return undefined;
    const [o] = this.outlets.splice(i, 1);
    for (const s of o.streams.values()) {
      if (reset) s.writer?.abort('unsubscribed').catch(() => undefined);
      else s.chain = s.chain.then(() => s.writer?.close()).catch(() => undefined);
    }
    o.streams.clear();
    return o;
  }

  /** Ends the track: closes its streams and tells every subscriber (PUBLISH_DONE). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const o of [...this.outlets]) {
      this.removeOutlet(o.requestId, false);
      this.session.sendPublishDone(o.requestId, PublishDoneCode.TrackEnded, o.streamsOpened, 'track ended');
    }
    this.session.forgetTrack(this);
  }
}

interface Pending {
  resolve: (m: Message) => void;
  reject: (e: Error) => void;
  what: string;
  timer: ReturnType<typeof setTimeout>;
  /**
   * Runs as the answer is read, before the next message: the state a positive answer
   * creates (a subscription, a PUBLISH's outlet) must exist for messages that follow it in
   * the same read, which run before any code awaiting the request's promise.
   */
  onOk?: (m: Message) => void;
}

/** One MoQT session. Create it with {@link Session.connect} (or {@link Session.open} on any transport). */
export class Session {
  /** Resolves when the session is closed. */
  readonly closed: Promise<CloseInfo>;
  /** The peer's SETUP parameters. */
  peerMaxRequestId = 0;
  private nextRequestId: number;
  private writer: WritableStreamDefaultWriter<Uint8Array>;
  private pending = new Map<number, Pending>();
  private abandoned = new Set<number>();
  private subsByAlias = new Map<number, Subscription>();
  private subsById = new Map<number, Subscription>();
  private aliasWaiters = new Map<number, (() => void)[]>();
  private fetches = new Map<number, { sub: Subscription; resolve: () => void; reject: (e: Error) => void }>();
  private tracks: PublishedTrack[] = [];
  private namespaces: string[][] = [];
  private outletsById = new Map<number, { track: PublishedTrack; outlet: Outlet }>();
  private nextAlias = 1;
  private maxRequestIdGiven: number;
  private blockedWaiters: (() => void)[] = [];
  private closeInfo?: CloseInfo;
  /** The clock, in milliseconds. */
  readonly now: () => number;

  private constructor(
    /** The transport the session runs on. */
    readonly transport: Transport,
    private readonly role: 'client' | 'server',
    private readonly opts: SessionOptions,
  ) {
    this.now = opts.now ?? (() => performance.now());
    this.nextRequestId = role === 'client' ? 0 : 1;
    this.maxRequestIdGiven = opts.maxRequestId ?? 256;
    this.writer = transport.control.writable.getWriter();
    this.closed = transport.closed.then((info) => {
      this.onClosed(info);
      return info;
    });
  }

  /**
   * Opens a WebTransport session to `url` (its path names the broadcast; `?jwt=` carries a
   * token) and completes the MoQT SETUP exchange.
   */
  static async connect(url: string, opts: SessionOptions = {}): Promise<Session> {
    const t = await connectWebTransport(url, opts.certificateHash);
    return Session.open(t, 'client', opts);
  }

  /** Runs SETUP on an open transport: as `client` it sends CLIENT_SETUP, as `server` it answers. */
  static async open(t: Transport, role: 'client' | 'server', opts: SessionOptions = {}): Promise<Session> {
    const s = new Session(t, role, opts);
    await s.setup();
    return s;
  }

  private async setup(): Promise<void> {
    const reader = this.transport.control.readable.getReader();
    const setupParams = {
      maxRequestId: this.maxRequestIdGiven,
      implementation: 'tiermesh-web',
      ...(this.opts.authToken
        ? { authTokens: [{ kind: 'use-value' as const, tokenType: JWT_TOKEN_TYPE, value: utf8(this.opts.authToken) }] }
        : {}),
    };
    if (this.role === 'client') this.send({ type: 'client_setup', params: setupParams });
    const timeout = this.opts.setupTimeoutMs ?? 5000;
    let buf: Uint8Array = new Uint8Array(0);
    const first = await new Promise<Message>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(TerminationCode.ControlMessageTimeout, 'no SETUP in time');
        reject(new Error(`The relay did not answer the MoQT SETUP within ${timeout} ms.`));
      }, timeout);
      const pump = async () => {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) throw new Error('control stream closed during SETUP');
          buf = join(buf, value);
          const r = new Reader(buf);
          try {
            const m = decodeMessage(r);
            buf = buf.slice(r.pos);
            return m;
          } catch (e) {
            if (!(e instanceof Short)) throw e;
          }
        }
      };
      pump().then(
        (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        (e) => {
          clearTimeout(timer);
          reject(e);
        },
      );
    });
    this.opts.onMessage?.('recv', first);
    const expected = this.role === 'client' ? 'server_setup' : 'client_setup';
    if (first.type !== expected) {
      this.fail(TerminationCode.ProtocolViolation, `expected ${expected.toUpperCase()}`);
      throw new ProtocolError(`expected ${expected.toUpperCase()}, got ${first.type.toUpperCase()}`);
    }
    if (first.type === 'server_setup' || first.type === 'client_setup') {
      this.peerMaxRequestId = first.params.maxRequestId ?? 0;
    }
    if (this.role === 'server') this.send({ type: 'server_setup', params: { maxRequestId: this.maxRequestIdGiven } });
    void this.readControl(reader, buf);
    void this.acceptStreams();
  }

  private send(m: Message): void {
    if (this.closeInfo) return;
    this.opts.onMessage?.('send', m);
    this.writer.write(encodeMessage(m)).catch(() => undefined);
  }

  private fail(code: number, reason: string): void {
    this.transport.close(code, reason);
  }

  /** Closes the session (code 0: no error). */
  close(code: number = TerminationCode.NoError, reason = ''): void {
    for (const t of [...this.tracks]) t.close();
    this.fail(code, reason);
  }

  private onClosed(info: CloseInfo): void {
    if (this.closeInfo) return;
    this.closeInfo = info;
    const err = new SessionClosedError(info);
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    for (const f of this.fetches.values()) f.reject(err);
    this.fetches.clear();
    for (const s of this.subsById.values()) {
      if (!s.done) {
        s.done = true;
        s.opts.onDone?.(info.code, info.reason);
      }
    }
    for (const w of this.blockedWaiters) w();
  }

  private async readControl(reader: ReadableStreamDefaultReader<Uint8Array>, initial: Uint8Array): Promise<void> {
    let buf = initial;
    try {
      for (;;) {
        const r = new Reader(buf);
        for (;;) {
          let m: Message;
          try {
            m = decodeMessage(r);
          } catch (e) {
            if (e instanceof Short) break;
            throw e;
          }
          this.opts.onMessage?.('recv', m);
          this.handle(m);
        }
        buf = buf.slice(r.pos);
        const { value, done } = await reader.read();
        if (done) {
          if (!this.closeInfo) this.fail(TerminationCode.ProtocolViolation, 'control stream closed');
          return;
        }
        buf = join(buf, value);
      }
    } catch (e) {
      if (e instanceof ProtocolError) this.fail(e.code, e.message);
      else if (!this.closeInfo) this.fail(TerminationCode.InternalError, (e as Error).message);
    }
  }

  private checkPeerRequestId(id: number): void {
    const parity = this.role === 'client' ? 1 : 0;
    if (id % 2 !== parity) throw new ProtocolError('Request ID of the wrong parity', TerminationCode.InvalidRequestId);
    if (id >= this.maxRequestIdGiven) throw new ProtocolError('Request ID above the maximum', TerminationCode.TooManyRequests);
    // Credit grows by the initial window each time the peer is past half of what it has,
    // so a peer that keeps requesting at a steady pace never blocks.
    const window = this.opts.maxRequestId ?? 256;
    if (id >= this.maxRequestIdGiven - window / 2) {
      this.maxRequestIdGiven += window;
      this.send({ type: 'max_request_id', maxRequestId: this.maxRequestIdGiven });
    }
  }

  private handle(m: Message): void {
    switch (m.type) {
      case 'client_setup':
      case 'server_setup':
        throw new ProtocolError('second SETUP');
      case 'goaway':
        this.opts.onGoaway?.(m.newSessionUri);
        return;
      case 'max_request_id':
        if (m.maxRequestId < this.peerMaxRequestId) throw new ProtocolError('MAX_REQUEST_ID decreased');
        this.peerMaxRequestId = m.maxRequestId;
        for (const w of this.blockedWaiters.splice(0)) w();
        return;
      case 'requests_blocked':
        return;
      case 'request_ok':
      case 'subscribe_ok':
      case 'fetch_ok':
      case 'publish_ok':
      case 'request_error': {
        const p = this.pending.get(m.requestId);
        if (!p) {
          if (this.abandoned.delete(m.requestId)) {
            // A late answer to a request this side gave up on: undo what it started.
            if (m.type === 'subscribe_ok') this.send({ type: 'unsubscribe', requestId: m.requestId });
            if (m.type === 'fetch_ok') this.send({ type: 'fetch_cancel', requestId: m.requestId });
            if (m.type === 'publish_ok') this.sendPublishDone(m.requestId, PublishDoneCode.Expired, 0, 'PUBLISH_OK came too late');
            return;
          }
          if (m.type === 'publish_ok') return;
          throw new ProtocolError(`${m.type.toUpperCase()} for an unknown request`, TerminationCode.InvalidRequestId);
        }
        this.pending.delete(m.requestId);
        clearTimeout(p.timer);
        if (m.type === 'request_error') {
          p.reject(new RequestError(p.what, m.errorCode, m.reason, m.retryInterval));
        } else {
          try {
            p.onOk?.(m);
          } catch (e) {
            p.reject(e as Error);
            throw e;
          }
          p.resolve(m);
        }
        return;
      }
      case 'publish_done': {
        const s = this.subsById.get(m.requestId);
        if (s && !s.done) {
          s.done = true;
          this.subsById.delete(s.requestId);
          // Streams still in flight are let through for a moment before the alias goes.
          setTimeout(() => this.subsByAlias.delete(s.trackAlias), 2000);
          s.opts.onDone?.(m.statusCode, m.reason);
        }
        return;
      }
      case 'subscribe':
        this.checkPeerRequestId(m.requestId);
        this.onSubscribe(m);
        return;
      case 'fetch':
        this.checkPeerRequestId(m.requestId);
        this.onFetch(m);
        return;
      case 'request_update': {
        this.checkPeerRequestId(m.requestId);
        const entry = this.outletsById.get(m.existingRequestId);
        if (!entry) {
          this.send({ type: 'request_error', requestId: m.requestId, errorCode: RequestErrorCode.DoesNotExist, retryInterval: 0, reason: 'no such request' });
          return;
        }
        if (m.params.forward !== undefined) entry.outlet.forward = m.params.forward;
        if (m.params.subscriberPriority !== undefined) entry.outlet.priority = m.params.subscriberPriority;
        if (m.params.newGroupRequest !== undefined) entry.track.newGroupRequested(m.params.newGroupRequest);
        this.send({ type: 'request_ok', requestId: m.requestId, params: {} });
        return;
      }
      case 'unsubscribe': {
        const entry = this.outletsById.get(m.requestId);
        if (!entry) return;
        this.outletsById.delete(m.requestId);
        const o = entry.track.removeOutlet(m.requestId, true);
        this.sendPublishDone(m.requestId, PublishDoneCode.SubscriptionEnded, o?.streamsOpened ?? 0, 'unsubscribed');
        return;
      }
      case 'fetch_cancel':
        return;
      case 'publish':
      case 'publish_namespace':
      case 'subscribe_namespace':
      case 'track_status':
        this.checkPeerRequestId(m.requestId);
        this.send({
          type: 'request_error',
          requestId: m.requestId,
          errorCode: RequestErrorCode.NotSupported,
          retryInterval: 0,
          reason: `${m.type.toUpperCase()} is not handled by this client`,
        });
        return;
      case 'publish_namespace_cancel':
      case 'publish_namespace_done':
      case 'namespace':
      case 'namespace_done':
        return;
    }
  }

  // -------------------------------------------------------------------------------------
  // Requests (subscriber side)
  // -------------------------------------------------------------------------------------

  private async request<T extends Message>(build: (id: number) => Message, what: string, onOk?: (m: T) => void): Promise<T> {
    const timeout = this.opts.requestTimeoutMs ?? 10000;
    const blockedSince = Date.now();
    while (!this.closeInfo && this.nextRequestId >= this.peerMaxRequestId) {
      if (Date.now() - blockedSince >= timeout) {
        throw new RequestError(what, RequestErrorCode.Timeout, `the peer allows no more requests (MAX_REQUEST_ID ${this.peerMaxRequestId})`);
      }
      this.send({ type: 'requests_blocked', maxRequestId: this.peerMaxRequestId });
      await new Promise<void>((r) => {
        const timer = setTimeout(r, timeout);
        this.blockedWaiters.push(() => {
          clearTimeout(timer);
          r();
        });
      });
    }
    if (this.closeInfo) throw new SessionClosedError(this.closeInfo);
    const id = this.nextRequestId;
    this.nextRequestId += 2;
    const p = new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        // The answer may still come: it is then undone, not taken for a protocol error.
        this.abandoned.add(id);
        reject(new RequestError(what, RequestErrorCode.Timeout, `no answer within ${timeout} ms`));
      }, timeout);
      this.pending.set(id, { resolve: resolve as (m: Message) => void, reject, what, timer, onOk: onOk as ((m: Message) => void) | undefined });
    });
    this.send(build(id));
    return p;
  }

  /**
   * Subscribes to a track. Resolves when SUBSCRIBE_OK arrives; rejects with
   * {@link RequestError} (DOES_NOT_EXIST when the broadcast is not there, UNAUTHORIZED, …).
   */
  async subscribe(namespace: string[], name: string, opts: SubscribeOptions): Promise<Subscription> {
    const params: MessageParams = {
      subscriptionFilter: opts.filter ?? { type: 'largest-object' },
      subscriberPriority: opts.priority ?? 128,
      forward: true,
    };
    if (opts.groupOrder) params.groupOrder = opts.groupOrder;
    if (opts.deliveryTimeoutMs) params.deliveryTimeoutMs = opts.deliveryTimeoutMs;
    let requestId = -1;
    let sub: Subscription | undefined;
    // The subscription exists from the moment SUBSCRIBE_OK is read, so a PUBLISH_DONE right
    // behind it (a track that ends at once) finds it.
    await this.request<Extract<Message, { type: 'subscribe_ok' }>>(
      (id) => {
        requestId = id;
        return { type: 'subscribe', requestId: id, namespace, name, params };
      },
      `SUBSCRIBE ${[...namespace, name].join('/')}`,
      (ok) => {
        if (this.subsByAlias.has(ok.trackAlias)) {
          // Thrown while the answer is read: the session closes with this code.
          throw new ProtocolError('duplicate track alias', TerminationCode.DuplicateTrackAlias);
        }
        sub = new Subscription(this, requestId, namespace, name, ok.trackAlias, ok.params.largestObject, ok.extensions, opts);
        this.subsByAlias.set(ok.trackAlias, sub);
        this.subsById.set(requestId, sub);
        for (const w of this.aliasWaiters.get(ok.trackAlias) ?? []) w();
        this.aliasWaiters.delete(ok.trackAlias);
      },
    );
    return sub!;
  }

  /** @internal */
  async fetchJoining(sub: Subscription, groupsBack: number, priority?: number): Promise<FetchHandle> {
    let requestId = -1;
    let resolveDone!: () => void;
    let rejectDone!: (e: Error) => void;
    const done = new Promise<void>((res, rej) => {
      resolveDone = res;
      rejectDone = rej;
    });
    done.catch(() => undefined);
    const ok = await this.request<Extract<Message, { type: 'fetch_ok' }>>((id) => {
      requestId = id;
      this.fetches.set(id, { sub, resolve: resolveDone, reject: rejectDone });
      return {
        type: 'fetch',
        requestId: id,
        fetch: { kind: 'relative', joiningRequestId: sub.requestId, joiningStart: groupsBack },
        params: priority !== undefined ? { subscriberPriority: priority } : {},
      };
    }, `joining FETCH of ${sub.name}`).catch((e) => {
      this.fetches.delete(requestId);
      throw e;
    });
    return {
      requestId,
      endLocation: ok.endLocation,
      done,
      cancel: () => {
        this.fetches.delete(requestId);
        this.send({ type: 'fetch_cancel', requestId });
      },
    };
  }

  /** @internal */
  requestUpdate(existingRequestId: number, params: MessageParams): void {
    void this.request((id) => ({ type: 'request_update', requestId: id, existingRequestId, params }), 'REQUEST_UPDATE').catch(
      () => undefined,
    );
  }

  /** @internal */
  unsubscribe(sub: Subscription): void {
    if (!this.subsById.has(sub.requestId)) return;
    this.subsById.delete(sub.requestId);
    this.subsByAlias.delete(sub.trackAlias);
    sub.done = true;
    this.send({ type: 'unsubscribe', requestId: sub.requestId });
    // Its streams still open are of no use now: STOP_SENDING at once, so they hold neither
    // buffer nor stream credit in the browser while the publisher winds them down.
    for (const r of sub.readers) r.cancel().catch(() => undefined);
    sub.readers.clear();
  }

  // -------------------------------------------------------------------------------------
  // Publisher side
  // -------------------------------------------------------------------------------------

  /** Announces a namespace (PUBLISH_NAMESPACE). Rejects with {@link RequestError} if refused. */
  async publishNamespace(namespace: string[]): Promise<void> {
    await this.request((id) => ({ type: 'publish_namespace', requestId: id, namespace, params: {} }), `PUBLISH_NAMESPACE ${namespace.join('/')}`);
    this.namespaces.push(namespace);
  }

  /**
   * Creates a track this side publishes. It answers SUBSCRIBE and joining FETCH from the
   * peer, and with `push` (the default) also offers itself with PUBLISH.
   */
  publishTrack(namespace: string[], name: string, opts: TrackOptions): PublishedTrack {
    const t = new PublishedTrack(this, namespace, name, opts);
    this.tracks.push(t);
    if (opts.push ?? true) void this.push(t);
    return t;
  }

  /**
   * Offers `t` with PUBLISH. The outlet is created as PUBLISH_OK is read, before the next
   * control message: the peer may send REQUEST_UPDATE, UNSUBSCRIBE or a Joining FETCH for
   * the subscription right behind its PUBLISH_OK (draft-16, Subscriptions: the
   * subscription is Established once PUBLISH_OK is sent), and those arrive in the same read.
   */
  private push(t: PublishedTrack): void {
    const alias = this.nextAlias++;
    let requestId = -1;
    // What the PUBLISH tells the peer is already published; objects written after it, until
    // PUBLISH_OK comes back, are sent once the subscription exists (else a catalog written
    // once in that window would never reach the relay).
    let announced: Location | null = null;
    this.request<Extract<Message, { type: 'publish_ok' }>>(
      (id) => {
        requestId = id;
        const params: MessageParams = { forward: true };
        if (t.largest) params.largestObject = t.largest;
        announced = t.largest ? { ...t.largest } : null;
        return { type: 'publish', requestId: id, namespace: t.namespace, name: t.name, trackAlias: alias, params, extensions: t.trackExtensions() };
      },
      `PUBLISH ${t.name}`,
      (ok) => {
        if (!this.tracks.includes(t)) {
          // Closed while the PUBLISH was on its way: end the subscription the peer just made.
          this.sendPublishDone(requestId, PublishDoneCode.TrackEnded, 0, 'track ended');
          return;
        }
        const o: Outlet = {
          requestId,
          alias,
          kind: 'publish',
          forward: ok.params.forward ?? true,
          startGroup: 0,
          streams: new Map(),
          streamsOpened: 0,
          priority: ok.params.subscriberPriority ?? 128,
        };
        // The Largest Location the PUBLISH carried is what a Joining FETCH counts from.
        if (announced) o.largestAtStart = announced;
        if (ok.params.subscriptionFilter?.type === 'next-group-start') o.startGroup = (t.largest?.group ?? -1) + 1;
        this.outletsById.set(requestId, { track: t, outlet: o });
        t.addOutlet(o, announced);
        if (ok.params.newGroupRequest !== undefined) t.newGroupRequested(ok.params.newGroupRequest);
      },
    ).catch(() => {
      // Refused (the peer prefers to SUBSCRIBE: that path still works) or the session ended.
    });
  }

  /** @internal */
  forgetTrack(t: PublishedTrack): void {
    this.tracks = this.tracks.filter((x) => x !== t);
    for (const [id, e] of this.outletsById) if (e.track === t) this.outletsById.delete(id);
  }

  /** @internal */
  sendPublishDone(requestId: number, code: number, streams: number, reason: string): void {
    this.send({ type: 'publish_done', requestId, statusCode: code, streamCount: streams ?? STREAM_COUNT_UNKNOWN, reason });
  }

  private findTrack(namespace: string[], name: string): PublishedTrack | undefined {
    return this.tracks.find((t) => t.name === name && t.namespace.length === namespace.length && t.namespace.every((f, i) => f === namespace[i]));
  }

  private onSubscribe(m: Extract<Message, { type: 'subscribe' }>): void {
    const t = this.findTrack(m.namespace, m.name);
    if (!t) {
      this.send({ type: 'request_error', requestId: m.requestId, errorCode: RequestErrorCode.DoesNotExist, retryInterval: 0, reason: 'no such track' });
      return;
    }
    const alias = this.nextAlias++;
    const f = m.params.subscriptionFilter ?? { type: 'largest-object' };
    const o: Outlet = {
      requestId: m.requestId,
      alias,
      kind: 'subscribe',
      forward: m.params.forward ?? true,
      startGroup: 0,
      streams: new Map(),
      streamsOpened: 0,
      priority: m.params.subscriberPriority ?? 128,
    };
    if (t.largest) o.largestAtStart = { ...t.largest };
    if (f.type === 'next-group-start') o.startGroup = (t.largest?.group ?? -1) + 1;
    else if (f.type === 'absolute-start' || f.type === 'absolute-range') o.startGroup = f.start.group;
    else if (t.largest) {
      // Largest Object: forward from the next object. The current group's stream starts
      // with the next object; a joining fetch fills in the start of the group.
      o.startGroup = t.largest.group;
    }
    const params: MessageParams = { expiresMs: 0 };
    if (t.largest) params.largestObject = t.largest;
    this.send({ type: 'subscribe_ok', requestId: m.requestId, trackAlias: alias, params, extensions: t.trackExtensions() });
    t.addOutlet(o);
    this.outletsById.set(m.requestId, { track: t, outlet: o });
    if (m.params.newGroupRequest !== undefined) t.newGroupRequested(m.params.newGroupRequest);
  }

  private onFetch(m: Extract<Message, { type: 'fetch' }>): void {
    const refuse = (code: number, reason: string) =>
      this.send({ type: 'request_error', requestId: m.requestId, errorCode: code, retryInterval: 0, reason });
    let track: PublishedTrack | undefined;
    let start: Location;
    let end: Location; // inclusive
    if (m.fetch.kind === 'standalone') {
      track = this.findTrack(m.fetch.namespace, m.fetch.name);
      if (!track) return refuse(RequestErrorCode.DoesNotExist, 'no such track');
      if (!track.largest) return refuse(RequestErrorCode.InvalidRange, 'no objects yet');
      start = m.fetch.start;
      const e = m.fetch.end;
      end = e.object === 0 ? { group: e.group, object: Number.MAX_SAFE_INTEGER } : { group: e.group, object: e.object - 1 };
    } else {
      const entry = this.outletsById.get(m.fetch.joiningRequestId);
      if (!entry) return refuse(RequestErrorCode.InvalidJoiningRequestId, 'no such subscription');
      track = entry.track;
      const largest = entry.outlet.largestAtStart;
      if (!largest) return refuse(RequestErrorCode.InvalidRange, 'no objects yet');
      const g = m.fetch.kind === 'relative' ? Math.max(0, largest.group - m.fetch.joiningStart) : m.fetch.joiningStart;
      start = { group: g, object: 0 };
      end = largest;
    }
    const largest = track.largest!;
    const endLocation = end.group > largest.group || (end.group === largest.group && end.object >= largest.object)
      ? { group: largest.group, object: largest.object + 1 }
      : { group: end.group, object: end.object + 1 };
    this.send({ type: 'fetch_ok', requestId: m.requestId, endOfTrack: false, endLocation, params: {}, extensions: track.trackExtensions() });
    const items: { groupId: number; o: CachedObject }[] = [];
    for (const [g, objs] of [...track.cache.entries()].sort((a, b) => a[0] - b[0])) {
      for (const o of objs) {
        const after = g > start.group || (g === start.group && o.objectId >= start.object);
        const before = g < end.group || (g === end.group && o.objectId <= end.object);
        if (after && before) items.push({ groupId: g, o });
      }
    }
    const priority = track.opts.priority;
    void (async () => {
      const ws = await this.transport.createStream((255 - priority) * 2 ** 32 + 2 ** 31);
      const w = ws.getWriter();
      const fw = new FetchWriter();
      await w.write(encodeFetchHeader(m.requestId));
      for (const it of items) {
        await w.write(
          fw.object({ groupId: it.groupId, subgroupId: 0, objectId: it.o.objectId, publisherPriority: priority, extensions: it.o.extensions, payload: it.o.payload }),
        );
      }
      await w.close();
    })().catch(() => undefined);
  }

  // -------------------------------------------------------------------------------------
  // Incoming data streams
  // -------------------------------------------------------------------------------------

  private async acceptStreams(): Promise<void> {
    const reader = this.transport.incoming.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        void this.readDataStream(value);
      }
    } catch {
      // The transport closed.
    }
  }

  private waitAlias(alias: number, ms: number): Promise<Subscription | undefined> {
    const have = this.subsByAlias.get(alias);
    if (have) return Promise.resolve(have);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(this.subsByAlias.get(alias)), ms);
      const list = this.aliasWaiters.get(alias) ?? [];
      list.push(() => {
        clearTimeout(timer);
        resolve(this.subsByAlias.get(alias));
      });
      this.aliasWaiters.set(alias, list);
    });
  }

  private async readDataStream(stream: ReadableStream<Uint8Array>): Promise<void> {
    const reader = stream.getReader();
    let first: Uint8Array | undefined;
    try {
      const r = await reader.read();
      if (r.done) return;
      first = r.value;
      while (first.length === 0 || (first[0] >> 6 > 0 && first.length < 1 << (first[0] >> 6))) {
        const more = await reader.read();
        if (more.done) return;
        first = join(first, more.value);
      }
      const kind = streamKind(first);
      if (kind === 'subgroup') await this.readSubgroup(reader, first);
      else await this.readFetch(reader, first);
    } catch (e) {
      if (e instanceof ProtocolError) this.fail(e.code, e.message);
      reader.cancel().catch(() => undefined);
    }
  }

  private async readSubgroup(reader: ReadableStreamDefaultReader<Uint8Array>, first: Uint8Array): Promise<void> {
    const sg = new SubgroupReader();
    sg.push(first, this.now());
    while (!sg.header) {
      const r = await reader.read();
      if (r.done) {
        sg.finish();
        sg.poll();
        return;
      }
      sg.push(r.value, this.now());
    }
    const sub = await this.waitAlias(sg.header.trackAlias, 3000);
    if (!sub || sub.done) {
      await reader.cancel();
      return;
    }
    sub.readers.add(reader);
    try {
      await this.readObjects(sub, sg, reader);
    } finally {
      sub.readers.delete(reader);
    }
  }

  private async readObjects(sub: Subscription, sg: SubgroupReader, reader: ReadableStreamDefaultReader<Uint8Array>): Promise<void> {
    for (;;) {
      for (let o = sg.poll(); o; o = sg.poll()) {
        if (sub.done) {
          await reader.cancel();
          return;
        }
        sub.bytesReceived += o.payload.length;
        sub.opts.onObject(o, 'subgroup');
      }
      const r = await reader.read();
      if (r.done) {
        // Cancelled by unsubscribe: whatever was cut short is not the publisher's fault.
        if (sub.done && !sub.readers.has(reader)) return;
        sg.finish();
        let last: number | undefined;
        for (let o = sg.poll(); o; o = sg.poll()) {
          sub.bytesReceived += o.payload.length;
          sub.opts.onObject(o, 'subgroup');
          last = o.objectId;
        }
        if (!sub.done) sub.opts.onGroupEnd?.(sg.header!.groupId, last ?? sg.lastObjectId);
        return;
      }
      sg.push(r.value, this.now());
    }
  }

  private async readFetch(reader: ReadableStreamDefaultReader<Uint8Array>, first: Uint8Array): Promise<void> {
    const fr = new FetchReader();
    fr.push(first, this.now());
    while (fr.requestId === undefined) {
      const r = await reader.read();
      if (r.done) return;
      fr.push(r.value, this.now());
    }
    const f = this.fetches.get(fr.requestId);
    if (!f) {
      await reader.cancel();
      return;
    }
    try {
      for (;;) {
        for (let it = fr.poll(); it; it = fr.poll()) {
          if (it.type === 'object') {
            f.sub.bytesReceived += it.object.payload.length;
            f.sub.opts.onObject(it.object, 'fetch');
          }
        }
        const r = await reader.read();
        if (r.done) {
          fr.finish();
          for (let it = fr.poll(); it; it = fr.poll()) {
            if (it.type === 'object') f.sub.opts.onObject(it.object, 'fetch');
          }
          this.fetches.delete(fr.requestId);
          f.resolve();
          return;
        }
        fr.push(r.value, this.now());
      }
    } catch (e) {
      this.fetches.delete(fr.requestId);
      f.reject(e as Error);
      throw e;
    }
  }
}

function join(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
