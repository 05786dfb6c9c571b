/**
 * The transport a {@link Session} runs on: one bidirectional control stream, incoming and
 * outgoing unidirectional streams, and a close signal. {@link connectWebTransport} opens it
 * over the browser's WebTransport; tests connect two sessions through {@link memoryPair}.
 */

/** Why a transport closed. */
export interface CloseInfo {
  /** Application close code (a MoQT termination code), 0 when closed cleanly. */
  code: number;
  /** Reason text. */
  reason: string;
  /** Who closed: this side, the peer, or the network (a handshake or connection failure). */
  by: 'local' | 'remote' | 'network';
}

/** A byte stream pair or one direction of it. */
export interface Transport {
  /** The control stream, opened by the client. */
  readonly control: { readable: ReadableStream<Uint8Array>; writable: WritableStream<Uint8Array> };
  /** Unidirectional streams the peer opens. */
  readonly incoming: ReadableStream<ReadableStream<Uint8Array>>;
  /** Opens a unidirectional stream; a higher `sendOrder` is sent first. */
  createStream(sendOrder: number): Promise<WritableStream<Uint8Array>>;
  /** Resolves when the transport is closed, by either side. */
  readonly closed: Promise<CloseInfo>;
  /** Closes the transport with a code and reason. */
  close(code: number, reason: string): void;
}

/** Why {@link connectWebTransport} failed. */
export class ConnectError extends Error {
  /**
   * `unsupported`: this browser has no WebTransport. `handshake`: the relay could not be
   * reached or refused the connection, or the browser refused its certificate.
   */
  readonly kind: 'unsupported' | 'handshake';
  constructor(kind: 'unsupported' | 'handshake', message: string) {
    super(message);
    this.name = 'ConnectError';
    this.kind = kind;
  }
}

/** Parses a hex SHA-256 certificate hash (64 hex digits; colons and spaces allowed). */
export function parseCertHash(hash: string): Uint8Array {
  const s = hash.replace(/[\s:]/g, '');
  if (!/^[0-9a-fA-F]{64}$/.test(s)) throw new Error(`certificate hash must be 64 hex digits, got ${JSON.stringify(hash)}`);
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** The MoQT version offered as the WebTransport protocol (draft-16). */
export const MOQT_PROTOCOL = 'moqt-16';

/**
 * Opens a WebTransport session to `url` offering `moqt-16`, then the control stream. With
 * `acceptControl` (the server role behind a test bridge) it reads the control stream the
 * peer opens and writes on one it opens itself.
 * With `certificateHash` the browser accepts the relay's development certificate by its
 * SHA-256 (valid for less than 14 days, ECDSA); without it the usual certificate checks
 * apply.
 */
export async function connectWebTransport(
  url: string,
  certificateHash?: string,
  opts: { acceptControl?: boolean } = {},
): Promise<Transport> {
  if (typeof globalThis.WebTransport !== 'function') {
    throw new ConnectError('unsupported', 'This browser has no WebTransport: use a recent Chrome, Edge or Firefox.');
  }
  const options: WebTransportOptions & { protocols?: string[] } = { protocols: [MOQT_PROTOCOL] };
  if (certificateHash) {
    options.serverCertificateHashes = [{ algorithm: 'sha-256', value: parseCertHash(certificateHash) as BufferSource }];
  }
  let wt: WebTransport;
  try {
    wt = new WebTransport(url, options);
  } catch (e) {
    throw new ConnectError('handshake', `Cannot open ${redact(url)}: ${(e as Error).message}`);
  }
  try {
    await wt.ready;
  } catch (e) {
    const hint = certificateHash
      ? 'the certificate hash does not match the relay’s certificate, or the relay is not running'
      : 'the relay is not running, or its certificate was refused (for a development certificate, pass its SHA-256 as ?hash=)';
    throw new ConnectError('handshake', `Could not connect to ${redact(url)}: ${hint}. (${(e as Error).message})`);
  }
  const protocol = (wt as unknown as { protocol?: string }).protocol;
  if (protocol !== undefined && protocol !== '' && protocol !== MOQT_PROTOCOL) {
    wt.close({ closeCode: 0x15, reason: 'version negotiation failed' });
    throw new ConnectError('handshake', `The relay chose protocol ${protocol}, this client speaks ${MOQT_PROTOCOL}.`);
  }
  // The client opens the control stream. A page taking the server role behind a bridge
  // (tests) reads the stream the bridge opens and writes on one of its own.
  const control = opts.acceptControl
    ? await (async () => {
        const r = wt.incomingBidirectionalStreams.getReader();
        const { value } = await r.read();
        r.releaseLock();
        if (!value) throw new ConnectError('handshake', 'The session closed before the control stream opened.');
        const own = await wt.createBidirectionalStream();
        return { readable: (value as WebTransportBidirectionalStream).readable, writable: own.writable };
      })()
    : await wt.createBidirectionalStream();
  let localClose: CloseInfo | undefined;
  const closed = wt.closed.then(
    (info): CloseInfo => localClose ?? { code: info.closeCode ?? 0, reason: info.reason ?? '', by: 'remote' },
    (e): CloseInfo => localClose ?? { code: 0, reason: (e as Error).message || 'connection lost', by: 'network' },
  );
  return {
    control,
    incoming: wt.incomingUnidirectionalStreams as ReadableStream<ReadableStream<Uint8Array>>,
    createStream: (sendOrder) =>
      wt.createUnidirectionalStream({ sendOrder } as WebTransportSendStreamOptions) as Promise<WritableStream<Uint8Array>>,
    closed,
    close(code, reason) {
      localClose ??= { code, reason, by: 'local' };
      try {
        wt.close({ closeCode: code, reason });
      } catch {
        // Already closed.
      }
    },
  };
}

/** The URL without its query (a token may be there). */
export function redact(url: string): string {
  const i = url.indexOf('?');
  return i < 0 ? url : url.slice(0, i);
}

/**
 * A one-way bottleneck for {@link memoryPair}: bytes leave at `bps` (0: unlimited), one
 * queue shared by every stream in that direction, then wait `delayMs`. Both can change
 * while it runs, to emulate a link that degrades.
 */
export class MemoryLink {
  private nextFree = 0;

  constructor(
    /** Bits per second, 0 for unlimited. */
    public bps = 0,
    /** One-way delay in ms. */
    public delayMs = 0,
  ) {}

  /** Resolves when `n` bytes entering now have crossed the link. */
  async pass(n: number): Promise<void> {
    const now = performance.now();
    const start = Math.max(now, this.nextFree);
    const serialize = this.bps > 0 ? (n * 8000) / this.bps : 0;
    this.nextFree = start + serialize;
    const wait = start + serialize + this.delayMs - now;
    if (wait >= 1) await new Promise((r) => setTimeout(r, wait));
  }
}

function pipe(link?: MemoryLink): TransformStream<Uint8Array, Uint8Array> {
  if (!link) return new TransformStream<Uint8Array, Uint8Array>();
  return new TransformStream<Uint8Array, Uint8Array>({
    async transform(chunk, c) {
      await link.pass(chunk.length);
      c.enqueue(chunk);
    },
  });
}

/**
 * Two transports connected in memory, for tests of the session logic: what one writes the
 * other reads. `a` is the client side (it owns the control stream). `aToB` and `bToA`
 * optionally shape each direction.
 */
export function memoryPair(links: { aToB?: MemoryLink; bToA?: MemoryLink } = {}): { a: Transport; b: Transport } {
  const c1 = pipe(links.aToB);
  const c2 = pipe(links.bToA);
  const make = (
    control: { readable: ReadableStream<Uint8Array>; writable: WritableStream<Uint8Array> },
  ): { t: Transport; push: (s: ReadableStream<Uint8Array>) => void; shut: (i: CloseInfo) => void } => {
    let push!: (s: ReadableStream<Uint8Array>) => void;
    let end!: () => void;
    const incoming = new ReadableStream<ReadableStream<Uint8Array>>({
      start(c) {
        push = (s) => c.enqueue(s);
        end = () => {
          try {
            c.close();
          } catch {
            // Already closed.
          }
        };
      },
    });
    let resolve!: (i: CloseInfo) => void;
    const closed = new Promise<CloseInfo>((r) => (resolve = r));
    let isClosed = false;
    const shut = (i: CloseInfo) => {
      if (isClosed) return;
      isClosed = true;
      end();
      resolve(i);
    };
    const t: Transport = {
      control,
      incoming,
      createStream: async () => {
        throw new Error('not wired');
      },
      closed,
      close: () => undefined,
    };
    return { t, push, shut };
  };
  const A = make({ readable: c2.readable, writable: c1.writable });
  const B = make({ readable: c1.readable, writable: c2.writable });
  const link = (from: typeof A, to: typeof B, shape?: MemoryLink) => {
    from.t.createStream = async () => {
      const s = pipe(shape);
      to.push(s.readable);
      return s.writable;
    };
    from.t.close = (code, reason) => {
      from.shut({ code, reason, by: 'local' });
      to.shut({ code, reason, by: 'remote' });
    };
  };
  link(A, B, links.aToB);
  link(B, A, links.bToA);
  return { a: A.t, b: B.t };
}
