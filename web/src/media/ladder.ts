/** One rung of a video tier ladder. */
export interface LadderRung {
  /** Track name suffix: the track is `video/<name>`. */
  name: string;
  width: number;
  height: number;
  /** Target bit rate, bit/s. */
  bitrate: number;
}

/**
 * tiermesh's default tier ladder, highest first: the rungs a relay's ingest encodes from a
 * `<broadcast>/source` (`LadderConfig::default()` in codec/src/ladder.rs; the unit test
 * web/test/ladder.test.ts checks that the two agree).
 */
export const DEFAULT_LADDER: readonly LadderRung[] = [
  { name: '720p', width: 1280, height: 720, bitrate: 1_500_000 },
  { name: '360p', width: 640, height: 360, bitrate: 550_000 },
  { name: '180p', width: 320, height: 180, bitrate: 150_000 },
];

/**
 * The default ladder's rungs below its top (360p and 180p), as `PublisherOptions.lowerTiers`:
 * what a page encodes beside its top tier with `?ladder=1`, for a relay without an ingest
 * ladder, so that its subscribers get the rungs the ingest would have made.
 */
export function defaultLowerTiers(): { width: number; height: number; bitrate: number }[] {
  return DEFAULT_LADDER.slice(1).map(({ width, height, bitrate }) => ({ width, height, bitrate }));
}
