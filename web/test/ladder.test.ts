// Guards: the ladder a page encodes with ?ladder=1 (for a relay without an ingest ladder)
// is the one a relay's ingest builds, read from the Rust source of `LadderConfig::default()`,
// so a subscriber sees the same rungs and rates either way.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { DEFAULT_LADDER, defaultLowerTiers } from '../src/media/ladder.js';

/** The rungs of `impl Default for LadderConfig` in codec/src/ladder.rs, highest first. */
function rustDefaultLadder(): { name: string; width: number; height: number; bitrate: number }[] {
  const src = readFileSync(new URL('../../../codec/src/ladder.rs', import.meta.url), 'utf8');
  const start = src.indexOf('impl Default for LadderConfig');
  assert.ok(start >= 0, 'codec/src/ladder.rs has no `impl Default for LadderConfig`');
  const body = src.slice(start, src.indexOf('\nimpl ', start + 1));
  const rung = /Rung::new\("([^"]+)",\s*(\d+),\s*(\d+),\s*[\d.]+,\s*([\d_]+),/g;
  return [...body.matchAll(rung)].map((m) => ({
    name: m[1],
    width: Number(m[2]),
    height: Number(m[3]),
    bitrate: Number(m[4].replaceAll('_', '')),
  }));
}

test("the web ladder is the codec crate's default ladder", () => {
  const rust = rustDefaultLadder();
  assert.equal(rust.length, 3, 'three rungs read from codec/src/ladder.rs');
  assert.deepEqual(DEFAULT_LADDER, rust);
});

test('?ladder=1 encodes the default ladder\'s rungs below the top: 360p at 550 kb/s, 180p at 150 kb/s', () => {
  assert.deepEqual(defaultLowerTiers(), [
    { width: 640, height: 360, bitrate: 550_000 },
    { width: 320, height: 180, bitrate: 150_000 },
  ]);
});
