/**
 * Tier choice for the player (adaptive bit rate). Pure logic on numbers: the player feeds
 * it the arrival of every video object (size, first and last byte times, latency from the
 * LOC capture timestamp) and asks {@link Abr.decide} which tier to play. Switching happens
 * at the next group boundary; this class only decides.
 *
 * Down quickly: when latency rises above its floor (a queue is building) or the measured
 * throughput falls below the tier's bit rate. Up cautiously: only after a calm hold period,
 * and only if bursts (key frames) arrived fast enough to carry the next tier with margin;
 * an up-switch that has to be undone soon doubles the hold.
 */

/** One rung of the ladder, as the catalog describes it. */
export interface AbrTier {
  /** Track name. */
  name: string;
  /** Bits per second. */
  bitrate: number;
}

/** Tuning of {@link Abr}. */
export interface AbrConfig {
  /** Latency above its recent floor (ms) that means a queue is building: step down. 250 ms: four frames at 15 fps, well above jitter on a sane link. */
  downExcessMs: number;
  /** Excess latency (ms) that means the link collapsed: go straight to the lowest tier. */
  panicExcessMs: number;
  /** Excess latency (ms) under which the link counts as calm for stepping up. */
  calmExcessMs: number;
  /** Calm time (ms) required before the first step up; doubles after a failed step up. 8 s: several groups of evidence. */
  holdMs: number;
  /** Longest hold (ms). */
  maxHoldMs: number;
  /** Throughput must exceed the next tier's bit rate by this factor to step up. */
  upMargin: number;
  /** Throughput below the current bit rate times this factor steps down. */
  downMargin: number;
  /** Time (ms) after a switch during which no further down-switch is decided (it needs a group to take effect). */
  settleMs: number;
  /** Window (ms) for the latency floor. */
  floorWindowMs: number;
  /**
   * Age (ms) past which the throughput estimate is forgotten (unknown again) when no new
   * burst measured it. 5 s: a few groups. Low tiers' key frames are often too small to
   * measure, so without this a figure taken while the link was congested would bar every
   * step up long after the link recovered.
   */
  throughputMaxAgeMs: number;
}

/** Defaults of {@link AbrConfig}. */
export const DEFAULT_ABR: AbrConfig = {
  downExcessMs: 250,
  panicExcessMs: 1500,
  calmExcessMs: 80,
  holdMs: 8000,
  maxHoldMs: 64000,
  upMargin: 1.4,
  downMargin: 0.9,
  settleMs: 1500,
  floorWindowMs: 10000,
  throughputMaxAgeMs: 5000,
};

/** One decision. */
export interface AbrDecision {
  /** Tier index to play (index into the ladder, lowest first). */
  tier: number;
  /** Why, for stats and logs. */
  reason: string;
}

interface Sample {
  t: number;
  latency: number;
}

/** The ABR state machine. Times are milliseconds on one clock. */
export class Abr {
  /** The tier currently chosen. */
  current: number;
  private readonly cfg: AbrConfig;
  private samples: Sample[] = [];
  private fast = 0;
  private slow = 0;
  private burstSamples = 0;
  private lastBurst = -Infinity;
  private calmSince?: number;
  private lastSwitch = -Infinity;
  private hold: number;
  private lastUp?: number;
  /** The current tier's bit rate as received (bits/s), when the player measured it. */
  observedBitrate = 0;
  private stalls: number[] = [];

  /**
   * Records that playback of the current tier lost the rest of a group (it stalled or its
   * stream was reset): the link does not carry the tier, whatever latency says (a link
   * congested from the start has a high latency floor and shows no rise).
   */
  onStall(now: number): void {
    this.stalls.push(now);
  }

  constructor(
    readonly tiers: AbrTier[],
    initial: number,
    cfg: Partial<AbrConfig> = {},
  ) {
    this.cfg = { ...DEFAULT_ABR, ...cfg };
    this.current = Math.max(0, Math.min(initial, tiers.length - 1));
    this.hold = this.cfg.holdMs;
  }

  /** Throughput estimate in bits per second (0 while unknown): the lower of a fast and a slow average. */
  get throughput(): number {
    return this.burstSamples === 0 ? 0 : Math.min(this.fast, this.slow);
  }

  /** Latency floor over the window (ms), or undefined before any sample. */
  get floor(): number | undefined {
    let m: number | undefined;
    for (const s of this.samples) m = m === undefined ? s.latency : Math.min(m, s.latency);
    return m;
  }

  /** Recent excess latency (ms above the floor): the median of the last 500 ms. */
  excess(now: number): number {
    const floor = this.floor;
    if (floor === undefined) return 0;
    const recent = this.samples.filter((s) => now - s.t <= 500).map((s) => s.latency - floor);
    if (recent.length === 0) return 0;
    recent.sort((a, b) => a - b);
    return recent[Math.floor(recent.length / 2)];
  }

  /**
   * Records one video object of the current tier: `bytes` of payload whose first byte came
   * at `firstByteAt` and last at `receivedAt`, `latency` ms after capture.
   */
  onObject(now: number, bytes: number, firstByteAt: number, receivedAt: number, latency: number): void {
    this.samples.push({ t: now, latency });
    while (this.samples.length > 0 && now - this.samples[0].t > this.cfg.floorWindowMs) this.samples.shift();
    const dt = receivedAt - firstByteAt;
    // Only objects big enough to span several packets say something about the link: a key
    // frame arrives as a burst at the link's rate, small frames at the encoder's pace.
    if (bytes >= 6000 && dt >= 2) {
      const bps = (bytes * 8 * 1000) / dt;
      if (this.burstSamples === 0 || now - this.lastBurst > this.cfg.throughputMaxAgeMs) {
        this.burstSamples = 0;
        this.fast = bps;
        this.slow = bps;
      } else {
        this.fast = 0.5 * bps + 0.5 * this.fast;
        this.slow = 0.15 * bps + 0.85 * this.slow;
      }
      this.burstSamples++;
      this.lastBurst = now;
    }
  }

  /** Forgets latency history (after a switch the floor of another tier may differ). */
  private resetCalm(now: number): void {
    this.calmSince = now;
  }

  /** Forces a tier (a manual choice); the hold starts over. */
  force(tier: number, now: number): void {
    this.current = Math.max(0, Math.min(tier, this.tiers.length - 1));
    this.lastSwitch = now;
    this.resetCalm(now);
  }

  /** Decides the tier to play now; returns a decision only when it differs from the current tier. */
  decide(now: number): AbrDecision | undefined {
    if (this.burstSamples > 0 && now - this.lastBurst > this.cfg.throughputMaxAgeMs) this.burstSamples = 0;
    const excess = this.excess(now);
    const cur = this.tiers[this.current];
    const tp = this.throughput;
    const settled = now - this.lastSwitch >= this.cfg.settleMs;
    if (this.current > 0 && excess >= this.cfg.panicExcessMs && settled) {
      return this.switchTo(0, now, `latency ${Math.round(excess)} ms above floor`, true);
    }
    this.stalls = this.stalls.filter((t) => now - t < 3000 && t >= this.lastSwitch);
    if (this.current > 0 && settled && this.stalls.length > 0) {
      return this.switchTo(this.current - 1, now, 'video stalled: a group was lost', true);
    }
    if (this.current > 0 && settled && excess >= this.cfg.downExcessMs) {
      return this.switchTo(this.current - 1, now, `latency ${Math.round(excess)} ms above floor`, true);
    }
    // What the current tier needs: its bit rate as received when known (an easy picture
    // takes far less than the catalog's figure), else the catalog's.
    const need = this.observedBitrate > 0 ? Math.min(cur.bitrate, this.observedBitrate * 1.25) : cur.bitrate;
    if (this.current > 0 && settled && this.burstSamples >= 3 && tp > 0 && tp < need * this.cfg.downMargin) {
      let t = this.current - 1;
      while (t > 0 && this.tiers[t].bitrate > tp * this.cfg.downMargin) t--;
      return this.switchTo(t, now, `throughput ${Math.round(tp / 1000)} kb/s below the ${Math.round(need / 1000)} kb/s of ${cur.name}`, true);
    }
    // Calm needs evidence: objects arriving lately, with latency near its floor. A tier that
    // delivers nothing is not calm, and nothing at all for two seconds steps down.
    const last = this.samples.at(-1);
    const starved = last === undefined || now - last.t > 1000;
    if (this.current > 0 && settled && last !== undefined && now - last.t > 2000) {
      return this.switchTo(this.current - 1, now, `no video for ${Math.round((now - last.t) / 1000)} s`, true);
    }
    if (starved || excess > this.cfg.calmExcessMs) {
      this.calmSince = undefined;
      return undefined;
    }
    this.calmSince ??= now;
    if (this.current + 1 >= this.tiers.length) return undefined;
    const next = this.tiers[this.current + 1];
    const calmFor = now - this.calmSince;
    if (calmFor < this.hold) return undefined;
    if (tp > 0 && tp < next.bitrate * this.cfg.upMargin) return undefined;
    return this.switchTo(this.current + 1, now, `calm for ${Math.round(calmFor / 1000)} s, throughput ${tp ? Math.round(tp / 1000) + ' kb/s' : 'unknown'}`, false);
  }

  /**
   * A switch decided earlier did not happen (the new tier did not deliver the start of a
   * group in time): the player still plays `tier`. A step up given up so failed like one
   * undone at once: the hold before the next try doubles.
   */
  abandon(tier: number, now: number): void {
    if (this.current > tier) this.hold = Math.min(this.hold * 2, this.cfg.maxHoldMs);
    this.current = Math.max(0, Math.min(tier, this.tiers.length - 1));
    this.lastSwitch = now;
    this.calmSince = undefined;
  }

  /**
   * The player moved to `tier` on its own, from `from`, the tier playing: `from` gave the
   * decoder nothing for a while as a switch waited, and the player took the tier switched to
   * when it was arriving, else joined a tier afresh. A step up that so did not happen failed
   * like one undone at once: the hold before the next try doubles.
   */
  fellBack(tier: number, from: number, now: number): void {
    if (this.current > from && tier < this.current) this.hold = Math.min(this.hold * 2, this.cfg.maxHoldMs);
    this.current = Math.max(0, Math.min(tier, this.tiers.length - 1));
    this.lastSwitch = now;
    this.calmSince = undefined;
  }

  private switchTo(tier: number, now: number, reason: string, down: boolean): AbrDecision {
    if (down && this.lastUp !== undefined && now - this.lastUp < 2 * this.cfg.holdMs) {
      // The last step up did not hold: wait longer before the next one.
      this.hold = Math.min(this.hold * 2, this.cfg.maxHoldMs);
    }
    if (!down) this.lastUp = now;
    this.current = tier;
    this.lastSwitch = now;
    this.calmSince = undefined;
    return { tier, reason };
  }
}
