// Guards: in a real Chromium, what the publisher captures and encodes (WebCodecs H.264 and
// Opus) the player decodes, draws and plays through WebAudio: frames are drawn without
// freezing, audio plays with little concealment, and capture-to-display latency stays low.
// The transport is the in-page memory pair (no relay needed), so this checks the media path.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { haveChromium, open, pageUrl, stats, longestFreeze, screenshot } from './chromium.mjs';
import { useBrowser } from './procs.mjs';

const skip = !haveChromium() && 'no chromium';
const ctx = useBrowser({ skip });

test('loopback: video drawn, audio played, latency low', { skip }, async () => {
  const { page, pageErrors } = await open(ctx.browser, pageUrl('loopback.html'));
  await page.waitForFunction(() => window.tiermeshStats?.framesDrawn >= 30, null, { timeout: 15000 });
  const freeze = await longestFreeze(page, 5000);
  const s = await stats(page);
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(s.errors, []);
  assert.equal(s.state, 'playing');
  assert.ok(freeze < 500, `picture froze for ${freeze} ms`);
  assert.ok(s.audioFramesPlayed >= 150, `audio frames played: ${s.audioFramesPlayed}`);
  assert.ok(s.audioFramesConcealed <= 0.15 * s.audioFramesPlayed, `concealed ${s.audioFramesConcealed} of ${s.audioFramesPlayed}`);
  assert.ok(s.latencyMs.p50 > 0 && s.latencyMs.p50 < 300, `capture-to-display latency p50 ${s.latencyMs.p50} ms`);
  await screenshot(page, 'loopback-h264');
  console.log(`loopback: ${s.framesDrawn} frames drawn, freeze ${freeze} ms, audio ${s.audioFramesPlayed} played / ${s.audioFramesConcealed} concealed, latency p50 ${s.latencyMs.p50} ms`);
  await page.close();
});

test('loopback AV1: the player decodes AV1', { skip }, async () => {
  const { page, pageErrors } = await open(ctx.browser, pageUrl('loopback.html', '?codec=av1'));
  await page.waitForFunction(() => window.tiermeshStats?.framesDrawn >= 20, null, { timeout: 20000 });
  const s = await stats(page);
  const pub = await page.evaluate(() => window.tiermeshPublisherStats.codec);
  await screenshot(page, 'loopback-av1');
  assert.match(pub, /^av01/);
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(s.errors, []);
  await page.close();
});
