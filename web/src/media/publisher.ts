/**
 * The publisher: camera and microphone, encoded with WebCodecs (H.264 or AV1 video with one
 * group per GOP, Opus audio with in-band FEC and one group per 20 ms frame), published as
 * LOC objects with an MSF catalog under `<broadcast>/source`, where the relay's ingest
 * builds the ladder. The video bit rate follows the uplink: it drops when the send queue
 * ages and climbs back slowly when it stays empty.
 */
import { Session, RequestError, type PublishedTrack, type SessionOptions } from '../session.js';
import { ConnectError } from '../transport.js';
import { RequestErrorCode } from '../wire/message.js';
import { CATALOG_TRACK, MSF_VERSION, type Catalog, encodeCatalog } from '../wire/catalog.js';
import { locToExtensions } from '../wire/ext.js';
import { namespaceFromUrl, avcCodecString } from './player.js';

/** Why publishing failed. */
export class PublisherError extends Error {
  /**
   * `unsupported`: no WebTransport, WebCodecs or the codec here. `devices`: no camera or
   * microphone (or permission refused). `connect`: relay unreachable or certificate
   * refused. `unauthorized`: the token does not allow publishing here. `closed`: the
   * session ended.
   */
  readonly kind: 'unsupported' | 'devices' | 'connect' | 'unauthorized' | 'closed';
  constructor(kind: PublisherError['kind'], message: string) {
    super(message);
    this.name = 'PublisherError';
    this.kind = kind;
  }
}

/** Live figures of a publisher (`window.tiermeshStats` on the publisher page). */
export interface PublisherStats {
  /** `starting`, `publishing`, `stopped` or `error`. */
  state: 'starting' | 'publishing' | 'stopped' | 'error';
  /** The namespace published. */
  namespace: string;
  /** Video codec string in use. */
  codec: string;
  /** Encoded width x height. */
  resolution: string;
  /** Video frames encoded. */
  framesEncoded: number;
  /** Key frames (groups) encoded. */
  keyFrames: number;
  /** Camera frames skipped because the encoder was behind. */
  framesSkipped: number;
  /** Opus frames encoded (one group each). */
  audioFramesEncoded: number;
  /** The video encoder's target bit rate (kb/s). */
  targetKbps: number;
  /** Bytes the transport accepted, as kb/s over the last 2 s. */
  sentKbps: number;
  /** Age of the oldest queued write (ms). */
  queueAgeMs: number;
  /** Groups reset because the uplink could not carry them in time. */
  groupsDropped: number;
  /** Subscribers of the video track (1 when the relay takes it). */
  subscribers: number;
  /** Errors met, newest last. */
  errors: string[];
}

/** Options of {@link Publisher.start}. */
export interface PublisherOptions {
  /** `https://host:port/<broadcast path>[?jwt=…]`. */
  url: string;
  /** SHA-256 of the relay's development certificate. */
  certificateHash?: string;
  /** Namespace to publish; by default the URL path plus `source`. */
  namespace?: string[];
  /** The media; by default getUserMedia for camera and microphone. */
  stream?: MediaStream;
  /** Video codec (default h264). */
  codec?: 'h264' | 'av1';
  /** Capture and encode size (default 1280x720). */
  width?: number;
  /** Capture and encode height. */
  height?: number;
  /** Frames per second (default 30). */
  framerate?: number;
  /** Starting and highest video bit rate (default 2.5 Mb/s, the top tier). */
  bitrate?: number;
  /**
   * Extra lower tiers to encode here as well (simulcast), each aligned on the same groups
   * as the top tier: for a relay without an ingest ladder, and for tests. Default none.
   */
  lowerTiers?: { width: number; height: number; bitrate: number }[];
  /** Lowest video bit rate the uplink control goes to (default 250 kb/s). */
  minBitrate?: number;
  /** Opus bit rate (default 32 kb/s). */
  audioBitrate?: number;
  /** Group (GOP) duration in ms (default 1000). */
  groupMs?: number;
  /** Shows the camera here. */
  preview?: HTMLVideoElement;
  /** Called with fresh stats about four times a second. */
  onStats?: (s: PublisherStats) => void;
  /** Called when publishing fails after it started. */
  onError?: (e: PublisherError) => void;
  /** Send PUBLISH_NAMESPACE first (default true; false when the peer is not a relay). */
  announce?: boolean;
  /** Use this session instead of connecting (it is not closed by stop()). */
  useSession?: Session;
  /** Extra session options. */
  session?: SessionOptions;
}

/** Track names of a source broadcast. */
export function sourceTrackName(height: number): string {
  return `video/${height}p`;
}

/** A running publisher. */
export class Publisher {
  /** Live figures. */
  readonly stats: PublisherStats = {
    state: 'starting',
    namespace: '',
    codec: '',
    resolution: '',
    framesEncoded: 0,
    keyFrames: 0,
    framesSkipped: 0,
    audioFramesEncoded: 0,
    targetKbps: 0,
    sentKbps: 0,
    queueAgeMs: 0,
    groupsDropped: 0,
    subscribers: 0,
    errors: [],
  };
  /** The namespace published. */
  readonly namespace: string[];
  /** The media captured. */
  stream?: MediaStream;

  private session?: Session;
  private ownSession = false;
  private catalogTrack?: PublishedTrack;
  private audioTrack?: PublishedTrack;
  private tiers: TierEncoder[] = [];
  private aenc?: AudioEncoder;
  private vconfig?: VideoEncoderConfig;
  private group = -1;
  private objectInGroup = 0;
  private frameIds = new Map<number, { group: number; object: number }>();
  private audioGroup = 0;
  private groupStartUs = -Infinity;
  private forceKey = false;
  private captureOf = new Map<number, number>();
  private audioInputs: { sample: number; wallUs: number }[] = [];
  private audioSamples = 0;
  private bitrate: number;
  private pendingBitrate?: number;
  private lastReconfigure = 0;
  private calmSince = 0;
  private lastDropped = 0;
  private sentSamples: { t: number; bytes: number }[] = [];
  private timers: ReturnType<typeof setInterval>[] = [];
  private stopped = false;
  private catalogGroup = 0;

  private constructor(private readonly opts: PublisherOptions) {
    this.namespace = opts.namespace ?? [...namespaceFromUrl(opts.url), 'source'];
    this.stats.namespace = this.namespace.join('/');
    this.bitrate = opts.bitrate ?? 2_500_000;
  }

  /** Starts capturing, connects and publishes. Rejects with {@link PublisherError}. */
  static async start(opts: PublisherOptions): Promise<Publisher> {
    const p = new Publisher(opts);
    try {
      await p.run();
    } catch (e) {
      const err = p.explain(e);
      p.stats.errors.push(err.message);
      p.stats.state = 'error';
      p.stop();
      throw err;
    }
    return p;
  }

  private explain(e: unknown): PublisherError {
    if (e instanceof PublisherError) return e;
    if (e instanceof ConnectError) return new PublisherError(e.kind === 'unsupported' ? 'unsupported' : 'connect', e.message);
    if (e instanceof RequestError) {
      if (e.code === RequestErrorCode.Unauthorized || e.code === RequestErrorCode.ExpiredAuthToken || e.code === RequestErrorCode.MalformedAuthToken) {
        return new PublisherError('unauthorized', `Not allowed to publish ${this.stats.namespace}: ${e.message}. Check the ?jwt= token.`);
      }
      return new PublisherError('closed', e.message);
    }
    return new PublisherError('closed', e instanceof Error ? e.message : String(e));
  }

  private error(m: string): void {
    this.stats.errors.push(m);
    if (this.stats.errors.length > 50) this.stats.errors.shift();
  }

  private async run(): Promise<void> {
    if (typeof VideoEncoder !== 'function' || typeof AudioEncoder !== 'function') {
      throw new PublisherError('unsupported', 'This browser has no WebCodecs encoders: use a recent Chrome or Edge.');
    }
    const width = this.opts.width ?? 1280;
    const height = this.opts.height ?? 720;
    const framerate = this.opts.framerate ?? 30;
    const codec = this.opts.codec === 'av1' ? 'av01.0.08M.08' : height > 720 ? 'avc1.640028' : 'avc1.42e01f';
    const config: VideoEncoderConfig = {
      codec,
      width,
      height,
      bitrate: this.bitrate,
      framerate,
      latencyMode: 'realtime',
      ...(codec.startsWith('avc1') ? { avc: { format: 'avc' } } : {}),
    } as VideoEncoderConfig;
    const support = await VideoEncoder.isConfigSupported(config);
    if (!support.supported) throw new PublisherError('unsupported', `This browser cannot encode ${codec} at ${width}x${height}.`);
    this.vconfig = config;
    this.stats.codec = codec;
    this.stats.resolution = `${width}x${height}`;
    this.stats.targetKbps = Math.round(this.bitrate / 1000);

    try {
      this.stream =
        this.opts.stream ??
        (await navigator.mediaDevices.getUserMedia({
          video: { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: framerate } },
          audio: { echoCancellation: true, noiseSuppression: true, channelCount: 1 },
        }));
    } catch (e) {
      throw new PublisherError('devices', `No camera or microphone: ${(e as Error).message}. Allow access and reload.`);
    }
    if (this.opts.preview) {
      this.opts.preview.srcObject = this.stream;
      this.opts.preview.muted = true;
      void this.opts.preview.play().catch(() => undefined);
    }

    const lower = [...(this.opts.lowerTiers ?? [])].sort((a, b) => a.bitrate - b.bitrate);
    const all = [...lower, { width, height, bitrate: this.bitrate }];
    for (const t of all) {
      const cfg = { ...config, width: t.width, height: t.height, bitrate: t.bitrate } as VideoEncoderConfig;
      this.tiers.push(new TierEncoder(cfg, this));
    }
    if (this.opts.useSession) {
      this.session = this.opts.useSession;
    } else {
      this.session = await this.connect(this.opts.url);
      this.ownSession = true;
    }
    this.watch(this.session);
    await this.publishOn(this.session);

    const vtrack = this.stream.getVideoTracks()[0];
    const atrack = this.stream.getAudioTracks()[0];
    if (vtrack) this.startVideo(vtrack);
    if (atrack) await this.startAudio(atrack);
    this.stats.state = 'publishing';
    this.timers.push(setInterval(() => this.control(), 250));
  }

  private connect(url: string): Promise<Session> {
    return Session.connect(url, {
      certificateHash: this.opts.certificateHash,
      ...this.opts.session,
      onGoaway: (uri) => void this.reconnect(uri.startsWith('https://') ? uri : this.opts.url, 'the relay sent GOAWAY'),
    });
  }

  /** Announces the namespace and creates the tracks on `session`. */
  private async publishOn(session: Session): Promise<void> {
    if (this.opts.announce ?? true) await session.publishNamespace(this.namespace);
    // Priorities follow DESIGN.md: catalog 0, audio 16, the lowest video tier 32, each
    // higher tier +16.
    this.catalogTrack = session.publishTrack(this.namespace, CATALOG_TRACK, { priority: 0, cacheGroups: 1 });
    this.audioTrack = session.publishTrack(this.namespace, 'audio', { priority: 16, maxQueueMs: 300, cacheGroups: 1 });
    for (const [i, t] of this.tiers.entries()) {
      const track = session.publishTrack(this.namespace, sourceTrackName(t.config.height), { priority: 32 + 16 * i, maxQueueMs: 1000 });
      track.onNewGroupRequest = () => (this.forceKey = true);
      // The uplink could not carry the group: the next frame starts a fresh one.
      track.onGroupDropped = () => (this.forceKey = true);
      t.track = track;
    }
    this.writeCatalog();
  }

  /** Reacts to the end of `session`: publishes again on a new one if it was ours. */
  private watch(session: Session): void {
    void session.closed.then((info) => {
      if (this.stopped || session !== this.session || info.by === 'local') return;
      const why = `The relay closed the session${info.reason ? `: ${info.reason}` : ''} (code ${info.code}).`;
      if (!this.ownSession) {
        const e = new PublisherError('closed', why);
        this.error(e.message);
        this.stats.state = 'error';
        this.opts.onError?.(e);
        return;
      }
      void this.reconnect(this.opts.url, why);
    });
  }

  private reconnecting = false;

  /**
   * Opens a new session (after GOAWAY or a lost connection) and publishes there; the
   * encoders keep running and the next frame starts a new group. Retries with backoff.
   * The old session is closed first: a relay keeps one publisher per track, and holds the
   * subscribers of a track whose publisher left until it comes back.
   */
  private async reconnect(url: string, why: string): Promise<void> {
    if (this.stopped || this.reconnecting || !this.ownSession) return;
    this.reconnecting = true;
    this.error(`reconnecting: ${why}`);
    const old = this.session;
    for (const t of [this.catalogTrack, this.audioTrack, ...this.tiers.map((x) => x.track)]) t?.close();
    this.catalogTrack = this.audioTrack = undefined;
    for (const t of this.tiers) t.track = undefined;
    old?.close(0, 'moving to a new session');
    for (let attempt = 0; !this.stopped; attempt++) {
      try {
        const session = await this.connect(url);
        this.session = session;
        this.watch(session);
        await this.publishOn(session);
        this.forceKey = true;
        this.stats.state = 'publishing';
        break;
      } catch (e) {
        this.error(`reconnect: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, Math.min(5000, 500 * 2 ** attempt)));
      }
    }
    this.reconnecting = false;
  }

  private catalog(): Catalog {
    return {
      version: MSF_VERSION,
      generatedAt: Date.now(),
      tracks: [
        ...this.tiers.map((t) => ({
          name: sourceTrackName(t.config.height),
          packaging: 'loc',
          isLive: true,
          role: 'video',
          codec: t.codecString,
          width: t.config.width,
          height: t.config.height,
          framerate: t.config.framerate,
          bitrate: t.maxBitrate,
          altGroup: 1,
          renderGroup: 1,
        })),
        {
          name: 'audio',
          packaging: 'loc',
          isLive: true,
          role: 'audio',
          codec: 'opus',
          samplerate: 48000,
          channelConfig: '1',
          bitrate: this.opts.audioBitrate ?? 32000,
          renderGroup: 1,
        },
      ],
    };
  }

  /** @internal Republishes the catalog (a new group) after a codec string changed. */
  writeCatalog(): void {
    this.catalogTrack?.write(this.catalogGroup++, 0, encodeCatalog(this.catalog()));
  }

  private startVideo(track: MediaStreamTrack): void {
    const groupUs = (this.opts.groupMs ?? 1000) * 1000;
    for (const t of this.tiers) t.start((m) => this.error(m));
    const onFrame = (frame: VideoFrame) => {
      if (this.stopped || this.tiers.some((t) => t.enc?.state !== 'configured')) {
        frame.close();
        return;
      }
      const nowUs = Date.now() * 1000;
      if (this.tiers.some((t) => t.enc!.encodeQueueSize > 2)) {
        // An encoder is behind: skipping a camera frame keeps latency down.
        this.stats.framesSkipped++;
        frame.close();
        return;
      }
      let key = this.forceKey || nowUs - this.groupStartUs >= groupUs;
      if (key && this.pendingBitrate !== undefined) {
        // A new bit rate is applied at a group boundary: reconfiguring forces a key frame anyway.
        this.applyBitrate(this.pendingBitrate);
        key = true;
      }
      if (key) {
        this.groupStartUs = nowUs;
        this.forceKey = false;
        this.group++;
        this.objectInGroup = 0;
        this.stats.keyFrames++;
      } else {
        this.objectInGroup++;
      }
      // Every tier encodes this frame as the same {group, object}: group N of every tier
      // covers the same media time, so a player can switch at any group boundary.
      this.frameIds.set(frame.timestamp, { group: this.group, object: this.objectInGroup });
      this.captureOf.set(frame.timestamp, nowUs);
      if (this.captureOf.size > 300) {
        const k = this.captureOf.keys().next().value as number;
        this.captureOf.delete(k);
        this.frameIds.delete(k);
      }
      for (const t of this.tiers) t.encode(frame, key);
      frame.close();
    };
    if (typeof MediaStreamTrackProcessor === 'function') {
      const processor = new MediaStreamTrackProcessor({ track });
      const reader = processor.readable.getReader();
      void (async () => {
        for (;;) {
          const { value, done } = await reader.read();
          if (done || this.stopped) break;
          onFrame(value as VideoFrame);
        }
      })().catch((e) => this.error(`camera: ${(e as Error).message}`));
    } else {
      // Without MediaStreamTrackProcessor: sample a <video> element.
      const video = document.createElement('video');
      video.srcObject = new MediaStream([track]);
      video.muted = true;
      void video.play();
      const fps = this.vconfig!.framerate ?? 30;
      this.timers.push(
        setInterval(() => {
          if (video.readyState >= 2) onFrame(new VideoFrame(video, { timestamp: performance.now() * 1000 }));
        }, 1000 / fps),
      );
    }
  }

  /** @internal The {group, object} and capture time of an encoded frame. */
  frameInfo(timestamp: number): { group: number; object: number; captureUs: number } | undefined {
    const id = this.frameIds.get(timestamp);
    if (!id) return undefined;
    return { ...id, captureUs: this.captureOf.get(timestamp) ?? Date.now() * 1000 };
  }

  /** @internal */
  onEncoded(tier: TierEncoder): void {
    if (tier === this.tiers[this.tiers.length - 1]) {
      this.stats.framesEncoded++;
      this.stats.codec = tier.codecString;
    }
  }

  private async startAudio(track: MediaStreamTrack): Promise<void> {
    const settings = track.getSettings();
    const sampleRate = 48000;
    const config: AudioEncoderConfig = {
      codec: 'opus',
      sampleRate,
      numberOfChannels: 1,
      bitrate: this.opts.audioBitrate ?? 32000,
      opus: { frameDuration: 20000, useinbandfec: true, packetlossperc: 10 } as OpusEncoderConfig,
    } as AudioEncoderConfig;
    const support = await AudioEncoder.isConfigSupported(config);
    if (!support.supported) {
      this.error('this browser cannot encode Opus: publishing video only');
      return;
    }
    this.aenc = new AudioEncoder({
      output: (chunk) => {
        const data = new Uint8Array(chunk.byteLength);
        chunk.copyTo(data);
        // Packet n holds samples [n*960, (n+1)*960) of the microphone's stream.
        const captureUs = this.audioCaptureUs(this.stats.audioFramesEncoded * 960);
        this.stats.audioFramesEncoded++;
        // One group per 20 ms frame: a late frame costs 20 ms, never a second of sound.
        this.audioTrack?.write(this.audioGroup++, 0, data, locToExtensions({ timestamp: Math.round(captureUs) }));
      },
      error: (e) => this.error(`audio encoder: ${e.message}`),
    });
    this.aenc.configure(config);
    if (typeof MediaStreamTrackProcessor !== 'function') {
      this.error('no MediaStreamTrackProcessor: publishing video only');
      return;
    }
    const reader = new MediaStreamTrackProcessor({ track }).readable.getReader();
    void (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.stopped) break;
        const data = value as AudioData;
        // The buffer arrives when its last sample was captured: its first sample is one
        // buffer duration older. Frames count at 48 kHz, what the encoder consumes.
        const frames48 = Math.round((data.numberOfFrames * sampleRate) / data.sampleRate);
        this.audioInputs.push({ sample: this.audioSamples, wallUs: Date.now() * 1000 - (frames48 / sampleRate) * 1e6 });
        this.audioSamples += frames48;
        if (this.audioInputs.length > 200) this.audioInputs.shift();
        if (this.aenc?.state === 'configured') {
          if (data.numberOfChannels > 1 || data.sampleRate !== sampleRate) {
            this.aenc.encode(downmix(data, sampleRate));
            data.close();
          } else {
            this.aenc.encode(data);
            data.close();
          }
        } else {
          data.close();
        }
      }
    })().catch((e) => this.error(`microphone: ${(e as Error).message} (${settings.sampleRate ?? '?'} Hz)`));
  }

  /** Wall-clock capture time (µs) of microphone sample `n` (counted at 48 kHz). */
  private audioCaptureUs(n: number): number {
    let best = this.audioInputs[0];
    for (const i of this.audioInputs) {
      if (i.sample > n) break;
      best = i;
    }
    if (!best) return Date.now() * 1000;
    return best.wallUs + ((n - best.sample) / 48000) * 1e6;
  }

  private applyBitrate(bps: number): void {
    this.pendingBitrate = undefined;
    if (this.tiers.length === 0 || bps === this.bitrate) return;
    const scale = bps / (this.opts.bitrate ?? 2_500_000);
    this.bitrate = bps;
    // Every tier follows the uplink in proportion.
    for (const t of this.tiers) t.setBitrate(Math.round(t.maxBitrate * Math.min(1, scale)));
    this.lastReconfigure = performance.now();
    this.stats.targetKbps = Math.round(bps / 1000);
  }

  /** Uplink control: follow the age of the send queue. */
  private control(): void {
    const vs = this.tiers.flatMap((t) => (t.track ? [t.track.stats()] : []));
    const a = this.audioTrack?.stats();
    const now = performance.now();
    if (vs.length === 0) return;
    const v = {
      bytesSent: vs.reduce((n, x) => n + x.bytesSent, 0),
      queueAgeMs: Math.max(...vs.map((x) => x.queueAgeMs)),
      groupsDropped: vs.reduce((n, x) => n + x.groupsDropped, 0),
      subscribers: vs[vs.length - 1].subscribers,
    };
    const sent = v.bytesSent + (a?.bytesSent ?? 0);
    this.sentSamples.push({ t: now, bytes: sent });
    while (this.sentSamples.length > 1 && now - this.sentSamples[0].t > 2000) this.sentSamples.shift();
    const first = this.sentSamples[0];
    this.stats.sentKbps = now > first.t ? Math.round(((sent - first.bytes) * 8) / (now - first.t)) : 0;
    this.stats.queueAgeMs = Math.round(Math.max(v.queueAgeMs, a?.queueAgeMs ?? 0));
    this.stats.groupsDropped = v.groupsDropped;
    this.stats.subscribers = v.subscribers;
    const max = this.opts.bitrate ?? 2_500_000;
    const min = this.opts.minBitrate ?? 250_000;
    const dropped = v.groupsDropped > this.lastDropped;
    this.lastDropped = v.groupsDropped;
    if (dropped || v.queueAgeMs > 250) {
      // The uplink is behind: cut at once (new key frame now, the queue holds stale data).
      const next = Math.max(min, Math.round(this.bitrate * 0.6));
      if (next < this.bitrate && now - this.lastReconfigure > 500) {
        this.applyBitrate(next);
        this.forceKey = true;
      }
      this.calmSince = now;
    } else if (v.queueAgeMs > 100) {
      this.calmSince = now;
    } else if (now - this.calmSince > 5000 && this.bitrate < max && this.pendingBitrate === undefined) {
      // Calm for 5 s: up by 15 % at the next group boundary.
      this.pendingBitrate = Math.min(max, Math.round(this.bitrate * 1.15));
      this.calmSince = now;
    }
    this.opts.onStats?.(this.stats);
  }

  /** Asks for a key frame now (a new group). */
  requestKeyFrame(): void {
    this.forceKey = true;
  }

  /** Stops capture and encoders, ends the tracks, closes the session if it owns it. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    for (const t of this.stream?.getTracks() ?? []) t.stop();
    for (const t of this.tiers) t.close();
    try {
      this.aenc?.close();
    } catch {
      // Already closed.
    }
    this.audioTrack?.close();
    this.catalogTrack?.close();
    if (this.ownSession) this.session?.close(0, 'publisher stopped');
    if (this.stats.state !== 'error') this.stats.state = 'stopped';
  }
}

/** One video tier: its encoder, its scaler and its track. */
class TierEncoder {
  enc?: VideoEncoder;
  codecString: string;
  readonly maxBitrate: number;
  private description?: Uint8Array;
  private canvas?: OffscreenCanvas;
  private ctx?: OffscreenCanvasRenderingContext2D;
  private lastGroup = -1;
  private lastObject = -1;

  /** The track it writes to (replaced when the publisher moves to a new session). */
  track?: PublishedTrack;

  constructor(
    public config: VideoEncoderConfig,
    private readonly pub: Publisher,
  ) {
    this.codecString = config.codec;
    this.maxBitrate = config.bitrate ?? 0;
  }

  start(error: (m: string) => void): void {
    this.enc = new VideoEncoder({
      output: (chunk, meta) => this.onChunk(chunk, meta),
      error: (e) => error(`video encoder ${this.config.width}x${this.config.height}: ${e.message}`),
    });
    this.enc.configure(this.config);
  }

  encode(frame: VideoFrame, key: boolean): void {
    if (!this.enc) return;
    if (frame.displayWidth === this.config.width && frame.displayHeight === this.config.height) {
      this.enc.encode(frame, { keyFrame: key });
      return;
    }
    this.canvas ??= new OffscreenCanvas(this.config.width, this.config.height);
    this.ctx ??= this.canvas.getContext('2d')!;
    this.ctx.drawImage(frame, 0, 0, this.config.width, this.config.height);
    const scaled = new VideoFrame(this.canvas, { timestamp: frame.timestamp });
    this.enc.encode(scaled, { keyFrame: key });
    scaled.close();
  }

  setBitrate(bps: number): void {
    if (!this.enc || this.enc.state !== 'configured' || bps === this.config.bitrate) return;
    this.config = { ...this.config, bitrate: bps };
    this.enc.configure(this.config);
  }

  private onChunk(chunk: EncodedVideoChunk, meta?: EncodedVideoChunkMetadata): void {
    const desc = meta?.decoderConfig?.description;
    if (desc) {
      const view = desc instanceof ArrayBuffer ? new Uint8Array(desc) : new Uint8Array((desc as ArrayBufferView).buffer, (desc as ArrayBufferView).byteOffset, (desc as ArrayBufferView).byteLength);
      this.description = view.slice();
      const codec =
        this.config.codec.startsWith('avc1') && this.description[0] === 1 ? avcCodecString(this.description) : (meta?.decoderConfig?.codec ?? this.codecString);
      if (codec !== this.codecString) {
        this.codecString = codec;
        this.pub.writeCatalog();
      }
    }
    const info = this.pub.frameInfo(chunk.timestamp);
    if (!info) return;
    let group: number;
    let object: number;
    if (info.group > this.lastGroup && chunk.type === 'key') {
      group = info.group;
      object = 0;
    } else if (this.lastGroup >= 0) {
      // A delta frame, or a key frame inside a group: it extends the current group, so
      // object IDs stay consecutive and decodable in order.
      group = this.lastGroup;
      object = this.lastObject + 1;
    } else {
      return;
    }
    this.lastGroup = group;
    this.lastObject = object;
    const data = new Uint8Array(chunk.byteLength);
    chunk.copyTo(data);
    const ext = locToExtensions({ timestamp: Math.round(info.captureUs), videoConfig: object === 0 ? this.description : undefined });
    this.track?.write(group, object, data, ext);
    this.pub.onEncoded(this);
  }

  close(): void {
    try {
      this.enc?.close();
    } catch {
      // Already closed.
    }
    this.track?.close();
  }
}

/** Mono 48 kHz copy of an AudioData (the encoder is configured for one channel). */
function downmix(d: AudioData, rate: number): AudioData {
  const n = d.numberOfFrames;
  const mono = new Float32Array(n);
  const tmp = new Float32Array(n);
  for (let c = 0; c < d.numberOfChannels; c++) {
    d.copyTo(tmp, { planeIndex: c, format: 'f32-planar' });
    for (let i = 0; i < n; i++) mono[i] += tmp[i] / d.numberOfChannels;
  }
  // A sample rate other than 48 kHz is resampled by nearest neighbour: microphones on the
  // platforms tiermesh targets run at 48 kHz, this only keeps odd devices working.
  const outN = Math.round((n * rate) / d.sampleRate);
  const out = new Float32Array(outN);
  for (let i = 0; i < outN; i++) out[i] = mono[Math.min(n - 1, Math.floor((i * d.sampleRate) / rate))];
  return new AudioData({ format: 'f32-planar', sampleRate: rate, numberOfFrames: outN, numberOfChannels: 1, timestamp: d.timestamp, data: out });
}

declare global {
  /** Chrome's MediaStreamTrackProcessor (not yet in TypeScript's DOM types). */
  // eslint-disable-next-line no-var
  var MediaStreamTrackProcessor: {
    new (init: { track: MediaStreamTrack }): { readable: ReadableStream<VideoFrame | AudioData> };
  };
  /** Opus settings of an AudioEncoderConfig. */
  interface OpusEncoderConfig {
    frameDuration?: number;
    useinbandfec?: boolean;
    packetlossperc?: number;
    complexity?: number;
  }
}
