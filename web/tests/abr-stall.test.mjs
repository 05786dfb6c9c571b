// Guards: the browser player does not leave the picture frozen while a tier switch waits and
// the tier playing has stopped delivering. `tiermesh pub --test-pattern` (H.264 180p/360p/
// 720p) feeds the relay; the player reaches it through `tiermesh link` (30 ms each way) and
// plays 720p under ABR. The relay then stops sending 720p (the player's 720p subscription
// is ended from inside the page, as a relay starving that track would look to the player),
// and 1.1 s later a switch to 180p is asked for: its subscription starts at the relay's next
// group, two groups after the last 720p group the player got, so no group boundary of 720p
// will ever bring the switch about. The player must leave 720p (a fresh join of 180p) and
// show a moving picture again within STALL_BOUND_MS; before, it waited for 720p for good.
// Skipped without Chromium or the tiermesh binary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { haveChromium, open, stats, screenshot } from './chromium.mjs';
import { BIN, hasSubcommand, startLink, startTestPattern, useBrowser } from './procs.mjs';
import { frameProgress } from '../dist/lib/media/barcode.js';

const skip = (!haveChromium() && 'no chromium') || (!hasSubcommand('link') && `no tiermesh binary at ${BIN}`);

/** Time from the end of 720p to the switch asked for: over a group, so the switch's tier starts two groups on. */
const SWITCH_AFTER_MS = 1100;
/**
 * Longest frozen picture allowed from the end of 720p on: the 1.1 s until the switch is asked
 * for, the player's 1 s without progress (already over when the switch is asked), the fresh
 * join's round trips through the link and the first decoded frames: about 1.3 s expected;
 * the rest is room for a loaded two-core machine.
 */
const STALL_BOUND_MS = 3500;
/** How long the picture is watched from the end of 720p. */
const WATCH_MS = 8000;

const ctx = useBrowser({ skip, relay: true });

test('when the tier playing stops while a switch waits, the player joins the lowest tier afresh instead of freezing', { skip }, async () => {
  const broadcast = 'demo/abr-stall';
  const pub = await startTestPattern(ctx.relay, broadcast, '60s');
  const { link, port } = await startLink(ctx.relay, ['--delay', '30ms', '--duration', '45s']);
  // ABR on, with a hold long enough that it never steps up during the test.
  const { page, pageErrors } = await open(
    ctx.browser,
    `${ctx.relay.pages}/player.html?url=https://127.0.0.1:${port}/${broadcast}&hash=${ctx.relay.hash}&start=highest&hold=60000&audio=0`,
  );
  await page.waitForFunction(() => window.tiermeshStats?.framesDrawn >= 30 && window.tiermeshStats.tierIndex === 2, null, { timeout: 20000 });
  const before = await stats(page);
  // In the page: end the 720p subscription, ask for 180p SWITCH_AFTER_MS later, and read the
  // barcode at every animation frame from the end of 720p on.
  const samples = await page.evaluate(
    ({ switchAfter, watch }) =>
      new Promise((resolve) => {
        const player = window.tiermeshPlayer;
        const samples = [];
        const t0 = performance.now();
        player.switcher.feed.sub.unsubscribe();
        setTimeout(() => void player.switchTier(0, 'asked by the test while 720p is starved'), switchAfter);
        const look = () => {
          const t = performance.now();
          samples.push({ t: t - t0, frame: window.tiermeshReadBarcode() });
          if (t - t0 < watch) requestAnimationFrame(look);
          else resolve(samples);
        };
        requestAnimationFrame(look);
      }),
    { switchAfter: SWITCH_AFTER_MS, watch: WATCH_MS },
  );
  const s = await stats(page);
  await screenshot(page, 'abr-stall');
  await page.close();
  link.kill();
  pub.kill();

  const progress = frameProgress(samples);
  const switches = s.switches.map((x) => `${x.to} (${x.reason})`).join('; ') || 'none';
  const lastSecond = frameProgress(samples.filter(({ t }) => t >= WATCH_MS - 1000));
  console.log(
    `720p ended at 0 ms, 180p asked for at ${SWITCH_AFTER_MS} ms: longest freeze ${Math.round(progress.longestFreezeMs)} ms from ` +
      `${Math.round(progress.longestFreezeAt)} ms; last second ${lastSecond.distinctFps.toFixed(1)} distinct frames/s; tier ${s.tier}; ` +
      `switches: ${switches}; errors: ${s.errors.join('; ') || 'none'}`,
  );
  assert.deepEqual(pageErrors, []);
  assert.equal(before.tier, 'video/720p');
  assert.ok(
    progress.longestFreezeMs < STALL_BOUND_MS,
    `picture froze for ${Math.round(progress.longestFreezeMs)} ms from ${Math.round(progress.longestFreezeAt)} ms after 720p ended; switches: ${switches}; errors: ${s.errors.join('; ')}`,
  );
  assert.equal(s.tier, 'video/180p');
  assert.match(s.switches.at(-1).reason, /stalled/);
  // The picture moves again, at the test pattern's rate.
  assert.ok(lastSecond.distinctFps >= 20, `${lastSecond.distinctFps.toFixed(1)} distinct frames/s in the last second`);
  assert.equal(progress.backwards, 0);
});
