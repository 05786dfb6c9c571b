/**
 * The order in which video objects reach the decoder, and the moves from one tier to another:
 * pure logic on object locations, with time passed in (milliseconds on one clock), no media
 * and no network. The player adds every video object of the tier playing (the feed) and of a
 * tier it is switching to (the pending tier) to that tier's {@link TierBuffer}, then polls
 * {@link Switcher.poll} for what to do next (decode this object, the switch happened, the rest
 * of a group was lost) and calls {@link Switcher.check} a few times a second for switches that
 * do not come about by themselves.
 *
 * A switch normally happens at a group boundary of the feed: the pending tier is subscribed
 * from its next group, and the feed plays on until it reaches that group. Two things can keep
 * it from happening, and `check` answers both:
 * - the pending tier delivers no group start while the feed crosses group boundaries: the
 *   switch is given up ({@link SwitcherConfig.maxGroups});
 * - the feed itself stops (nothing reaches the decoder) while the switch waits: no boundary
 *   is ever crossed, and waiting would leave the picture frozen for as long as the feed is
 *   starved. After {@link SwitcherConfig.stallMs} the player leaves the feed: for the pending
 *   tier at its newest group start when that tier is arriving, else for a fresh join.
 */

/** Where an object sits in its track. */
export interface Located {
  groupId: number;
  objectId: number;
}

/** The objects of one subscribed video tier that wait for their turn. */
export class TierBuffer<T extends Located> {
  /** Objects by group, then object ID. */
  readonly groups = new Map<number, Map<number, T>>();
  /** Groups whose end is known, with their last object ID when known. */
  readonly ended = new Map<number, number | undefined>();
  /** The first group whose start (object 0) arrived. */
  firstGroup?: number;
  /** For a Next Group Start subscription: the group it starts with. */
  startGroup?: number;
  /** For a pending switch: the group the feed was in when the switch was asked for. */
  askedInGroup?: number;
  /** When the last object of this tier arrived. */
  lastArrival?: number;

  /** `index`: the tier's place in the ladder (0 = lowest). */
  constructor(readonly index: number) {}

  /** Adds an object that arrived at `now`. */
  add(o: T, now: number): void {
    this.lastArrival = now;
    let g = this.groups.get(o.groupId);
    if (!g) {
      g = new Map();
      this.groups.set(o.groupId, g);
    }
    g.set(o.objectId, o);
    if (o.objectId === 0 && this.firstGroup === undefined) this.firstGroup = o.groupId;
  }

  /** Notes that `group` ended (its stream finished or was reset) after object `last`, when known, at `now`. */
  end(group: number, last: number | undefined, now: number): void {
    this.lastArrival = now;
    this.ended.set(group, last);
  }

  /** Whether the start of `group` is here. */
  hasStart(group: number): boolean {
    return this.groups.get(group)?.has(0) ?? false;
  }

  /** The groups after `after` whose start is here, in no particular order. */
  startsAfter(after: number): number[] {
    return [...this.groups.entries()].filter(([g, m]) => g > after && m.has(0)).map(([g]) => g);
  }

  /** Forgets everything before `group`. */
  dropBefore(group: number): void {
    for (const g of [...this.groups.keys()]) if (g < group) this.groups.delete(g);
    for (const g of [...this.ended.keys()]) if (g < group) this.ended.delete(g);
  }
}

/** Tuning of {@link Switcher}. */
export interface SwitcherConfig {
  /**
   * Time (ms) without progress after which a group of the feed counts as stalled when a later
   * group start is at hand (of the feed, or of the pending tier for the next group): the rest
   * of the group is skipped. 400 ms: a dozen frame intervals, far beyond jitter.
   */
  skipAfterMs: number;
  /**
   * Time (ms) the feed may wait at a group boundary for the pending tier's start of the next
   * group (its encoder or stream running a little behind the feed's) before playing one more
   * group of the feed.
   */
  waitStartMs: number;
  /**
   * Group boundaries the feed may cross while a switch waits for the pending tier's start of
   * a group, before the switch is given up: the pending tier is subscribed from its next
   * group, so it normally takes over at the first boundary, or the second when its stream
   * runs late. Three boundaries without it mean the link or the relay does not deliver that
   * tier now; waiting longer would keep ABR from deciding anything (one switch at a time).
   */
  maxGroups: number;
  /**
   * Time (ms) without anything of the feed reaching the decoder, while a switch waits, after
   * which the player leaves the feed (for the pending tier if it is arriving, else for a
   * fresh join). 1 s: one group of tiermesh's 1 s GOPs, so a feed that gave nothing for that
   * long cannot reach the boundary the switch waits for in the time the switch expected; and
   * the player asks the relay for a 1 s delivery timeout on video, so the rest of a group
   * that has been silent this long is being dropped at the relay rather than coming late.
   * The viewer has by then seen a frozen picture for a second; the fresh join or the pending
   * tier's group start shows a picture again about a round trip later.
   */
  stallMs: number;
}

/** Defaults of {@link SwitcherConfig}. */
export const DEFAULT_SWITCHER: SwitcherConfig = {
  skipAfterMs: 400,
  waitStartMs: 500,
  maxGroups: 3,
  stallMs: 1000,
};

/** What {@link Switcher.poll} asks the player to do. */
export type SwitchOutput<T extends Located, S extends TierBuffer<T>> =
  /** Decode `object` of `tier` (objects come in order, a group at a time). */
  | { kind: 'decode'; tier: S; object: T }
  /** The switch to `to` happened at a group boundary: `from` can be unsubscribed. */
  | { kind: 'switched'; from: S; to: S }
  /**
   * The feed moved on to a later group start: `stalled` when the group it was in did not end
   * (its rest was lost, `frames` objects of it already here are dropped); `groups` whole
   * groups skipped.
   */
  | { kind: 'skipped'; tier: S; stalled: boolean; frames: number; groups: number };

/** What {@link Switcher.check} found. */
export type SwitchAction<T extends Located, S extends TierBuffer<T>> =
  /** The pending switch was given up (`maxGroups`): unsubscribe `tier`; the feed plays on. */
  | { kind: 'abandoned'; tier: S }
  /**
   * The feed stalled while the switch waited and the pending tier is arriving: it is the feed
   * now, from its newest group start; `from` can be unsubscribed.
   */
  | { kind: 'fell-back'; from: S; to: S }
  /**
   * The feed stalled while the switch waited and the pending tier is not arriving either: the
   * switch is given up (unsubscribe `pending`) and the player should join a tier afresh (a
   * subscription with a joining fetch, which starts at a key frame at once) and {@link
   * Switcher.play} it; `from` is the stalled feed.
   */
  | { kind: 'rejoin'; from: S; pending: S };

/** The decode order and tier moves of one player. */
export class Switcher<T extends Located, S extends TierBuffer<T> = TierBuffer<T>> {
  /** The tier playing. */
  feed?: S;
  /** The tier a switch waits for. */
  pending?: S;
  /** When an object of the feed last went to the decoder (or the feed started). */
  lastProgress = 0;
  private readonly cfg: SwitcherConfig;
  /** The next object to decode; undefined while waiting for a group start. */
  private expect?: { group: number; object: number };
  /** The group of the last object decoded. */
  private played?: number;
  private lastCheck?: number;

  constructor(cfg: Partial<SwitcherConfig> = {}) {
    this.cfg = { ...DEFAULT_SWITCHER, ...cfg };
  }

  /** The group the feed is in (the next object's), if it is in one. */
  get group(): number | undefined {
    return this.expect?.group;
  }

  /**
   * Plays `tier` from its oldest group start, at once (the start, a reconnection, a switch
   * while nothing plays, a fresh join); any pending switch is dropped (the caller unsubscribes
   * what it no longer needs).
   */
  play(tier: S, now: number): void {
    this.feed = tier;
    this.pending = undefined;
    this.expect = undefined;
    this.lastProgress = now;
  }

  /** Switches to `tier` at the feed's next group boundary that `tier` has the start of. */
  pend(tier: S): void {
    tier.askedInGroup = this.expect?.group;
    this.pending = tier;
  }

  /** Drops the pending switch, returning its tier. */
  cancelPending(): S | undefined {
    const p = this.pending;
    this.pending = undefined;
    return p;
  }

  /** Starts again at the feed's next group start (after a decoder reset). */
  resync(): void {
    this.expect = undefined;
    if (this.feed) for (const [g, m] of this.feed.groups) if (!m.has(0)) this.feed.groups.delete(g);
  }

  /**
   * What to do next: decode the feed's next object, move to the next group (or to the pending
   * tier) at a group boundary, skip a stalled group; undefined while waiting for objects.
   */
  poll(now: number): SwitchOutput<T, S> | undefined {
    const feed = this.feed;
    if (!feed) return undefined;
    for (let guard = 0; guard < 1000; guard++) {
      if (!this.expect) {
        // Waiting for a key frame: the oldest group start we have.
        const starts = feed.startsAfter(-Infinity);
        if (starts.length === 0) return undefined;
        this.expect = { group: Math.min(...starts), object: 0 };
        feed.dropBefore(this.expect.group);
      }
      const e = this.expect;
      const objects = feed.groups.get(e.group);
      const o = objects?.get(e.object);
      if (o) {
        objects!.delete(e.object);
        e.object++;
        this.lastProgress = now;
        this.played = e.group;
        return { kind: 'decode', tier: feed, object: o };
      }
      // The next object is not here. Move on when this group is over (its stream ended, or it
      // stalled while a later group waits) to the next group start, on the pending tier if
      // that tier has it.
      const ended = feed.ended.has(e.group) && (feed.ended.get(e.group) ?? -1) < e.object;
      const pend = this.pending;
      const nextGroup = e.group + 1;
      const laterStart = feed.startsAfter(e.group);
      const pendingHas = pend?.hasStart(nextGroup) ?? false;
      const stalled = now - this.lastProgress > this.cfg.skipAfterMs && (laterStart.length > 0 || pendingHas);
      if (!ended && !stalled) return undefined;
      const pendStart = pend?.startGroup ?? pend?.firstGroup;
      if (pend && pendStart !== undefined && pendStart <= nextGroup) {
        if (pendingHas) return this.take(pend, nextGroup);
        // The pending tier's start of this group is on its way: wait for it briefly rather
        // than play one more group of the feed.
        if (now - this.lastProgress < this.cfg.waitStartMs) return undefined;
      }
      if (laterStart.length === 0) return undefined;
      const g = Math.min(...laterStart);
      const frames = ended ? 0 : (objects?.size ?? 0);
      feed.dropBefore(g);
      this.expect = { group: g, object: 0 };
      if (!ended || g > nextGroup) return { kind: 'skipped', tier: feed, stalled: !ended, frames, groups: g - nextGroup };
    }
    return undefined;
  }

  /**
   * Looks for a pending switch that will not happen by itself; call it a few times a second.
   * `giveUp`: whether a switch whose tier brings no group start may be given up (a switch ABR
   * decided may; one asked for by hand waits). Returns what it changed, for the player to
   * follow up (unsubscribe, join, tell ABR).
   */
  check(now: number, giveUp = true): SwitchAction<T, S> | undefined {
    // A check long after the previous one means this page did not run for a while (a busy
    // machine): objects that arrived meanwhile may still wait to be handed over, so the
    // feed's silence is not judged on this round.
    const late = this.lastCheck !== undefined && now - this.lastCheck > this.cfg.stallMs / 2;
    this.lastCheck = now;
    const pend = this.pending;
    const feed = this.feed;
    if (!pend || !feed) return undefined;
    if (giveUp && pend.askedInGroup !== undefined && this.expect && this.expect.group - pend.askedInGroup >= this.cfg.maxGroups) {
      this.pending = undefined;
      return { kind: 'abandoned', tier: pend };
    }
    if (late || now - this.lastProgress < this.cfg.stallMs) return undefined;
    // The feed gave the decoder nothing for stallMs while the switch waited. The pending tier
    // takes over at once if it is arriving and has a group start after what was played.
    const after = this.played ?? -Infinity;
    const starts = pend.startsAfter(after);
    const arriving = pend.lastArrival !== undefined && now - pend.lastArrival < this.cfg.stallMs;
    if (arriving && starts.length > 0) {
      const g = Math.max(...starts);
      this.feed = pend;
      this.pending = undefined;
      pend.dropBefore(g);
      this.expect = { group: g, object: 0 };
      this.lastProgress = now;
      return { kind: 'fell-back', from: feed, to: pend };
    }
    this.pending = undefined;
    // The stalled feed stays until the player has joined a tier afresh; meanwhile its silence
    // counts from now, so that it is not judged again before the join is done.
    this.lastProgress = now;
    return { kind: 'rejoin', from: feed, pending: pend };
  }

  private take(to: S, group: number): SwitchOutput<T, S> {
    const from = this.feed!;
    this.feed = to;
    this.pending = undefined;
    to.dropBefore(group);
    this.expect = { group, object: 0 };
    return { kind: 'switched', from, to };
  }
}
