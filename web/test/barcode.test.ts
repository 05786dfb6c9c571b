// Guards the test pattern's barcode reader and the motion check the browser tests rely on:
// the reader gets the frame number back at every rung size and refuses pictures without a
// code; the check passes a picture advancing at 30 fps and fails a frozen, black, slow or
// stuttering one (so a browser test built on it can fail).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BARCODE_BITS, type FrameSample, frameProgress, motionFailures, readBarcode } from '../src/media/barcode.js';

/** An RGBA picture with the barcode of `frame` as the codec crate's generator draws it. */
function pattern(frame: number, w: number, h: number, white = 235, black = 16): { data: Uint8ClampedArray; width: number; height: number } {
  const data = new Uint8ClampedArray(w * h * 4);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      // A busy background below the band.
      let v = (x * 3 + y * 7) % 200;
      const rowH = Math.floor(h / 16);
      if (y < 2 * rowH) {
        const bit = Math.floor((x * BARCODE_BITS) / w);
        const one = ((frame >> (BARCODE_BITS - 1 - bit)) & 1) === 1;
        const top = y < rowH;
        v = one === top ? white : black;
      }
      const i = (y * w + x) * 4;
      data[i] = data[i + 1] = data[i + 2] = v;
      data[i + 3] = 255;
    }
  }
  return { data, width: w, height: h };
}

test('reads the frame number at every rung size, from the top rows alone', () => {
  for (const [w, h] of [[1280, 720], [640, 360], [320, 180], [960, 540]]) {
    for (const n of [0, 1, 29, 30, 1234, 0xffffff]) {
      assert.equal(readBarcode(pattern(n, w, h)), n, `${w}x${h} frame ${n}`);
      assert.equal(readBarcode(pattern(n, w, h, 255, 0)), n);
      const p = pattern(n, w, h);
      const rows = Math.ceil(h / 8) + 1;
      assert.equal(readBarcode({ data: p.data.subarray(0, w * rows * 4), width: w, height: rows }, h), n);
    }
  }
});

test('a picture without a barcode reads as none', () => {
  const black = { data: new Uint8ClampedArray(320 * 180 * 4), width: 320, height: 180 };
  assert.equal(readBarcode(black), null);
  const grey = { data: new Uint8ClampedArray(320 * 180 * 4).fill(128), width: 320, height: 180 };
  assert.equal(readBarcode(grey), null);
  const noise = new Uint8ClampedArray(320 * 180 * 4);
  let s = 7;
  for (let i = 0; i < noise.length; i++) noise[i] = s = (s * 1103515245 + 12345) & 0xff;
  assert.equal(readBarcode({ data: noise, width: 320, height: 180 }), null);
  // A low-contrast band (washed out to grey) is refused rather than misread.
  assert.equal(readBarcode(pattern(1234, 320, 180, 150, 110)), null);
  assert.equal(readBarcode({ data: new Uint8ClampedArray(0), width: 0, height: 0 }), null);
});

/** Samples every `every` ms for `ms` of a picture showing frame `at(t)`. */
function sample(ms: number, every: number, at: (t: number) => number | null): FrameSample[] {
  const out: FrameSample[] = [];
  for (let t = 0; t <= ms; t += every) out.push({ t, frame: at(t) });
  return out;
}

test('a picture advancing at 30 fps passes', () => {
  const p = frameProgress(sample(3000, 16, (t) => 500 + Math.floor(t / (1000 / 30))));
  assert.deepEqual(motionFailures(p), []);
  assert.ok(Math.abs(p.advanceFps - 30) < 1, `${p.advanceFps}`);
  assert.ok(p.longestFreezeMs <= 48, `${p.longestFreezeMs}`);
});

test('a frozen, black, slow or stuttering picture fails', () => {
  const frozen = frameProgress(sample(3000, 16, () => 1234));
  assert.match(motionFailures(frozen).join('; '), /frozen for 29\d\d ms/);
  const black = frameProgress(sample(3000, 16, () => null));
  assert.match(motionFailures(black).join('; '), /no frame number readable/);
  const slow = frameProgress(sample(3000, 16, (t) => Math.floor(t / 66.7)));
  assert.match(motionFailures(slow).join('; '), /advanced at 1[45]\.\d fps.*only 1[45]\.\d distinct/);
  // 30 fps, but one 300 ms stall (the player caught up afterwards).
  const stall = frameProgress(sample(3000, 16, (t) => (t >= 1000 && t < 1300 ? 30 : Math.floor(t / 33.4))));
  const failures = motionFailures(stall);
  assert.equal(failures.length, 1, failures.join('; '));
  assert.match(failures[0], /frozen for (2[6-9]\d|30\d) ms/);
  // The number keeps pace with 30 fps, but only every third frame is shown: a stutter.
  const jumpy = frameProgress(sample(3000, 16, (t) => 3 * Math.floor(t / 100)));
  assert.match(motionFailures(jumpy).join('; '), /only 1\d\.\d distinct frames a second/);
  assert.ok(jumpy.advanceFps > 29, `${jumpy.advanceFps}`);
  // The picture turning black half-way: unreadable samples and a freeze.
  const blackened = frameProgress(sample(3000, 16, (t) => (t < 1500 ? Math.floor(t / 33.4) : null)));
  assert.match(motionFailures(blackened).join('; '), /without a readable frame number.*frozen/);
  // Going backwards (a replayed group) is a failure too.
  const replay = frameProgress(sample(3000, 16, (t) => Math.floor(t / 33.4) - (t > 2000 ? 30 : 0)));
  assert.match(motionFailures(replay).join('; '), /backwards/);
});
