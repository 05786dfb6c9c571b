// Guards: each page says clearly what went wrong: no relay URL, no WebTransport in the
// browser, the relay unreachable or its certificate refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { haveChromium, pageUrl, screenshot, stats } from './chromium.mjs';
import { useBrowser } from './procs.mjs';

const skip = !haveChromium() && 'no chromium';
const ctx = useBrowser({ skip });

async function errorOf(url, init, shot) {
  const page = await ctx.browser.newPage();
  if (init) await page.addInitScript(init);
  await page.goto(url);
  await page.waitForFunction(() => window.tiermeshStats?.state === 'error', null, { timeout: 20000 });
  const banner = await page.locator('#error').textContent();
  const s = await stats(page);
  await screenshot(page, shot);
  await page.close();
  return { banner, kind: s.errorKind, s };
}

for (const name of ['player.html', 'publisher.html', 'room.html']) {
  test(`${name} without a relay URL says how to give one`, { skip }, async () => {
    const { banner, kind } = await errorOf(pageUrl(name), undefined, `error-no-url-${name}`);
    assert.equal(kind, 'config');
    assert.match(banner, /\?url=https:\/\/host:port/);
  });

  test(`${name} in a browser without WebTransport says so`, { skip }, async () => {
    const { banner, kind } = await errorOf(
      pageUrl(name, '?url=https://127.0.0.1:9/demo/live&role=doctor'),
      () => {
        delete window.WebTransport;
      },
      `error-no-webtransport-${name}`,
    );
    assert.equal(kind, 'unsupported');
    assert.match(banner, /no WebTransport/);
  });

  test(`${name} with an unreachable relay or refused certificate says so`, { skip }, async () => {
    // Port 9 (discard) on loopback: nothing answers QUIC there.
    const hash = 'ab'.repeat(32);
    const { banner, kind } = await errorOf(pageUrl(name, `?url=https://127.0.0.1:9/demo/live&hash=${hash}&role=doctor`), undefined, `error-unreachable-${name}`);
    assert.equal(kind, 'connect');
    assert.match(banner, /Could not connect to https:\/\/127\.0\.0\.1:9\/demo\/live/);
    assert.match(banner, /certificate/);
  });
}
