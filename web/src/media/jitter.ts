/**
 * Playout timing shared by audio and video, and the audio jitter buffer. Pure logic on
 * numbers (wall-clock milliseconds), so it is tested without a browser.
 *
 * Every object carries its capture time (LOC Timestamp). Its transit is arrival minus
 * capture: the network delay plus the offset between the publisher's clock and ours. The
 * {@link PlayoutClock} plays an object at capture + delay, where the delay is the low
 * percentile of recent transits plus their spread: frames then arrive before their turn,
 * and audio and video share one delay, so they stay in sync.
 */

/** Tuning of {@link PlayoutClock}. */
export interface PlayoutConfig {
  /** Smallest delay above the transit floor (ms): 70 ms covers the audio scheduler deciding each slot 40 ms ahead, decoding, and timer noise. */
  minMarginMs: number;
  /** Largest delay above the transit floor (ms): beyond it late frames are dropped instead of waited for. */
  maxMarginMs: number;
  /** Transit samples kept (ms of history). */
  windowMs: number;
  /** How fast the delay shrinks when the network calms down (ms per second), at least. */
  shrinkPerSecond: number;
  /**
   * Share of the excess above the target shed per second, when that is more than
   * {@link shrinkPerSecond}: a delay 200 ms too long (a start-up on a busy machine, 220-290 ms
   * where 80 ms do) is down to 45 ms too long in 3 s, where 20 ms a second took 8 s, most of
   * the first 10 s of a call (and of the glass-to-glass test's window).
   */
  shrinkShare: number;
  /**
   * Added to a late frame's capture-to-decoded time to make the delay it needed (ms): the
   * audio scheduler conceals a missing frame 15 ms before its turn, plus one 10 ms timer tick.
   */
  lateMarginMs: number;
  /**
   * Most a late frame raises the delay by (ms): one frame held up 150 ms is an outlier,
   * as one slow transit is (the 95th percentile leaves it out), not a reason to add 150 ms
   * to every frame after it; a lasting shortfall raises it again a burst later.
   */
  lateStepMs: number;
  /** Late frames within this long (ms) of a raise are one burst and raise nothing more. */
  lateBurstMs: number;
}

/** Defaults of {@link PlayoutConfig}. */
export const DEFAULT_PLAYOUT: PlayoutConfig = {
  minMarginMs: 70,
  maxMarginMs: 600,
  windowMs: 5000,
  shrinkPerSecond: 20,
  shrinkShare: 0.5,
  lateMarginMs: 25,
  lateStepMs: 30,
  lateBurstMs: 500,
};

/** What {@link PlayoutClock.late} did with a late frame. */
export type LateOutcome = 'raised' | 'enough' | 'stall';

/** Figures of a {@link PlayoutClock}, for diagnostics. */
export interface PlayoutStats {
  /** Lowest transit in the window (ms). */
  floorMs: number;
  /** 95th percentile of transit minus the floor (ms): the jitter the margin covers. */
  spreadMs: number;
  /** Transit samples in the window taken in while the page stalled (not in the spread). */
  samplesStalled: number;
  /** Late frames that raised the delay. */
  lateRaised: number;
  /** Late frames the delay covered by then, or whose burst had raised it already. */
  lateCovered: number;
  /** Late frames blamed on the page stalling, which left the delay as it was. */
  lateStalled: number;
  /** Milliseconds the delay was raised by late frames, in total. */
  raisedMs: number;
}

/** Capture-to-playout delay from the transit of recent objects. */
export class PlayoutClock {
  private readonly cfg: PlayoutConfig;
  private samples: { t: number; transit: number; stalled: boolean }[] = [];
  private current?: number;
  private lastUpdate = 0;
  private lateRaised = 0;
  private lateCovered = 0;
  private lateStalled = 0;
  private raisedMs = 0;
  private lastRaise = -Infinity;

  constructor(cfg: Partial<PlayoutConfig> = {}) {
    this.cfg = { ...DEFAULT_PLAYOUT, ...cfg };
  }

  /**
   * Records one object's arrival at `arrivalMs` (wall clock) captured at `captureMs`.
   * `stalled`: it was taken in while the page stalled ({@link TimerWatch.busy}), so its
   * transit holds the stall too: it is left out of the spread, as a longer delay brings
   * back nothing lost in a stall (see {@link late}).
   */
  observe(arrivalMs: number, captureMs: number, stalled = false): void {
    const transit = arrivalMs - captureMs;
    this.samples.push({ t: arrivalMs, transit, stalled });
    while (this.samples.length > 0 && arrivalMs - this.samples[0].t > this.cfg.windowMs) this.samples.shift();
    this.update(arrivalMs);
  }

  /** The lowest transit in the window and the 95th percentile of those not stalled. */
  private spread(): { floor: number; p95: number } | undefined {
    if (this.samples.length === 0) return undefined;
    const calm = this.samples.filter((x) => !x.stalled);
    const s = (calm.length > 0 ? calm : this.samples).map((x) => x.transit).sort((a, b) => a - b);
    const floor = Math.min(s[0], this.floorMs!);
    return { floor, p95: s[Math.min(s.length - 1, Math.floor(s.length * 0.95))] };
  }

  private target(): number | undefined {
    const sp = this.spread();
    if (sp === undefined) return undefined;
    const { floor, p95 } = sp;
    // 30 ms above the 95th percentile: time to decode and schedule what arrives last.
    const margin = Math.min(this.cfg.maxMarginMs, Math.max(this.cfg.minMarginMs, p95 - floor + 30));
    return floor + margin;
  }

  private update(now: number): void {
    const target = this.target();
    if (target === undefined) return;
    if (this.current === undefined || target > this.current) {
      this.current = target;
    } else {
      const rate = Math.max(this.cfg.shrinkPerSecond, this.cfg.shrinkShare * (this.current - target));
      const step = ((now - this.lastUpdate) / 1000) * rate;
      // Never more than the largest margin above the transit floor: a delay beyond it is no
      // jitter but a queue on the path that drained (the floor itself fell). Shrinking that
      // by 20 ms a second would keep a conversation seconds behind for minutes, and the
      // player keeps only 2 s of decoded video, so past 2 s every frame would be dropped
      // before its turn (a frozen picture): it drops at once, one skip in the sound.
      const ceiling = (this.floorMs ?? target) + this.cfg.maxMarginMs;
      this.current = Math.max(target, Math.min(ceiling, this.current - Math.max(0, step)));
    }
    this.lastUpdate = now;
  }

  /**
   * A frame came too late to play at `nowMs`, `decodedMs` after its capture (wall clock,
   * decoded and ready): transit alone does not show that, decoding and scheduling take time
   * too. Raises the delay towards what that frame needed, by at most
   * {@link PlayoutConfig.lateStepMs} and once per burst ({@link PlayoutConfig.lateBurstMs}),
   * capped at the largest margin: before, each late frame added 10 ms, and one hold-up that
   * made eight frames late added 80 ms. A frame made late by the page itself stalling
   * (`stalled`: the scheduler's timer did not run when its slot was decided) leaves it
   * alone: the sound is lost during a stall whatever the delay (only the next 40 ms are
   * handed to the audio output ahead), so a longer delay would only add latency.
   */
  late(nowMs: number, decodedMs: number, stalled = false): LateOutcome {
    if (stalled) {
      this.lateStalled++;
      return 'stall';
    }
    if (this.current === undefined) return 'enough';
    const floor = this.floorMs ?? 0;
    const need = Math.min(floor + this.cfg.maxMarginMs, decodedMs + this.cfg.lateMarginMs);
    if (need <= this.current || nowMs - this.lastRaise < this.cfg.lateBurstMs) {
      this.lateCovered++;
      return 'enough';
    }
    const raised = Math.min(need, this.current + this.cfg.lateStepMs);
    this.raisedMs += raised - this.current;
    this.current = raised;
    this.lastRaise = nowMs;
    this.lateRaised++;
    return 'raised';
  }

  /** Figures for diagnostics. */
  get stats(): PlayoutStats {
    const sp = this.spread() ?? { floor: 0, p95: 0 };
    return {
      floorMs: sp.floor,
      spreadMs: sp.p95 - sp.floor,
      samplesStalled: this.samples.filter((x) => x.stalled).length,
      lateRaised: this.lateRaised,
      lateCovered: this.lateCovered,
      lateStalled: this.lateStalled,
      raisedMs: this.raisedMs,
    };
  }

  /** The delay (ms) from capture to playout, or undefined before the first object. */
  get delayMs(): number | undefined {
    return this.current;
  }

  /** The lowest transit in the window (ms). */
  get floorMs(): number | undefined {
    let m: number | undefined;
    for (const s of this.samples) m = m === undefined ? s.transit : Math.min(m, s.transit);
    return m;
  }

  /** When (wall clock ms) an object captured at `captureMs` plays. */
  playoutAt(captureMs: number): number | undefined {
    return this.current === undefined ? undefined : captureMs + this.current;
  }
}

/** What the audio scheduler does for one 20 ms slot. */
export type AudioSlot<T> =
  | { kind: 'play'; seq: number; captureMs: number; frame: T }
  | { kind: 'conceal'; seq: number; captureMs: number };

/**
 * The audio jitter buffer. Audio frames are numbered by their group (one 20 ms frame per
 * group, consecutive), so a missing number is a lost or late frame. {@link next} hands out
 * slots in order: a frame that is there, or a concealment for one that is not there when
 * its slot must be scheduled. A frame arriving after its slot passed is dropped: the
 * timeline never waits, so a loss costs one click, never a stall.
 */
export class AudioJitter<T> {
  private frames = new Map<number, { captureMs: number; frame: T }>();
  private nextSeq?: number;
  private nextCapture = 0;
  private run = 0;
  /** Frames that arrived after their slot. */
  late = 0;
  /** Slots concealed. */
  concealed = 0;
  /** Slots concealed by a call of {@link next} that said the page had stalled (newest last). */
  private stalledSlots = new Set<number>();

  constructor(
    /** Frame duration in ms. */
    readonly frameMs = 20,
    /** Longest run of concealment before the buffer resynchronizes on what arrives. */
    readonly maxConcealRun = 10,
  ) {}

  /** Frames waiting. */
  get size(): number {
    return this.frames.size;
  }

  /**
   * Adds a decoded frame with sequence number `seq` (the group ID) captured at `captureMs`.
   * Returns false if it came after its slot (it is dropped).
   */
  push(seq: number, captureMs: number, frame: T): boolean {
    if (this.nextSeq !== undefined && seq < this.nextSeq) {
      this.late++;
      return false;
    }
    this.frames.set(seq, { captureMs, frame });
    return true;
  }

  /**
   * The next slot, if it is due. A frame that is there is handed out once its capture time
   * reaches `deadlineCaptureMs` (now - delay + the scheduler's lookahead); a missing frame
   * is concealed only once its capture time reaches `concealCaptureMs` (by default the same;
   * later gives a late frame until the last moment). Returns undefined when the next slot
   * can still wait. `stalled` says the caller runs late (the page stalled): slots it
   * conceals are remembered as such ({@link concealedInStall}).
   */
  next(deadlineCaptureMs: number, concealCaptureMs = deadlineCaptureMs, stalled = false): AudioSlot<T> | undefined {
    if (this.nextSeq === undefined) {
      if (this.frames.size === 0) return undefined;
      const first = Math.min(...this.frames.keys());
      this.nextSeq = first;
      this.nextCapture = this.frames.get(first)!.captureMs;
    }
    const seq = this.nextSeq;
    const f = this.frames.get(seq);
    if (f) {
      if (f.captureMs > deadlineCaptureMs) return undefined;
      this.frames.delete(seq);
      this.nextSeq = seq + 1;
      this.nextCapture = f.captureMs + this.frameMs;
      this.run = 0;
      return { kind: 'play', seq, captureMs: f.captureMs, frame: f.frame };
    }
    if (this.nextCapture > concealCaptureMs) return undefined;
    // The frame is missing at its deadline. After a long gap (the publisher paused, or
    // numbering jumped) resynchronize on the oldest frame present instead of concealing on.
    if (this.frames.size > 0) {
      const oldest = Math.min(...this.frames.keys());
      if (oldest - seq > this.maxConcealRun) {
        this.nextSeq = oldest;
        this.nextCapture = this.frames.get(oldest)!.captureMs;
        return this.next(deadlineCaptureMs, concealCaptureMs, stalled);
      }
    }
    if (this.frames.size === 0 && this.run >= this.maxConcealRun) {
      // Nothing is coming: stop concealing and wait for the stream to come back.
      this.reset();
      return undefined;
    }
    this.run++;
    const captureMs = this.nextCapture;
    this.nextSeq = seq + 1;
    this.nextCapture += this.frameMs;
    this.concealed++;
    if (stalled) {
      this.stalledSlots.add(seq);
      // A few seconds of them are plenty: a late frame comes well within that.
      if (this.stalledSlots.size > 256) this.stalledSlots.delete(this.stalledSlots.values().next().value!);
    }
    return { kind: 'conceal', seq, captureMs };
  }

  /** Whether slot `seq` was concealed while the page stalled (see {@link next}). */
  concealedInStall(seq: number): boolean {
    return this.stalledSlots.has(seq);
  }

  /** Drops everything (after a long silence the timeline restarts at the next frame). */
  reset(): void {
    this.frames.clear();
    this.nextSeq = undefined;
    this.run = 0;
  }
}

/**
 * Watches a periodic timer of the page (the audio scheduler's) for stalls: a run that comes
 * long after the previous one means the page's main thread was busy (a long task, the
 * machine loaded) and everything it should have done meanwhile, including handing audio
 * over and taking decoded frames in, is late by as much.
 */
export class TimerWatch {
  private last?: number;
  private lastStalled = false;
  /** Longest time between two runs (ms). */
  longestGapMs = 0;
  /** Runs that came after a stall. */
  stalls = 0;

  constructor(
    /**
     * A gap longer than this (ms) is a stall: 30 ms for a 10 ms timer, as a run more than
     * 20 ms late can reach a slot after the 15 ms its frame had left to be handed over.
     */
    readonly stallMs = 30,
  ) {}

  /** Records a run at `nowMs`; returns whether it came after a stall. */
  tick(nowMs: number): boolean {
    const gap = this.last === undefined ? 0 : nowMs - this.last;
    this.last = nowMs;
    this.longestGapMs = Math.max(this.longestGapMs, gap);
    this.lastStalled = gap > this.stallMs;
    if (this.lastStalled) this.stalls++;
    return this.lastStalled;
  }

  /**
   * Whether the page is in a stall at `nowMs`: the timer is overdue, or its last run came
   * after a stall and the next has not come yet (what was queued meanwhile is being taken in).
   */
  busy(nowMs: number): boolean {
    if (this.last === undefined) return false;
    return nowMs - this.last > this.stallMs || this.lastStalled;
  }
}
