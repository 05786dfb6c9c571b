// Real tiermesh processes for the browser tests: the binary cargo built, child processes
// killed at the end of a run, waiting on their output with a deadline.
import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync } from 'node:fs';
import { createSocket } from 'node:dgram';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { before, after } from 'node:test';
import { DIST, favour, launch } from './chromium.mjs';

// The binary cargo built: $TIERMESH_BIN, else in $CARGO_TARGET_DIR (as CI sets it), else in
// the workspace's target/.
export const BIN =
  process.env.TIERMESH_BIN ??
  (process.env.CARGO_TARGET_DIR
    ? `${process.env.CARGO_TARGET_DIR}/debug/tiermesh`
    : fileURLToPath(new URL('../../target/debug/tiermesh', import.meta.url)));

/** Whether BIN runs and has `subcommand`. */
export function hasSubcommand(subcommand) {
  return existsSync(BIN) && spawnSync(BIN, [subcommand, '--help'], { stdio: 'ignore' }).status === 0;
}

const children = new Set();

/**
 * With $TIERMESH_TEST_LOGS set to a folder, each child's whole output goes to a file there
 * (`<subcommand>-<pid>.log`), for tracing a failure; run with RUST_LOG=debug for the detail.
 */
const LOGS = process.env.TIERMESH_TEST_LOGS;

/**
 * Starts `tiermesh …args` at raised CPU priority like the browser (`favour`): relays,
 * encoders and link emulators are all on the media path the tests time. Every child still
 * running is killed when this process exits.
 */
export function child(args) {
  // Its own session, so that raising its session's CPU share (autogroup) leaves the test
  // runner's session as it was.
  const c = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  favour(c.pid);
  children.add(c);
  c.on('exit', () => children.delete(c));
  // Keeps the pipes drained, so a chatty child never blocks on a full pipe.
  c.output = '';
  const keep = (d) => {
    c.output = (c.output + d).slice(-20000);
  };
  c.stdout.on('data', keep);
  c.stderr.on('data', keep);
  if (LOGS) {
    mkdirSync(LOGS, { recursive: true });
    const file = createWriteStream(`${LOGS}/${args[0]}-${c.pid}.log`);
    c.stdout.on('data', (d) => file.write(d));
    c.stderr.on('data', (d) => file.write(d));
    c.on('exit', () => file.end());
  }
  return c;
}

/** Kills every child started by {@link child}. */
export function killChildren() {
  for (const c of children) c.kill();
}
process.on('exit', killChildren);
// Children run in their own sessions, so a Ctrl-C at the terminal does not reach them: pass
// it on.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(signal, () => {
    killChildren();
    process.exit(128 + os.constants.signals[signal]);
  });
}

/** Resolves with the match of `re` in the process's output, or rejects after `ms`. */
export function waitOutput(proc, re, ms, what) {
  return new Promise((resolve, reject) => {
    // Each stream is matched on its own: a line on stdout can arrive between two pieces of
    // one line on stderr (Rust writes stderr unbuffered, a formatted line in several writes).
    const seen = { stdout: '', stderr: '' };
    const done = () => {
      clearTimeout(timer);
      proc.stdout.off('data', onOut);
      proc.stderr.off('data', onErr);
      proc.off('exit', exited);
    };
    const output = () => `stdout:\n${seen.stdout.slice(-1500)}\nstderr:\n${seen.stderr.slice(-1500)}`;
    const timer = setTimeout(() => {
      done();
      reject(new Error(`${what}: not seen within ${ms} ms; ${output()}`));
    }, ms);
    const on = (stream) => (d) => {
      seen[stream] += d;
      const m = seen[stream].match(re);
      if (m) {
        done();
        resolve(m);
      }
    };
    const onOut = on('stdout');
    const onErr = on('stderr');
    const exited = (code) => {
      done();
      reject(new Error(`${what}: exited with ${code}; ${output()}`));
    };
    proc.stdout.on('data', onOut);
    proc.stderr.on('data', onErr);
    proc.on('exit', exited);
  });
}

/** Collects a process's stdout until it exits (bounded by `ms`). */
export function runToEnd(proc, ms) {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      proc.kill();
      reject(new Error(`did not finish within ${ms} ms; stderr:\n${err}`));
    }, ms);
    proc.stdout.on('data', (d) => (out += d));
    proc.stderr.on('data', (d) => (err += d));
    proc.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

/** A UDP port that was free a moment ago. */
export function freeUdpPort() {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    s.bind(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * Starts `tiermesh relay` on loopback with a development certificate, `demo` and `clinic`
 * public, serving the built pages (dist/) on its ops listener. Resolves with the process,
 * the certificate hash, the WebTransport base URL (`https://127.0.0.1:PORT`), the relay's
 * `host:port` and the pages' base URL (`http://127.0.0.1:OPS`).
 */
export async function startRelay(extra = []) {
  const relay = child([
    'relay',
    '--tls-generate',
    '--listen',
    '127.0.0.1:0',
    '--ops',
    '127.0.0.1:0',
    '--web',
    DIST,
    ...['demo', 'clinic'].flatMap((p) => ['--public', p, '--public-publish', p]),
    // TIERMESH_RELAY_CC runs the browser suite against a relay on another congestion
    // controller (`--cc`), for comparing controllers on the same tests.
    ...(process.env.TIERMESH_RELAY_CC ? ['--cc', process.env.TIERMESH_RELAY_CC] : []),
    ...extra,
  ]);
  const [hashLine, listen] = await Promise.all([
    waitOutput(relay, /^([0-9a-f]{64})$/m, 60000, 'relay certificate hash'),
    waitOutput(relay, /relay listening on ([0-9.]+:\d+) \(ops on ([0-9.]+:\d+)\)/, 60000, 'relay address'),
  ]);
  return { relay, hash: hashLine[1], base: `https://${listen[1]}`, addr: listen[1], pages: `http://${listen[2]}` };
}

/**
 * Starts `tiermesh pub --test-pattern` of `broadcast` at `relay` (from `startRelay`) for
 * `duration`, with `extra` arguments (such as `--codec av1`), and resolves with the process
 * once it publishes.
 */
export async function startTestPattern(relay, broadcast, duration, extra = []) {
  const pub = child(['pub', `${relay.base}/${broadcast}`, '--tls-cert-hash', relay.hash, '--test-pattern', '--duration', duration, ...extra]);
  await waitOutput(pub, /published /, 30000, 'tiermesh pub');
  return pub;
}

/**
 * Starts `tiermesh link` on a free loopback port in front of `relay` with `args` (profile,
 * rate, duration…; no periodic stats) and resolves once it forwards, with the process, its
 * port (the browser connects there, pinning the relay's certificate) and when it started.
 */
export async function startLink(relay, args) {
  const port = await freeUdpPort();
  const link = child(['link', '--listen', `127.0.0.1:${port}`, '--to', relay.addr, ...args, '--stats-interval', '0']);
  const start = Date.now();
  await waitOutput(link, /tiermesh link: /, 10000, 'tiermesh link');
  return { link, port, start };
}

/**
 * Registers the `before` and `after` hooks every browser test file needs and returns the
 * context they fill in: before the file's tests, Chromium launched (`browser`) and, with
 * `relay` set, a relay started (`relay`, as {@link startRelay} resolves); after them, the
 * browser closed and every child process killed. With `skip` set (the reason the file's
 * tests are skipped) nothing is started.
 */
export function useBrowser({ skip = false, relay = false } = {}) {
  const ctx = { browser: undefined, relay: undefined };
  before(async () => {
    if (skip) return;
    ctx.browser = await launch();
    if (relay) ctx.relay = await startRelay();
  });
  after(async () => {
    await ctx.browser?.close();
    killChildren();
  });
  return ctx;
}
