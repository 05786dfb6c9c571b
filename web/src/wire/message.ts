/**
 * Control messages of MoQT draft-16 (§9): `Type (i), Length (16), Payload (..)`.
 *
 * {@link decodeMessage} throws {@link Short} until a whole frame is present and
 * {@link ProtocolError} (with the draft's termination code) for anything that must close
 * the session. {@link encodeMessage} writes the whole frame.
 */
import { ProtocolError, Reader, Short, TerminationCode, Writer, fromUtf8, utf8 } from './coding.js';
import { type KeyValue, readCountedPairs, readPairsToEnd, writeCountedPairs, writePairs } from './kvp.js';
import { checkTrackExtensions } from './ext.js';

/** Message type codes (draft-16 §9, Message Types table). */
export const MessageType = {
  client_setup: 0x20,
  server_setup: 0x21,
  goaway: 0x10,
  max_request_id: 0x15,
  requests_blocked: 0x1a,
  request_ok: 0x7,
  request_error: 0x5,
  subscribe: 0x3,
  subscribe_ok: 0x4,
  request_update: 0x2,
  unsubscribe: 0xa,
  publish: 0x1d,
  publish_ok: 0x1e,
  publish_done: 0xb,
  fetch: 0x16,
  fetch_ok: 0x18,
  fetch_cancel: 0x17,
  track_status: 0xd,
  publish_namespace: 0x6,
  namespace: 0x8,
  publish_namespace_done: 0x9,
  namespace_done: 0xe,
  publish_namespace_cancel: 0xc,
  subscribe_namespace: 0x11,
} as const;

/** The name of a control message, as used in {@link Message}'s `type`. */
export type MessageName = keyof typeof MessageType;

const NAME_OF = new Map<number, MessageName>(
  Object.entries(MessageType).map(([k, v]) => [v, k as MessageName]),
);

/** REQUEST_ERROR codes (draft-16 §9.8). */
export const RequestErrorCode = {
  InternalError: 0x0,
  Unauthorized: 0x1,
  Timeout: 0x2,
  NotSupported: 0x3,
  MalformedAuthToken: 0x4,
  ExpiredAuthToken: 0x5,
  DoesNotExist: 0x10,
  InvalidRange: 0x11,
  MalformedTrack: 0x12,
  DuplicateSubscription: 0x19,
  Uninterested: 0x20,
  PrefixOverlap: 0x30,
  InvalidJoiningRequestId: 0x32,
} as const;

/** PUBLISH_DONE status codes (draft-16 §9.15). */
export const PublishDoneCode = {
  InternalError: 0x0,
  Unauthorized: 0x1,
  TrackEnded: 0x2,
  SubscriptionEnded: 0x3,
  GoingAway: 0x4,
  Expired: 0x5,
  TooFarBehind: 0x6,
  UpdateFailed: 0x8,
  MalformedTrack: 0x12,
} as const;

/** The value of STREAM_COUNT meaning "not counted" (2^62-1). */
export const STREAM_COUNT_UNKNOWN = 2 ** 62 - 1;

/** A Group ID and Object ID. */
export interface Location {
  /** Group ID. */
  group: number;
  /** Object ID. */
  object: number;
}

/** Group delivery order. */
export type GroupOrder = 'ascending' | 'descending';

/** A subscription filter (draft-16 §5.1.2). */
export type SubscriptionFilter =
  | { type: 'next-group-start' }
  | { type: 'largest-object' }
  | { type: 'absolute-start'; start: Location }
  | { type: 'absolute-range'; start: Location; endGroup: number };

/** An AUTHORIZATION TOKEN value (draft-16 §9.2.1.1). */
export type AuthToken =
  | { kind: 'delete'; alias: number }
  | { kind: 'register'; alias: number; tokenType: number; value: Uint8Array }
  | { kind: 'use-alias'; alias: number }
  | { kind: 'use-value'; tokenType: number; value: Uint8Array };

/** Message parameters (draft-16 §9.2). Absent fields are left out. */
export interface MessageParams {
  /** AUTHORIZATION TOKEN (0x03), repeatable. */
  authTokens?: AuthToken[];
  /** DELIVERY TIMEOUT (0x02), milliseconds, never 0. */
  deliveryTimeoutMs?: number;
  /** SUBSCRIBER PRIORITY (0x20), 0..255, lower is more important. */
  subscriberPriority?: number;
  /** GROUP ORDER (0x22). */
  groupOrder?: GroupOrder;
  /** SUBSCRIPTION FILTER (0x21). */
  subscriptionFilter?: SubscriptionFilter;
  /** EXPIRES (0x08), milliseconds. */
  expiresMs?: number;
  /** LARGEST OBJECT (0x09). */
  largestObject?: Location;
  /** FORWARD (0x10). */
  forward?: boolean;
  /** NEW GROUP REQUEST (0x32). */
  newGroupRequest?: number;
}

/** Setup parameters of CLIENT_SETUP and SERVER_SETUP (draft-16 §9.3.1). */
export interface SetupParams {
  /** PATH (0x01): raw QUIC only. */
  path?: string;
  /** MAX_REQUEST_ID (0x02). */
  maxRequestId?: number;
  /** AUTHORIZATION TOKEN (0x03), repeatable. */
  authTokens?: AuthToken[];
  /** MAX_AUTH_TOKEN_CACHE_SIZE (0x04). */
  maxAuthTokenCacheSize?: number;
  /** AUTHORITY (0x05): raw QUIC only. */
  authority?: string;
  /** MOQT_IMPLEMENTATION (0x07). */
  implementation?: string;
  /** Parameters this client does not know, kept in order. */
  unknown?: KeyValue[];
}

/** The range or joining point of a FETCH. */
export type FetchKind =
  | { kind: 'standalone'; namespace: string[]; name: string; start: Location; end: Location }
  | { kind: 'relative'; joiningRequestId: number; joiningStart: number }
  | { kind: 'absolute'; joiningRequestId: number; joiningStart: number };

/** SUBSCRIBE_NAMESPACE options. */
export type SubscribeNamespaceOptions = 'publish' | 'namespace' | 'both';

/** Any draft-16 control message. Namespaces are arrays of UTF-8 fields. */
export type Message =
  | { type: 'client_setup'; params: SetupParams }
  | { type: 'server_setup'; params: SetupParams }
  | { type: 'goaway'; newSessionUri: string }
  | { type: 'max_request_id'; maxRequestId: number }
  | { type: 'requests_blocked'; maxRequestId: number }
  | { type: 'request_ok'; requestId: number; params: MessageParams }
  | { type: 'request_error'; requestId: number; errorCode: number; retryInterval: number; reason: string }
  | { type: 'subscribe'; requestId: number; namespace: string[]; name: string; params: MessageParams }
  | { type: 'subscribe_ok'; requestId: number; trackAlias: number; params: MessageParams; extensions: KeyValue[] }
  | { type: 'request_update'; requestId: number; existingRequestId: number; params: MessageParams }
  | { type: 'unsubscribe'; requestId: number }
  | {
      type: 'publish';
      requestId: number;
      namespace: string[];
      name: string;
      trackAlias: number;
      params: MessageParams;
      extensions: KeyValue[];
    }
  | { type: 'publish_ok'; requestId: number; params: MessageParams }
  | { type: 'publish_done'; requestId: number; statusCode: number; streamCount: number; reason: string }
  | { type: 'fetch'; requestId: number; fetch: FetchKind; params: MessageParams }
  | {
      type: 'fetch_ok';
      requestId: number;
      endOfTrack: boolean;
      endLocation: Location;
      params: MessageParams;
      extensions: KeyValue[];
    }
  | { type: 'fetch_cancel'; requestId: number }
  | { type: 'track_status'; requestId: number; namespace: string[]; name: string; params: MessageParams }
  | { type: 'publish_namespace'; requestId: number; namespace: string[]; params: MessageParams }
  | { type: 'namespace'; suffix: string[] }
  | { type: 'publish_namespace_done'; requestId: number }
  | { type: 'namespace_done'; suffix: string[] }
  | { type: 'publish_namespace_cancel'; requestId: number; errorCode: number; reason: string }
  | {
      type: 'subscribe_namespace';
      requestId: number;
      prefix: string[];
      options: SubscribeNamespaceOptions;
      params: MessageParams;
    };

/** The most fields a track namespace has (draft-16 §2.4.1). */
export const MAX_NAMESPACE_FIELDS = 32;
/** The longest full track name in bytes. */
export const MAX_FULL_NAME_LEN = 4096;
/** The longest reason phrase in bytes. */
export const MAX_REASON_LEN = 1024;

// ---------------------------------------------------------------------------------------
// Small values
// ---------------------------------------------------------------------------------------

function writeLocation(w: Writer, l: Location): void {
  w.varint(l.group).varint(l.object);
}

function readLocation(r: Reader): Location {
  const group = r.varint();
  const object = r.varint();
  return { group, object };
}

/** Writes a track namespace (count, then length-prefixed fields). */
export function writeNamespace(w: Writer, ns: string[]): void {
  w.varint(ns.length);
  for (const f of ns) w.string(f);
}

/** Reads a track namespace; `minFields` is 1 for a namespace, 0 for a prefix or suffix. */
export function readNamespace(r: Reader, minFields = 1): string[] {
  const count = r.varint();
  if (count < minFields) throw new ProtocolError('track namespace has no fields');
  if (count > MAX_NAMESPACE_FIELDS) throw new ProtocolError('track namespace has more than 32 fields');
  const out: string[] = [];
  let total = 0;
  for (let i = 0; i < count; i++) {
    const len = r.varint();
    if (len === 0) throw new ProtocolError('track namespace field is empty');
    if (len > MAX_FULL_NAME_LEN - total) throw new ProtocolError('track namespace longer than 4096 bytes');
    total += len;
    out.push(fromUtf8(r.bytes(len)));
  }
  return out;
}

function nsBytes(ns: string[]): number {
  return ns.reduce((n, f) => n + utf8(f).length, 0);
}

function readTrackName(r: Reader, ns: string[]): string {
  const len = r.varint();
  if (len > MAX_FULL_NAME_LEN - nsBytes(ns)) throw new ProtocolError('full track name longer than 4096 bytes');
  return fromUtf8(r.bytes(len));
}

function readReason(r: Reader): string {
  return fromUtf8(r.lenBytes(MAX_REASON_LEN, 'reason phrase'));
}

function writeFilter(w: Writer, f: SubscriptionFilter): void {
  switch (f.type) {
    case 'next-group-start':
      w.varint(1);
      break;
    case 'largest-object':
      w.varint(2);
      break;
    case 'absolute-start':
      w.varint(3);
      writeLocation(w, f.start);
      break;
    case 'absolute-range':
      w.varint(4);
      writeLocation(w, f.start);
      w.varint(f.endGroup);
      break;
  }
}

function readFilter(r: Reader): SubscriptionFilter {
  switch (r.varint()) {
    case 1:
      return { type: 'next-group-start' };
    case 2:
      return { type: 'largest-object' };
    case 3:
      return { type: 'absolute-start', start: readLocation(r) };
    case 4: {
      const start = readLocation(r);
      return { type: 'absolute-range', start, endGroup: r.varint() };
    }
    default:
      throw new ProtocolError('unknown subscription filter type');
  }
}

const ALIAS_CODE = { delete: 0, register: 1, 'use-alias': 2, 'use-value': 3 } as const;

/** The value bytes of an AUTHORIZATION TOKEN parameter. */
export function encodeAuthToken(t: AuthToken): Uint8Array {
  const w = new Writer();
  w.varint(ALIAS_CODE[t.kind]);
  switch (t.kind) {
    case 'delete':
    case 'use-alias':
      w.varint(t.alias);
      break;
    case 'register':
      w.varint(t.alias).varint(t.tokenType).bytes(t.value);
      break;
    case 'use-value':
      w.varint(t.tokenType).bytes(t.value);
      break;
  }
  return w.finish();
}

/** Parses the value bytes of an AUTHORIZATION TOKEN parameter. */
export function decodeAuthToken(v: Uint8Array): AuthToken {
  const r = new Reader(v);
  const bad = () => new ProtocolError('authorization token cannot be decoded', TerminationCode.KeyValueFormattingError);
  try {
    const kind = r.varint();
    let t: AuthToken;
    switch (kind) {
      case 0:
        t = { kind: 'delete', alias: r.varint() };
        break;
      case 2:
        t = { kind: 'use-alias', alias: r.varint() };
        break;
      case 1: {
        const alias = r.varint();
        const tokenType = r.varint();
        return { kind: 'register', alias, tokenType, value: r.bytes(r.remaining).slice() };
      }
      case 3: {
        const tokenType = r.varint();
        return { kind: 'use-value', tokenType, value: r.bytes(r.remaining).slice() };
      }
      default:
        throw new ProtocolError('unknown authorization token alias type', TerminationCode.KeyValueFormattingError);
    }
    if (!r.done) throw bad();
    return t;
  } catch (e) {
    if (e instanceof Short) throw bad();
    throw e;
  }
}

// ---------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------

const P = {
  DELIVERY_TIMEOUT: 0x02,
  AUTHORIZATION_TOKEN: 0x03,
  EXPIRES: 0x08,
  LARGEST_OBJECT: 0x09,
  FORWARD: 0x10,
  SUBSCRIBER_PRIORITY: 0x20,
  SUBSCRIPTION_FILTER: 0x21,
  GROUP_ORDER: 0x22,
  NEW_GROUP_REQUEST: 0x32,
} as const;

const ALLOWED: Record<number, MessageName[]> = {
  [P.AUTHORIZATION_TOKEN]: [
    'publish',
    'subscribe',
    'request_update',
    'subscribe_namespace',
    'publish_namespace',
    'track_status',
    'fetch',
  ],
  [P.DELIVERY_TIMEOUT]: ['publish_ok', 'subscribe', 'request_update'],
  [P.SUBSCRIBER_PRIORITY]: ['subscribe', 'fetch', 'request_update', 'publish_ok'],
  [P.GROUP_ORDER]: ['subscribe', 'publish_ok', 'fetch'],
  [P.SUBSCRIPTION_FILTER]: ['subscribe', 'publish_ok', 'request_update'],
  [P.EXPIRES]: ['subscribe_ok', 'publish', 'publish_ok', 'request_ok'],
  [P.LARGEST_OBJECT]: ['subscribe_ok', 'publish', 'request_ok'],
  [P.FORWARD]: ['subscribe', 'request_update', 'publish', 'publish_ok', 'subscribe_namespace'],
  [P.NEW_GROUP_REQUEST]: ['publish_ok', 'subscribe', 'request_update'],
};

function writeParams(w: Writer, p: MessageParams): void {
  const pairs: KeyValue[] = [];
  for (const t of p.authTokens ?? []) pairs.push({ key: P.AUTHORIZATION_TOKEN, value: encodeAuthToken(t) });
  if (p.deliveryTimeoutMs !== undefined) pairs.push({ key: P.DELIVERY_TIMEOUT, value: p.deliveryTimeoutMs });
  if (p.subscriberPriority !== undefined) pairs.push({ key: P.SUBSCRIBER_PRIORITY, value: p.subscriberPriority });
  if (p.groupOrder !== undefined) {
    pairs.push({ key: P.GROUP_ORDER, value: p.groupOrder === 'ascending' ? 1 : 2 });
  }
  if (p.subscriptionFilter !== undefined) {
    const f = new Writer();
    writeFilter(f, p.subscriptionFilter);
    pairs.push({ key: P.SUBSCRIPTION_FILTER, value: f.finish() });
  }
  if (p.expiresMs !== undefined) pairs.push({ key: P.EXPIRES, value: p.expiresMs });
  if (p.largestObject !== undefined) {
    const l = new Writer();
    writeLocation(l, p.largestObject);
    pairs.push({ key: P.LARGEST_OBJECT, value: l.finish() });
  }
  if (p.forward !== undefined) pairs.push({ key: P.FORWARD, value: p.forward ? 1 : 0 });
  if (p.newGroupRequest !== undefined) pairs.push({ key: P.NEW_GROUP_REQUEST, value: p.newGroupRequest });
  writeCountedPairs(w, pairs);
}

function readParams(r: Reader, msg: MessageName): MessageParams {
  const p: MessageParams = {};
  const once = (present: boolean) => {
    if (present) throw new ProtocolError('repeated message parameter');
  };
  for (const kv of readCountedPairs(r)) {
    const allowed = ALLOWED[kv.key];
    if (allowed === undefined) throw new ProtocolError('unknown message parameter');
    if (!allowed.includes(msg)) continue;
    const v = kv.value;
    const int = typeof v === 'number' ? v : -1;
    switch (kv.key) {
      case P.DELIVERY_TIMEOUT:
        if (int === 0) throw new ProtocolError('DELIVERY_TIMEOUT of 0');
        once(p.deliveryTimeoutMs !== undefined);
        p.deliveryTimeoutMs = int;
        break;
      case P.SUBSCRIBER_PRIORITY:
        if (int > 255) throw new ProtocolError('SUBSCRIBER_PRIORITY above 255');
        once(p.subscriberPriority !== undefined);
        p.subscriberPriority = int;
        break;
      case P.GROUP_ORDER:
        if (int !== 1 && int !== 2) throw new ProtocolError('GROUP_ORDER not 1 or 2');
        once(p.groupOrder !== undefined);
        p.groupOrder = int === 1 ? 'ascending' : 'descending';
        break;
      case P.EXPIRES:
        once(p.expiresMs !== undefined);
        p.expiresMs = int;
        break;
      case P.FORWARD:
        if (int !== 0 && int !== 1) throw new ProtocolError('FORWARD not 0 or 1');
        once(p.forward !== undefined);
        p.forward = int === 1;
        break;
      case P.NEW_GROUP_REQUEST:
        once(p.newGroupRequest !== undefined);
        p.newGroupRequest = int;
        break;
      case P.SUBSCRIPTION_FILTER: {
        const fr = new Reader(v as Uint8Array);
        let f: SubscriptionFilter;
        try {
          f = readFilter(fr);
        } catch (e) {
          if (e instanceof Short) throw new ProtocolError('SUBSCRIPTION_FILTER shorter than its length');
          throw e;
        }
        if (!fr.done) throw new ProtocolError('SUBSCRIPTION_FILTER longer than its filter');
        once(p.subscriptionFilter !== undefined);
        p.subscriptionFilter = f;
        break;
      }
      case P.LARGEST_OBJECT: {
        const lr = new Reader(v as Uint8Array);
        const bad = () => new ProtocolError('LARGEST_OBJECT is not a Location', TerminationCode.KeyValueFormattingError);
        let l: Location;
        try {
          l = readLocation(lr);
        } catch {
          throw bad();
        }
        if (!lr.done) throw bad();
        once(p.largestObject !== undefined);
        p.largestObject = l;
        break;
      }
      case P.AUTHORIZATION_TOKEN:
        (p.authTokens ??= []).push(decodeAuthToken(v as Uint8Array));
        break;
    }
  }
  return p;
}

const S = {
  PATH: 0x01,
  MAX_REQUEST_ID: 0x02,
  AUTHORIZATION_TOKEN: 0x03,
  MAX_AUTH_TOKEN_CACHE_SIZE: 0x04,
  AUTHORITY: 0x05,
  MOQT_IMPLEMENTATION: 0x07,
} as const;

function writeSetupParams(w: Writer, p: SetupParams): void {
  const pairs: KeyValue[] = [];
  if (p.path !== undefined) pairs.push({ key: S.PATH, value: utf8(p.path) });
  if (p.maxRequestId !== undefined) pairs.push({ key: S.MAX_REQUEST_ID, value: p.maxRequestId });
  for (const t of p.authTokens ?? []) pairs.push({ key: S.AUTHORIZATION_TOKEN, value: encodeAuthToken(t) });
  if (p.maxAuthTokenCacheSize !== undefined) {
    pairs.push({ key: S.MAX_AUTH_TOKEN_CACHE_SIZE, value: p.maxAuthTokenCacheSize });
  }
  if (p.authority !== undefined) pairs.push({ key: S.AUTHORITY, value: utf8(p.authority) });
  if (p.implementation !== undefined) pairs.push({ key: S.MOQT_IMPLEMENTATION, value: utf8(p.implementation) });
  pairs.push(...(p.unknown ?? []));
  writeCountedPairs(w, pairs);
}

function readSetupParams(r: Reader): SetupParams {
  const p: SetupParams = {};
  const once = (present: boolean) => {
    if (present) throw new ProtocolError('repeated setup parameter');
  };
  for (const kv of readCountedPairs(r)) {
    const v = kv.value;
    switch (kv.key) {
      case S.PATH:
        once(p.path !== undefined);
        p.path = fromUtf8(v as Uint8Array);
        break;
      case S.AUTHORITY:
        once(p.authority !== undefined);
        p.authority = fromUtf8(v as Uint8Array);
        break;
      case S.MAX_REQUEST_ID:
        once(p.maxRequestId !== undefined);
        p.maxRequestId = v as number;
        break;
      case S.MAX_AUTH_TOKEN_CACHE_SIZE:
        once(p.maxAuthTokenCacheSize !== undefined);
        p.maxAuthTokenCacheSize = v as number;
        break;
      case S.AUTHORIZATION_TOKEN:
        (p.authTokens ??= []).push(decodeAuthToken(v as Uint8Array));
        break;
      case S.MOQT_IMPLEMENTATION:
        once(p.implementation !== undefined);
        p.implementation = fromUtf8(v as Uint8Array);
        break;
      default:
        (p.unknown ??= []).push(kv);
    }
  }
  return p;
}

function readExtensions(r: Reader): KeyValue[] {
  const ext = readPairsToEnd(r);
  checkTrackExtensions(ext);
  return ext;
}

// ---------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------

function writePayload(w: Writer, m: Message): void {
  switch (m.type) {
    case 'client_setup':
    case 'server_setup':
      writeSetupParams(w, m.params);
      break;
    case 'goaway':
      w.string(m.newSessionUri);
      break;
    case 'max_request_id':
    case 'requests_blocked':
      w.varint(m.maxRequestId);
      break;
    case 'request_ok':
    case 'publish_ok':
      w.varint(m.requestId);
      writeParams(w, m.params);
      break;
    case 'request_error':
      w.varint(m.requestId).varint(m.errorCode).varint(m.retryInterval).string(m.reason);
      break;
    case 'subscribe':
    case 'track_status':
      w.varint(m.requestId);
      writeNamespace(w, m.namespace);
      w.string(m.name);
      writeParams(w, m.params);
      break;
    case 'subscribe_ok':
      w.varint(m.requestId).varint(m.trackAlias);
      writeParams(w, m.params);
      writePairs(w, m.extensions);
      break;
    case 'request_update':
      w.varint(m.requestId).varint(m.existingRequestId);
      writeParams(w, m.params);
      break;
    case 'unsubscribe':
    case 'fetch_cancel':
    case 'publish_namespace_done':
      w.varint(m.requestId);
      break;
    case 'publish':
      w.varint(m.requestId);
      writeNamespace(w, m.namespace);
      w.string(m.name);
      w.varint(m.trackAlias);
      writeParams(w, m.params);
      writePairs(w, m.extensions);
      break;
    case 'publish_done':
      w.varint(m.requestId).varint(m.statusCode).varint(m.streamCount).string(m.reason);
      break;
    case 'fetch': {
      w.varint(m.requestId);
      const f = m.fetch;
      if (f.kind === 'standalone') {
        w.varint(1);
        writeNamespace(w, f.namespace);
        w.string(f.name);
        writeLocation(w, f.start);
        writeLocation(w, f.end);
      } else {
        w.varint(f.kind === 'relative' ? 2 : 3).varint(f.joiningRequestId).varint(f.joiningStart);
      }
      writeParams(w, m.params);
      break;
    }
    case 'fetch_ok':
      w.varint(m.requestId).u8(m.endOfTrack ? 1 : 0);
      writeLocation(w, m.endLocation);
      writeParams(w, m.params);
      writePairs(w, m.extensions);
      break;
    case 'publish_namespace':
      w.varint(m.requestId);
      writeNamespace(w, m.namespace);
      writeParams(w, m.params);
      break;
    case 'namespace':
    case 'namespace_done':
      writeNamespace(w, m.suffix);
      break;
    case 'publish_namespace_cancel':
      w.varint(m.requestId).varint(m.errorCode).string(m.reason);
      break;
    case 'subscribe_namespace':
      w.varint(m.requestId);
      writeNamespace(w, m.prefix);
      w.varint({ publish: 0, namespace: 1, both: 2 }[m.options]);
      writeParams(w, m.params);
      break;
  }
}

function readPayload(name: MessageName, r: Reader): Message {
  switch (name) {
    case 'client_setup': {
      const params = readSetupParams(r);
      if (params.authTokens?.some((t) => t.kind === 'delete' || t.kind === 'use-alias')) {
        throw new ProtocolError('CLIENT_SETUP token with DELETE or USE_ALIAS');
      }
      return { type: name, params };
    }
    case 'server_setup': {
      const params = readSetupParams(r);
      if (params.path !== undefined) throw new ProtocolError('PATH sent by a server', TerminationCode.InvalidPath);
      if (params.authority !== undefined) {
        throw new ProtocolError('AUTHORITY sent by a server', TerminationCode.InvalidAuthority);
      }
      return { type: name, params };
    }
    case 'goaway':
      return { type: name, newSessionUri: fromUtf8(r.lenBytes(8192, 'GOAWAY URI')) };
    case 'max_request_id':
    case 'requests_blocked':
      return { type: name, maxRequestId: r.varint() };
    case 'request_ok':
    case 'publish_ok': {
      const requestId = r.varint();
      return { type: name, requestId, params: readParams(r, name) };
    }
    case 'request_error': {
      const requestId = r.varint();
      const errorCode = r.varint();
      const retryInterval = r.varint();
      return { type: name, requestId, errorCode, retryInterval, reason: readReason(r) };
    }
    case 'subscribe':
    case 'track_status': {
      const requestId = r.varint();
      const namespace = readNamespace(r);
      const trackName = readTrackName(r, namespace);
      return { type: name, requestId, namespace, name: trackName, params: readParams(r, name) };
    }
    case 'subscribe_ok': {
      const requestId = r.varint();
      const trackAlias = r.varint();
      const params = readParams(r, name);
      return { type: name, requestId, trackAlias, params, extensions: readExtensions(r) };
    }
    case 'request_update': {
      const requestId = r.varint();
      const existingRequestId = r.varint();
      return { type: name, requestId, existingRequestId, params: readParams(r, name) };
    }
    case 'unsubscribe':
    case 'fetch_cancel':
    case 'publish_namespace_done':
      return { type: name, requestId: r.varint() };
    case 'publish': {
      const requestId = r.varint();
      const namespace = readNamespace(r);
      const trackName = readTrackName(r, namespace);
      const trackAlias = r.varint();
      const params = readParams(r, name);
      return {
        type: name,
        requestId,
        namespace,
        name: trackName,
        trackAlias,
        params,
        extensions: readExtensions(r),
      };
    }
    case 'publish_done': {
      const requestId = r.varint();
      const statusCode = r.varint();
      const streamCount = r.varint();
      return { type: name, requestId, statusCode, streamCount, reason: readReason(r) };
    }
    case 'fetch': {
      const requestId = r.varint();
      const code = r.varint();
      let fetch: FetchKind;
      if (code === 1) {
        const namespace = readNamespace(r);
        const trackName = readTrackName(r, namespace);
        const start = readLocation(r);
        const end = readLocation(r);
        fetch = { kind: 'standalone', namespace, name: trackName, start, end };
      } else if (code === 2 || code === 3) {
        const joiningRequestId = r.varint();
        const joiningStart = r.varint();
        fetch = { kind: code === 2 ? 'relative' : 'absolute', joiningRequestId, joiningStart };
      } else {
        throw new ProtocolError('unknown fetch type');
      }
      return { type: name, requestId, fetch, params: readParams(r, name) };
    }
    case 'fetch_ok': {
      const requestId = r.varint();
      const eot = r.u8();
      if (eot > 1) throw new ProtocolError('FETCH_OK End Of Track not 0 or 1');
      const endLocation = readLocation(r);
      const params = readParams(r, name);
      return { type: name, requestId, endOfTrack: eot === 1, endLocation, params, extensions: readExtensions(r) };
    }
    case 'publish_namespace': {
      const requestId = r.varint();
      const namespace = readNamespace(r);
      return { type: name, requestId, namespace, params: readParams(r, name) };
    }
    case 'namespace':
    case 'namespace_done':
      return { type: name, suffix: readNamespace(r, 0) };
    case 'publish_namespace_cancel': {
      const requestId = r.varint();
      const errorCode = r.varint();
      return { type: name, requestId, errorCode, reason: readReason(r) };
    }
    case 'subscribe_namespace': {
      const requestId = r.varint();
      const prefix = readNamespace(r, 0);
      const o = r.varint();
      const options = (['publish', 'namespace', 'both'] as const)[o];
      if (options === undefined) throw new ProtocolError('unknown SUBSCRIBE_NAMESPACE options');
      return { type: name, requestId, prefix, options, params: readParams(r, name) };
    }
  }
}

/** Writes one whole frame. Throws RangeError if the payload exceeds 65535 bytes. */
export function encodeMessage(m: Message): Uint8Array {
  const payload = new Writer();
  writePayload(payload, m);
  if (payload.length > 0xffff) throw new RangeError(`${m.type} payload of ${payload.length} bytes exceeds 65535`);
  const w = new Writer(payload.length + 4);
  w.varint(MessageType[m.type]).u16(payload.length).bytes(payload.finish());
  return w.finish();
}

/**
 * Reads one message from `r`. Throws {@link Short} (leaving `r` where it was) until the
 * whole frame is present; an unknown type or a payload that does not match its length
 * throws {@link ProtocolError}.
 */
export function decodeMessage(r: Reader): Message {
  const start = r.pos;
  try {
    const code = r.varint();
    const name = NAME_OF.get(code);
    if (name === undefined) throw new ProtocolError('unknown control message type');
    const len = r.u16();
    const body = r.sub(len);
    let m: Message;
    try {
      m = readPayload(name, body);
    } catch (e) {
      if (e instanceof Short) throw new ProtocolError('control message length shorter than its payload');
      throw e;
    }
    if (!body.done) throw new ProtocolError('control message length longer than its payload');
    return m;
  } catch (e) {
    if (e instanceof Short) r.pos = start;
    throw e;
  }
}
