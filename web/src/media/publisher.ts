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
  private videoTrack?: PublishedTrack;
  private audioTrack?: PublishedTrack;
  private venc?: VideoEncoder;
  private aenc?: AudioEncoder;
  private vconfig?: VideoEncoderConfig;
  private description?: Uint8Array;
  private group = -1;
  private object = 0;
  private audioGroup = 0;
  private groupStartUs = -Infinity;
  private forceKey = false;
  private captureOf = new Map<number, number>();
  private audioOffsetUs?: number;
  private bitrate: number;
  private pendingBitrate?: number;
  private lastReconfigure = 0;
  private calmSince = 0;
  private lastDropped = 0;
  private sentSamples: { t: number; bytes: number }[] = [];
  private timers: ReturnType<typeof setInterval>[] = [];
  private stopped = false;
  private catalogGroup = 0;
  private codecString = '';

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
    this.codecString = codec;
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

    if (this.opts.useSession) {
      this.session = this.opts.useSession;
    } else {
      this.session = await Session.connect(this.opts.url, { certificateHash: this.opts.certificateHash, ...this.opts.session });
      this.ownSession = true;
    }
    void this.session.closed.then((info) => {
      if (this.stopped) return;
      const e = new PublisherError('closed', `The relay closed the session${info.reason ? `: ${info.reason}` : ''} (code ${info.code}).`);
      this.error(e.message);
      this.stats.state = 'error';
      this.opts.onError?.(e);
    });
    if (this.opts.announce ?? true) await this.session.publishNamespace(this.namespace);
    // Priorities follow DESIGN.md: catalog 0, audio 16, the (only) video tier 32.
    this.catalogTrack = this.session.publishTrack(this.namespace, CATALOG_TRACK, { priority: 0, cacheGroups: 1 });
    this.audioTrack = this.session.publishTrack(this.namespace, 'audio', { priority: 16, maxQueueMs: 300, cacheGroups: 1 });
    this.videoTrack = this.session.publishTrack(this.namespace, sourceTrackName(height), { priority: 32, maxQueueMs: 1000 });
    this.videoTrack.onNewGroupRequest = () => (this.forceKey = true);
    this.videoTrack.onGroupDropped = () => {
      // The uplink could not carry the group: the next frame starts a fresh one.
      this.forceKey = true;
    };
    this.writeCatalog();

    const vtrack = this.stream.getVideoTracks()[0];
    const atrack = this.stream.getAudioTracks()[0];
    if (vtrack) this.startVideo(vtrack);
    if (atrack) await this.startAudio(atrack);
    this.stats.state = 'publishing';
    this.timers.push(setInterval(() => this.control(), 250));
  }

  private catalog(): Catalog {
    const v = this.vconfig!;
    return {
      version: MSF_VERSION,
      generatedAt: Date.now(),
      tracks: [
        {
          name: sourceTrackName(v.height),
          packaging: 'loc',
          isLive: true,
          role: 'video',
          codec: this.codecString,
          width: v.width,
          height: v.height,
          framerate: v.framerate,
          bitrate: this.opts.bitrate ?? 2_500_000,
          altGroup: 1,
          renderGroup: 1,
        },
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

  private writeCatalog(): void {
    this.catalogTrack?.write(this.catalogGroup++, 0, encodeCatalog(this.catalog()));
  }

  private startVideo(track: MediaStreamTrack): void {
    const groupUs = (this.opts.groupMs ?? 1000) * 1000;
    this.venc = new VideoEncoder({
      output: (chunk, meta) => this.onVideoChunk(chunk, meta),
      error: (e) => this.error(`video encoder: ${e.message}`),
    });
    this.venc.configure(this.vconfig!);
    const onFrame = (frame: VideoFrame) => {
      if (this.stopped || !this.venc || this.venc.state !== 'configured') {
        frame.close();
        return;
      }
      const nowUs = Date.now() * 1000;
      if (this.venc.encodeQueueSize > 2) {
        // The encoder is behind: skipping a camera frame keeps latency down.
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
      }
      this.captureOf.set(frame.timestamp, nowUs);
      if (this.captureOf.size > 300) this.captureOf.delete(this.captureOf.keys().next().value as number);
      this.venc.encode(frame, { keyFrame: key });
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

  private onVideoChunk(chunk: EncodedVideoChunk, meta?: EncodedVideoChunkMetadata): void {
    const desc = meta?.decoderConfig?.description;
    if (desc) {
      this.description = new Uint8Array(desc instanceof ArrayBuffer ? desc : (desc as ArrayBufferView).buffer.slice((desc as ArrayBufferView).byteOffset, (desc as ArrayBufferView).byteOffset + (desc as ArrayBufferView).byteLength));
      const codec = this.codecString.startsWith('avc1') && this.description[0] === 1 ? avcCodecString(this.description) : (meta?.decoderConfig?.codec ?? this.codecString);
      if (codec !== this.codecString) {
        this.codecString = codec;
        this.stats.codec = codec;
        this.writeCatalog();
      }
    }
    const data = new Uint8Array(chunk.byteLength);
    chunk.copyTo(data);
    const captureUs = this.captureOf.get(chunk.timestamp) ?? Date.now() * 1000;
    if (chunk.type === 'key') {
      this.group++;
      this.object = 0;
      this.stats.keyFrames++;
    } else {
      if (this.group < 0) return;
      this.object++;
    }
    this.stats.framesEncoded++;
    const ext = locToExtensions({ timestamp: Math.round(captureUs), videoConfig: chunk.type === 'key' ? this.description : undefined });
    this.videoTrack?.write(this.group, this.object, data, ext);
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
        const captureUs = chunk.timestamp + (this.audioOffsetUs ?? Date.now() * 1000 - chunk.timestamp);
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
        const offset = Date.now() * 1000 - data.timestamp;
        // Follow the capture clock, ignoring scheduling noise: jumps only beyond 50 ms.
        if (this.audioOffsetUs === undefined || Math.abs(offset - this.audioOffsetUs) > 50_000) this.audioOffsetUs = offset;
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

  private applyBitrate(bps: number): void {
    this.pendingBitrate = undefined;
    if (!this.venc || !this.vconfig || bps === this.bitrate) return;
    this.bitrate = bps;
    this.vconfig = { ...this.vconfig, bitrate: bps };
    this.venc.configure(this.vconfig);
    this.lastReconfigure = performance.now();
    this.stats.targetKbps = Math.round(bps / 1000);
  }

  /** Uplink control: follow the age of the send queue. */
  private control(): void {
    const v = this.videoTrack?.stats();
    const a = this.audioTrack?.stats();
    const now = performance.now();
    if (!v) return;
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
    for (const enc of [this.venc, this.aenc]) {
      try {
        enc?.close();
      } catch {
        // Already closed.
      }
    }
    this.videoTrack?.close();
    this.audioTrack?.close();
    this.catalogTrack?.close();
    if (this.ownSession) this.session?.close(0, 'publisher stopped');
    if (this.stats.state !== 'error') this.stats.state = 'stopped';
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
