// Guards: what `tiermesh pub --test-pattern` encodes (a real process, H.264 and AV1 ladders)
// plays in the browser player through the relay, with the player page served by the relay
// itself. The player reads the publisher's catalog (its tiers and codecs), and on every tier
// the frame number the pattern carries as a barcode, read back from the player's canvas,
// advances at 25 fps or more with no frozen stretch over 200 ms (the checker fails a frozen
// or black canvas: test/barcode.test.ts). The address `tiermesh dev` prints opens as it is
// and plays. Skipped without Chromium or the tiermesh binary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { haveChromium, open, stats, screenshot, sampleBarcode } from './chromium.mjs';
import { BIN, child, hasSubcommand, startTestPattern, useBrowser, waitOutput } from './procs.mjs';
import { frameProgress, motionFailures } from '../dist/lib/media/barcode.js';

const skip = (!haveChromium() && 'no chromium') || (!hasSubcommand('pub') && `no tiermesh binary at ${BIN}`);

const ctx = useBrowser({ skip, relay: true });

/** How long each tier's picture is watched. */
const WATCH_MS = 2500;

/**
 * Publishes the test pattern with `codec`, plays it tier by tier and returns what each tier
 * showed.
 */
async function playEveryTier(codec, name, limits = {}) {
  const broadcast = `demo/pattern-${codec}`;
  const pub = await startTestPattern(ctx.relay, broadcast, '120s', ['--codec', codec]);
  const { page, pageErrors } = await open(ctx.browser, `${ctx.relay.pages}/player.html?url=${ctx.relay.base}/${broadcast}&hash=${ctx.relay.hash}&tier=0`);
  await page.waitForFunction(() => window.tiermeshStats?.framesDrawn >= 15, null, { timeout: 30000 }).catch(async (e) => {
    throw new Error(`no picture: ${JSON.stringify(await stats(page)).slice(0, 1500)}`, { cause: e });
  });
  const s0 = await stats(page);
  const catalog = await page.evaluate(() => window.tiermeshPlayer.catalog.tracks.map((t) => ({ name: t.name, codec: t.codec, width: t.width, height: t.height })));
  const tiers = [];
  for (const [index, tier] of s0.tiers.entries()) {
    if (index > 0) {
      await page.evaluate((i) => window.tiermeshPlayer.setTier(i), index);
      await page.waitForFunction((t) => window.tiermeshStats.tier === t, tier, { timeout: 15000 });
      // Let the first group of the new tier settle before judging it.
      const drawn = (await stats(page)).framesDrawn;
      await page.waitForFunction((n) => window.tiermeshStats.framesDrawn >= n + 10, drawn, { timeout: 15000 });
    }
    const before = await stats(page);
    const samples = await sampleBarcode(page, WATCH_MS);
    const progress = frameProgress(samples);
    const s = await stats(page);
    // Frames that reached the player's decoder a second: what the publisher managed to send.
    const decodedFps = ((s.framesDecoded - before.framesDecoded) * 1000) / progress.spanMs;
    const freezeAtMs = Math.round(progress.longestFreezeAt - (samples[0]?.t ?? 0));
    tiers.push({ tier, progress, decodedFps, freezeAtMs, failures: motionFailures(progress, limits), videoCodec: s.videoCodec });
    if (index === s0.tiers.length - 1) await screenshot(page, name);
  }
  const s = await stats(page);
  await page.close();
  pub.kill();
  return { s, catalog, tiers, pageErrors };
}

function report(label, r) {
  for (const t of r.tiers) {
    const p = t.progress;
    console.log(
      `${label} ${t.tier} (${t.videoCodec}): frame ${p.firstFrame}→${p.lastFrame}, advancing at ${p.advanceFps.toFixed(1)} fps, ` +
        `${p.distinctFps.toFixed(1)} distinct frames/s seen, longest freeze ${Math.round(p.longestFreezeMs)} ms (at +${t.freezeAtMs} ms), ` +
        `${p.unreadable}/${p.samples} samples unreadable, ${t.decodedFps.toFixed(1)} frames decoded/s`,
    );
  }
}

test('tiermesh pub --test-pattern (H.264) plays on every tier: catalog read, barcode advancing at 25 fps or more', { skip }, async () => {
  const r = await playEveryTier('h264', 'testpattern-h264');
  report('H.264', r);
  assert.deepEqual(r.pageErrors, []);
  assert.deepEqual(r.s.tiers, ['video/180p', 'video/360p', 'video/720p']);
  const video = r.catalog.filter((t) => t.name.startsWith('video/'));
  assert.ok(video.every((t) => /^avc1\./.test(t.codec)), JSON.stringify(video));
  assert.ok(r.catalog.some((t) => t.name === 'audio' && t.codec === 'opus'), JSON.stringify(r.catalog));
  assert.ok(r.s.audioFramesDecoded > 50, `audio frames decoded ${r.s.audioFramesDecoded}`);
  for (const t of r.tiers) {
    assert.match(t.videoCodec, /^avc1\./);
    assert.deepEqual(t.failures, [], `${t.tier}: ${t.failures.join('; ')}`);
  }
});

// rav1e at tiermesh's speed 10 (transform-domain rate and distortion, no CDEF: codec/src/av1.rs)
// encodes 360p in about a core on this machine class, and how many frames a second it
// manages beside Chromium on two shared cores is the machine's, not the product's: 22-26
// distinct frames a second on some days, 14.4-21.2 on an idle machine on 2026-11-27 with
// either publisher (the encoders on the driver loop or on their own workers,
// docs/BENCHMARKS.md). What must hold everywhere: the picture keeps real time (frame number
// advancing at 25 fps or more), never freezes over 200 ms (the publisher skips source frames
// evenly when its encoder cannot keep up), and moves at 10 distinct frames a second or more.
// The frame rate itself is a benchmark figure.
const AV1_MIN_DISTINCT_FPS = 10;
test('tiermesh pub --test-pattern --codec av1 plays on every tier: catalog read, barcode advancing at 25 fps or more', { skip }, async () => {
  const r = await playEveryTier('av1', 'testpattern-av1', { minDistinctFps: AV1_MIN_DISTINCT_FPS });
  report('AV1', r);
  assert.deepEqual(r.pageErrors, []);
  assert.deepEqual(r.s.tiers, ['video/180p', 'video/360p']);
  const video = r.catalog.filter((x) => x.name.startsWith('video/'));
  assert.ok(video.every((x) => /^av01\./.test(x.codec)), JSON.stringify(video));
  assert.ok(r.catalog.some((x) => x.name === 'audio' && x.codec === 'opus'), JSON.stringify(r.catalog));
  for (const x of r.tiers) {
    assert.match(x.videoCodec, /^av01\./);
    assert.deepEqual(x.failures, [], `${x.tier}: ${x.failures.join('; ')} (${x.decodedFps.toFixed(1)} frames decoded/s)`);
  }
});

test('tiermesh dev prints a player address that plays in Chromium as it is', { skip }, async () => {
  const dev = child(['dev', '--listen', '127.0.0.1:0', '--ops', '127.0.0.1:0', '--duration', '90s']);
  const [, address] = await waitOutput(dev, /^in Chromium: (http:\/\/\S+)$/m, 60000, 'tiermesh dev player address');
  const u = new URL(address);
  assert.equal(u.pathname, '/player.html');
  assert.match(u.searchParams.get('hash'), /^[0-9a-f]{64}$/);
  assert.match(u.searchParams.get('url'), /^https:\/\/127\.0\.0\.1:\d+\/demo\/room-1$/);
  const { page, pageErrors } = await open(ctx.browser, address);
  await page.waitForFunction(() => window.tiermeshStats?.framesDrawn >= 15, null, { timeout: 30000 }).catch(async (e) => {
    throw new Error(`no picture: ${JSON.stringify(await stats(page)).slice(0, 1500)}`, { cause: e });
  });
  const progress = frameProgress(await sampleBarcode(page, WATCH_MS));
  const s = await stats(page);
  await screenshot(page, 'tiermesh-dev-player');
  await page.close();
  dev.kill();
  console.log(
    `tiermesh dev: ${s.tier} of ${s.tiers.join(', ')} (${s.videoCodec}), frame number advancing at ${progress.advanceFps.toFixed(1)} fps, ` +
      `${progress.distinctFps.toFixed(1)} distinct frames/s, longest freeze ${Math.round(progress.longestFreezeMs)} ms, latency p50 ${s.latencyMs.p50} ms`,
  );
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(s.tiers, ['video/180p', 'video/360p']);
  assert.ok(s.audioFramesDecoded > 0, 'audio decoded');
  assert.deepEqual(motionFailures(progress), []);
});
