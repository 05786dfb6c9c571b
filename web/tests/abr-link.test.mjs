// Guards: ABR against a real shaped link. `tiermesh pub --test-pattern` (H.264, 180p/360p/
// 720p) feeds the relay; the browser player reaches the relay only through `tiermesh link
// --profile step` (3 Mbit/s, 30 ms, a third of the rate for 10 s in the middle). The player
// starts at 720p, steps down a tier within DOWN_WITHIN_MS of the drop, steps back up to 720p
// after the rate returns (ABR hold shortened to 3 s by the page's hold=3000), and the picture (the barcode frame number on the canvas, sampled at
// every animation frame) never stalls longer than DOWN_STALL_BOUND_MS until the rate returns and
// UP_STALL_BOUND_MS after. Skipped without Chromium
// or the tiermesh binary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { haveChromium, open, stats, screenshot, sampleBarcode } from './chromium.mjs';
import { BIN, hasSubcommand, startLink, startTestPattern, useBrowser } from './procs.mjs';
import { frameProgress } from '../dist/lib/media/barcode.js';

const skip = (!haveChromium() && 'no chromium') || (!hasSubcommand('link') && `no tiermesh binary at ${BIN}`);

/**
 * Longest frozen picture allowed from the start until the rate returns (the drop and the step
 * down). The freeze falls right after the drop, while 720p objects already queued behind the
 * slower link arrive late, until the new tier starts at its next group: 396 to 486 ms measured
 * in 5 runs at load 3 to 8 on two cores (the bound was 4 s while a relay fault could silence
 * the link for seconds after a switch; client/tests/moq_switch_under_congestion.rs).
 */
const DOWN_STALL_BOUND_MS = 1500;
/**
 * Longest frozen picture allowed after the rate returns, across the step up: the new tier
 * starts at a group boundary, so the picture goes on (24 to 31 ms measured, a frame
 * interval; 400 ms leaves room for a descheduled renderer on a loaded machine).
 */
const UP_STALL_BOUND_MS = 400;
/** The step link's run: the rate is 1 Mbit/s from 12 s to 22 s after it starts. */
const LINK_S = 34;
const DROP_AT_MS = 12000;
const RESTORE_AT_MS = 22000;
/** The step down must come this soon after the drop (2 to 5 s measured). */
const DOWN_WITHIN_MS = 8000;

const ctx = useBrowser({ skip, relay: true });

// A relay fault once made the relay-to-player connection carry almost nothing for about 9 s
// right after the player left 720p under congestion (the send path counted reset streams'
// unsent bytes as still queued; client/tests/moq_switch_under_congestion.rs). Another held
// 720p back after the step up, in about one run in eight: a 720p stream whose FIN was
// already handed to QUIC, stopped by the player as it left 720p, kept its unsent bytes
// counted at 720p's priority for good, and every later 720p group waited behind them (its
// key frame never started, the switch never completed) or got a fraction of the link
// (6f7615a). The failure messages name the longest run of seconds in which the player
// received nothing.

test('over tiermesh link --profile step the player steps down when the rate drops and back up when it returns', { skip }, async () => {
  const broadcast = 'demo/abr-step';
  const pub = await startTestPattern(ctx.relay, broadcast, '90s');
  const { link, port, start: linkStart } = await startLink(ctx.relay, ['--profile', 'step', '--duration', `${LINK_S}s`]);
  // The browser talks to the emulator's port; the certificate is the relay's, pinned by hash.
  const { page, pageErrors } = await open(
    ctx.browser,
    `${ctx.relay.pages}/player.html?url=https://127.0.0.1:${port}/${broadcast}&hash=${ctx.relay.hash}&start=highest&hold=3000&audio=0`,
  );
  await page.waitForFunction(() => window.tiermeshStats?.framesDrawn >= 15, null, { timeout: 20000 });
  const since = (t) => t - linkStart;
  // Watch the picture in the page from now until the end, while the test follows the tiers.
  const watching = sampleBarcode(page, LINK_S * 1000 - since(Date.now()) - 2500);
  // One line a second of what the player saw, for the failure messages.
  const trace = [];
  let silentRun = 0;
  let longestSilence = 0;
  const tracer = setInterval(async () => {
    const x = await stats(page).catch(() => null);
    if (!x) return;
    trace.push(
      `${since(Date.now())} ms: tier ${x.tierIndex}, arrival latency ${x.arrivalLatencyMs.last} ms, ${x.bitrateKbps} kb/s, ` +
        `throughput estimate ${x.throughputKbps} kb/s, drawn ${x.framesDrawn}, dropped ${x.framesDropped}`,
    );
    silentRun = x.bitrateKbps === 0 ? silentRun + 1 : 0;
    longestSilence = Math.max(longestSilence, silentRun);
  }, 1000);
  tracer.unref();
  // What the player and the publisher did besides: the player's switches and errors (skipped
  // groups, …), the publisher's encoder rate changes (it follows its uplink).
  const context = (x) => {
    const switches = (x?.switches ?? []).map((w) => `${w.to} at ${Math.round(since(w.at))} ms (${w.reason})`);
    const uplink = pub.output.replace(/\x1b\[[0-9;]*m/g, '').split('\n').filter((l) => /uplink/.test(l));
    return `switches: ${switches.join('; ') || 'none'}\nplayer errors: ${(x?.errors ?? []).join('; ') || 'none'}\npublisher: ${uplink.join('\n') || 'no uplink change'}`;
  };
  const explain = (what) => async (e) => {
    clearInterval(tracer);
    watching.catch(() => undefined);
    const x = await stats(page).catch(() => null);
    throw new Error(`${what} (longest run with nothing received: ${longestSilence} s); per second:\n${trace.join('\n')}\n${context(x)}`, { cause: e });
  };
  const top = (await stats(page)).tiers.length - 1;
  assert.equal(top, 2);
  // Down: after the drop, below 720p.
  await page
    .waitForFunction((top) => window.tiermeshStats.tierIndex < top, top, { timeout: RESTORE_AT_MS - since(Date.now()) })
    .catch(explain('no step down while the rate was low'));
  const downAt = since(Date.now());
  const down = await stats(page);
  // Up: after the rate returns, back at 720p.
  await page
    .waitForFunction((top) => window.tiermeshStats.tierIndex === top, top, { timeout: LINK_S * 1000 - since(Date.now()) - 2500 })
    .catch(explain('not back at 720p after the rate returned'));
  const upAt = since(Date.now());
  await screenshot(page, 'abr-link-step');
  const samples = await watching;
  clearInterval(tracer);
  // The page's clock (performance.now) against the link's start, for the log.
  const pageNow = await page.evaluate(() => performance.now());
  const linkNow = since(Date.now());
  const pageToLink = (t) => Math.round(linkNow - (pageNow - t));
  const s = await stats(page);
  const progress = frameProgress(samples);
  const freezeAt = pageToLink(progress.longestFreezeAt);
  // The two switches apart: congestion and the step down (before the rate returns), the step
  // up (after it). A freeze spanning the split is counted whole in both halves.
  const restoreOnPage = pageNow - (linkNow - RESTORE_AT_MS);
  const split = samples.findIndex(({ t }) => t >= restoreOnPage);
  const downPhase = frameProgress(split > 0 ? samples.slice(0, split + 1) : samples);
  const upPhase = frameProgress(split > 0 ? samples.slice(split - 1) : []);
  await page.close();
  link.kill();
  pub.kill();

  const switches = s.switches.map((x) => `${x.to} at ${Math.round(since(x.at))} ms (${x.reason})`).join('; ');
  console.log(`step link: down at ${downAt} ms (drop at ${DROP_AT_MS}), up at ${upAt} ms (restore at ${RESTORE_AT_MS}); switches: ${switches}`);
  const more = context(s);
  console.log(more);
  if (process.env.TIERMESH_TEST_LOGS) console.log(`per second:\n${trace.join('\n')}`);
  console.log(
    `step link picture: longest freeze ${Math.round(progress.longestFreezeMs)} ms from ${freezeAt} ms ` +
      `(until the rate returns: ${Math.round(downPhase.longestFreezeMs)} ms from ${pageToLink(downPhase.longestFreezeAt)} ms; ` +
      `after: ${Math.round(upPhase.longestFreezeMs)} ms from ${pageToLink(upPhase.longestFreezeAt)} ms), advancing at ${progress.advanceFps.toFixed(1)} fps, ` +
      `${progress.distinctFps.toFixed(1)} distinct frames/s, ${progress.unreadable}/${progress.samples} unreadable, latency p50 ${s.latencyMs.p50} ms`,
  );
  assert.deepEqual(pageErrors, []);
  assert.ok(downAt >= DROP_AT_MS - 1000, `stepped down at ${downAt} ms, before the rate dropped (${DROP_AT_MS} ms): ${switches}`);
  assert.ok(downAt < DROP_AT_MS + DOWN_WITHIN_MS, `stepped down only at ${downAt} ms: ${switches}`);
  assert.ok(down.tierIndex >= 0 && down.tierIndex < top);
  assert.ok(upAt >= RESTORE_AT_MS, `back at 720p at ${upAt} ms, before the rate returned: ${switches}`);
  assert.ok(
    downPhase.longestFreezeMs < DOWN_STALL_BOUND_MS,
    `picture froze for ${Math.round(downPhase.longestFreezeMs)} ms from ${pageToLink(downPhase.longestFreezeAt)} ms (drop and step down); per second:\n${trace.join('\n')}\n${more}`,
  );
  assert.ok(
    upPhase.samples > 0 && upPhase.longestFreezeMs < UP_STALL_BOUND_MS,
    `picture froze for ${Math.round(upPhase.longestFreezeMs)} ms from ${pageToLink(upPhase.longestFreezeAt)} ms (step up); per second:\n${trace.join('\n')}\n${more}`,
  );
  assert.equal(progress.backwards, 0);
  assert.ok(progress.unreadable <= 0.05 * progress.samples, `${progress.unreadable}/${progress.samples} samples unreadable`);
});
