// Launches Debian's headless Chromium the way every browser test here needs it: QUIC on, a
// fake camera and microphone, sound allowed without a gesture, at raised CPU priority.
import { chromium } from 'playwright-core';
import { fileURLToPath } from 'node:url';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { setPriority } from 'node:os';
import { join } from 'node:path';

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const DIST = fileURLToPath(new URL('../dist/', import.meta.url));

export function haveChromium() {
  return existsSync(CHROMIUM);
}

/** Chromium processes launched here: their renderers are raised as pages open. */
const browserPids = new Set();

/**
 * Launches Chromium and raises its CPU priority (see {@link favour}) before any page opens,
 * so the renderers it forks later inherit it. Closing the returned browser stops Chromium.
 */
export async function launch(extraArgs = []) {
  const server = await chromium.launchServer({
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
  browserPids.add(server.process().pid);
  favour(server.process().pid);
  const browser = await chromium.connect(server.wsEndpoint());
  const disconnect = browser.close.bind(browser);
  browser.close = async () => {
    await disconnect().catch(() => undefined);
    browserPids.delete(server.process().pid);
    await server.close();
  };
  return browser;
}

/** The nice value the media under test runs at (see {@link favour}). */
const NICE = -10;

/**
 * Raises the CPU priority (nice -10) of process `pid`, every process it started and, when
 * `pid` leads its own session, that session's share (autogroup), where this process may
 * (root, as CI runs). The browser tests judge real-time media (frames a second,
 * glass-to-glass latency): on a shared machine the encoder and the browser under test must
 * not lose their frame budget to unrelated work, such as compilers running beside the
 * tests. Returns how many threads were raised.
 */
export function favour(pid) {
  const children = new Map();
  let sessionLeader = false;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // pid (comm) state ppid …: comm may hold spaces and parentheses, so split after the last ')'.
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const [, ppid, , session] = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
      if (Number(entry) === pid) sessionLeader = session === pid;
    } catch {
      // The process ended meanwhile.
    }
  }
  // With the kernel's autogroup scheduling (sched_autogroup_enabled), CPU time is first
  // shared between sessions, whatever the nice values: the share of `pid`'s session is
  // raised too, only for a session leader (Chromium as Playwright starts it, children
  // spawned detached): never the test runner's own session.
  if (sessionLeader) {
    try {
      writeFileSync(`/proc/${pid}/autogroup`, String(NICE));
    } catch {
      // No autogroups, or not permitted.
    }
  }
  let raised = 0;
  for (const todo = [pid]; todo.length > 0; ) {
    const p = todo.pop();
    // Every thread: on Linux a priority belongs to a thread, and new threads inherit their
    // creator's.
    let tasks = [p];
    try {
      tasks = readdirSync(`/proc/${p}/task`).map(Number);
    } catch {
      // Gone meanwhile.
    }
    for (const t of tasks) {
      try {
        setPriority(t, NICE);
        raised++;
      } catch {
        // Not permitted (not root) or already gone: the test runs at normal priority.
      }
    }
    todo.push(...(children.get(p) ?? []));
  }
  return raised;
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
  // Chromium sets a new renderer's priority itself: raise it (and its threads) again.
  for (const pid of browserPids) favour(pid);
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

/**
 * One line on why a player's playout delay is what it is (from its stats): the transit
 * floor and spread it covers (and the samples left out of it as stalled), what late audio frames did to it (raised it, were covered by
 * a raise already, or were blamed on the page stalling), audio skipped because the page
 * was busy, and how the page's 10 ms audio timer kept time. A failed timing test prints it.
 */
export function playoutSummary(s) {
  const p = s.playout ?? {};
  return (
    `playout delay ${s.playoutDelayMs} ms = transit floor ${p.floorMs} + margin (spread ${p.spreadMs}, ${p.samplesStalled} samples taken in during stalls left out); ` +
    `late audio ${s.audioFramesLate}: raised ${p.lateRaised} (+${p.raisedMs} ms), covered ${p.lateCovered}, stalled ${p.lateStalled}; ` +
    `audio decoded ${s.audioFramesDecoded}, skipped ${s.audioFramesSkipped}, output latency ${s.audioOutputLatencyMs} ms; ` +
    `timer longest gap ${p.longestTimerGapMs} ms, stalls ${p.timerStalls}`
  );
}
