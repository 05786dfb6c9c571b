// Guards: the player reads the MSF catalogs the relay publishes (the draft's examples,
// shared with the Rust proto crate) and picks the video ladder and audio track from them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { applyDelta, CatalogError, mediaTracks, parseCatalog } from '../src/wire/catalog.js';

const fixture = (name: string) => readFileSync(new URL(`../../test/fixtures/${name}.json`, import.meta.url));

test('the simulcast example gives a ladder sorted by bit rate and the audio track', () => {
  const c = parseCatalog(fixture('simulcast-video-tracks-3-alternate-qualities-along-with-audio'));
  const m = mediaTracks(c);
  assert.deepEqual(m.video.map((t) => t.name), ['sd', 'md', 'hd']);
  assert.equal(m.audio?.name, 'audio');
  assert.equal(m.audio?.samplerate, 48000);
});

test('a tiermesh ladder catalog', () => {
  const json = JSON.stringify({
    version: 'draft-01',
    generatedAt: 1746104606044,
    tracks: [
      { name: 'video/720p', packaging: 'loc', isLive: true, role: 'video', codec: 'avc1.64001F', width: 1280, height: 720, framerate: 30, bitrate: 2500000, altGroup: 1, renderGroup: 1 },
      { name: 'video/180p', packaging: 'loc', isLive: true, role: 'video', codec: 'avc1.42C00C', width: 320, height: 180, framerate: 30, bitrate: 250000, altGroup: 1, renderGroup: 1 },
      { name: 'video/360p', packaging: 'loc', isLive: true, role: 'video', codec: 'avc1.42C01E', width: 640, height: 360, framerate: 30, bitrate: 700000, altGroup: 1, renderGroup: 1 },
      { name: 'audio', packaging: 'loc', isLive: true, role: 'audio', codec: 'opus', samplerate: 48000, channelConfig: '1', bitrate: 32000, renderGroup: 1 },
    ],
  });
  const m = mediaTracks(parseCatalog(json));
  assert.deepEqual(m.video.map((t) => t.name), ['video/180p', 'video/360p', 'video/720p']);
  assert.equal(m.audio?.codec, 'opus');
});

test('delta updates add, update, clone and remove tracks', () => {
  const base = parseCatalog(fixture('time-aligned-audio-video-tracks-with-single-quality'));
  const names = base.tracks!.map((t) => t.name);
  assert.ok(names.length >= 2);
  const removed = applyDelta(base, parseCatalog(JSON.stringify({ generatedAt: 2, deltaUpdate: [{ op: 'remove', tracks: [{ name: base.tracks![0].name, namespace: base.tracks![0].namespace }] }] })));
  assert.equal(removed.tracks!.length, names.length - 1);
  assert.equal(removed.generatedAt, 2);
  const delta = parseCatalog(fixture('delta-update-adding-two-tracks'));
  assert.equal(delta.deltaUpdate!.length, 3);
  assert.throws(() => applyDelta(base, delta), CatalogError, 'the example refers to a track of another catalog');
});

test('bad catalogs are refused with a reason', () => {
  assert.throws(() => parseCatalog('{'), /catalog JSON/);
  assert.throws(() => parseCatalog('{"version":"draft-99","tracks":[]}'), /MSF version/);
  assert.throws(() => parseCatalog('{"version":"draft-01"}'), /without tracks/);
  assert.throws(() => parseCatalog('{"version":"draft-01","tracks":[{"name":"a"}]}'), /packaging/);
  assert.throws(() => parseCatalog('{"version":"draft-01","tracks":[{"name":"a","packaging":"loc","width":"x"}]}'), /width/);
});
