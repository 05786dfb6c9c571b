/**
 * Extension Headers (draft-16 §11) on tracks and objects, and the LOC properties
 * (draft-ietf-moq-loc) that ride in object extension headers.
 *
 * Extensions are kept as a list of {@link KeyValue}s in arrival order, so unknown ones pass
 * through unchanged; the helpers below read the ones tiermesh uses.
 */
import { ProtocolError, Reader } from './coding.js';
import { type KeyValue, bytesOf, intOf, readPairsToEnd } from './kvp.js';

/** Extension header types of draft-16. */
export const Ext = {
  /** DELIVERY_TIMEOUT (track), milliseconds. */
  DELIVERY_TIMEOUT: 0x02,
  /** MAX_CACHE_DURATION (track), milliseconds. */
  MAX_CACHE_DURATION: 0x04,
  /** IMMUTABLE_EXTENSIONS (track, object): a nested block. */
  IMMUTABLE_EXTENSIONS: 0x0b,
  /** DEFAULT_PUBLISHER_PRIORITY (track), 0..255. */
  DEFAULT_PUBLISHER_PRIORITY: 0x0e,
  /** DEFAULT_PUBLISHER_GROUP_ORDER (track): 1 ascending, 2 descending. */
  DEFAULT_PUBLISHER_GROUP_ORDER: 0x22,
  /** DYNAMIC_GROUPS (track): 0 or 1. */
  DYNAMIC_GROUPS: 0x30,
  /** PRIOR_GROUP_ID_GAP (object). */
  PRIOR_GROUP_ID_GAP: 0x3c,
  /** PRIOR_OBJECT_ID_GAP (object). */
  PRIOR_OBJECT_ID_GAP: 0x3e,
} as const;

/** LOC property IDs (draft-ietf-moq-loc, "LOC Properties"). */
export const Loc = {
  /** Timescale: timestamp units per second (absent: microseconds of wall clock). */
  TIMESCALE: 0x08,
  /** Video Frame Marking (RFC 9626), 1 to 4 bytes. */
  VIDEO_FRAME_MARKING: 0x09,
  /** Audio Level (RFC 6464). */
  AUDIO_LEVEL: 0x0c,
  /** Video Config: the decoder configuration record (avcC, av1C). */
  VIDEO_CONFIG: 0x0d,
  /** Audio Config: codec description bytes. */
  AUDIO_CONFIG: 0x0f,
  /** Timestamp: capture time, wall-clock microseconds since the Unix epoch. */
  TIMESTAMP: 0x10,
} as const;

/**
 * Checks a track extension block for the values draft-16 forbids (DELIVERY_TIMEOUT 0, a
 * priority above 255, a group order other than 1 or 2, DYNAMIC_GROUPS above 1, a repeated
 * known extension) and throws {@link ProtocolError} for them.
 */
export function checkTrackExtensions(ext: readonly KeyValue[]): void {
  const seen = new Set<number>();
  for (const p of ext) {
    const known = Object.values(Ext).includes(p.key as never);
    if (known && p.key !== Ext.PRIOR_GROUP_ID_GAP && p.key !== Ext.PRIOR_OBJECT_ID_GAP) {
      if (seen.has(p.key)) throw new ProtocolError(`track extension 0x${p.key.toString(16)} repeated`);
      seen.add(p.key);
    }
    const v = p.value;
    if (typeof v !== 'number') continue;
    if (p.key === Ext.DELIVERY_TIMEOUT && v === 0) throw new ProtocolError('DELIVERY_TIMEOUT extension is 0');
    if (p.key === Ext.DEFAULT_PUBLISHER_PRIORITY && v > 255) {
      throw new ProtocolError('DEFAULT_PUBLISHER_PRIORITY above 255');
    }
    if (p.key === Ext.DEFAULT_PUBLISHER_GROUP_ORDER && v !== 1 && v !== 2) {
      throw new ProtocolError('DEFAULT_PUBLISHER_GROUP_ORDER is neither 1 nor 2');
    }
    if (p.key === Ext.DYNAMIC_GROUPS && v > 1) throw new ProtocolError('DYNAMIC_GROUPS above 1');
  }
}

/** The pairs inside an IMMUTABLE_EXTENSIONS entry, or [] if there is none. */
export function immutableOf(ext: readonly KeyValue[]): KeyValue[] {
  const raw = bytesOf(ext, Ext.IMMUTABLE_EXTENSIONS);
  if (raw === undefined) return [];
  return readPairsToEnd(new Reader(raw));
}

/** Looks a type up at the top level, then inside Immutable Extensions. */
export function findExt(ext: readonly KeyValue[], key: number): KeyValue | undefined {
  return ext.find((p) => p.key === key) ?? immutableOf(ext).find((p) => p.key === key);
}

/** The LOC properties of one object. Absent properties are left out. */
export interface LocProperties {
  /** Timestamp (capture time; microseconds of wall clock when `timescale` is absent). */
  timestamp?: number;
  /** Timescale, units per second. */
  timescale?: number;
  /** Video Config: decoder configuration record, on key frames. */
  videoConfig?: Uint8Array;
  /** Video Frame Marking bytes. */
  videoFrameMarking?: Uint8Array;
  /** Audio Config bytes. */
  audioConfig?: Uint8Array;
  /** Audio Level byte (V flag in the top bit, level in the low 7). */
  audioLevel?: number;
}

/** Reads the LOC properties of an object's extension headers. Throws Error for bad values. */
export function locFromExtensions(ext: readonly KeyValue[]): LocProperties {
  const all = [...ext, ...immutableOf(ext)];
  const out: LocProperties = {};
  const ts = intOf(all, Loc.TIMESTAMP);
  if (ts !== undefined) out.timestamp = ts;
  const scale = intOf(all, Loc.TIMESCALE);
  if (scale === 0) throw new Error('LOC timescale is 0');
  if (scale !== undefined) out.timescale = scale;
  const vc = bytesOf(all, Loc.VIDEO_CONFIG);
  if (vc !== undefined) out.videoConfig = vc;
  const fm = bytesOf(all, Loc.VIDEO_FRAME_MARKING);
  if (fm !== undefined) {
    if (fm.length < 1 || fm.length > 4) throw new Error(`LOC video frame marking of ${fm.length} bytes`);
    out.videoFrameMarking = fm;
  }
  const ac = bytesOf(all, Loc.AUDIO_CONFIG);
  if (ac !== undefined) out.audioConfig = ac;
  const al = intOf(all, Loc.AUDIO_LEVEL);
  if (al !== undefined) {
    if (al > 255) throw new Error(`LOC audio level ${al} does not fit 8 bits`);
    out.audioLevel = al;
  }
  return out;
}

/** The extension headers carrying `p`, in ID order. */
export function locToExtensions(p: LocProperties): KeyValue[] {
  const out: KeyValue[] = [];
  if (p.timescale !== undefined) out.push({ key: Loc.TIMESCALE, value: p.timescale });
  if (p.videoFrameMarking !== undefined) out.push({ key: Loc.VIDEO_FRAME_MARKING, value: p.videoFrameMarking });
  if (p.audioLevel !== undefined) out.push({ key: Loc.AUDIO_LEVEL, value: p.audioLevel });
  if (p.videoConfig !== undefined) out.push({ key: Loc.VIDEO_CONFIG, value: p.videoConfig });
  if (p.audioConfig !== undefined) out.push({ key: Loc.AUDIO_CONFIG, value: p.audioConfig });
  if (p.timestamp !== undefined) out.push({ key: Loc.TIMESTAMP, value: p.timestamp });
  return out;
}

/** The wall-clock capture time in microseconds, if the object has one (no Timescale). */
export function captureTimestampUs(ext: readonly KeyValue[]): number | undefined {
  if (findExt(ext, Loc.TIMESCALE) !== undefined) return undefined;
  const p = findExt(ext, Loc.TIMESTAMP);
  return p && typeof p.value === 'number' ? p.value : undefined;
}
