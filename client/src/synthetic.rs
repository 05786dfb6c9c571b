//! A synthetic broadcast: the tracks `tiermesh pub` sends, with the sizes, cadence, group
//! structure, priorities and timestamps of real media, and payloads of filler bytes (real
//! encoded media comes from the codec crate).
//!
//! Sans-IO: a [`Generator`] is given wall-clock time in microseconds and hands out the
//! objects due by then ([`Generator::poll_object`]) and the time of the next one
//! ([`Generator::poll_timeout`]). Every time is a point on a fixed grid of wall-clock time,
//! so group IDs derive from time and a publisher that restarts keeps them increasing:
//!
//! | track        | priority | group                         | objects per group        |
//! |--------------|----------|-------------------------------|--------------------------|
//! | `catalog`    | 0        | start time in whole seconds   | 1 (the MSF catalog JSON) |
//! | `audio`      | 16       | capture time / 20 ms          | 1 (one 20 ms frame)      |
//! | `video/180p` | 32       | capture time / 1 s            | 30 (key frame first)     |
//! | `video/360p` | 48       | capture time / 1 s            | 30                       |
//! | `video/720p` | 64       | capture time / 1 s            | 30                       |
//!
//! Video frame `n` of second `s` is captured at `s·10⁶ + n·10⁶/30` µs and is object `n`
//! of group `s`. A group of one second carries exactly the tier's bit rate: its key frame is
//! [`KEY_FRAME_RATIO`] times the size of the other frames.
//!
//! Video starts at the first frame after the generator starts, with a key frame: a
//! publisher that takes a broadcast over (a reconnect, a move to another relay) shows a
//! picture at once rather than at the next whole second, up to a second later. Started on
//! a whole second, that is the group of that second; started within second `s`, it is an
//! early group `s + 1` (below), which is past every group a publisher of the same broadcast
//! that stopped before could have sent (its groups are at most the current second, or one
//! more while an early group of its own ran: only a key-frame request less than a second
//! before it stopped gives the two publishers a group ID in common).
//!
//! Dynamic groups (DYNAMIC GROUPS = 1, NEW GROUP REQUEST, draft-16 §9.2.2.9): after
//! [`Generator::request_new_group`], each video track's next frame is the key frame of a new
//! group, ID one above the current one; that group then runs to the end of the following
//! whole second (so one group lasts between 1 and 2 s and the grid holds again after it:
//! a group's ID is its capture second, or one more while an early group runs). A request
//! while the current group itself started early (less than a second ago) waits for the next
//! whole second, the minimum group duration the draft lets a publisher keep.
//! Every object carries its capture time in the LOC Timestamp property (wall-clock
//! microseconds, no Timescale).

use std::time::Duration;

use bytes::Bytes;
use tiermesh_proto::catalog::{self, CATALOG_TRACK_NAME, Catalog};
use tiermesh_proto::ext::Extensions;
use tiermesh_proto::loc;
use tiermesh_proto::types::GroupOrder;

/// Microseconds between audio frames: one frame per group, so a late or lost frame costs
/// 20 ms of sound and never more.
pub const AUDIO_FRAME_US: u64 = 20_000;
/// Microseconds per video group: one key frame a second, the usual live trade-off between
/// join time and compression.
pub const VIDEO_GROUP_US: u64 = 1_000_000;
/// Video frames per second.
pub const VIDEO_FPS: u64 = 30;
/// How many times larger a key frame is than the other frames of its group: real encoders
/// give 5 to 10 at these rates.
pub const KEY_FRAME_RATIO: u64 = 6;
/// The audio bit rate, that of speech-quality Opus.
pub const AUDIO_BITRATE: u64 = 48_000;
/// The MSF version written into the catalog.
pub const MSF_VERSION: &str = "draft-01";

/// What a track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// The MSF catalog.
    Catalog,
    /// 20 ms audio frames, one per group.
    Audio,
    /// 30 fps video, one-second groups starting with a key frame.
    Video,
}

/// One track of the synthetic broadcast.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackSpec {
    /// The track name (`catalog`, `audio`, `video/360p`, …).
    pub name: String,
    /// What it carries.
    pub kind: TrackKind,
    /// DEFAULT PUBLISHER PRIORITY (lower is more important).
    pub priority: u8,
    /// Bits per second of object payload (0 for the catalog).
    pub bitrate: u64,
    /// Picture size of a video tier.
    pub size: Option<(u32, u32)>,
    /// DELIVERY TIMEOUT the publisher declares, if any.
    pub delivery_timeout: Option<Duration>,
}

impl TrackSpec {
    /// The track's extension headers: DEFAULT PUBLISHER PRIORITY, DEFAULT PUBLISHER GROUP
    /// ORDER (descending: newest first), DYNAMIC GROUPS and DELIVERY TIMEOUT.
    pub fn extensions(&self) -> Extensions {
        Extensions {
            default_publisher_priority: Some(self.priority),
            default_publisher_group_order: Some(GroupOrder::Descending),
            dynamic_groups: Some(true),
            delivery_timeout: self
                .delivery_timeout
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)),
            ..Extensions::default()
        }
    }

    /// Payload bytes of one group: the bit rate times the group's duration.
    pub fn group_bytes(&self) -> u64 {
        match self.kind {
            TrackKind::Catalog => 0,
            TrackKind::Audio => self.bitrate * AUDIO_FRAME_US / 8 / 1_000_000,
            TrackKind::Video => self.bitrate * VIDEO_GROUP_US / 8 / 1_000_000,
        }
    }

    /// Payload size of object `object_id` of a group (audio and video; the catalog's size is
    /// its JSON's).
    pub fn object_size(&self, object_id: u64) -> usize {
        let size = match self.kind {
            TrackKind::Catalog => 0,
            TrackKind::Audio => self.group_bytes(),
            TrackKind::Video => {
                let (delta, key) = video_frame_sizes(self.group_bytes());
                if object_id == 0 { key } else { delta }
            }
        };
        usize::try_from(size).unwrap_or(usize::MAX)
    }
}

/// (other frame, key frame) sizes that add up to exactly `group` bytes over a group of
/// [`VIDEO_FPS`] frames, the key frame about [`KEY_FRAME_RATIO`] times the others.
fn video_frame_sizes(group: u64) -> (u64, u64) {
    let delta = group / (KEY_FRAME_RATIO + VIDEO_FPS - 1);
    (delta, group - delta * (VIDEO_FPS - 1))
}

/// The tracks of a synthetic broadcast.
#[derive(Debug, Clone, PartialEq)]
pub struct BroadcastSpec {
    /// Catalog first, then audio, then the video tiers from lowest to highest.
    pub tracks: Vec<TrackSpec>,
}

impl Default for BroadcastSpec {
    /// The broadcast `tiermesh pub` sends: catalog, audio and three video tiers of about
    /// 150, 550 and 1500 kbit/s (the product ladder's rates, `tiermesh_codec`'s default).
    fn default() -> Self {
        let video = |height: u32, width: u32, kbps: u64, priority: u8| TrackSpec {
            name: format!("video/{height}p"),
            kind: TrackKind::Video,
            priority,
            bitrate: kbps * 1000,
            size: Some((width, height)),
            delivery_timeout: Some(Duration::from_secs(1)),
        };
        Self {
            tracks: vec![
                TrackSpec {
                    name: CATALOG_TRACK_NAME.to_owned(),
                    kind: TrackKind::Catalog,
                    priority: 0,
                    bitrate: 0,
                    size: None,
                    delivery_timeout: None,
                },
                TrackSpec {
                    name: "audio".to_owned(),
                    kind: TrackKind::Audio,
                    priority: 16,
                    bitrate: AUDIO_BITRATE,
                    size: None,
                    delivery_timeout: Some(Duration::from_millis(400)),
                },
                video(180, 320, 150, 32),
                video(360, 640, 550, 48),
                video(720, 1280, 1500, 64),
            ],
        }
    }
}

impl BroadcastSpec {
    /// The track named `name`.
    pub fn track(&self, name: &str) -> Option<&TrackSpec> {
        self.tracks.iter().find(|t| t.name == name)
    }

    /// The MSF catalog listing every track but the catalog itself. The video tiers share an
    /// alternate group (a player picks one) and a render group with the audio.
    pub fn catalog(&self, generated_at_ms: u64) -> Catalog {
        let tracks = self
            .tracks
            .iter()
            .filter(|t| t.kind != TrackKind::Catalog)
            .map(|t| {
                let mut track = catalog::Track {
                    name: t.name.clone(),
                    packaging: Some(catalog::packaging::LOC.to_owned()),
                    is_live: Some(true),
                    render_group: Some(1),
                    bitrate: Some(t.bitrate),
                    ..catalog::Track::default()
                };
                match t.kind {
                    TrackKind::Audio => {
                        track.role = Some(catalog::role::AUDIO.to_owned());
                        track.samplerate = Some(48_000);
                        track.channel_config = Some("1".to_owned());
                        track.max_group_duration = Some(AUDIO_FRAME_US / 1000);
                    }
                    TrackKind::Video => {
                        track.role = Some(catalog::role::VIDEO.to_owned());
                        track.alt_group = Some(1);
                        track.framerate = Some(VIDEO_FPS as f64);
                        track.max_group_duration = Some(VIDEO_GROUP_US / 1000);
                        if let Some((w, h)) = t.size {
                            track.width = Some(w);
                            track.height = Some(h);
                        }
                    }
                    TrackKind::Catalog => {}
                }
                track
            })
            .collect();
        Catalog {
            version: Some(MSF_VERSION.to_owned()),
            generated_at: Some(generated_at_ms),
            tracks: Some(tracks),
            ..Catalog::default()
        }
    }
}

/// One object of the synthetic broadcast.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// Index of its track in [`BroadcastSpec::tracks`].
    pub track: usize,
    /// Group ID.
    pub group_id: u64,
    /// Object ID within the group.
    pub object_id: u64,
    /// Wall-clock capture time, microseconds since the Unix epoch.
    pub capture_us: u64,
    /// True for the first object of a group (a key frame, for video).
    pub key: bool,
    /// Object extensions: the LOC Timestamp.
    pub extensions: Extensions,
    /// The payload.
    pub payload: Bytes,
}

/// Produces the objects of a [`BroadcastSpec`] as wall-clock time passes.
#[derive(Debug)]
pub struct Generator {
    spec: BroadcastSpec,
    /// Per track, the capture time of its next object (`u64::MAX`: nothing more, the
    /// catalog once sent).
    next: Vec<u64>,
    start_us: u64,
    /// Filler bytes every payload is a slice of, so objects cost no copies.
    filler: Bytes,
    /// Per track, the (group, next object) a video track is in (`None` before its first
    /// frame).
    position: Vec<Option<(u64, u64)>>,
    /// Per track, a NEW GROUP REQUEST waiting for the track's next frame.
    new_group: Vec<bool>,
}

impl Generator {
    /// Starts at wall-clock `now_us`: the catalog is due at once, audio at the next 20 ms
    /// boundary, video at the next frame (a key frame starting a group: see the module
    /// docs for its ID).
    pub fn new(spec: BroadcastSpec, now_us: u64) -> Self {
        let next = spec
            .tracks
            .iter()
            .map(|t| match t.kind {
                TrackKind::Catalog => now_us,
                TrackKind::Audio => now_us.div_ceil(AUDIO_FRAME_US) * AUDIO_FRAME_US,
                TrackKind::Video => next_frame_time(now_us),
            })
            .collect();
        let largest = spec.tracks.iter().map(|t| t.object_size(0)).max().unwrap_or(0);
        let filler: Vec<u8> = (0..largest).map(|i| (i % 251) as u8).collect();
        let n = spec.tracks.len();
        Self {
            spec,
            next,
            start_us: now_us,
            filler: Bytes::from(filler),
            position: vec![None; n],
            new_group: vec![false; n],
        }
    }

    /// A subscriber asked for a new group (NEW GROUP REQUEST): every video track starts one
    /// at its next frame (see the module docs for the IDs). Audio groups are one 20 ms frame
    /// each and the catalog is sent again to each new subscription, so neither changes.
    pub fn request_new_group(&mut self) {
        for (i, t) in self.spec.tracks.iter().enumerate() {
            if t.kind == TrackKind::Video {
                self.new_group[i] = true;
            }
        }
    }

    /// The broadcast's tracks.
    pub fn spec(&self) -> &BroadcastSpec {
        &self.spec
    }

    /// The wall-clock time this generator started at.
    pub fn start_us(&self) -> u64 {
        self.start_us
    }

    /// When the next object is due, microseconds since the Unix epoch; `None` if the
    /// broadcast has no media tracks left.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.next.iter().copied().filter(|&t| t != u64::MAX).min()
    }

    /// The earliest object due at or before `now_us`, or `None` if none is due yet. Objects
    /// come out in capture-time order; on a tie, the more important track first.
    pub fn poll_object(&mut self, now_us: u64) -> Option<Object> {
        let (index, at) = self
            .next
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, t)| t <= now_us)
            .min_by_key(|&(i, t)| (t, self.spec.tracks[i].priority))?;
        let spec = &self.spec.tracks[index];
        let (group_id, object_id, payload, next) = match spec.kind {
            TrackKind::Catalog => {
                let json = self.spec.catalog(at / 1000).to_vec();
                (at / 1_000_000, 0, Bytes::from(json), u64::MAX)
            }
            TrackKind::Audio => {
                let size = spec.object_size(0);
                (at / AUDIO_FRAME_US, 0, self.filler.slice(..size), at + AUDIO_FRAME_US)
            }
            TrackKind::Video => {
                let second = at / VIDEO_GROUP_US;
                let frame = frame_index(at);
                let (group, object) = match self.position[index] {
                    // A whole second starts the group of that second, unless an early group
                    // (started by a request) already carries its ID.
                    Some((g, _)) if frame == 0 && g < second => (second, 0),
                    // The first frame: a whole second's group, or an early group.
                    None if frame == 0 => (second, 0),
                    None => (second + 1, 0),
                    Some((g, _)) if self.new_group[index] && g == second => (second + 1, 0),
                    Some((g, o)) => (g, o),
                };
                if object == 0 {
                    self.new_group[index] = false;
                }
                self.position[index] = Some((group, object + 1));
                let size = spec.object_size(object);
                let next = if frame + 1 == VIDEO_FPS {
                    (second + 1) * VIDEO_GROUP_US
                } else {
                    frame_time(second, frame + 1)
                };
                (group, object, self.filler.slice(..size), next)
            }
        };
        self.next[index] = next;
        let mut extensions = Extensions::default();
        loc::set_capture_timestamp_us(&mut extensions, at);
        Some(Object {
            track: index,
            group_id,
            object_id,
            capture_us: at,
            key: object_id == 0,
            extensions,
            payload,
        })
    }
}

impl Generator {
    /// Whether `object` (one this generator produced) is the last of its group: an audio
    /// frame or the catalog always; a video frame if it is a second's last and its group is
    /// that second's (an early group runs on through the next second). A group ended early
    /// by a request is not known to end until the next one starts.
    pub fn ends_group(&self, object: &Object) -> bool {
        match self.spec.tracks.get(object.track).map(|t| t.kind) {
            Some(TrackKind::Video) => {
                frame_index(object.capture_us) + 1 == VIDEO_FPS
                    && object.group_id == object.capture_us / VIDEO_GROUP_US
            }
            _ => true,
        }
    }

    /// A catalog object for group `group_id`, generated at `now_us`: what a publisher sends
    /// again, as a new group, when a subscriber arrives after the first one (a relay's
    /// subscription starts after the largest object, so it would otherwise never see the
    /// catalog).
    pub fn catalog_object(&self, group_id: u64, now_us: u64) -> Option<Object> {
        let track = self.spec.tracks.iter().position(|t| t.kind == TrackKind::Catalog)?;
        let mut extensions = Extensions::default();
        loc::set_capture_timestamp_us(&mut extensions, now_us);
        Some(Object {
            track,
            group_id,
            object_id: 0,
            capture_us: now_us,
            key: true,
            extensions,
            payload: Bytes::from(self.spec.catalog(now_us / 1000).to_vec()),
        })
    }
}

/// Capture time of video frame `frame` of group `group`.
fn frame_time(group: u64, frame: u64) -> u64 {
    group * VIDEO_GROUP_US + frame * VIDEO_GROUP_US / VIDEO_FPS
}

/// The capture time of the first video frame at or after `now_us` (a grid point).
fn next_frame_time(now_us: u64) -> u64 {
    let second = now_us / VIDEO_GROUP_US;
    (0..VIDEO_FPS)
        .map(|n| frame_time(second, n))
        .find(|&t| t >= now_us)
        .unwrap_or((second + 1) * VIDEO_GROUP_US)
}

/// The index within its group of the video frame captured at `at` (a grid point).
fn frame_index(at: u64) -> u64 {
    let offset = at % VIDEO_GROUP_US;
    // Grid points are floor(n·10⁶/30); the ceiling of the inverse recovers n.
    (offset * VIDEO_FPS).div_ceil(VIDEO_GROUP_US)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// 12:00:00.437 UTC on some day: not on any grid, so start-up alignment is exercised.
    const START: u64 = 1_764_158_400_437_000;

    fn run(seconds: u64) -> (Generator, Vec<Object>) {
        let mut g = Generator::new(BroadcastSpec::default(), START);
        let mut out = Vec::new();
        let end = START + seconds * 1_000_000;
        while let Some(t) = g.poll_timeout() {
            if t > end {
                break;
            }
            while let Some(o) = g.poll_object(t) {
                assert!(o.capture_us <= t);
                out.push(o);
            }
        }
        (g, out)
    }

    #[test]
    fn bit_rates_are_within_five_percent() {
        let (g, objects) = run(10);
        // Whole seconds of video: from the first whole second to the last.
        let first_video = START.div_ceil(VIDEO_GROUP_US) * VIDEO_GROUP_US;
        let mut bytes: HashMap<usize, u64> = HashMap::new();
        for o in &objects {
            if o.capture_us >= first_video && o.capture_us < first_video + 9 * VIDEO_GROUP_US {
                *bytes.entry(o.track).or_default() += o.payload.len() as u64;
            }
        }
        for (i, t) in g.spec().tracks.iter().enumerate() {
            if t.kind == TrackKind::Catalog {
                continue;
            }
            let rate = bytes[&i] as f64 * 8.0 / 9.0;
            let want = t.bitrate as f64;
            assert!((rate - want).abs() / want < 0.05, "{}: {rate} bit/s, want {want}", t.name);
        }
        let tier = |n: &str| g.spec().track(n).unwrap().bitrate;
        assert_eq!(
            (tier("video/180p"), tier("video/360p"), tier("video/720p")),
            (150_000, 550_000, 1_500_000)
        );
    }

    #[test]
    fn key_frames_start_groups_and_are_several_times_larger() {
        let (g, objects) = run(4);
        for (i, t) in g.spec().tracks.iter().enumerate() {
            if t.kind != TrackKind::Video {
                continue;
            }
            let of_track: Vec<&Object> = objects.iter().filter(|o| o.track == i).collect();
            assert_eq!(of_track[0].object_id, 0, "{}: video starts at a key frame", t.name);
            let key = of_track.iter().find(|o| o.key).unwrap().payload.len();
            let delta = of_track.iter().find(|o| !o.key).unwrap().payload.len();
            assert!(key >= 4 * delta, "{}: key {key} vs {delta}", t.name);
            // Every group holds 30 objects 0..29 in order, all of one size but the first.
            let mut groups: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
            for o in &of_track {
                groups.entry(o.group_id).or_default().push(o.object_id);
                assert_eq!(o.key, o.object_id == 0);
            }
            // Video starts at the first frame after .437 (frame 14, .467) with an early
            // group that runs to the end of the next second; then two whole seconds and the
            // start of a fourth (the run ends at .437).
            assert_eq!(groups.len(), 4);
            let sizes: Vec<usize> = groups.values().map(Vec::len).collect();
            assert_eq!(sizes, [16 + 30, 30, 30, 14], "{}", t.name);
            for ids in groups.values() {
                assert_eq!(ids, &(0..ids.len() as u64).collect::<Vec<_>>());
            }
            assert_eq!(of_track[0].capture_us, START / VIDEO_GROUP_US * VIDEO_GROUP_US + 466_666);
        }
    }

    #[test]
    fn group_ids_derive_from_wall_clock_time() {
        let (g, objects) = run(3);
        for o in &objects {
            let t = &g.spec().tracks[o.track];
            let want = match t.kind {
                TrackKind::Catalog => START / 1_000_000,
                TrackKind::Audio => o.capture_us / AUDIO_FRAME_US,
                // The first, early group: the start second plus one.
                TrackKind::Video if o.capture_us / VIDEO_GROUP_US == START / VIDEO_GROUP_US => {
                    START / VIDEO_GROUP_US + 1
                }
                TrackKind::Video => o.capture_us / VIDEO_GROUP_US,
            };
            assert_eq!(o.group_id, want, "{} at {}", t.name, o.capture_us);
            assert_eq!(loc::capture_timestamp_us(&o.extensions), Some(o.capture_us));
        }
        // A publisher started later (a restart) continues with larger group IDs.
        let mut later = Generator::new(BroadcastSpec::default(), START + 5_000_000);
        let mut seen = HashMap::new();
        while let Some(o) = later.poll_object(START + 7_000_000) {
            seen.entry(o.track).or_insert(o.group_id);
        }
        for o in &objects {
            assert!(seen[&o.track] > o.group_id);
        }
    }

    #[test]
    fn audio_is_one_twenty_ms_frame_per_group_without_gaps() {
        let (g, objects) = run(2);
        let audio = g.spec().tracks.iter().position(|t| t.name == "audio").unwrap();
        let groups: Vec<u64> =
            objects.iter().filter(|o| o.track == audio).map(|o| o.group_id).collect();
        assert_eq!(groups.len(), 100);
        assert!(groups.windows(2).all(|w| w[1] == w[0] + 1));
        assert!(objects.iter().filter(|o| o.track == audio).all(|o| o.object_id == 0));
    }

    #[test]
    fn catalog_comes_first_and_lists_the_tiers() {
        let (_, objects) = run(1);
        assert_eq!(objects[0].track, 0);
        let catalog = Catalog::from_slice(&objects[0].payload).unwrap();
        catalog.validate().unwrap();
        let names: Vec<&str> = catalog.tracks().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["audio", "video/180p", "video/360p", "video/720p"]);
        let t = catalog.track(None, "video/720p").unwrap();
        assert_eq!((t.width, t.height, t.bitrate), (Some(1280), Some(720), Some(1_500_000)));
        assert_eq!(objects.iter().filter(|o| o.track == 0).count(), 1);
    }

    #[test]
    fn track_extensions_carry_the_publisher_defaults() {
        let spec = BroadcastSpec::default();
        let want = [
            ("catalog", 0, None),
            ("audio", 16, Some(400)),
            ("video/180p", 32, Some(1000)),
            ("video/360p", 48, Some(1000)),
            ("video/720p", 64, Some(1000)),
        ];
        for (name, priority, timeout) in want {
            let ext = spec.track(name).unwrap().extensions();
            assert_eq!(ext.publisher_priority(), priority, "{name}");
            assert_eq!(ext.group_order(), GroupOrder::Descending);
            assert!(ext.dynamic_groups());
            assert_eq!(ext.delivery_timeout_ms(), timeout, "{name}");
        }
    }

    /// Drives `g` from `from` to `to` (wall-clock µs) and returns what came out.
    fn drive(g: &mut Generator, from: u64, to: u64) -> Vec<Object> {
        let mut out = Vec::new();
        let mut now = from;
        while now <= to {
            while let Some(o) = g.poll_object(now) {
                out.push(o);
            }
            match g.poll_timeout() {
                Some(t) => now = t.max(now + 1),
                None => break,
            }
        }
        out
    }

    #[test]
    fn a_new_group_request_starts_a_group_at_the_next_frame() {
        let mut g = Generator::new(BroadcastSpec::default(), START);
        let first = START.div_ceil(VIDEO_GROUP_US); // the first video second
        // Into the first video second, 300 ms in.
        let before = drive(&mut g, START, first * VIDEO_GROUP_US + 300_000);
        let asked_at = first * VIDEO_GROUP_US + 300_000;
        g.request_new_group();
        let after = drive(&mut g, asked_at + 1, (first + 3) * VIDEO_GROUP_US + 500_000);
        for (i, t) in g.spec().tracks.iter().enumerate() {
            let of = |v: &[Object]| -> Vec<(u64, u64, usize, u64)> {
                v.iter()
                    .filter(|o| o.track == i)
                    .map(|o| (o.group_id, o.object_id, o.payload.len(), o.capture_us))
                    .collect()
            };
            let (before, after) = (of(&before), of(&after));
            if t.kind != TrackKind::Video {
                // Audio keeps one frame per 20 ms group, IDs from capture time.
                if t.kind == TrackKind::Audio {
                    assert!(after.iter().all(|&(g, o, _, c)| o == 0 && g == c / AUDIO_FRAME_US));
                }
                continue;
            }
            let key = t.object_size(0);
            assert_eq!(before.last().map(|o| o.0), Some(first), "{}", t.name);
            // The very next frame is the key frame of a new group, one ID above.
            let next = after[0];
            assert_eq!((next.0, next.1, next.2), (first + 1, 0, key), "{}", t.name);
            assert!(next.3 - asked_at <= VIDEO_GROUP_US / VIDEO_FPS, "{}", t.name);
            // That group runs to the end of the next whole second, objects numbered on;
            // then the grid holds: group first + 2 starts at its second with a key frame.
            let early: Vec<_> = after.iter().filter(|o| o.0 == first + 1).collect();
            assert_eq!(early.len() as u64, VIDEO_FPS - 10 + VIDEO_FPS, "{}", t.name);
            assert!(early.iter().enumerate().all(|(n, o)| o.1 == n as u64));
            assert_eq!(early.iter().filter(|o| o.2 == key).count(), 1);
            let regular = after.iter().find(|o| o.0 == first + 2).unwrap();
            assert_eq!((regular.1, regular.3), (0, (first + 2) * VIDEO_GROUP_US));
            // Group IDs never go back.
            assert!(after.windows(2).all(|w| w[1].0 >= w[0].0), "{}", t.name);
        }
    }

    #[test]
    fn a_request_during_an_early_group_waits_for_the_next_second() {
        let mut g = Generator::new(BroadcastSpec::default(), START);
        let first = START.div_ceil(VIDEO_GROUP_US);
        drive(&mut g, START, first * VIDEO_GROUP_US + 300_000);
        g.request_new_group();
        drive(&mut g, first * VIDEO_GROUP_US + 300_001, first * VIDEO_GROUP_US + 600_000);
        // Group first + 1 started 300 ms ago; a second request gets a group at the next
        // whole second (ID first + 2), not at once.
        g.request_new_group();
        let after =
            drive(&mut g, first * VIDEO_GROUP_US + 600_001, (first + 2) * VIDEO_GROUP_US - 1);
        let video = g.spec().tracks.iter().position(|t| t.name == "video/180p").unwrap();
        let starts: Vec<(u64, u64)> = after
            .iter()
            .filter(|o| o.track == video && o.object_id == 0)
            .map(|o| (o.group_id, o.capture_us))
            .collect();
        assert_eq!(starts, [(first + 2, (first + 1) * VIDEO_GROUP_US)]);
    }

    #[test]
    fn a_publisher_taking_over_starts_a_key_frame_at_once_past_the_old_groups() {
        // The old publisher stops at some point of a second; the new one starts 5 ms later.
        for stop_ms in [0, 10, 437, 966, 967, 999] {
            let first = START.div_ceil(VIDEO_GROUP_US) + 2;
            let stop = first * VIDEO_GROUP_US + stop_ms * 1000;
            let mut old = Generator::new(BroadcastSpec::default(), START);
            let before = drive(&mut old, START, stop);
            let start = stop + 5_000;
            let mut new = Generator::new(BroadcastSpec::default(), start);
            let after = drive(&mut new, start, start + 2 * VIDEO_GROUP_US);
            for (i, t) in new.spec().tracks.iter().enumerate() {
                if t.kind == TrackKind::Catalog {
                    continue;
                }
                let old_largest = before.iter().filter(|o| o.track == i).map(|o| o.group_id);
                let old_largest = old_largest.max().unwrap();
                let mine: Vec<&Object> = after.iter().filter(|o| o.track == i).collect();
                let o = mine[0];
                // The first object: within a frame (audio: 20 ms), a group's start.
                let within = match t.kind {
                    TrackKind::Audio => AUDIO_FRAME_US,
                    _ => VIDEO_GROUP_US / VIDEO_FPS + 1,
                };
                assert!(o.capture_us - start <= within, "{} at {stop_ms} ms", t.name);
                assert_eq!((o.object_id, o.key), (0, true), "{} at {stop_ms} ms", t.name);
                assert!(o.group_id > old_largest, "{} at {stop_ms} ms: {o:?}", t.name);
                // Group IDs never go back and each group's objects are numbered from 0;
                // exactly a group's last object ends it (its stream is finished at once).
                for w in mine.windows(2) {
                    assert_eq!(
                        new.ends_group(w[0]),
                        w[1].group_id != w[0].group_id,
                        "{}: {:?}",
                        t.name,
                        (w[0].group_id, w[0].object_id)
                    );
                    let next = (w[0].group_id, w[0].object_id + 1);
                    assert!(
                        (w[1].group_id, w[1].object_id) == next
                            || (w[1].group_id > w[0].group_id && w[1].object_id == 0),
                        "{}: {:?} after {:?}",
                        t.name,
                        (w[1].group_id, w[1].object_id),
                        (w[0].group_id, w[0].object_id)
                    );
                }
            }
        }
    }

    #[test]
    fn nothing_is_due_before_its_time() {
        let mut g = Generator::new(BroadcastSpec::default(), START);
        assert_eq!(g.poll_object(START).map(|o| o.track), Some(0));
        assert_eq!(g.poll_object(START), None);
        assert_eq!(g.poll_timeout(), Some(START.div_ceil(AUDIO_FRAME_US) * AUDIO_FRAME_US));
    }
}
