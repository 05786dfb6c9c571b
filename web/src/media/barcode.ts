/**
 * Reads the frame number that tiermesh's test pattern (`tiermesh pub --test-pattern`, the
 * codec crate's `test_pattern.rs`) draws as a barcode, back from what a player shows, and
 * judges whether the picture moves: the frame number must advance at the stream's rate
 * with no frozen stretch. A black, blank or frozen picture fails.
 *
 * The layout (the same as `read_barcode` in Rust): the top eighth of the picture holds two
 * rows, each a sixteenth of the height tall, of 24 blocks across the full width. The upper
 * row is the 24-bit frame number, most significant bit first, white for 1 and black for 0;
 * the lower row is its complement, so any other picture reads as no code at all.
 */

/** Bits (and blocks per row) in the barcode. */
export const BARCODE_BITS = 24;

/**
 * Smallest luma difference (0–255, full range) between a block and its complement below it.
 * Black and white are 219 steps apart in the video range the pattern is coded in (255 after
 * the browser expands it to full range); a quarter of that survives scaling and low-rate
 * coding, and no ordinary picture has 24 such pairs in a row.
 */
const MIN_CONTRAST = 55;

/** RGBA pixels, as `ImageData` holds them. */
export interface Pixels {
  /** Four bytes per pixel, rows top to bottom. */
  data: Uint8ClampedArray | Uint8Array;
  /** Pixels per row. */
  width: number;
  /** Rows in `data` (at least the top eighth of the picture). */
  height: number;
}

/**
 * The frame number in the barcode band of a picture `frameHeight` rows tall whose top rows
 * are in `pixels`, or `null` when any block pair lacks clear contrast (no test pattern, a
 * black or damaged picture).
 */
export function readBarcode(pixels: Pixels, frameHeight: number = pixels.height): number | null {
  const { data, width: w } = pixels;
  const rowH = frameHeight / 16;
  if (w < BARCODE_BITS * 2 || frameHeight < 32 || pixels.height < Math.ceil(2 * rowH) || data.length < w * pixels.height * 4) return null;
  const mean = (x0: number, x1: number, y0: number, y1: number): number => {
    // The middle half of the block, away from edges blurred by scaling and coding.
    const qx = (x1 - x0) / 4;
    const qy = (y1 - y0) / 4;
    const xa = Math.ceil(x0 + qx);
    const xb = Math.max(xa + 1, Math.floor(x1 - qx));
    const ya = Math.ceil(y0 + qy);
    const yb = Math.min(pixels.height, Math.max(ya + 1, Math.floor(y1 - qy)));
    let sum = 0;
    let n = 0;
    for (let y = ya; y < yb; y++) {
      for (let x = xa; x < Math.min(xb, w); x++) {
        const i = (y * w + x) * 4;
        sum += 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
        n++;
      }
    }
    return n > 0 ? sum / n : 0;
  };
  let value = 0;
  for (let bit = 0; bit < BARCODE_BITS; bit++) {
    const x0 = (bit * w) / BARCODE_BITS;
    const x1 = ((bit + 1) * w) / BARCODE_BITS;
    const top = mean(x0, x1, 0, rowH);
    const bottom = mean(x0, x1, rowH, 2 * rowH);
    if (Math.abs(top - bottom) < MIN_CONTRAST) return null;
    value = value * 2 + (top > bottom ? 1 : 0);
  }
  return value;
}

/** Reads the barcode of what a canvas shows now (only its top eighth is read back). */
export function readCanvasBarcode(canvas: HTMLCanvasElement): number | null {
  const ctx = canvas.getContext('2d');
  if (!ctx || canvas.width === 0 || canvas.height === 0) return null;
  const rows = Math.min(canvas.height, Math.ceil(canvas.height / 8) + 1);
  const image = ctx.getImageData(0, 0, canvas.width, rows);
  return readBarcode(image, canvas.height);
}

/** One look at the picture: when (ms) and the frame number read (`null`: none). */
export interface FrameSample {
  /** Milliseconds on any steady clock. */
  t: number;
  /** The frame number read, or `null` when the picture carried no readable code. */
  frame: number | null;
}

/** What a run of samples shows about the picture's motion. */
export interface FrameProgress {
  /** Samples taken. */
  samples: number;
  /** Samples with no readable code. */
  unreadable: number;
  /** First and last frame number read (`null` if none). */
  firstFrame: number | null;
  lastFrame: number | null;
  /** How fast the frame number advanced: (last − first) / time between them, per second. */
  advanceFps: number;
  /** Distinct frames seen per second of sampling (at most the sampling rate). */
  distinctFps: number;
  /** Longest time (ms) the picture showed one frame number, or none readable. */
  longestFreezeMs: number;
  /** When (the samples' clock) that longest freeze began. */
  longestFreezeAt: number;
  /** Times the frame number went backwards. */
  backwards: number;
  /** Time covered by the samples (ms). */
  spanMs: number;
}

/** Sums up samples taken in time order. */
export function frameProgress(samples: FrameSample[]): FrameProgress {
  const out: FrameProgress = {
    samples: samples.length,
    unreadable: 0,
    firstFrame: null,
    lastFrame: null,
    advanceFps: 0,
    distinctFps: 0,
    longestFreezeMs: 0,
    longestFreezeAt: samples.length > 0 ? samples[0].t : 0,
    backwards: 0,
    spanMs: samples.length > 0 ? samples[samples.length - 1].t - samples[0].t : 0,
  };
  if (samples.length === 0) return out;
  let firstT = 0;
  let lastT = 0;
  let distinct = 0;
  // The picture counts as frozen from the moment it last changed to a readable new frame.
  let since = samples[0].t;
  let shown: number | null = null;
  for (const s of samples) {
    if (s.frame === null) {
      out.unreadable++;
    } else if (s.frame !== shown) {
      if (shown !== null && s.frame < shown) out.backwards++;
      if (out.firstFrame === null) {
        out.firstFrame = s.frame;
        firstT = s.t;
      }
      out.lastFrame = s.frame;
      lastT = s.t;
      shown = s.frame;
      distinct++;
      since = s.t;
    }
    if (s.t - since > out.longestFreezeMs) {
      out.longestFreezeMs = s.t - since;
      out.longestFreezeAt = since;
    }
  }
  if (out.firstFrame !== null && out.lastFrame !== null && lastT > firstT) {
    out.advanceFps = ((out.lastFrame - out.firstFrame) * 1000) / (lastT - firstT);
  }
  if (out.spanMs > 0) out.distinctFps = (distinct * 1000) / out.spanMs;
  return out;
}

/** Limits a moving picture must meet. */
export interface MotionLimits {
  /** Lowest rate the frame number must advance at (frames per second). Default 25. */
  minFps: number;
  /**
   * Fewest distinct frames a second the picture must show. Default 25: a number advancing at
   * 30 fps in jumps of three is a stutter, not playback. Needs samples at least this often.
   */
  minDistinctFps: number;
  /** Longest allowed freeze (ms). Default 200. */
  maxFreezeMs: number;
  /** Largest share of samples without a readable code. Default 0.05. */
  maxUnreadable: number;
  /** Shortest run of samples that can be judged (ms). Default 1000. */
  minSpanMs: number;
}

/** What is wrong with the motion `p` shows, one line per failure; empty when it passes. */
export function motionFailures(p: FrameProgress, limits: Partial<MotionLimits> = {}): string[] {
  const l: MotionLimits = { minFps: 25, minDistinctFps: 25, maxFreezeMs: 200, maxUnreadable: 0.05, minSpanMs: 1000, ...limits };
  const fail: string[] = [];
  if (p.spanMs < l.minSpanMs) fail.push(`only ${p.spanMs} ms of samples (need ${l.minSpanMs})`);
  if (p.firstFrame === null) fail.push('no frame number readable: the picture is black, blank or not the test pattern');
  if (p.samples > 0 && p.unreadable > l.maxUnreadable * p.samples) fail.push(`${p.unreadable} of ${p.samples} samples without a readable frame number`);
  if (p.advanceFps < l.minFps) fail.push(`frame number advanced at ${p.advanceFps.toFixed(1)} fps (need ${l.minFps})`);
  if (p.distinctFps < l.minDistinctFps) fail.push(`only ${p.distinctFps.toFixed(1)} distinct frames a second shown (need ${l.minDistinctFps})`);
  if (p.longestFreezeMs > l.maxFreezeMs) fail.push(`picture frozen for ${Math.round(p.longestFreezeMs)} ms (limit ${l.maxFreezeMs})`);
  if (p.backwards > 0) fail.push(`frame number went backwards ${p.backwards} times`);
  return fail;
}
