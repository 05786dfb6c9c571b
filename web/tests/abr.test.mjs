// Guards: tier switching in a real Chromium with a three-tier ladder encoded in the page.
// ABR steps up after a calm hold and steps down within seconds when the link from the
// publisher drops to 500 kb/s (and the publisher's encoders follow the slower uplink), and
// the picture never freezes for long across a switch.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { haveChromium, open, pageUrl, stats, longestFreeze, screenshot } from './chromium.mjs';
import { useBrowser } from './procs.mjs';

const skip = !haveChromium() && 'no chromium';
const ctx = useBrowser({ skip });

test('ABR steps up to the top tier on a calm link, without freezing', { skip }, async () => {
  const { page, pageErrors } = await open(ctx.browser, pageUrl('loopback.html', '?ladder=1&hold=3000'));
  await page.waitForFunction(() => window.tiermeshStats?.framesDrawn >= 10, null, { timeout: 15000 });
  const freeze = await longestFreeze(page, 9000);
  await page.waitForFunction(() => window.tiermeshStats?.tier === 'video/720p', null, { timeout: 15000 });
  const s = await stats(page);
  await screenshot(page, 'loopback-abr-up');
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(s.tiers, ['video/180p', 'video/360p', 'video/720p']);
  // One step at a time, 180p → 360p → 720p (on a loaded machine a latency spike may add a
  // step down and up again later).
  assert.deepEqual(s.switches.slice(0, 2).map((x) => x.to), ['video/360p', 'video/720p']);
  assert.ok(freeze < 700, `picture froze for ${freeze} ms around a switch`);
  console.log(`up-switches: ${s.switches.map((x) => `${x.to} (${x.reason})`).join(', ')}; longest freeze ${freeze} ms`);
  await page.close();
});

test('ABR steps down quickly when the link degrades', { skip }, async () => {
  const { page, pageErrors } = await open(ctx.browser, pageUrl('loopback.html', '?ladder=1&start=highest&kbps=8000'));
  await page.waitForFunction(() => window.tiermeshStats?.framesDrawn >= 60, null, { timeout: 15000 });
  // Hold 720p by hand until the link drops (a loaded machine can make ABR leave it early),
  // then give the choice back to ABR.
  await page.evaluate(() => window.tiermeshPlayer.setTier(2));
  await page.waitForFunction(() => window.tiermeshStats.tier === 'video/720p', null, { timeout: 20000 });
  await page.waitForTimeout(1500);
  const t0 = Date.now();
  await page.evaluate(() => {
    window.tiermeshLink.bps = 500_000;
    window.tiermeshPlayer.setTier('auto');
  });
  await page.waitForFunction(() => window.tiermeshStats.tierIndex < 2, null, { timeout: 8000 });
  const took = Date.now() - t0;
  const drawnAtSwitch = (await stats(page)).framesDrawn;
  await page.waitForFunction((n) => window.tiermeshStats.framesDrawn > n + 30, drawnAtSwitch, { timeout: 10000 });
  const s = await stats(page);
  const pub = await page.evaluate(() => ({ ...window.tiermeshPublisherStats }));
  await screenshot(page, 'loopback-abr-down');
  assert.deepEqual(pageErrors, []);
  assert.match(s.switches.at(-1).reason, /latency|throughput/);
  // The publisher's uplink (the shaped link) slowed down too: its encoders follow it.
  assert.ok(pub.targetKbps < 2500, `publisher target still ${pub.targetKbps} kb/s`);
  console.log(`publisher target bit rate after the drop: ${pub.targetKbps} kb/s`);
  console.log(`down-switch to ${s.tier} ${took} ms after the link dropped to 500 kb/s (${s.switches.at(-1).reason})`);
  assert.ok(took < 6000, `stepped down after ${took} ms`);
  await page.close();
});
