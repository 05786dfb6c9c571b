/**
 * The MSF catalog (draft-ietf-moq-msf): a JSON document on the track `catalog` listing a
 * broadcast's tracks. Fields MSF defines that tiermesh reads are typed; all others are kept
 * as they came, so a catalog passes through unchanged.
 */

/** The MSF version tiermesh writes and reads. */
export const MSF_VERSION = 'draft-01';
/** The track name of the catalog. */
export const CATALOG_TRACK = 'catalog';

/** One track of an MSF catalog. */
export interface CatalogTrack {
  /** Track name. */
  name: string;
  /** Namespace, if different from the catalog's. */
  namespace?: string;
  /** Packaging: `loc` for media. */
  packaging?: string;
  /** Role: `video`, `audio`, … */
  role?: string;
  /** True for a live track. */
  isLive?: boolean;
  /** WebCodecs codec string (`avc1.42C01E`, `av01.0.08M.08`, `opus`). */
  codec?: string;
  /** Width in pixels. */
  width?: number;
  /** Height in pixels. */
  height?: number;
  /** Frames per second. */
  framerate?: number;
  /** Bits per second. */
  bitrate?: number;
  /** Audio sample rate. */
  samplerate?: number;
  /** Audio channel configuration (`"1"`, `"2"`). */
  channelConfig?: string;
  /** Tracks with the same altGroup are alternatives of each other (the ladder). */
  altGroup?: number;
  /** Tracks with the same renderGroup play together. */
  renderGroup?: number;
  /** Target latency in milliseconds. */
  targetLatency?: number;
  /** Any other field. */
  [field: string]: unknown;
}

/** An MSF catalog. */
export interface Catalog {
  /** MSF version. */
  version?: string;
  /** Wall-clock milliseconds when the catalog was generated. */
  generatedAt?: number;
  /** True if the broadcast has ended. */
  isComplete?: boolean;
  /** The tracks. */
  tracks?: CatalogTrack[];
  /** Delta operations, in a delta update. */
  deltaUpdate?: { op: 'add' | 'remove' | 'clone' | 'update'; tracks: CatalogTrack[] }[];
  /** Any other field. */
  [field: string]: unknown;
}

/** Why a catalog was refused. */
export class CatalogError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CatalogError';
  }
}

/** Parses and checks an independent catalog or a delta update. Throws {@link CatalogError}. */
export function parseCatalog(json: Uint8Array | string): Catalog {
  const text = typeof json === 'string' ? json : new TextDecoder().decode(json);
  let c: unknown;
  try {
    c = JSON.parse(text);
  } catch (e) {
    throw new CatalogError(`catalog JSON: ${(e as Error).message}`);
  }
  if (typeof c !== 'object' || c === null || Array.isArray(c)) throw new CatalogError('catalog is not an object');
  const cat = c as Catalog;
  if (cat.deltaUpdate !== undefined) {
    if (!Array.isArray(cat.deltaUpdate) || cat.deltaUpdate.length === 0) {
      throw new CatalogError('delta update without operations');
    }
    for (const op of cat.deltaUpdate) checkTracks(op.tracks, false);
    return cat;
  }
  if (typeof cat.version !== 'string') throw new CatalogError('catalog without version');
  if (cat.version !== MSF_VERSION) throw new CatalogError(`MSF version ${cat.version}, this client reads ${MSF_VERSION}`);
  if (!Array.isArray(cat.tracks)) throw new CatalogError('catalog without tracks');
  checkTracks(cat.tracks, true);
  return cat;
}

function checkTracks(tracks: unknown, needPackaging: boolean): void {
  if (!Array.isArray(tracks)) throw new CatalogError('tracks is not a list');
  const seen = new Set<string>();
  for (const t of tracks as CatalogTrack[]) {
    if (typeof t !== 'object' || t === null || typeof t.name !== 'string') {
      throw new CatalogError('track without a name');
    }
    if (needPackaging && typeof t.packaging !== 'string') throw new CatalogError(`track ${t.name} without packaging`);
    for (const k of ['width', 'height', 'bitrate', 'framerate', 'samplerate', 'altGroup', 'renderGroup'] as const) {
      if (t[k] !== undefined && typeof t[k] !== 'number') throw new CatalogError(`track ${t.name}: ${k} is not a number`);
    }
    const key = `${t.namespace ?? ''}\u0000${t.name}`;
    if (seen.has(key)) throw new CatalogError(`track ${t.name} declared twice`);
    seen.add(key);
  }
}

/** Applies a delta update to an independent catalog (add, remove, update, clone). */
export function applyDelta(base: Catalog, delta: Catalog): Catalog {
  const tracks = [...(base.tracks ?? [])];
  const find = (ns: string | undefined, name: string) =>
    tracks.findIndex((t) => t.name === name && t.namespace === ns);
  for (const op of delta.deltaUpdate ?? []) {
    for (const t of op.tracks) {
      if (op.op === 'add') {
        if (find(t.namespace, t.name) >= 0) throw new CatalogError(`track ${t.name} declared twice`);
        tracks.push(t);
      } else if (op.op === 'remove') {
        const i = find(t.namespace, t.name);
        if (i < 0) throw new CatalogError(`delta update refers to unknown track ${t.name}`);
        tracks.splice(i, 1);
      } else {
        const parent = (t.parentName as string | undefined) ?? t.name;
        const i = find((t.parentNamespace as string | undefined) ?? t.namespace, parent);
        if (i < 0) throw new CatalogError(`delta update refers to unknown track ${parent}`);
        const merged: CatalogTrack = { ...tracks[i], ...t };
        delete merged.parentName;
        delete merged.parentNamespace;
        if (op.op === 'update') {
          merged.name = tracks[i].name;
          tracks[i] = merged;
        } else {
          tracks.push(merged);
        }
      }
    }
  }
  return { ...base, tracks, generatedAt: delta.generatedAt ?? base.generatedAt };
}

/** Serializes a catalog as JSON bytes. */
export function encodeCatalog(c: Catalog): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(c));
}

/** The tracks a player uses: the video ladder (lowest bit rate first) and the audio track. */
export interface MediaTracks {
  /** Video tracks of one altGroup, sorted by bit rate, lowest first. */
  video: CatalogTrack[];
  /** The audio track, if any. */
  audio?: CatalogTrack;
}

function isVideo(t: CatalogTrack): boolean {
  return t.role === 'video' || (t.role === undefined && (t.name.startsWith('video') || t.width !== undefined));
}

function isAudio(t: CatalogTrack): boolean {
  return t.role === 'audio' || (t.role === undefined && (t.name.startsWith('audio') || t.samplerate !== undefined));
}

/**
 * Picks the ladder and the audio track from a catalog: LOC tracks only; the video tracks
 * of the altGroup with the most members (or all video tracks if none has an altGroup).
 */
export function mediaTracks(c: Catalog): MediaTracks {
  const loc = (c.tracks ?? []).filter((t) => t.packaging === undefined || t.packaging === 'loc');
  let video = loc.filter(isVideo);
  const groups = new Map<number, CatalogTrack[]>();
  for (const t of video) {
    if (t.altGroup !== undefined) groups.set(t.altGroup, [...(groups.get(t.altGroup) ?? []), t]);
  }
  if (groups.size > 0) video = [...groups.values()].sort((a, b) => b.length - a.length)[0];
  video = [...video].sort((a, b) => (a.bitrate ?? a.height ?? 0) - (b.bitrate ?? b.height ?? 0));
  const audio = loc.find(isAudio);
  return audio ? { video, audio } : { video };
}
