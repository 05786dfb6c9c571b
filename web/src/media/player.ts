/**
 * The player: reads a broadcast's catalog, subscribes to its audio and one video tier,
 * decodes with WebCodecs, draws video on a canvas and plays audio through WebAudio, both on
 * one playout clock (capture time + delay), and moves between tiers at group boundaries.
 */
import { Session, RequestError, type Subscription, type SessionOptions } from '../session.js';
import { ConnectError, redact } from '../transport.js';
import { RequestErrorCode } from '../wire/message.js';
import { ObjectStatus, type MoqObject } from '../wire/data.js';
import { CATALOG_TRACK, type Catalog, type CatalogTrack, applyDelta, mediaTracks, parseCatalog } from '../wire/catalog.js';
import { captureTimestampUs, locFromExtensions } from '../wire/ext.js';
import { toHex } from '../wire/coding.js';
import { Abr, type AbrConfig } from './abr.js';
import { Switcher, TierBuffer, DEFAULT_SWITCHER } from './switcher.js';
import { AudioJitter, PlayoutClock, TimerWatch, type PlayoutStats } from './jitter.js';

/** Why playback failed; `kind` says what to tell the user. */
export class PlayerError extends Error {
  /**
   * `unsupported`: no WebTransport or WebCodecs in this browser. `connect`: the relay could
   * not be reached or its certificate was refused. `not-found`: no such broadcast.
   * `unauthorized`: the token does not allow it. `catalog`: the catalog is missing or bad.
   * `decode`: the media cannot be decoded here. `closed`: the session ended.
   */
  readonly kind: 'unsupported' | 'connect' | 'not-found' | 'unauthorized' | 'catalog' | 'decode' | 'closed';
  constructor(kind: PlayerError['kind'], message: string) {
    super(message);
    this.name = 'PlayerError';
    this.kind = kind;
  }
}

/** Live figures of a player, also exposed as `window.tiermeshStats` by the pages. */
export interface PlayerStats {
  /** `connecting`, `playing`, `reconnecting` (after GOAWAY or a lost connection), `ended` or `error`. */
  state: 'connecting' | 'playing' | 'reconnecting' | 'ended' | 'error';
  /** Video frames out of the decoder. */
  framesDecoded: number;
  /** Video frames drawn on the canvas. */
  framesDrawn: number;
  /** Video frames skipped: late, or lost with the rest of their group. */
  framesDropped: number;
  /** Audio frames out of the decoder. */
  audioFramesDecoded: number;
  /** Audio frames scheduled for playback. */
  audioFramesPlayed: number;
  /** 20 ms audio slots filled by concealment (a lost or late frame). */
  audioFramesConcealed: number;
  /** Audio frames that arrived after their slot was concealed. */
  audioFramesLate: number;
  /**
   * Audio frames whose time had passed when the scheduler reached them (the page was busy):
   * not heard, though they were there.
   */
  audioFramesSkipped: number;
  /** The audio output's own latency (ms): a frame is heard this long after it leaves the player. */
  audioOutputLatencyMs: number;
  /** State of the WebAudio context (`running`, `suspended`: click to enable sound). */
  audioState: string;
  /** The video track playing. */
  tier: string;
  /** Its index in the ladder (0 = lowest). */
  tierIndex: number;
  /** The ladder, lowest first. */
  tiers: string[];
  /** The codec string the video decoder was last configured with (`avc1.42e01f`, `av01.0.04M.08`). */
  videoCodec: string;
  /** Tier switches so far. */
  switches: { at: number; from: string; to: string; reason: string }[];
  /** Received media bit rate (audio + video), kb/s over the last 2 s. */
  bitrateKbps: number;
  /** ABR throughput estimate, kb/s (0 while unknown). */
  throughputKbps: number;
  /** Capture-to-display latency of drawn frames, from their LOC timestamps (ms). */
  latencyMs: { p50: number; last: number };
  /** Capture-to-arrival latency of video objects (ms). */
  arrivalLatencyMs: { p50: number; last: number };
  /** Capture-to-decoded latency of video frames (ms): arrival plus the decoder's time. */
  decodeLatencyMs: { p50: number; last: number };
  /** The playout delay in use (ms after capture). */
  playoutDelayMs: number;
  /**
   * Why the playout delay is what it is: the transit floor and spread it covers, what late
   * audio frames did to it, and how the page's 10 ms audio timer kept time (longest gap
   * between two runs, runs after a stall over 30 ms).
   */
  playout: PlayoutStats & { longestTimerGapMs: number; timerStalls: number };
  /** Errors met, newest last. */
  errors: string[];
}

/** Options of {@link Player.start}. */
export interface PlayerOptions {
  /** `https://host:port/<broadcast path>[?jwt=…]`. */
  url: string;
  /** SHA-256 of the relay's development certificate (64 hex digits). */
  certificateHash?: string;
  /** Where video is drawn. */
  canvas: HTMLCanvasElement;
  /** The broadcast namespace; by default the URL path's segments. */
  namespace?: string[];
  /** Play audio (default true). */
  audio?: boolean;
  /** First tier: `lowest` (default), `highest`, or an index. */
  startTier?: 'lowest' | 'highest' | number;
  /** ABR tuning, or false to stay on the start tier. */
  abr?: Partial<AbrConfig> | false;
  /** Called about four times a second with fresh stats. */
  onStats?: (s: PlayerStats) => void;
  /** Called when playback fails after it started (the session closed, decoding failed). */
  onError?: (e: PlayerError) => void;
  /** Use this session instead of connecting (it is not closed by stop()). */
  useSession?: Session;
  /** Extra session options. */
  session?: SessionOptions;
}

/** The namespace a URL names: its path segments (`/clinic/room-42` → ["clinic","room-42"]). */
export function namespaceFromUrl(url: string): string[] {
  const u = new URL(url);
  return u.pathname
    .split('/')
    .filter((s) => s.length > 0)
    .map((s) => decodeURIComponent(s));
}

/** Maps session and request failures to a {@link PlayerError} a person can act on. */
export function explain(e: unknown, what: string): PlayerError {
  if (e instanceof PlayerError) return e;
  if (e instanceof ConnectError) return new PlayerError(e.kind === 'unsupported' ? 'unsupported' : 'connect', e.message);
  if (e instanceof RequestError) {
    if (e.code === RequestErrorCode.DoesNotExist) return new PlayerError('not-found', `Broadcast ${what} not found on the relay.`);
    if (e.code === RequestErrorCode.Unauthorized || e.code === RequestErrorCode.ExpiredAuthToken || e.code === RequestErrorCode.MalformedAuthToken) {
      return new PlayerError('unauthorized', `Not allowed to play ${what}: ${e.message}. Check the ?jwt= token.`);
    }
    return new PlayerError('closed', e.message);
  }
  return new PlayerError('closed', e instanceof Error ? e.message : String(e));
}

const SAMPLES = 120;

/**
 * How long ABR waits for a fresh join after a stall (SUBSCRIBE and its joining FETCH answered)
 * before it decides again: a relay that leaves them unanswered must not stop ABR for good.
 * 5 s, as the catalog's deadline.
 */
const REJOIN_WAIT_MS = 5000;

/** Delivery timeout asked for video: past a second an object is only in the way. */
const VIDEO_DELIVERY_TIMEOUT_MS = 1000;
/** Delivery timeout asked for audio: beyond the largest playout margin a frame cannot play. */
const AUDIO_DELIVERY_TIMEOUT_MS = 600;

function median(xs: number[]): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** The WebCodecs codec string for an avcC record (`avc1.PPCCLL`). */
export function avcCodecString(avcC: Uint8Array): string {
  return `avc1.${toHex(avcC.subarray(1, 4))}`;
}

/** A subscribed video tier and the objects of it that wait for the decoder. */
class TierState extends TierBuffer<MoqObject> {
  sub?: Subscription;
  constructor(
    index: number,
    readonly track: CatalogTrack,
  ) {
    super(index);
  }
}

/** A running player. */
export class Player {
  /** Live figures. */
  readonly stats: PlayerStats = {
    state: 'connecting',
    framesDecoded: 0,
    framesDrawn: 0,
    framesDropped: 0,
    audioFramesDecoded: 0,
    audioFramesPlayed: 0,
    audioFramesConcealed: 0,
    audioFramesLate: 0,
    audioFramesSkipped: 0,
    audioOutputLatencyMs: 0,
    audioState: 'none',
    tier: '',
    tierIndex: -1,
    tiers: [],
    videoCodec: '',
    switches: [],
    bitrateKbps: 0,
    throughputKbps: 0,
    latencyMs: { p50: 0, last: 0 },
    arrivalLatencyMs: { p50: 0, last: 0 },
    decodeLatencyMs: { p50: 0, last: 0 },
    playoutDelayMs: 0,
    playout: { floorMs: 0, spreadMs: 0, samplesStalled: 0, lateRaised: 0, lateCovered: 0, lateStalled: 0, raisedMs: 0, longestTimerGapMs: 0, timerStalls: 0 },
    errors: [],
  };
  /** The broadcast namespace. */
  readonly namespace: string[];
  /** The catalog in use. */
  catalog?: Catalog;

  private session?: Session;
  private ladder: CatalogTrack[] = [];
  private clock = new PlayoutClock();
  private abr?: Abr;
  /** The tier playing, the one a switch waits for, and the order of their objects. */
  private switcher = new Switcher<MoqObject, TierState>();
  /** Since when a fresh join after a stall is on its way (no other switch meanwhile). */
  private rejoiningSince?: number;
  private decoder?: VideoDecoder;
  private decoderConfig = '';
  private frames: { frame: VideoFrame; captureMs: number }[] = [];
  private drawLatency: number[] = [];
  private arrivalLatency: number[] = [];
  private decodeLatency: number[] = [];
  private received: { t: number; n: number }[] = [];
  private timers: ReturnType<typeof setInterval>[] = [];
  private raf = 0;
  private stopped = false;
  private ctx2d: CanvasRenderingContext2D;
  private audio?: AudioPipeline;
  private audioSub?: Subscription;
  private catalogSub?: Subscription;

  private constructor(private readonly opts: PlayerOptions) {
    this.namespace = opts.namespace ?? namespaceFromUrl(opts.url);
    const ctx = opts.canvas.getContext('2d');
    if (!ctx) throw new PlayerError('unsupported', 'This browser cannot draw on a canvas.');
    this.ctx2d = ctx;
  }

  /**
   * Connects, reads the catalog and starts playing. Rejects with {@link PlayerError} when
   * it cannot start (no WebTransport, certificate refused, broadcast not found, …).
   */
  static async start(opts: PlayerOptions): Promise<Player> {
    const p = new Player(opts);
    try {
      await p.run();
    } catch (e) {
      const err = explain(e, p.namespace.join('/'));
      p.fail(err);
      p.stop();
      throw err;
    }
    return p;
  }

  private fail(e: PlayerError): void {
    this.stats.errors.push(e.message);
    this.stats.state = 'error';
  }

  private async run(): Promise<void> {
    if (typeof VideoDecoder !== 'function') {
      throw new PlayerError('unsupported', 'This browser has no WebCodecs (VideoDecoder): use a recent Chrome or Edge.');
    }
    const name = this.namespace.join('/');
    this.session = this.opts.useSession ?? (await this.connect(this.opts.url));
    this.watch(this.session);
    this.catalog = await this.readCatalog(name);
    const media = mediaTracks(this.catalog);
    this.ladder = media.video;
    if (this.ladder.length === 0 && !media.audio) throw new PlayerError('catalog', `The catalog of ${name} lists no audio or video track.`);
    this.stats.tiers = this.ladder.map((t) => t.name);
    const top = this.ladder[this.ladder.length - 1];
    if (top?.width && top?.height) {
      this.opts.canvas.width = top.width;
      this.opts.canvas.height = top.height;
    }
    if (media.audio && this.opts.audio !== false) {
      this.audio = new AudioPipeline(media.audio, this.clock, this.stats, (m) => this.error(m));
      this.audioSub = await this.session.subscribe(this.namespace, media.audio.name, {
        priority: 16,
        deliveryTimeoutMs: AUDIO_DELIVERY_TIMEOUT_MS,
        onObject: (o) => {
          this.count(o.payload.length);
          this.audio?.onObject(o);
        },
      });
    }
    if (this.ladder.length > 0) {
      const s = this.opts.startTier ?? 'lowest';
      const start = s === 'lowest' ? 0 : s === 'highest' ? this.ladder.length - 1 : Math.max(0, Math.min(s, this.ladder.length - 1));
      if (this.opts.abr !== false) this.abr = new Abr(this.ladder.map((t) => ({ name: t.name, bitrate: t.bitrate ?? 0 })), start, this.opts.abr);
      this.switcher.play(await this.openTier(start, true), performance.now());
      this.stats.tier = this.ladder[start].name;
      this.stats.tierIndex = start;
    }
    this.stats.state = 'playing';
    this.timers.push(setInterval(() => this.tick(), 250));
    this.timers.push(setInterval(() => this.pump(), 50));
    const frame = () => {
      if (this.stopped) return;
      this.render();
      this.raf = requestAnimationFrame(frame);
    };
    this.raf = requestAnimationFrame(frame);
  }

  private connect(url: string): Promise<Session> {
    return Session.connect(url, {
      certificateHash: this.opts.certificateHash,
      ...this.opts.session,
      onGoaway: (uri) => void this.reconnect(this.goawayUrl(uri), 'the relay sent GOAWAY'),
    });
  }

  /** The URL to reconnect to after GOAWAY: the new URI if it is https, with our token. */
  private goawayUrl(uri: string): string {
    if (!uri.startsWith('https://')) return this.opts.url;
    const next = new URL(uri);
    const jwt = new URL(this.opts.url).searchParams.get('jwt');
    if (jwt && !next.searchParams.has('jwt')) next.searchParams.set('jwt', jwt);
    return next.toString();
  }

  /** Reacts to the end of `session`: reconnects if it was ours and playback goes on. */
  private watch(session: Session): void {
    void session.closed.then((info) => {
      if (this.stopped || session !== this.session || info.by === 'local') return;
      const why = `The relay closed the session${info.reason ? `: ${info.reason}` : ''} (code ${info.code}).`;
      if (this.opts.useSession) {
        const e = new PlayerError('closed', why);
        this.fail(e);
        this.opts.onError?.(e);
        return;
      }
      void this.reconnect(this.opts.url, why);
    });
  }

  private reconnecting = false;

  /**
   * Opens a new session (after GOAWAY or a lost connection), subscribes again to the
   * catalog, the audio and the current tier (with a joining fetch, so video resumes at a key
   * frame), then drops the old session. Retries with backoff until stopped.
   */
  private async reconnect(url: string, why: string): Promise<void> {
    if (this.stopped || this.reconnecting || this.opts.useSession) return;
    this.reconnecting = true;
    this.stats.state = 'reconnecting';
    this.error(`reconnecting: ${why}`);
    const old = this.session;
    for (let attempt = 0; !this.stopped; attempt++) {
      try {
        const session = await this.connect(url);
        this.session = session;
        this.watch(session);
        await this.readCatalog(this.namespace.join('/'));
        const audio = this.audioSub;
        if (audio && this.audio) {
          this.audioSub = await session.subscribe(this.namespace, audio.name, {
            priority: 16,
            onObject: (o) => {
              this.count(o.payload.length);
              this.audio?.onObject(o);
            },
          });
        }
        const feed = this.switcher.feed;
        if (feed) {
          this.switcher.cancelPending();
          this.switcher.play(await this.openTier(feed.index, true), performance.now());
        }
        if (old && old !== session) old.close(0, 'moved to a new session');
        this.stats.state = 'playing';
        break;
      } catch (e) {
        this.error(`reconnect: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, Math.min(5000, 500 * 2 ** attempt)));
      }
    }
    this.reconnecting = false;
  }

  private error(message: string): void {
    this.stats.errors.push(message);
    if (this.stats.errors.length > 50) this.stats.errors.shift();
  }

  private count(n: number): void {
    this.received.push({ t: performance.now(), n });
  }

  private async readCatalog(name: string): Promise<Catalog> {
    const session = this.session!;
    let catalog: Catalog | undefined;
    let resolve!: (c: Catalog) => void;
    let reject!: (e: Error) => void;
    const first = new Promise<Catalog>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const onObject = (o: MoqObject) => {
      if (o.status !== ObjectStatus.Normal || o.payload.length === 0) return;
      try {
        const c = parseCatalog(o.payload);
        if (c.deltaUpdate) {
          if (catalog) catalog = applyDelta(catalog, c);
        } else {
          catalog = c;
        }
        if (catalog) {
          this.catalog = catalog;
          if (catalog.isComplete) this.stats.state = 'ended';
          resolve(catalog);
        }
      } catch (e) {
        this.error(`catalog: ${(e as Error).message}`);
        reject(new PlayerError('catalog', `The catalog of ${name} is not valid: ${(e as Error).message}`));
      }
    };
    // A relay that has just subscribed upstream may let the catalog object go past before
    // this subscription is attached (it is then neither forwarded nor in the range of the
    // joining fetch): after a short wait, subscribe again, which finds it in the cache.
    const deadline = Date.now() + 5000;
    const late = () => new PlayerError('catalog', `No catalog arrived for ${name} within 5 s.`);
    // Every step waits at most until the deadline: a relay that leaves a SUBSCRIBE or its
    // joining FETCH unanswered must not hang the player (the room page then tries again).
    const until = <T>(p: Promise<T>, ms = deadline - Date.now()): Promise<T | undefined> =>
      Promise.race([p, new Promise<undefined>((res) => setTimeout(() => res(undefined), Math.max(0, ms)))]);
    for (let attempt = 0; ; attempt++) {
      // One subscription per track and session: the previous attempt goes first.
      this.catalogSub?.unsubscribe();
      const pending = session.subscribe(this.namespace, CATALOG_TRACK, { priority: 0, onObject });
      const sub = await until(pending);
      if (!sub) {
        // Answered after all: let it go rather than leave it open.
        void pending.then((s) => s.unsubscribe(), () => undefined);
        throw late();
      }
      this.catalogSub = sub;
      // Nothing published yet (no largest object): the first catalog comes on the subscription.
      await until(sub.joiningFetch(0).catch(() => undefined));
      const c = await until(first, Math.min(attempt < 2 ? 1200 : 5000, deadline - Date.now()));
      if (c) return c;
      if (Date.now() >= deadline) throw late();
    }
  }

  private async openTier(index: number, join: boolean): Promise<TierState> {
    const track = this.ladder[index];
    const st = new TierState(index, track);
    st.sub = await this.session!.subscribe(this.namespace, track.name, {
      priority: 32 + 16 * index,
      // A video object more than a second late is worth less than the bandwidth it takes:
      // the relay may reset its stream (the player moves on to the next group).
      deliveryTimeoutMs: VIDEO_DELIVERY_TIMEOUT_MS,
      filter: join ? { type: 'largest-object' } : { type: 'next-group-start' },
      onObject: (o, source) => this.onVideoObject(st, o, source === 'fetch'),
      onGroupEnd: (g, last) => {
        st.end(g, last, performance.now());
        this.pump();
      },
    });
    if (join) {
      await st.sub.joiningFetch(0).catch((e) => this.error(`joining fetch: ${(e as Error).message}`));
    } else {
      st.startGroup = (st.sub.largest?.group ?? -1) + 1;
    }
    return st;
  }

  private onVideoObject(st: TierState, o: MoqObject, fetched = false): void {
    this.count(o.payload.length);
    const now = performance.now();
    if (o.status !== ObjectStatus.Normal) {
      if (o.status === ObjectStatus.EndOfGroup) st.end(o.groupId, o.objectId - 1, now);
      this.pump();
      return;
    }
    const us = captureTimestampUs(o.extensions);
    // Objects of a joining fetch are old by design (the start of the current group): they
    // say nothing about the network, so they feed neither the playout clock nor ABR.
    if (us !== undefined && !fetched) {
      const captureMs = us / 1000;
      const lat = Date.now() - captureMs;
      this.clock.observe(Date.now(), captureMs, this.audio?.timer.busy(performance.now()));
      if (st === this.switcher.feed) {
        this.arrivalLatency.push(lat);
        if (this.arrivalLatency.length > SAMPLES) this.arrivalLatency.shift();
        this.abr?.onObject(now, o.payload.length, o.firstByteAt, o.receivedAt, lat);
      }
    }
    st.add(o, now);
    this.pump();
  }

  /** Feeds the decoder in order, moving to the next group (or the next tier) at group boundaries. */
  private pump(): void {
    if (this.stopped) return;
    const now = performance.now();
    for (let out = this.switcher.poll(now); out; out = this.switcher.poll(now)) {
      switch (out.kind) {
        case 'decode':
          this.decode(out.tier, out.object);
          break;
        case 'switched':
          out.from.sub?.unsubscribe();
          this.switched(out.from, out.to, this.switchReason);
          break;
        case 'skipped':
          if (out.stalled) {
            this.stats.framesDropped += out.frames;
            this.abr?.onStall(now);
          }
          if (out.groups > 0) this.error(`skipped ${out.groups} group(s) of ${out.tier.track.name}`);
          break;
      }
    }
  }

  /** Notes in the stats that `to` plays now instead of `from`. */
  private switched(from: TierState, to: TierState, reason: string): void {
    this.stats.tier = to.track.name;
    this.stats.tierIndex = to.index;
    this.stats.switches.push({ at: Date.now(), from: from.track.name, to: to.track.name, reason });
  }

  private switchReason = '';

  /** Switches to tier `index` at the next group boundary (or at once if nothing plays). */
  async switchTier(index: number, reason = 'manual'): Promise<void> {
    const feed = this.switcher.feed;
    if (!feed || index === feed.index || this.stopped) return;
    if (this.switcher.pending?.index === index) return;
    this.switcher.cancelPending()?.sub?.unsubscribe();
    this.switchReason = reason;
    const stalled = performance.now() - this.switcher.lastProgress > 1500;
    const st = await this.openTier(index, stalled);
    if (this.stopped) return;
    if (stalled) {
      // Nothing is playing: take the new tier at once, from the start of its current group.
      const from = this.switcher.feed!;
      from.sub?.unsubscribe();
      this.switcher.play(st, performance.now());
      this.switched(from, st, `${reason} (stalled)`);
      this.pump();
      return;
    }
    this.switcher.pend(st);
  }

  /**
   * Leaves `from`, the tier playing, which stalled while a switch to `pending` waited and
   * neither brought anything: subscribes tier `index` afresh with a joining fetch and plays
   * it at once. `from` plays on until then (it is unsubscribed first only when it is the
   * same track: one subscription per track and session).
   */
  private async rejoin(index: number, from: TierState, pending: TierState): Promise<void> {
    const since = performance.now();
    this.rejoiningSince = since;
    pending.sub?.unsubscribe();
    if (from.index === index) from.sub?.unsubscribe();
    const reason = `${from.track.name} stalled and ${pending.track.name} was not arriving: joined ${this.ladder[index].name} afresh`;
    this.error(reason);
    try {
      const st = await this.openTier(index, true);
      if (this.stopped || this.switcher.feed !== from) {
        // Stopped, or a reconnection replaced the feed meanwhile.
        st.sub?.unsubscribe();
        return;
      }
      from.sub?.unsubscribe();
      // A switch ABR decided after the wait below ran out gives way to the join.
      this.switcher.cancelPending()?.sub?.unsubscribe();
      const now = performance.now();
      this.switcher.play(st, now);
      this.abr?.fellBack(index, from.index, now);
      this.switched(from, st, reason);
      this.pump();
    } catch (e) {
      this.error(`join ${this.ladder[index].name}: ${(e as Error).message}`);
    } finally {
      if (this.rejoiningSince === since) this.rejoiningSince = undefined;
    }
  }

  /** Fixes the tier (an index) or gives the choice back to ABR ('auto'). */
  setTier(t: number | 'auto'): void {
    if (t === 'auto') {
      if (!this.abr && this.opts.abr !== false) {
        this.abr = new Abr(this.ladder.map((x) => ({ name: x.name, bitrate: x.bitrate ?? 0 })), this.switcher.feed?.index ?? 0, this.opts.abr || {});
      }
      return;
    }
    this.abr = undefined;
    void this.switchTier(t, 'manual');
  }

  private decode(st: TierState, o: MoqObject): void {
    const loc = (() => {
      try {
        return locFromExtensions(o.extensions);
      } catch (e) {
        this.error(`LOC: ${(e as Error).message}`);
        return {};
      }
    })();
    const key = o.objectId === 0;
    if (key) {
      const desc = loc.videoConfig;
      let codec = st.track.codec ?? '';
      if (desc && (codec === '' || codec.startsWith('avc1') || codec.startsWith('avc3')) && desc.length >= 4 && desc[0] === 1) {
        codec = avcCodecString(desc);
      }
      const id = `${codec}|${desc ? toHex(desc) : ''}`;
      if (!this.decoder || this.decoder.state === 'closed' || id !== this.decoderConfig) {
        this.configure(codec, desc);
        this.decoderConfig = id;
      }
    }
    if (!this.decoder || this.decoder.state !== 'configured') {
      this.stats.framesDropped++;
      return;
    }
    const us = captureTimestampUs(o.extensions) ?? Date.now() * 1000;
    try {
      this.decoder.decode(new EncodedVideoChunk({ type: key ? 'key' : 'delta', timestamp: us, data: o.payload }));
    } catch (e) {
      this.error(`decode: ${(e as Error).message}`);
      this.resetDecoder();
    }
  }

  private configure(codec: string, description?: Uint8Array): void {
    if (!this.decoder || this.decoder.state === 'closed') {
      this.decoder = new VideoDecoder({
        output: (f) => {
          this.stats.framesDecoded++;
          this.frames.push({ frame: f, captureMs: f.timestamp / 1000 });
          this.decodeLatency.push(Date.now() - f.timestamp / 1000);
          if (this.decodeLatency.length > SAMPLES) this.decodeLatency.shift();
          if (this.frames.length > 60) {
            this.frames.shift()!.frame.close();
            this.stats.framesDropped++;
          }
        },
        error: (e) => {
          this.error(`video decoder: ${e.message}`);
          this.resetDecoder();
        },
      });
    }
    const config: VideoDecoderConfig = { codec, optimizeForLatency: true };
    if (description) config.description = description as BufferSource;
    try {
      this.decoder.configure(config);
      this.stats.videoCodec = codec;
    } catch (e) {
      const err = new PlayerError('decode', `This browser cannot decode ${codec}: ${(e as Error).message}`);
      this.error(err.message);
      this.opts.onError?.(err);
    }
  }

  private resetDecoder(): void {
    try {
      this.decoder?.close();
    } catch {
      // Already closed.
    }
    this.decoder = undefined;
    this.decoderConfig = '';
    // Start again at the next key frame.
    this.switcher.resync();
  }

  private render(): void {
    const now = Date.now();
    const delay = this.clock.delayMs;
    let pick: { frame: VideoFrame; captureMs: number } | undefined;
    while (this.frames.length > 0) {
      const f = this.frames[0];
      if (delay !== undefined && f.captureMs + delay > now) break;
      this.frames.shift();
      if (pick) {
        pick.frame.close();
        this.stats.framesDropped++;
      }
      pick = f;
    }
    if (!pick) return;
    const c = this.opts.canvas;
    this.ctx2d.drawImage(pick.frame, 0, 0, c.width, c.height);
    pick.frame.close();
    this.stats.framesDrawn++;
    const lat = now - pick.captureMs;
    this.drawLatency.push(lat);
    if (this.drawLatency.length > SAMPLES) this.drawLatency.shift();
  }

  private tick(): void {
    const now = performance.now();
    while (this.received.length > 0 && now - this.received[0].t > 2000) this.received.shift();
    const bytes = this.received.reduce((n, r) => n + r.n, 0);
    this.stats.bitrateKbps = Math.round((bytes * 8) / 2000);
    this.stats.latencyMs = { p50: Math.round(median(this.drawLatency)), last: Math.round(this.drawLatency.at(-1) ?? 0) };
    this.stats.arrivalLatencyMs = { p50: Math.round(median(this.arrivalLatency)), last: Math.round(this.arrivalLatency.at(-1) ?? 0) };
    this.stats.decodeLatencyMs = { p50: Math.round(median(this.decodeLatency)), last: Math.round(this.decodeLatency.at(-1) ?? 0) };
    this.stats.playoutDelayMs = Math.round(this.clock.delayMs ?? 0);
    const p = this.clock.stats;
    this.stats.playout = {
      ...p,
      floorMs: Math.round(p.floorMs),
      spreadMs: Math.round(p.spreadMs),
      raisedMs: Math.round(p.raisedMs),
      longestTimerGapMs: Math.round(this.audio?.timer.longestGapMs ?? 0),
      timerStalls: this.audio?.timer.stalls ?? 0,
    };
    if (this.audio) {
      this.stats.audioState = this.audio.state;
      this.stats.audioFramesLate = this.audio.late;
      this.stats.audioOutputLatencyMs = this.audio.outputLatencyMs;
    }
    if (this.abr) {
      this.stats.throughputKbps = Math.round(this.abr.throughput / 1000);
      // The video tier's own rate (audio is about 32 kb/s of the total).
      this.abr.observedBitrate = Math.max(0, this.stats.bitrateKbps - 40) * 1000;
    }
    const action = this.switcher.check(now, this.abr !== undefined);
    if (action?.kind === 'abandoned') {
      // The new tier never delivered the start of a group in time: back to deciding.
      action.tier.sub?.unsubscribe();
      this.error(`switch to ${action.tier.track.name} given up: none of its group starts came within ${DEFAULT_SWITCHER.maxGroups} groups`);
      if (this.switcher.feed) this.abr?.abandon(this.switcher.feed.index, now);
    } else if (action?.kind === 'fell-back') {
      // The tier playing gave nothing for a while; the tier the switch waited for is arriving.
      action.from.sub?.unsubscribe();
      this.abr?.fellBack(action.to.index, action.from.index, now);
      this.switched(action.from, action.to, `${this.switchReason} (${action.from.track.name} stalled: ${action.to.track.name} at once)`);
      this.pump();
    } else if (action?.kind === 'rejoin') {
      // Neither tier is arriving: join the lowest afresh (under ABR) or the tier asked for
      // by hand, which starts at a key frame at once.
      const index = this.abr ? 0 : action.pending.index;
      void this.rejoin(index, action.from, action.pending);
    }
    const rejoining = this.rejoiningSince !== undefined && now - this.rejoiningSince < REJOIN_WAIT_MS;
    if (this.abr && !this.switcher.pending && !rejoining && this.switcher.feed) {
      const d = this.abr.decide(now);
      if (d && d.tier !== this.switcher.feed.index) void this.switchTier(d.tier, d.reason).catch((e) => this.error(`switch: ${(e as Error).message}`));
    }
    this.opts.onStats?.(this.stats);
  }

  /** Resumes audio after a user gesture (browsers start WebAudio suspended). */
  resumeAudio(): Promise<void> {
    return this.audio?.resume() ?? Promise.resolve();
  }

  /** Stops playback and closes the session. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    cancelAnimationFrame(this.raf);
    for (const f of this.frames) f.frame.close();
    this.frames = [];
    try {
      this.decoder?.close();
    } catch {
      // Already closed.
    }
    this.audio?.close();
    this.audioSub?.unsubscribe();
    this.catalogSub?.unsubscribe();
    this.switcher.feed?.sub?.unsubscribe();
    this.switcher.pending?.sub?.unsubscribe();
    if (!this.opts.useSession) this.session?.close(0, 'player stopped');
    if (this.stats.state !== 'error') this.stats.state = 'ended';
  }

  /** The URL without its token, for display. */
  get displayUrl(): string {
    return redact(this.opts.url);
  }
}

/** Decodes Opus with WebCodecs and schedules it on WebAudio through the jitter buffer. */
class AudioPipeline {
  private ctx: AudioContext;
  private decoder: AudioDecoder;
  private jitter = new AudioJitter<Float32Array[]>();
  // Decoder outputs come in input order, one per Opus packet; their timestamps may be
  // regenerated by the decoder, so the group ID and capture time travel in this queue.
  private inFlight: { seq: number; captureMs: number }[] = [];
  private last?: Float32Array[];
  private run = 0;
  private nextStart = 0;
  private interval: ReturnType<typeof setInterval>;
  /** Stalls of the page, seen by the scheduler's timer. */
  readonly timer = new TimerWatch();
  private readonly channels: number;
  private readonly rate: number;

  constructor(
    track: CatalogTrack,
    private readonly clock: PlayoutClock,
    private readonly stats: PlayerStats,
    private readonly error: (m: string) => void,
  ) {
    this.rate = track.samplerate ?? 48000;
    this.channels = Math.max(1, parseInt(track.channelConfig ?? '1', 10) || 1);
    this.ctx = new AudioContext({ sampleRate: this.rate, latencyHint: 'interactive' });
    void this.ctx.resume().catch(() => undefined);
    this.decoder = new AudioDecoder({
      output: (d) => this.onDecoded(d),
      error: (e) => this.error(`audio decoder: ${e.message}`),
    });
    this.decoder.configure({ codec: track.codec ?? 'opus', sampleRate: this.rate, numberOfChannels: this.channels });
    this.interval = setInterval(() => this.schedule(), 10);
  }

  get state(): string {
    return this.ctx.state;
  }

  get late(): number {
    return this.jitter.late;
  }

  get outputLatencyMs(): number {
    return Math.round((this.ctx.baseLatency + (this.ctx.outputLatency ?? 0)) * 1000);
  }

  resume(): Promise<void> {
    return this.ctx.resume();
  }

  onObject(o: MoqObject): void {
    if (o.status !== ObjectStatus.Normal || o.payload.length === 0) return;
    const us = captureTimestampUs(o.extensions);
    if (us === undefined) return;
    this.clock.observe(Date.now(), us / 1000, this.timer.busy(performance.now()));
    if (this.decoder.state !== 'configured') return;
    try {
      this.decoder.decode(new EncodedAudioChunk({ type: 'key', timestamp: us, data: o.payload }));
      this.inFlight.push({ seq: o.groupId, captureMs: us / 1000 });
    } catch (e) {
      this.error(`audio decode: ${(e as Error).message}`);
    }
  }

  private onDecoded(d: AudioData): void {
    this.stats.audioFramesDecoded++;
    const meta = this.inFlight.shift();
    const planes: Float32Array[] = [];
    for (let c = 0; c < d.numberOfChannels; c++) {
      const p = new Float32Array(d.numberOfFrames);
      d.copyTo(p, { planeIndex: c, format: 'f32-planar' });
      planes.push(p);
    }
    d.close();
    // A frame too late for its slot means the delay is short of what decoding and
    // scheduling need here, unless the page stalled when its slot was decided: the clock
    // lengthens it towards what this frame needed (it shrinks again when things calm down).
    if (meta && !this.jitter.push(meta.seq, meta.captureMs, planes)) {
      this.clock.late(performance.now(), Date.now() - meta.captureMs, this.jitter.concealedInStall(meta.seq));
    }
  }

  /**
   * Maps a wall-clock time (ms) to the AudioContext's clock (s), as the time a buffer leaves
   * the player: the context renders `currentTime` now. Audio is then heard
   * {@link outputLatencyMs} later, as a frame drawn on the canvas is seen a display
   * refresh or two later. (Mapped to the time it is heard, from getOutputTimestamp, a frame
   * handed over 40 ms ahead fell behind `currentTime` wherever the output latency was over
   * 40 ms, 40-43 ms in headless Chromium, and was dropped unheard: 250-391 of 451-494.)
   */
  private ctxTime(wallMs: number): number {
    return this.ctx.currentTime + (wallMs - Date.now()) / 1000;
  }

  private schedule(): void {
    const stalled = this.timer.tick(performance.now());
    const delay = this.clock.delayMs;
    if (delay === undefined) return;
    // Frames that are there go to the context up to 40 ms ahead of their playout; a missing
    // frame is concealed only 15 ms before its turn (the timer runs every 10 ms), so a
    // frame that is a little late still plays.
    const base = Date.now() - delay;
    for (let slot = this.jitter.next(base + 40, base + 15, stalled); slot; slot = this.jitter.next(base + 40, base + 15, stalled)) {
      let at = this.ctxTime(slot.captureMs + delay);
      // Frames follow each other without gaps when they are close to back to back.
      if (Math.abs(at - this.nextStart) < 0.015) at = this.nextStart;
      if (at < this.ctx.currentTime) {
        // Its time passed while the page was busy: nothing to play.
        if (slot.kind === 'play') {
          this.last = slot.frame;
          this.stats.audioFramesSkipped++;
        } else {
          this.stats.audioFramesConcealed++;
        }
        continue;
      }
      let planes: Float32Array[];
      if (slot.kind === 'play') {
        planes = slot.frame;
        this.last = planes;
        this.run = 0;
        this.stats.audioFramesPlayed++;
      } else {
        // Concealment: the previous frame, fading out over a run of losses.
        this.run++;
        this.stats.audioFramesConcealed++;
        const gain = Math.pow(0.5, this.run);
        const n = this.last?.[0].length ?? Math.round(this.rate / 50);
        planes = Array.from({ length: this.channels }, (_, c) => {
          const p = new Float32Array(n);
          const src = this.last?.[c] ?? this.last?.[0];
          if (src) for (let i = 0; i < n; i++) p[i] = src[i] * gain;
          return p;
        });
      }
      const buf = this.ctx.createBuffer(this.channels, planes[0].length, this.rate);
      for (let c = 0; c < this.channels; c++) buf.copyToChannel((planes[c] ?? planes[0]) as Float32Array<ArrayBuffer>, c);
      const src = this.ctx.createBufferSource();
      src.buffer = buf;
      src.connect(this.ctx.destination);
      src.start(at);
      this.nextStart = at + buf.duration;
    }
  }

  close(): void {
    clearInterval(this.interval);
    try {
      this.decoder.close();
    } catch {
      // Already closed.
    }
    void this.ctx.close().catch(() => undefined);
  }
}
