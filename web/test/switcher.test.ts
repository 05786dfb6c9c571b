// Guards: the order in which the player hands video objects to the decoder and its moves
// between tiers (src/media/switcher.ts), on virtual time: objects in order, a switch at the
// group boundary the new tier has the start of, a stalled group skipped, a switch whose tier
// never comes given up; and a tier playing that stops delivering while a switch waits never
// leaves the picture frozen for more than about a second: the player falls back to the new
// tier when it is arriving, or joins a tier afresh.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Switcher, TierBuffer } from '../src/media/switcher.js';

interface Obj {
  groupId: number;
  objectId: number;
  tier: number;
}

/** Frames per group (30 fps, 1 s groups, as tiermesh's test pattern and ingest send). */
const FRAMES = 30;
const FRAME_MS = 1000 / FRAMES;

/**
 * A player on virtual time: decodes what the switcher hands over, checks a pending switch
 * every 250 ms as the player's tick does, and answers a request for a fresh join with the
 * tier `joinTier` returns (its objects are then delivered by the scenario).
 */
class Sim {
  readonly sw = new Switcher<Obj>();
  readonly decoded: { t: number; o: Obj }[] = [];
  readonly events: string[] = [];
  joined?: TierBuffer<Obj>;
  private nextCheck = 0;
  constructor(
    private readonly joinTier = 0,
    private readonly giveUp = true,
  ) {}

  /** Advances to `t`, running the checks due before it, then pumps. */
  at(t: number): void {
    for (; this.nextCheck <= t; this.nextCheck += 250) {
      this.pump(this.nextCheck);
      const a = this.sw.check(this.nextCheck, this.giveUp);
      if (!a) continue;
      // Kinds are compared as strings so that this file also compiles against a switcher
      // that knows fewer of them.
      const kind: string = a.kind;
      this.events.push(`${kind} at ${this.nextCheck}`);
      if (kind === 'rejoin') {
        this.joined = new TierBuffer<Obj>(this.joinTier);
        this.sw.play(this.joined, this.nextCheck);
      }
      this.pump(this.nextCheck);
    }
    this.pump(t);
  }

  add(tier: TierBuffer<Obj>, g: number, o: number, t: number): void {
    this.at(t);
    tier.add({ groupId: g, objectId: o, tier: tier.index }, t);
    this.pump(t);
  }

  pump(t: number): void {
    for (let out = this.sw.poll(t); out; out = this.sw.poll(t)) {
      if (out.kind === 'decode') this.decoded.push({ t, o: out.object });
      else if (out.kind === 'switched') this.events.push(`switched ${out.from.index}->${out.to.index} at ${t}`);
      else this.events.push(`skipped ${out.groups} (stalled ${out.stalled}) at ${t}`);
    }
  }

  /** The longest time (ms) between two decoded objects, or from the last one to `end`. */
  longestGap(end: number): { ms: number; from: number } {
    let worst = { ms: 0, from: 0 };
    let last = this.decoded[0]?.t ?? 0;
    for (const { t } of [...this.decoded.slice(1), { t: end }]) {
      if (t - last > worst.ms) worst = { ms: t - last, from: last };
      last = t;
    }
    return worst;
  }

  decodedOf(tier: number): Obj[] {
    return this.decoded.map((d) => d.o).filter((o) => o.tier === tier);
  }
}

/** Delivers objects `from..to` (exclusive) of group `g` of `tier`, one a frame from `t0`. */
function group(sim: Sim, tier: TierBuffer<Obj>, g: number, t0: number, from = 0, to = FRAMES): number {
  let t = t0;
  for (let o = from; o < to; o++, t = t0 + (o - from) * FRAME_MS) sim.add(tier, g, o, t);
  return t;
}

test('objects go to the decoder in order, and a switch happens at the group boundary the new tier has the start of', () => {
  const sim = new Sim();
  const high = new TierBuffer<Obj>(2);
  sim.sw.play(high, 0);
  group(sim, high, 10, 0);
  const low = new TierBuffer<Obj>(1);
  low.startGroup = 11;
  sim.sw.pend(low);
  // The new tier's start of group 11 arrives a little before the old tier's group 10 ends.
  sim.add(low, 11, 0, 980);
  high.end(10, FRAMES - 1, 1000);
  sim.at(1000);
  group(sim, low, 11, 1000, 1);
  const order = sim.decoded.map(({ o }) => `${o.tier}:${o.groupId}/${o.objectId}`);
  assert.equal(order.length, 2 * FRAMES);
  assert.deepEqual(order.slice(FRAMES - 1, FRAMES + 1), [`2:10/${FRAMES - 1}`, '1:11/0']);
  assert.ok(sim.events.includes('switched 2->1 at 1000'), sim.events.join('; '));
  assert.equal(sim.sw.feed, low);
});

test('a group whose rest never comes is skipped once a later group start is here', () => {
  const sim = new Sim();
  const feed = new TierBuffer<Obj>(1);
  sim.sw.play(feed, 0);
  group(sim, feed, 5, 0, 0, 20);
  // Objects 20..29 of group 5 are lost; group 6 starts on time.
  group(sim, feed, 6, 1000, 0, 3);
  sim.at(1500);
  assert.ok(sim.events.some((e) => e.startsWith('skipped 0 (stalled true)')), sim.events.join('; '));
  assert.deepEqual(
    sim.decoded.slice(20).map(({ o }) => `${o.groupId}/${o.objectId}`),
    ['6/0', '6/1', '6/2'],
  );
});

test('a switch whose tier brings no group start is given up after three group boundaries of the tier playing', () => {
  const sim = new Sim();
  const feed = new TierBuffer<Obj>(1);
  sim.sw.play(feed, 0);
  let t = group(sim, feed, 0, 0);
  feed.end(0, FRAMES - 1, t);
  const up = new TierBuffer<Obj>(2);
  up.startGroup = 1;
  sim.sw.pend(up);
  for (let g = 1; g <= 4 && sim.sw.pending; g++) {
    t = group(sim, feed, g, g * 1000);
    feed.end(g, FRAMES - 1, t);
  }
  sim.at(t + 250);
  assert.equal(sim.sw.pending, undefined);
  assert.equal(sim.sw.feed, feed);
  assert.ok(sim.events.some((e) => e.startsWith('abandoned')), sim.events.join('; '));
  // The feed delivered all along: it was never left.
  assert.ok(!sim.events.some((e) => /fell-back|rejoin/.test(e)), sim.events.join('; '));
  // At each boundary it waited the 500 ms the new tier's start may run late, no longer.
  const gap = sim.longestGap(t);
  assert.ok(gap.ms <= 500 + FRAME_MS + 1, `froze for ${Math.round(gap.ms)} ms from ${Math.round(gap.from)} ms`);
});

test('the tier playing stalls while a step down waits and the new tier starts two groups on: the new tier plays within about a second', () => {
  const sim = new Sim();
  const high = new TierBuffer<Obj>(2);
  sim.sw.play(high, 0);
  group(sim, high, 10, 0);
  high.end(10, FRAMES - 1, 1000);
  // 720p falls behind the link: half of group 11 arrives, then nothing more.
  const stalledAt = group(sim, high, 11, 1000, 0, 15);
  // ABR decides on 360p from its next group; the relay's 360p is already at group 12 (720p
  // lags), so 360p starts with group 13, which arrives from 2 s on.
  const low = new TierBuffer<Obj>(1);
  low.startGroup = 13;
  sim.at(1200);
  sim.sw.pend(low);
  let t = group(sim, low, 13, 2000);
  low.end(13, FRAMES - 1, t);
  t = group(sim, low, 14, 3000);
  sim.at(t);
  const gap = sim.longestGap(t);
  assert.ok(sim.decodedOf(1).length > 0, `the new tier was never played: ${sim.events.join('; ') || 'nothing happened'}`);
  assert.ok(gap.ms <= 1500, `the picture froze for ${Math.round(gap.ms)} ms from ${Math.round(gap.from)} ms (the tier playing stalled at ${Math.round(stalledAt)} ms): ${sim.events.join('; ')}`);
  assert.equal(sim.sw.feed, low);
  assert.equal(sim.sw.pending, undefined);
  // It resumed at the newest start the new tier had, in order from there.
  const first = sim.decodedOf(1)[0];
  assert.deepEqual([first.groupId, first.objectId], [13, 0]);
  assert.equal(sim.decodedOf(1).length, 2 * FRAMES);
});

test('the tier playing stalls while a switch waits and the new tier brings nothing: the player joins a tier afresh within about a second', () => {
  const sim = new Sim(0);
  const mid = new TierBuffer<Obj>(1);
  sim.sw.play(mid, 0);
  group(sim, mid, 20, 0);
  mid.end(20, FRAMES - 1, 1000);
  // A step up to 720p is asked for; then the link collapses: 360p stops mid-group and 720p
  // never starts.
  const up = new TierBuffer<Obj>(2);
  up.startGroup = 21;
  sim.sw.pend(up);
  const stalledAt = group(sim, mid, 21, 1000, 0, 10);
  // Wait until the player asks for a fresh join; it then gets the current group from its
  // start (the joining fetch) and the live objects after it.
  let t = stalledAt;
  while (!sim.joined && t < 10000) sim.at((t += 50));
  assert.ok(sim.joined, `no fresh join while 360p and 720p delivered nothing for 9 s: ${sim.events.join('; ') || 'nothing happened'}`);
  assert.ok(t - stalledAt <= 1500, `the join came ${Math.round(t - stalledAt)} ms after the stall`);
  const joined = sim.joined!;
  group(sim, joined, 22, t + 60, 0, 10);
  assert.equal(sim.sw.feed, joined);
  assert.equal(sim.sw.pending, undefined, 'the step up was given up');
  assert.ok(sim.longestGap(t + 400).ms <= 1500 + 60 + 50);
  assert.equal(sim.decodedOf(0).length, 10);
});

test('a tier playing that delivers is not left while a switch waits, and a late check does not judge it', () => {
  const sim = new Sim();
  const feed = new TierBuffer<Obj>(2);
  sim.sw.play(feed, 0);
  group(sim, feed, 0, 0);
  feed.end(0, FRAMES - 1, 1000);
  const low = new TierBuffer<Obj>(1);
  low.startGroup = 1;
  sim.sw.pend(low);
  // Group 1 of the feed comes slowly (a frame every 120 ms), the new tier not yet.
  for (let o = 0; o < 8; o++) sim.add(feed, 1, o, 1000 + o * 120);
  assert.ok(!sim.events.some((e) => /fell-back|rejoin/.test(e)), sim.events.join('; '));
  assert.equal(sim.sw.pending, low);
  // The page does not run for 1.5 s (a busy machine); objects wait to be handed over.
  sim.sw.check(1000 + 7 * 120 + 1500, true);
  assert.equal(sim.sw.pending, low, 'a check long after the previous one leaves the switch waiting');
});
