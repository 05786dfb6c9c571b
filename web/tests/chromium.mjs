// Launches Debian's headless Chromium the way every browser test here needs it: QUIC on, a
// fake camera and microphone, sound allowed without a gesture.
import { chromium } from 'playwright-core';
import { fileURLToPath } from 'node:url';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const DIST = fileURLToPath(new URL('../dist/', import.meta.url));

export function haveChromium() {
  return existsSync(CHROMIUM);
}

export async function launch(extraArgs = []) {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--enable-quic',
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      '--autoplay-policy=no-user-gesture-required',
      ...extraArgs,
    ],
  });
}

/** file:// URL of a built page with a query string. */
export function pageUrl(name, query = '') {
  return `file://${DIST}${name}${query}`;
}

/** Opens a page and collects its uncaught errors. */
export async function open(browser, url) {
  const page = await browser.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(url);
  return { page, pageErrors };
}

/** Reads window.tiermeshStats. */
export function stats(page) {
  return page.evaluate(() => JSON.parse(JSON.stringify(window.tiermeshStats ?? {})));
}

/**
 * Samples `framesDrawn` every 200 ms for `ms` and returns the longest time (ms) it did not
 * grow: what a viewer sees as a frozen picture.
 */
export async function longestFreeze(page, ms) {
  let last = -1;
  let since = Date.now();
  let worst = 0;
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const s = await stats(page);
    const now = Date.now();
    if (s.framesDrawn !== last) {
      last = s.framesDrawn;
      since = now;
    }
    worst = Math.max(worst, now - since);
    await page.waitForTimeout(200);
  }
  return worst;
}

/** Where screenshots go: $BROWSER_ARTIFACTS, else target/browser-artifacts in the workspace. */
export const ARTIFACTS =
  process.env.BROWSER_ARTIFACTS ?? fileURLToPath(new URL('../../target/browser-artifacts/', import.meta.url));

/** Saves a screenshot of `page` as ARTIFACTS/<name>.png and returns its path. */
export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path });
  return path;
}

/**
 * Reads the test pattern's frame number off the player's canvas at every animation frame
 * for `ms` (in the page, so sampling keeps up with 30 fps) and returns the samples
 * `{t, frame}` (frame null when no code is readable).
 */
export function sampleBarcode(page, ms) {
  return page.evaluate(
    (ms) =>
      new Promise((resolve) => {
        const samples = [];
        const end = performance.now() + ms;
        const look = () => {
          const t = performance.now();
          samples.push({ t, frame: window.tiermeshReadBarcode() });
          if (t < end) requestAnimationFrame(look);
          else resolve(samples);
        };
        requestAnimationFrame(look);
      }),
    ms,
  );
}
