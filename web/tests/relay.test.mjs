// Guards: the browser client against the real relay (`tiermesh relay`, development
// certificate pinned by hash, WebTransport on loopback, pages served by the relay): a
// browser publisher's camera and microphone reach a browser player through the relay,
// glass to glass (capture to display, from the LOC timestamps) under 150 ms; over an
// emulated rural link (`tiermesh link`) a player that starts at the test pattern's 720p
// steps down within seconds and plays on without stalls; a missing broadcast is reported as
// such; a doctor and a patient in a room see and hear each other; the Rust subscriber
// (`tiermesh sub`) reads what the browser publishes and the browser player reads what the
// Rust publisher (`tiermesh pub`) sends. Skipped when the tiermesh binary is not built
// (TIERMESH_BIN, else $CARGO_TARGET_DIR/debug/tiermesh, else ../target/debug/tiermesh).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { haveChromium, open, stats, longestFreeze, screenshot, playoutSummary } from './chromium.mjs';
import { BIN, child, hasSubcommand, runToEnd, startLink, startTestPattern, useBrowser, waitOutput } from './procs.mjs';

/** Bound on capture-to-display latency, browser publisher → relay → browser player on loopback. */
const GLASS_TO_GLASS_MS = 150;

const skip = (!haveChromium() && 'no chromium') || (!hasSubcommand('relay') && `no tiermesh binary with a relay subcommand at ${BIN}`);

const ctx = useBrowser({ skip, relay: true });

/** A page as the relay serves it (on its ops listener). */
const pageUrl = (name, query = '') => `${ctx.relay.pages}/${name}${query}`;

test('a browser publisher reaches a browser player through the relay', { skip }, async () => {
  const pub = await open(ctx.browser, pageUrl('publisher.html', `?url=${ctx.relay.base}/demo/live&hash=${ctx.relay.hash}`));
  await pub.page.waitForFunction(() => window.tiermeshStats?.state === 'publishing', null, { timeout: 20000 });
  const player = await open(ctx.browser, pageUrl('player.html', `?url=${ctx.relay.base}/demo/live/source&hash=${ctx.relay.hash}`));
  await player.page.waitForFunction(() => window.tiermeshStats?.framesDrawn >= 30, null, { timeout: 20000 });
  // 8 s of watching: the latency median below then covers the last 120 frames (6 s at the
  // fake camera's 20 fps), in steady state rather than the start-up's larger playout delay.
  const freeze = await longestFreeze(player.page, 8000);
  const s = await stats(player.page);
  const p = await stats(pub.page);
  await screenshot(player.page, 'relay-browser-to-browser');
  console.log(
    `relay: ${s.framesDrawn} frames drawn, audio ${s.audioFramesPlayed} played / ${s.audioFramesConcealed} concealed, ` +
      `latency p50 ${s.latencyMs.p50} ms (arrival ${s.arrivalLatencyMs.p50} ms, decoded ${s.decodeLatencyMs.p50} ms, playout delay ${s.playoutDelayMs} ms, ` +
        `audio late ${s.audioFramesLate}), publisher ${p.sentKbps} kb/s; ${playoutSummary(s)}`,
  );
  assert.deepEqual(pub.pageErrors, []);
  assert.deepEqual(player.pageErrors, []);
  assert.equal(s.state, 'playing');
  assert.ok(freeze < 500, `picture froze for ${freeze} ms`);
  assert.ok(
    s.audioFramesPlayed >= 100,
    `audio frames played ${s.audioFramesPlayed} (decoded ${s.audioFramesDecoded}, late ${s.audioFramesLate}, context ${s.audioState}, ` +
      `errors ${JSON.stringify(s.errors?.slice(-3))}); publisher encoded ${p.audioFramesEncoded}, errors ${JSON.stringify(p.errors?.slice(-3))}`,
  );
  // Glass to glass on loopback: capture (the LOC timestamp the browser publisher stamps) to
  // the frame drawn on the player's canvas, median of the last 120 frames drawn (the LOC
  // timestamp is the camera frame's capture time; both pages share this machine's clock).
  assert.ok(s.latencyMs.p50 > 0 && s.latencyMs.p50 < GLASS_TO_GLASS_MS, `capture-to-display latency p50 ${s.latencyMs.p50} ms; ${playoutSummary(s)}`);
  await player.page.close();
  await pub.page.close();
});

test('over a rural link the player steps down at once and plays on', { skip }, async () => {
  // 1 Mbit/s, 60 ms one way, 1 % loss, the same random run every time.
  const { port } = await startLink(ctx.relay, ['--profile', 'rural', '--seed', '7', '--duration', '90s']);
  // The test pattern's 720p (about 1.5 Mbit/s) cannot cross a 1 Mbit/s link, whatever the
  // picture (a browser camera's 720p may need only half of that, and then staying is right).
  const pub = await startTestPattern(ctx.relay, 'demo/rural', '90s');
  const t0 = Date.now();
  const player = await open(ctx.browser, pageUrl('player.html', `?url=https://127.0.0.1:${port}/demo/rural&hash=${ctx.relay.hash}&start=highest`));
  await player.page
    .waitForFunction(() => window.tiermeshStats?.tierIndex >= 0 && window.tiermeshStats.tierIndex < 2, null, { timeout: 20000 })
    .catch(async (e) => {
      const s = await stats(player.page);
      throw new Error(`no step down within 20 s: ${JSON.stringify({ ...s, errors: s.errors?.slice(-3) })}`.slice(0, 1500), { cause: e });
    });
  const took = Date.now() - t0;
  await player.page.waitForTimeout(3000);
  const before = await stats(player.page);
  const freeze = await longestFreeze(player.page, 8000);
  const s = await stats(player.page);
  await screenshot(player.page, 'relay-rural-link');
  const played = s.audioFramesPlayed - before.audioFramesPlayed;
  const concealed = s.audioFramesConcealed - before.audioFramesConcealed;
  console.log(
    `rural link: down to ${s.switches[0]?.to} ${took} ms after opening (${s.switches[0]?.reason}); then freeze ${freeze} ms, ` +
      `audio ${concealed}/${played} concealed, latency p50 ${s.latencyMs.p50} ms, tier ${s.tier}; ${playoutSummary(s)}`,
  );
  assert.deepEqual(player.pageErrors, []);
  assert.ok(freeze < 1000, `picture froze for ${freeze} ms`);
  assert.ok(played >= 300, `audio frames played in 8 s: ${played}`);
  assert.ok(concealed <= 0.05 * played, `audio concealed ${concealed} of ${played}; ${playoutSummary(s)}`);
  assert.ok(s.latencyMs.p50 < 800, `latency p50 ${s.latencyMs.p50} ms`);
  await player.page.close();
  pub.kill();
});

test('a broadcast that is not there is reported as not found', { skip }, async () => {
  const { page } = await open(ctx.browser, pageUrl('player.html', `?url=${ctx.relay.base}/demo/nobody&hash=${ctx.relay.hash}`));
  await page.waitForFunction(() => window.tiermeshStats?.state === 'error', null, { timeout: 20000 });
  const s = await stats(page);
  assert.equal(s.errorKind, 'not-found');
  assert.match(await page.locator('#error').textContent(), /Broadcast demo\/nobody not found/);
  await screenshot(page, 'relay-not-found');
  await page.close();
});

// The relay answers, but not with the certificate the page was told to expect: Chromium
// refuses the handshake, and each page says so instead of hanging or blaming the broadcast.
for (const name of ['player.html', 'publisher.html', 'room.html']) {
  test(`${name} against a relay whose certificate is not the one given says so`, { skip }, async () => {
    const wrong = ctx.relay.hash.replace(/^./, (c) => (c === '0' ? '1' : '0'));
    const { page } = await open(ctx.browser, pageUrl(name, `?url=${ctx.relay.base}/demo/live&hash=${wrong}&role=doctor`));
    await page.waitForFunction(() => window.tiermeshStats?.state === 'error', null, { timeout: 20000 });
    const s = await stats(page);
    const banner = await page.locator('#error').textContent();
    await screenshot(page, `relay-wrong-certificate-${name}`);
    assert.equal(s.errorKind, 'connect', banner);
    assert.match(banner, /certificate/);
    assert.match(banner, new RegExp(`Could not connect to ${ctx.relay.base.replace(/\./g, '\\.')}/demo/live`));
    await page.close();
  });
}

test('a doctor and a patient see and hear each other', { skip }, async () => {
  const q = `?url=${ctx.relay.base}/clinic/room-42&hash=${ctx.relay.hash}`;
  const doctor = await open(ctx.browser, pageUrl('room.html', `${q}&role=doctor`));
  const patient = await open(ctx.browser, pageUrl('room.html', `${q}&role=patient`));
  for (const side of [doctor, patient]) {
    await side.page.waitForFunction(
      () => window.tiermeshStats?.framesDrawn >= 20 && window.tiermeshStats?.audioFramesDecoded >= 50,
      null,
      { timeout: 30000 },
    ).catch(async (e) => {
      const x = await stats(side.page);
      throw new Error(`room did not play within 30 s: ${JSON.stringify({ ...x, switches: undefined, errors: x.errors?.slice(-3) })}`.slice(0, 1500), { cause: e });
    });
  }
  const d = await stats(doctor.page);
  const p = await stats(patient.page);
  await screenshot(doctor.page, 'room-doctor');
  await screenshot(patient.page, 'room-patient');
  assert.match(d.playing, /^clinic\/room-42\/patient/);
  assert.match(p.playing, /^clinic\/room-42\/doctor/);
  assert.deepEqual(doctor.pageErrors, []);
  assert.deepEqual(patient.pageErrors, []);
  console.log(`room: doctor sees ${d.playing} (latency ${d.latencyMs.p50} ms), patient sees ${p.playing} (latency ${p.latencyMs.p50} ms)`);
  await doctor.page.close();
  await patient.page.close();
});

// The publisher's state turns to `publishing` once its tracks are announced and its encoders
// configured, before the fake microphone's first buffer has been encoded (no audio frame yet
// in 4 of 10 runs measured): a subscriber watching a fixed 4 s window from then on counts a
// late-starting microphone as missing audio. So `tiermesh sub` starts once audio and video
// frames are on their way, and a failure says what the publisher had sent.
test('the Rust subscriber reads what the browser publishes', { skip }, async () => {
  const pub = await open(ctx.browser, pageUrl('publisher.html', `?url=${ctx.relay.base}/demo/rust-sub&hash=${ctx.relay.hash}`));
  await pub.page.waitForFunction(() => window.tiermeshStats?.state === 'publishing', null, { timeout: 20000 });
  await pub.page
    .waitForFunction(() => window.tiermeshStats.audioFramesEncoded >= 5 && window.tiermeshStats.framesEncoded >= 2, null, { timeout: 20000 })
    .catch(async (e) => {
      throw new Error(`the publisher sends no audio or video: ${JSON.stringify(await stats(pub.page))}`, { cause: e });
    });
  const sub = child(['sub', `${ctx.relay.base}/demo/rust-sub/source`, '--tls-cert-hash', ctx.relay.hash, '--duration', '4s', '--json']);
  const { out, err } = await runToEnd(sub, 30000);
  const report = JSON.parse(out.trim().split('\n').at(-1) || '{}');
  assert.equal(report.error ?? null, null, `tiermesh sub: ${err}`);
  const byName = Object.fromEntries(report.tracks.map((t) => [t.name, t]));
  const sent = async () => JSON.stringify(await stats(pub.page));
  assert.ok(byName.audio?.objects >= 100, `audio objects ${byName.audio?.objects}: ${out.slice(0, 1500)}\npublisher: ${await sent()}\n${err.slice(-1500)}`);
  assert.ok(byName['video/720p']?.objects >= 40, `video objects ${byName['video/720p']?.objects}`);
  assert.equal(byName['video/720p'].missing_objects, 0);
  await screenshot(pub.page, 'relay-publisher-to-tiermesh-sub');
  console.log(`tiermesh sub: ${report.tracks.map((t) => `${t.name} ${t.objects} objects, latency ${JSON.stringify(t.latency_ms)}`).join('; ')}`);
  await pub.page.close();
});

// The encoded test pattern of `tiermesh pub` is played (and its barcode read) in
// testpattern.test.mjs; this one checks the protocol with the synthetic broadcast.
test('the browser player reads what the Rust publisher sends', { skip }, async () => {
  const rust = child(['pub', `${ctx.relay.base}/demo/synthetic`, '--tls-cert-hash', ctx.relay.hash, '--duration', '60s']);
  await waitOutput(rust, /published /, 30000, 'tiermesh pub');
  const { page } = await open(ctx.browser, pageUrl('player.html', `?url=${ctx.relay.base}/demo/synthetic&hash=${ctx.relay.hash}&audio=0`));
  // The synthetic payloads are filler bytes, not media: this checks the protocol, not decoding.
  await page.waitForFunction(() => window.tiermeshStats?.bitrateKbps > 50, null, { timeout: 20000 });
  const s = await stats(page);
  await screenshot(page, 'relay-synthetic');
  assert.deepEqual(s.tiers, ['video/180p', 'video/360p', 'video/720p']);
  assert.ok(s.arrivalLatencyMs.p50 > 0 && s.arrivalLatencyMs.p50 < 500, `arrival latency ${s.arrivalLatencyMs.p50} ms`);
  console.log(`synthetic: tiers ${s.tiers.join(', ')}, ${s.bitrateKbps} kb/s, arrival latency p50 ${s.arrivalLatencyMs.p50} ms`);
  await page.close();
  rust.kill();
});
