//! The send scheduler of one outgoing session, without I/O.
//!
//! Every link tiermesh sends on (relay to subscriber, publisher to relay, relay to relay)
//! has one [`Scheduler`]. It holds the objects that wait to be sent and decides, each time
//! the transport can take more, which bytes go next, which objects are too late to be worth
//! starting, and which streams must be reset. It reads no clock (time is passed in), opens
//! no socket and spawns nothing, so it is tested on virtual time through a simulated link.
//!
//! # The driver loop
//!
//! ```
//! use std::time::{Duration, Instant};
//! use bytes::Bytes;
//! use tiermesh_client::scheduler::*;
//! use tiermesh_proto::types::GroupOrder;
//!
//! let now = Instant::now();
//! let mut scheduler = Scheduler::new(SchedulerConfig::default());
//! // A subgroup stream of the audio track: draft priorities, newest group first, 400 ms.
//! let spec = StreamSpec::new(TrackKey(1), TrackClass::Audio, 7, 0)
//!     .priority(128, 16)
//!     .group_order(GroupOrder::Descending)
//!     .delivery_timeout(Some(Duration::from_millis(400)))
//!     .header(Bytes::from_static(b"subgroup header"));
//! scheduler.open_stream(StreamKey(10), spec)?;
//! scheduler.push_object(StreamKey(10), Object::new(now, Bytes::from_static(b"obj hdr"), Bytes::from_static(b"opus")))?;
//! scheduler.finish_stream(StreamKey(10))?;
//!
//! // On every wake-up: measure the transport, drain the scheduler, apply, arm the timer.
//! let mut budget = SendBudget { cwnd: 14_720, cwnd_available: 14_720, buffered: 0, send_rate_bps: 0 };
//! let mut written = Vec::new();
//! while let Some(action) = scheduler.poll_send(now, &mut budget) {
//!     match action {
//!         Action::Write { key, chunk, quinn_priority } => written.push((key, chunk)), // open stream on first write, set_priority, write_chunk
//!         Action::Finish { key } => {}         // SendStream::finish
//!         Action::Reset { key, code, .. } => {} // SendStream::reset(code)
//!         Action::Abandon { key, .. } => {}    // nothing was opened; forget the key
//!         Action::Datagram { key, datagram } => {} // Session::send_datagram
//!     }
//! }
//! assert_eq!(written.len(), 3); // stream header, object header, payload
//! let _wake_at: Option<Instant> = scheduler.poll_timeout();
//! # Ok::<(), tiermesh_client::scheduler::Error>(())
//! ```
//!
//! A session driver:
//! 1. pushes each object as it arrives ([`Scheduler::push_object`], after
//!    [`Scheduler::open_stream`] for a new subgroup, [`Scheduler::finish_stream`] when the
//!    subgroup ends, [`Scheduler::cancel_stream`] on STOP_SENDING,
//!    [`Scheduler::reset_stream`] with an upstream reset's code,
//!    [`Scheduler::remove_track`] when the request ends);
//! 2. on each wake-up measures the transport into a [`SendBudget`] (congestion window,
//!    what it can take now, what sits unsent in QUIC, the send rate), calls
//!    [`Scheduler::poll_send`] until it returns `None`, and applies each [`Action`]: the
//!    first `Write` of a key opens its unidirectional stream and sets its quinn priority;
//! 3. sleeps until [`Scheduler::poll_timeout`], a new object, or the transport draining
//!    (a short tick, or a write completing), and starts again.
//!
//! If quinn takes only part of a chunk, the driver hands the rest back with
//! [`Scheduler::handle_blocked`] (other streams go on meanwhile) and calls
//! [`Scheduler::handle_unblocked`] once the stream is writable again. That works for the
//! last chunk of a stream too: its `Finish` comes from a later `poll_send` call.
//!
//! The scheduler only keeps QUIC's buffer small if `buffered` is right. quinn reports the
//! congestion window (`transport::Stats::cwnd`) but not the bytes that wait unsent, so the
//! driver estimates them with an [`Unsent`] (what it wrote, less what left by the
//! connection's counters, lost bytes counted until resent) and hands the estimate per
//! priority to [`Scheduler::handle_unsent`]; an estimate that runs high costs throughput, one
//! that runs low lets a queue build up inside QUIC.
//!
//! # Priority mode: the algorithm
//!
//! **Order.** Streams are grouped into *levels* by `(subscriber priority, publisher
//! priority)`, the first two rules of the draft's scheduling algorithm (§7.2). The most
//! important level with data ready always goes first: strict priority, so the catalog,
//! audio and the base video tier are never held back by higher tiers. Inside a level, each
//! track (one request: a subscription or fetch) is a *flow*; inside a flow, the stream whose
//! [`SendOrder`] is smallest goes first, which is the draft's group order of that
//! subscription (Descending: newest group first) and then the lowest Subgroup ID. The
//! comparison itself is `tiermesh_proto::priority`'s.
//!
//! **Fair share.** The draft leaves requests of equal priorities unordered and expects all
//! of them to make progress. Flows of one level take turns by deficit round robin: each
//! turn adds a quantum (9600 bytes by default) to a flow's credit, the flow writes while its
//! credit is positive, and a write may overdraw the credit, which the next turn repays. So
//! tracks of equal priority get equal bytes over time whatever their object sizes.
//!
//! **A small buffer in QUIC.** A write never exceeds the [`SendBudget`]'s allowance:
//! what the congestion window can take now plus a headroom of `max(cwnd / 4, 4 KiB)`,
//! minus what QUIC already holds unsent ahead of it: the unsent bytes of the object's level
//! and the more important ones, since quinn sends those first and less important bytes there
//! do not hold it back (the driver's estimate per level, [`Scheduler::handle_unsent`]; without
//! one, each level's share of recent writes, and then all levels together stay within twice
//! the allowance). So low-priority bytes in QUIC (an upper tier's joining fetch, say) never
//! hold audio or the base tier back in the scheduler. Bytes written to QUIC are committed; keeping them
//! to about a quarter window means a newly arrived audio frame waits at most about a
//! quarter RTT behind video already handed over. One write is at most one quantum, so a
//! large key frame goes out in pieces that a more important object can overtake, and
//! quinn's stream priorities ([`quinn_priority`]) back the order up inside QUIC.
//!
//! **Delivery timeout** (§9.2.2.2 and the DELIVERY TIMEOUT extension): each object gets a
//! deadline `arrival + timeout`, where the timeout given with the stream is the minimum of
//! the subscriber's parameter and the track's extension. An object whose deadline has passed
//! when its turn comes, or that cannot leave before it at the estimated send rate, is not
//! started (it waits behind the bytes QUIC holds unsent of its own and more important
//! levels, estimated from each level's share of recent writes: quinn sends those first). With
//! the upper tiers' share on ([`SchedulerConfig::tier_share`]) an upper video tier is also
//! not started while its level is offered more than its share can carry within a second plus
//! the object's time left (every push counts, those to a stream already ended too), and on a
//! new session, before its rate is known, while a more important upper tier's rate is not
//! known either: a key frame that fits says nothing of the group behind it. Such a group
//! waits out of the schedule (neither started nor dropped) until both have been offered for
//! a quarter second, and is then checked at those rates. An object whose deadline passes while it is queued or half written ends its
//! stream: `Reset` with DELIVERY_TIMEOUT if any byte of the stream was written, otherwise
//! `Abandon` (no stream is opened). The rest of the subgroup goes with it: objects on a
//! subgroup stream are delta-coded against the previous one, the draft requires the reset
//! and forbids a new stream for that subgroup ([`Error::SubgroupAbandoned`]).
//!
//! **Capture age.** Per-hop timeouts add up across hops, so an object that carries its
//! capture age (from the LOC timestamp) also gets a deadline `arrival + (budget - age)`;
//! one already past the end-to-end budget (default 800 ms) on arrival is dropped at once.
//!
//! **Stale groups.** The draft defines no staleness of its own; it lets a publisher stop
//! forwarding before the delivery timeout at its discretion. Streams that ask for it
//! ([`StreamSpec::drop_stale`], on by default for video) and whose subscription wants the
//! newest group first (Descending) do not start another object once a newer group of the
//! same track has started and they have waited 100 ms: a new video group
//! begins with a key frame, so for a live viewer the rest of an older group only costs
//! bandwidth, unless it was held back only briefly and still plays. An object already half written is
//! completed, and a stream whose objects were all written is left to finish normally. A
//! subscription that asked for Ascending order (a recorder, say) keeps every group.
//!
//! **Datagrams.** A lane ([`StreamSpec::datagrams`], one per group of a datagram track)
//! takes part in the same order and fair share, but each object leaves whole as one
//! [`Action::Datagram`], and a late or stale datagram is dropped on its own: datagrams do
//! not depend on each other and there is no stream to reset.
//!
//! **Nothing is dropped without a delivery timeout.** The draft says that if neither side
//! set a DELIVERY TIMEOUT, every object is delivered: streams without one are never dropped
//! by age, capture age or staleness (the catalog, typically).
//!
//! # FIFO mode
//!
//! Objects go out in arrival order across all streams (each one completed before the next
//! starts), with one quinn priority for all, and nothing is ever dropped, however late: the
//! baseline the benchmarks compare against. The budget, the stream life cycle and the
//! actions are the same.
//!
//! # Memory
//!
//! Queued objects are held until written or dropped ([`Scheduler::queued_bytes`] tells how
//! much; without delivery timeouts nothing bounds it but the driver). Per track the
//! scheduler remembers the newest group started and up to 1024 abandoned subgroups, until
//! [`Scheduler::remove_track`].

mod config;
mod error;
mod rate;
mod ready;
mod stats;
mod types;
mod unsent;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use config::{
    DEFAULT_CAPTURE_AGE_BUDGET, DEFAULT_HEADROOM_DIVISOR, DEFAULT_HEADROOM_MIN, DEFAULT_QUANTUM,
    Mode, SchedulerConfig, SendBudget,
};
pub use error::Error;
pub use stats::{Count, Stats};
pub use types::{
    Action, DropReason, Object, StreamKey, StreamSpec, TrackClass, TrackKey, quinn_priority,
    reset_code,
};
pub use unsent::{LOST_WAIT_RTTS, PACKET_OVERHEAD, Reading, Unsent};

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tiermesh_proto::priority::SendOrder;
use tiermesh_proto::types::GroupOrder;

use config::MIN_WRITE;
pub(crate) use ready::BuildKeyHasher;
use ready::LevelSet;

type Map<K, V> = HashMap<K, V, BuildKeyHasher>;

/// `(subscriber priority, publisher priority)` as one number; smaller is more important.
type Level = u16;

/// Adds `bytes` at `level` to a list of bytes per level kept sorted by level.
fn add_at_level(levels: &mut Vec<(Level, u64)>, level: Level, bytes: u64) {
    match levels.binary_search_by_key(&level, |(l, _)| *l) {
        Ok(i) => levels[i].1 += bytes,
        Err(i) => levels.insert(i, (level, bytes)),
    }
}

/// How many abandoned subgroups a track remembers (the newest are kept): far more than the
/// groups that can be in flight at once.
const ABANDONED_MEMORY: usize = 1024;

/// How many ended upper-tier streams are remembered for what is still pushed to them: far
/// more than the groups in flight at once on any session.
const GONE_MEMORY: usize = 1024;

/// How long an upper tier whose group was cut for lateness, while its level was offered
/// over 1.5 times its share, starts no new group unless the path's rate reads at least a quarter
/// above what it read then. The window per round trip of a delay-based controller reads up
/// to 60% above a 1 Mbit/s path (`rural`, 1.0-1.6 Mbit/s over a run; 2.1 in slow start),
/// enough for a 1.5 Mbit/s tier to pass the check with the time its objects may wait: every
/// such group was cut, after taking the link from the tiers below for 300-800 ms. Ten
/// seconds: a few such tries a minute at most, while a link that really grew (the end of
/// `step`'s cut: 1 → 3 Mbit/s) starts the tier at once. The reading cannot always show
/// that: the delivery rate at the failure counts bytes sent into the link's buffer (1.15-1.77
/// Mbit/s on `step`'s 1 Mbit/s cut) and, with the tier held, a delay-based window reads
/// 1.8-2.1 Mbit/s whether the link is cut or not, so after a failure late in the cut a tier
/// the link carried before it stayed held for up to ten seconds past its end (traced at
/// 16df398). Such a tier is probed instead (see `Probe` and [`CARRIED_MEMORY`]).
const FAILED_HOLD: Duration = Duration::from_secs(10);

/// How many groups of an upper tier in a row must be written whole (none of them cut for
/// lateness) before the session's link counts as one that carried the tier (see `Probe`).
/// Two: on `step` 720p writes every group whole for the ten seconds before the cut, while
/// on `rural` (1 Mbit/s against 720p's 1.5) no group of it is written whole at all, and a
/// single group slipping through between losses is not a link that carries the tier.
const CARRIED_RUN: u32 = 2;

/// How long after the last group of such a run the tier, if held back, is probed even while
/// the levels above it are busy (see `Probe`): twenty seconds, longer than `step`'s
/// ten-second cut with the three seconds after it in which the tier must be back, while a
/// link that fell for good costs at most a probe every two seconds for that long before only
/// [`FAILED_HOLD`]'s rare tries are left.
const CARRIED_MEMORY: Duration = Duration::from_secs(20);

/// How long an upper tier that is held back (by [`FAILED_HOLD`] or because its level is
/// offered more than the path reads) must have written nothing before one group of it is
/// started anyway as a probe, when the levels above it are too quiet to show the path's
/// rate (see `Probe`). One second: a group of video, so a tier that the link carries again
/// is back within about two (its next key frame, then the window growing under it).
const PROBE_GAP: Duration = Duration::from_secs(1);

/// The longest quiet span between probes of a tier: each probe cut for lateness doubles
/// the span from [`PROBE_GAP`] up to this. Two seconds, so that with the next group's key
/// frame a tier the link carries again is back within three seconds of the recovery
/// (the issue's bound after `step`), while a link that stays too slow carries a probe of
/// at most one group in every three seconds it would otherwise leave idle.
const PROBE_GAP_MAX: Duration = Duration::from_secs(2);

/// The smallest deadline heap that is swept of entries for objects no longer queued.
const SWEEP_MIN: usize = 4096;

/// The FIFO entry of a stream that carries only its header.
const HEADER_ONLY: u64 = u64::MAX;

/// The FIFO entry of bytes the driver handed back (`handle_blocked`): they go first.
const REST: u64 = u64::MAX - 1;

/// How long an object of an older group may wait and still be sent after a newer group of
/// its track has started (see "Stale groups"): 100 ms, three frames at 30 fps. A tail held
/// back that briefly (a loss recovery shrinking the window, a more important key frame
/// ahead) still plays in any player's jitter buffer, and dropping it would cut the group
/// short, which costs the base tier whole groups on a lossy link; a tail older than that
/// is behind what the viewer already sees.
const STALE_GRACE: Duration = Duration::from_millis(100);

fn level_of(order: &SendOrder) -> Level {
    (u16::from(order.subscriber_priority()) << 8) | u16::from(order.publisher_priority())
}

/// One object waiting (or half written).
#[derive(Debug)]
struct Queued {
    header: Bytes,
    payload: Bytes,
    seq: u64,
    deadline: Option<(Instant, DropReason)>,
    arrival: Instant,
}

impl Queued {
    fn len(&self) -> u64 {
        (self.header.len() + self.payload.len()) as u64
    }
}

#[derive(Debug)]
struct Stream {
    track: TrackKey,
    class: TrackClass,
    order: SendOrder,
    quinn_priority: i32,
    group: u64,
    subgroup: u64,
    timeout: Option<Duration>,
    /// Asked for, with a delivery timeout and Descending order (see the module docs).
    drop_stale: bool,
    /// A datagram lane: objects go whole, one by one, and are dropped one by one.
    datagram: bool,
    /// The subgroup header while not yet written.
    header: Bytes,
    queue: VecDeque<Queued>,
    /// Bytes of `queue.front()` already written.
    offset: u64,
    /// Bytes handed back by the driver, written before anything else.
    rest: Option<Bytes>,
    started: bool,
    finishing: bool,
    blocked: bool,
    /// In its flow's ready set (priority mode).
    ready: bool,
    /// In `Scheduler::to_finish`.
    finish_queued: bool,
    /// Waits out of its flow's ready set until an entry of `Scheduler::holds` releases it.
    held: bool,
    /// A group of a held-back upper tier started as a probe (see `Probe`): the checks of
    /// its level's offered rate and of `FAILED_HOLD` do not stop it, its deadlines do.
    probe: bool,
}

impl Stream {
    fn has_data(&self) -> bool {
        self.rest.is_some() || !self.queue.is_empty() || (self.finishing && !self.header.is_empty())
    }
}

/// One track's streams at one level. Kept while the track lives, so a flow that empties
/// and fills again (every object, when the link keeps up) costs no allocation.
#[derive(Debug, Default)]
struct Flow {
    /// Ready streams in send order (most important first); rarely more than a few.
    ready: Vec<(SendOrder, StreamKey)>,
    credit: i64,
}

#[derive(Debug, Default)]
struct Track {
    streams: BTreeSet<StreamKey>,
    /// The newest group of this track that started sending.
    newest_started: Option<u64>,
    /// Subgroups whose stream was reset or abandoned.
    abandoned: BTreeSet<(u64, u64)>,
}

enum Step {
    Write(Action, u64),
    Again,
    Idle,
}

/// An upper tier held back while too little else is sent to show the path's rate.
///
/// Under a delay-based controller an upper tier is not started while its level is offered
/// more than the path's rate carries, nor for [`FAILED_HOLD`] after a group of it was cut
/// for lateness. Both read the path from what the session sends. When the held tier is
/// (nearly) all a session carries (a player on 720p alone, or with audio), nothing is sent
/// while it is held: the window of an idle sender does not grow and its delivery rate reads
/// nothing, so the path never reads the rate it has again, and the tier stayed held long
/// after the link recovered (the browser's `playout-drain`: a frozen picture for the whole
/// hold, and beyond). So once such a tier has written nothing for a while (from
/// [`PROBE_GAP`], doubling after each probe cut for lateness up to [`PROBE_GAP_MAX`]), one
/// group of it starts anyway, checked only against its objects' deadlines. A probe that
/// was written whole (its next group arrives with nothing of it left to write, or it
/// finished or was made stale less than [`PROBE_GAP`] before) is evidence that the link
/// carries the tier: the next group starts as a probe too, while the path's reading catches
/// up. One cut for lateness ends the run. Where a more important upper tier is offered too,
/// or the levels above are written at a quarter or more of what the tier is offered, no
/// probe is made: their traffic keeps the path's reading up to date, and a probe that fails
/// takes the link from them (suspected, not traced: on `rural`, publisher side, the rule
/// without the first condition measured 30-40 ms more p95 of all media in 3 of 3 pairs,
/// likely 720p probed while 360p was held).
///
/// Unless the link carried the tier lately: [`CARRIED_RUN`] groups of it in a row written
/// whole, the last less than [`CARRIED_MEMORY`] ago. Then the busy levels above do not keep
/// the reading current after all: with the tier held the session is app-limited, and a
/// delay-based window then reads about twice what is sent whether the link is cut or not
/// (`step`: 1.8-2.1 Mbit/s on the 1 Mbit/s cut and on the restored 3 Mbit/s alike), so
/// only sending more tells a link that came back from one that did not. Such a tier, if
/// only [`FAILED_HOLD`] holds it (the path's reading now carries what its level is
/// offered), is probed once it has written nothing for [`PROBE_GAP`] (no doubling: a probe
/// every two seconds or so, a group and a second of quiet, so that it is back within three
/// seconds of the link), a group of it at a time, however busy the levels above. Where the
/// reading itself is too low (a window at its floor on a CPU-starved path), no such probe
/// is made: it would only deliver late what the reading says cannot keep up. A tier the
/// link never carried (`rural`'s 720p) is not probed this way, so the tiers below do not
/// pay for tries that cannot pass: every 720p group started on `rural` took the link from
/// them for 300-800 ms before it was cut.
#[derive(Debug)]
struct Probe {
    level: Level,
    /// How long the level must write nothing before the next probe.
    gap: Duration,
    /// When the level last wrote, or was first held back.
    quiet_since: Instant,
    /// The probe under way.
    stream: Option<StreamKey>,
    /// When the last probe ended written whole.
    passed: Option<Instant>,
}

/// What `check_start` says of a stream's next object.
enum Check {
    /// It may be started.
    Go,
    /// Drop it (alone on a datagram lane, with the rest of its stream otherwise; every
    /// object if `None`).
    Drop(DropReason, Option<u64>),
    /// Drop it with the rest of its stream, an upper tier's group held back at `Level`
    /// (see `Probe`).
    Hold(DropReason, u64, Level),
    /// Start it, and its group as a probe of its held-back tier (see `Probe`).
    Probe(Level),
    /// Not yet: its stream waits out of the schedule until then, and is checked again.
    Wait(Instant),
}

/// The send scheduler of one session. See the [module docs](self).
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    streams: Map<StreamKey, Stream>,
    tracks: Map<TrackKey, Track>,
    flows: Map<(TrackKey, Level), Flow>,
    /// Per level, the ring of tracks with ready streams (kept when empty).
    levels: Map<Level, VecDeque<TrackKey>>,
    /// The levels whose ring is not empty.
    active: LevelSet,
    /// FIFO mode: `(stream, object seq)` in arrival order.
    fifo: VecDeque<(StreamKey, u64)>,
    /// Object deadlines; entries of objects already written or dropped are skipped.
    deadlines: BinaryHeap<Reverse<(Instant, u64, StreamKey)>>,
    /// Heap size at which stale entries are swept out (see `push_deadline`).
    sweep_at: usize,
    actions: VecDeque<Action>,
    /// Streams finished and fully written: `Finish` on the next poll.
    to_finish: VecDeque<StreamKey>,
    next_seq: u64,
    queued_bytes: u64,
    stats: Stats,
    /// Bytes written per level (halved now and then, so recent writes weigh most): what
    /// share of QUIC's unsent bytes a level's object waits behind (see `check_start`).
    written_by_level: Map<Level, u64>,
    written_total: u64,
    /// What QUIC holds unsent per level, most important first, as the driver's [`Unsent`]
    /// last told it ([`Scheduler::handle_unsent`]) plus what was written since. When known,
    /// it replaces the shares of recent writes.
    unsent_levels: Option<Vec<(Level, u64)>>,
    /// Bytes written per level lately, and the path's delivery rate as the driver's
    /// [`Unsent`] last told it: an upper tier's share in `check_start` (see `rate`).
    level_rates: rate::LevelRates,
    delivery_bps: u64,
    /// What each upper tier's level is offered, sent or not, when the share is on: whether
    /// a group of it can keep up at its share at all (see `check_start`).
    offered: rate::OfferedRates,
    /// Streams of upper tiers ended early, by level, while the share is on: the objects
    /// pushed to them afterwards are still offered to their level. The oldest are forgotten
    /// past [`GONE_MEMORY`].
    gone: Map<StreamKey, Level>,
    gone_order: VecDeque<StreamKey>,
    /// The last `poll_send`'s time and path rate, while the share is on.
    seen: Option<(Instant, u64)>,
    /// Per upper-tier level, when a group of it last started and was then cut for lateness
    /// while the level was offered over 1.5 times its share, and the path's rate then (see
    /// [`FAILED_HOLD`]).
    failed: Vec<(Level, Instant, u64)>,
    /// Upper tiers held back while too little else is sent (see `Probe`).
    probes: Vec<Probe>,
    /// Per upper-tier level, while the share is on: groups written whole in a row since the
    /// last one cut for lateness, and when the last of a run of [`CARRIED_RUN`] or more was
    /// (see `Probe`).
    carried: Vec<(Level, u32, Option<Instant>)>,
    /// Priority mode: the stream of an object pushed while nothing else was ready, no
    /// action was pending and no deadline was due (see `next_direct`). It is kept out of
    /// the ready sets and its object's deadline out of the heap: on a relay that keeps up,
    /// each object is written as soon as it is pushed, and entering and leaving those
    /// structures per object and subscriber was most of the scheduler's cost. Anything
    /// else that happens first puts it where the full schedule expects it (`undirect`).
    direct: Option<StreamKey>,
    /// The deficit round robin credit of `direct`'s flow (an empty flow starts at 0).
    direct_credit: i64,
    /// Streams in their flow's ready set.
    ready_streams: usize,
    /// Streams held out of the schedule (`Check::Wait`), and until when.
    holds: Vec<(Instant, StreamKey)>,
    /// Tests compare the schedule with and without the direct path.
    #[cfg(test)]
    direct_off: bool,
}

/// When the bytes counted in `written_by_level` pass this, every count is halved: the
/// shares follow the last few megabytes written, a few seconds at the rates served.
const WRITTEN_DECAY_AT: u64 = 4 << 20;

impl Scheduler {
    /// An empty scheduler.
    pub fn new(config: SchedulerConfig) -> Self {
        Scheduler {
            config,
            streams: Map::default(),
            tracks: Map::default(),
            flows: Map::default(),
            levels: Map::default(),
            active: LevelSet::default(),
            fifo: VecDeque::new(),
            deadlines: BinaryHeap::new(),
            sweep_at: SWEEP_MIN,
            actions: VecDeque::new(),
            to_finish: VecDeque::new(),
            next_seq: 0,
            queued_bytes: 0,
            stats: Stats::default(),
            written_by_level: Map::default(),
            written_total: 0,
            unsent_levels: None,
            level_rates: rate::LevelRates::default(),
            delivery_bps: 0,
            offered: rate::OfferedRates::default(),
            gone: Map::default(),
            gone_order: VecDeque::new(),
            seen: None,
            failed: Vec::new(),
            probes: Vec::new(),
            carried: Vec::new(),
            direct: None,
            direct_credit: 0,
            ready_streams: 0,
            holds: Vec::new(),
            #[cfg(test)]
            direct_off: false,
        }
    }

    /// What QUIC holds unsent at each priority, from the driver's estimate: from then on an
    /// object waits behind what waits at its own and more important levels by this figure
    /// (plus what is written until the next call), not behind a share of the whole buffer.
    /// The driver calls it whenever the estimate changed other than by writes (a reading of
    /// the transport, a discarded stream); the writes the scheduler hands out it counts
    /// itself. quinn priorities map back to levels as [`quinn_priority`] made them.
    pub fn handle_unsent(&mut self, unsent: &Unsent) {
        self.delivery_bps = unsent.delivery_bps();
        let levels = self.unsent_levels.get_or_insert_with(Vec::new);
        levels.clear();
        for (priority, bytes) in unsent.by_priority() {
            // Above every level (datagrams, the control stream) counts as level 0, below
            // every level (lost bytes not yet attributed) as the last.
            let level = (0xFFFF_i64 - i64::from(priority)).clamp(0, 0xFFFF) as Level;
            add_at_level(levels, level, bytes);
        }
    }

    /// Its settings.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Its counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Object bytes waiting, not yet written. A driver can end a subscription that stays
    /// too far behind (`TOO_FAR_BEHIND`) when this keeps growing.
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes
    }

    /// Streams open (not yet ended by `Finish`, `Reset` or `Abandon`).
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Opens a subgroup stream. Nothing reaches the transport until its first object is
    /// pushed (or it is finished with a header and no object).
    pub fn open_stream(&mut self, key: StreamKey, spec: StreamSpec) -> Result<(), Error> {
        if self.streams.contains_key(&key) {
            return Err(Error::DuplicateStream(key));
        }
        let track = self.tracks.entry(spec.track).or_default();
        if !spec.datagram && track.abandoned.contains(&(spec.group, spec.subgroup)) {
            return Err(Error::SubgroupAbandoned {
                track: spec.track,
                group: spec.group,
                subgroup: spec.subgroup,
            });
        }
        track.streams.insert(key);
        let order = spec.send_order();
        let quinn_priority = match self.config.mode {
            Mode::Priority => quinn_priority(&order),
            Mode::Fifo => 0,
        };
        self.streams.insert(
            key,
            Stream {
                track: spec.track,
                class: spec.class,
                order,
                quinn_priority,
                group: spec.group,
                subgroup: spec.subgroup,
                timeout: spec.delivery_timeout,
                drop_stale: spec.drop_stale
                    && spec.delivery_timeout.is_some()
                    && spec.group_order == GroupOrder::Descending,
                datagram: spec.datagram,
                header: if spec.datagram { Bytes::new() } else { spec.header },
                queue: VecDeque::new(),
                offset: 0,
                rest: None,
                started: false,
                finishing: false,
                blocked: false,
                ready: false,
                finish_queued: false,
                held: false,
                probe: false,
            },
        );
        Ok(())
    }

    /// Queues the next object of a stream. An object already past the capture-age budget
    /// ends its stream at once (`Reset` or `Abandon` follows from `poll_send`).
    pub fn push_object(&mut self, key: StreamKey, object: Object) -> Result<(), Error> {
        self.undirect();
        let mode = self.config.mode;
        let budget = self.config.capture_age_budget;
        // Nothing else ready, pending or due: this object can skip the ready sets.
        let direct = mode == Mode::Priority
            && self.ready_streams == 0
            && self.actions.is_empty()
            && self.to_finish.is_empty();
        #[cfg(test)]
        let direct = direct && !self.direct_off;
        let Some(s) = self.streams.get_mut(&key) else {
            // Still offered to its level if its stream was ended early (see `gone`).
            if let Some(&level) = self.gone.get(&key) {
                self.offered.add(object.arrival, level, object.len() as u64);
            }
            return Err(Error::UnknownStream(key));
        };
        if s.finishing {
            return Err(Error::Finished(key));
        }
        if self.config.tier_share && s.class.is_upper_tier() {
            self.offered.add(object.arrival, level_of(&s.order), object.len() as u64);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut deadline = None;
        let mut too_old = false;
        if let (Mode::Priority, Some(timeout)) = (mode, s.timeout) {
            deadline =
                object.arrival.checked_add(timeout).map(|d| (d, DropReason::DeliveryTimeout));
            if let (Some(budget), Some(age)) = (budget, object.capture_age) {
                match budget.checked_sub(age).filter(|left| !left.is_zero()) {
                    None => too_old = true,
                    Some(left) => {
                        if let Some(d) = object.arrival.checked_add(left)
                            && deadline.is_none_or(|(t, _)| d < t)
                        {
                            deadline = Some((d, DropReason::CaptureAge));
                        }
                    }
                }
            }
        }
        let queued = Queued {
            header: object.header,
            payload: object.payload,
            seq,
            deadline,
            arrival: object.arrival,
        };
        self.queued_bytes += queued.len();
        s.queue.push_back(queued);
        if too_old {
            self.expire(key, DropReason::CaptureAge, seq);
            return Ok(());
        }
        if direct && !s.datagram && !s.blocked && !s.held && s.rest.is_none() && s.queue.len() == 1
        {
            self.direct = Some(key);
            self.direct_credit = 0;
            return Ok(());
        }
        if let Some((d, _)) = deadline {
            self.push_deadline(d, seq, key);
        }
        if mode == Mode::Fifo {
            self.fifo.push_back((key, seq));
        }
        self.settle(key);
        Ok(())
    }

    /// No more objects will be pushed: once everything is written, `poll_send` returns
    /// `Finish`.
    pub fn finish_stream(&mut self, key: StreamKey) -> Result<(), Error> {
        self.undirect();
        let Some(s) = self.streams.get_mut(&key) else {
            self.gone.remove(&key);
            return Err(Error::UnknownStream(key));
        };
        s.finishing = true;
        if self.config.mode == Mode::Fifo && s.queue.is_empty() && !s.header.is_empty() {
            self.fifo.push_back((key, HEADER_ONLY));
        }
        self.settle(key);
        Ok(())
    }

    /// Abandons a stream (UNSUBSCRIBE, STOP_SENDING): its queued objects are dropped as
    /// `Cancelled`, and `poll_send` returns `Reset` with CANCELLED if any byte was written,
    /// else `Abandon`.
    pub fn cancel_stream(&mut self, key: StreamKey) -> Result<(), Error> {
        self.reset_stream(key, reset_code::CANCELLED)
    }

    /// Abandons a stream as [`Scheduler::cancel_stream`] does, but `poll_send`'s `Reset`
    /// carries `code`: a relay passing on how its upstream stream ended (an upstream reset's
    /// own code, SESSION_CLOSED when the upstream session died mid-subgroup).
    pub fn reset_stream(&mut self, key: StreamKey, code: u32) -> Result<(), Error> {
        self.undirect();
        if !self.streams.contains_key(&key) {
            self.gone.remove(&key);
            return Err(Error::UnknownStream(key));
        }
        self.kill(key, DropReason::Cancelled, None, code);
        Ok(())
    }

    /// Forgets a track (its request ended): cancels its open streams and drops what the
    /// scheduler remembers of it (newest group, abandoned subgroups).
    pub fn remove_track(&mut self, track: TrackKey) {
        self.undirect();
        let keys: Vec<StreamKey> = self
            .tracks
            .get(&track)
            .map(|t| t.streams.iter().copied().collect())
            .unwrap_or_default();
        for key in keys {
            self.kill(key, DropReason::Cancelled, None, reset_code::CANCELLED);
        }
        self.tracks.remove(&track);
        self.flows.retain(|(t, _), _| *t != track);
    }

    /// Applies a new subscriber priority (REQUEST_UPDATE) to every open stream of a track,
    /// including objects already queued. Later writes carry the new quinn priority.
    pub fn set_subscriber_priority(&mut self, track: TrackKey, priority: u8) {
        self.undirect();
        let keys: Vec<StreamKey> = self
            .tracks
            .get(&track)
            .map(|t| t.streams.iter().copied().collect())
            .unwrap_or_default();
        for key in keys {
            self.unready(key);
            let fifo = self.config.mode == Mode::Fifo;
            if let Some(s) = self.streams.get_mut(&key) {
                s.order = s.order.with_subscriber_priority(priority);
                s.quinn_priority = if fifo { 0 } else { quinn_priority(&s.order) };
            }
            self.settle(key);
        }
    }

    /// The driver could not write all of the last chunk of `key`: `rest` is what the
    /// transport did not take (possibly all of it). The scheduler writes it first once
    /// [`handle_unblocked`](Self::handle_unblocked) is called, and meanwhile sends other
    /// streams.
    pub fn handle_blocked(&mut self, key: StreamKey, rest: Bytes) -> Result<(), Error> {
        self.undirect();
        let s = self.streams.get_mut(&key).ok_or(Error::UnknownStream(key))?;
        if !rest.is_empty() && !s.datagram {
            if self.config.mode == Mode::Fifo && s.rest.is_none() {
                self.fifo.push_front((key, REST));
            }
            s.rest = Some(match s.rest.take() {
                None => rest,
                Some(old) => {
                    let mut joined = BytesMut::with_capacity(rest.len() + old.len());
                    joined.extend_from_slice(&rest);
                    joined.extend_from_slice(&old);
                    joined.freeze()
                }
            });
        }
        s.blocked = true;
        self.settle(key);
        Ok(())
    }

    /// The stream can be written again (flow control credit, or a stream could be opened).
    pub fn handle_unblocked(&mut self, key: StreamKey) -> Result<(), Error> {
        self.undirect();
        let s = self.streams.get_mut(&key).ok_or(Error::UnknownStream(key))?;
        s.blocked = false;
        self.settle(key);
        Ok(())
    }

    /// Ends every stream holding an object whose deadline is at or before `now`. Nothing
    /// happens if nothing is due; `poll_send` calls it itself.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.release_holds(now);
        if let Some(key) = self.direct {
            let own = self.streams.get(&key).and_then(|s| s.queue.front()?.deadline);
            if self.heap_due(now) || own.is_some_and(|(d, _)| d <= now) {
                self.undirect();
            }
        }
        self.expire_due(now);
    }

    /// Whether the deadline heap holds an entry due at `now` (possibly of an object no
    /// longer queued).
    fn heap_due(&self, now: Instant) -> bool {
        self.deadlines.peek().is_some_and(|Reverse((d, _, _))| *d <= now)
    }

    /// Ends every stream holding an object whose deadline in the heap is at or before
    /// `now`.
    fn expire_due(&mut self, now: Instant) {
        while let Some(&Reverse((deadline, seq, key))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            if let Some(reason) = self.queued_deadline(key, seq) {
                self.expire(key, reason, seq);
            }
        }
    }

    /// When an object next expires or a held stream may go: the driver wakes up then (or
    /// earlier).
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.undirect();
        let streams = &self.streams;
        self.holds.retain(|(_, key)| streams.get(key).is_some_and(|s| s.held));
        let hold = self.holds.iter().map(|(at, _)| *at).min();
        while let Some(&Reverse((deadline, seq, key))) = self.deadlines.peek() {
            if self.queued_deadline(key, seq).is_some() {
                return Some(hold.map_or(deadline, |h| h.min(deadline)));
            }
            self.deadlines.pop();
        }
        hold
    }

    /// Puts the streams whose hold ended by `now` back in the schedule.
    fn release_holds(&mut self, now: Instant) {
        if self.holds.is_empty() {
            return;
        }
        let mut i = 0;
        while let Some(&(at, key)) = self.holds.get(i) {
            if at > now {
                i += 1;
                continue;
            }
            self.holds.swap_remove(i);
            if let Some(s) = self.streams.get_mut(&key) {
                s.held = false;
                self.settle(key);
            }
        }
    }

    /// Carries out `check_start`'s verdict on `key` unless it is `Check::Go` or
    /// `Check::Probe`: the head object (or the whole stream) dropped, or the stream held.
    /// True if it was neither.
    fn refuse(&mut self, now: Instant, key: StreamKey, check: Check) -> bool {
        let (reason, seq) = match check {
            Check::Go => return false,
            Check::Probe(level) => {
                if let Some(s) = self.streams.get_mut(&key) {
                    s.probe = true;
                }
                if let Some(p) = self.probes.iter_mut().find(|p| p.level == level) {
                    p.stream = Some(key);
                }
                return false;
            }
            Check::Wait(until) => {
                self.hold(key, until);
                return true;
            }
            Check::Hold(reason, seq, level) => {
                if !self.probes.iter().any(|p| p.level == level) {
                    self.probes.push(Probe {
                        level,
                        gap: PROBE_GAP,
                        quiet_since: now,
                        stream: None,
                        passed: None,
                    });
                }
                (reason, Some(seq))
            }
            Check::Drop(reason, seq) => (reason, seq),
        };
        if self.direct == Some(key) {
            self.direct = None;
        }
        match seq {
            Some(seq) => self.expire(key, reason, seq),
            None => self.kill(key, reason, None, reason.reset_code()),
        }
        true
    }

    /// Takes `key` out of the schedule until `until` (see `Check::Wait`).
    fn hold(&mut self, key: StreamKey, until: Instant) {
        if self.direct == Some(key) {
            self.undirect();
        }
        self.unready(key);
        if let Some(s) = self.streams.get_mut(&key) {
            s.held = true;
            self.holds.push((until, key));
        }
    }

    /// The next thing to do, or `None` when there is nothing the budget allows. Every
    /// `Write` adds its length to `budget.buffered`, so a driver calls this until `None`
    /// with the same budget. `Finish`, `Reset` and `Abandon` need no budget.
    pub fn poll_send(&mut self, now: Instant, budget: &mut SendBudget) -> Option<Action> {
        if self.config.tier_share {
            self.seen = Some((now, budget.send_rate_bps.max(self.delivery_bps)));
        }
        if self.direct.is_some()
            && (!self.actions.is_empty() || !self.to_finish.is_empty() || self.heap_due(now))
        {
            // Something comes before it, or may: the full schedule decides.
            self.undirect();
        }
        self.release_holds(now);
        self.expire_due(now);
        loop {
            if let Some(action) = self.actions.pop_front() {
                return Some(action);
            }
            if let Some(action) = self.next_finish(now) {
                return Some(action);
            }
            let allowance = budget.allowance(&self.config);
            if allowance == 0 && self.config.mode == Mode::Fifo {
                return None;
            }
            let step = match (self.config.mode, self.direct) {
                (Mode::Priority, Some(key)) => self.next_direct(now, key, budget),
                (Mode::Priority, None) => self.next_priority(now, budget),
                (Mode::Fifo, _) => self.next_fifo(allowance, budget),
            };
            match step {
                Step::Write(action, len) => {
                    budget.buffered = budget.buffered.saturating_add(len);
                    self.stats.written_bytes += len;
                    return Some(action);
                }
                Step::Again => continue,
                Step::Idle => return None,
            }
        }
    }

    /// Entries of objects already sent stay in the heap until their deadline; with long
    /// timeouts that could be many. When the heap doubles past its last swept size, it
    /// keeps only the objects still queued (amortized constant time per object).
    fn push_deadline(&mut self, deadline: Instant, seq: u64, key: StreamKey) {
        self.deadlines.push(Reverse((deadline, seq, key)));
        if self.deadlines.len() >= self.sweep_at {
            let mut heap = std::mem::take(&mut self.deadlines);
            heap.retain(|Reverse((_, seq, key))| self.queued_deadline(*key, *seq).is_some());
            self.sweep_at = (2 * heap.len()).max(SWEEP_MIN);
            self.deadlines = heap;
        }
    }

    /// `Finish` for the next stream whose bytes were all written, if any.
    fn next_finish(&mut self, now: Instant) -> Option<Action> {
        while let Some(key) = self.to_finish.pop_front() {
            let Some(s) = self.streams.get_mut(&key) else {
                continue;
            };
            s.finish_queued = false;
            if s.finishing && !s.has_data() {
                let whole = (self.config.tier_share && s.class.is_upper_tier() && s.started)
                    .then(|| level_of(&s.order));
                if s.probe {
                    self.end_probe(now, key, None);
                }
                if let Some(level) = whole {
                    self.note_carried(now, level, true);
                }
                self.remove_stream(key);
                self.stats.finishes += 1;
                return Some(Action::Finish { key });
            }
        }
        None
    }

    /// The deadline reason of object `seq` if it is still queued on `key`.
    fn queued_deadline(&self, key: StreamKey, seq: u64) -> Option<DropReason> {
        let s = self.streams.get(&key)?;
        let (first, last) = (s.queue.front()?.seq, s.queue.back()?.seq);
        if seq < first || seq > last {
            return None;
        }
        let i = s.queue.binary_search_by_key(&seq, |q| q.seq).ok()?;
        s.queue[i].deadline.map(|(_, r)| r)
    }

    fn next_priority(&mut self, now: Instant, budget: &SendBudget) -> Step {
        let quantum = self.config.quantum as i64;
        loop {
            let Some(level) = self.active.first() else {
                return Step::Idle;
            };
            let Some(&track) = self.levels.get(&level).and_then(|r| r.front()) else {
                self.active.remove(level);
                continue;
            };
            let id = (track, level);
            let Some(flow) = self.flows.get_mut(&id).filter(|f| !f.ready.is_empty()) else {
                if let Some(ring) = self.levels.get_mut(&level) {
                    ring.pop_front();
                }
                continue;
            };
            if flow.credit <= 0 {
                flow.credit += quantum;
                if let Some(ring) = self.levels.get_mut(&level) {
                    ring.rotate_left(1);
                }
                continue;
            }
            let (_, key) = flow.ready[0];
            let check = self.check_start(now, key, level, budget);
            if self.refuse(now, key, check) {
                return Step::Again;
            }
            let allowance = self.allowance_at(level, budget);
            if allowance == 0 {
                return Step::Idle;
            }
            let Some((action, len)) = self.take_chunk(key, allowance, budget) else {
                return Step::Idle;
            };
            if let Some(flow) = self.flows.get_mut(&id) {
                flow.credit -= len as i64;
            }
            self.count_write(now, level, len);
            self.settle(key);
            return Step::Write(action, len);
        }
    }

    /// What `level` may hand QUIC now. The budget bounds what waits in QUIC ahead of this
    /// level: less important bytes there do not hold it back (quinn sends this level first),
    /// so they leave room. All levels together stay within twice the budget, so the buffer
    /// stays small (when QUIC's unsent bytes per level are only estimated from shares of
    /// recent writes; known per level, each level's allowance already counts everything
    /// QUIC sends before it, and more important bytes may always join).
    fn allowance_at(&self, level: Level, budget: &SendBudget) -> u64 {
        let ahead = SendBudget { buffered: self.buffered_ahead(level, budget.buffered), ..*budget };
        let cap = if self.unsent_levels.is_some() {
            u64::MAX
        } else {
            (budget.cwnd_available.saturating_add(self.config.get_headroom(budget.cwnd)))
                .saturating_mul(2)
                .saturating_sub(budget.buffered)
        };
        ahead.allowance(&self.config).min(cap)
    }

    /// `next_priority` for the `direct` stream, the one stream with data: the same turns,
    /// checks, allowance and counts, without the ready sets. It leaves the direct path
    /// when the object is written, dropped, or must wait for budget.
    fn next_direct(&mut self, now: Instant, key: StreamKey, budget: &SendBudget) -> Step {
        let Some(s) = self.streams.get(&key) else {
            self.direct = None;
            return Step::Again;
        };
        let level = level_of(&s.order);
        // What `expire_due` would have found had the deadline been in the heap.
        if let Some(head) = s.queue.front()
            && let Some((deadline, reason)) = head.deadline
            && deadline <= now
        {
            let seq = head.seq;
            self.direct = None;
            self.expire(key, reason, seq);
            return Step::Again;
        }
        // The flow is alone in the only active level: its turns come one after another.
        while self.direct_credit <= 0 {
            self.direct_credit += self.config.quantum as i64;
        }
        let check = self.check_start(now, key, level, budget);
        if self.refuse(now, key, check) {
            return Step::Again;
        }
        let allowance = self.allowance_at(level, budget);
        let taken = if allowance == 0 { None } else { self.take_chunk(key, allowance, budget) };
        let Some((action, len)) = taken else {
            // It waits for budget: from here on the full schedule keeps it.
            self.undirect();
            return Step::Idle;
        };
        self.direct_credit -= len as i64;
        self.count_write(now, level, len);
        if self.streams.get(&key).is_none_or(|s| !s.has_data()) {
            self.direct = None;
            // A finishing stream whose bytes are all written queues its `Finish`.
            self.settle(key);
        }
        Step::Write(action, len)
    }

    /// Puts the `direct` stream where the full schedule expects it: its object's deadline
    /// in the heap, the stream in its flow's ready set with the flow's credit.
    fn undirect(&mut self) {
        let Some(key) = self.direct.take() else { return };
        let Some(s) = self.streams.get(&key) else { return };
        let due = s.queue.front().and_then(|q| q.deadline.map(|(d, _)| (d, q.seq)));
        let id = (s.track, level_of(&s.order));
        if let Some((deadline, seq)) = due {
            self.push_deadline(deadline, seq, key);
        }
        self.settle(key);
        if let Some(flow) = self.flows.get_mut(&id) {
            flow.credit = self.direct_credit;
        }
    }

    /// Counts `len` bytes written at `level`: in QUIC's unsent bytes per level when the
    /// driver gave them, else in the shares of recent writes (which are read only then);
    /// in the rates per level only when the upper tiers' share reads them.
    fn count_write(&mut self, now: Instant, level: Level, len: u64) {
        if self.config.tier_share {
            self.level_rates.add(now, level, len);
            if let Some(p) = self.probes.iter_mut().find(|p| p.level == level) {
                p.quiet_since = now;
            }
        }
        if let Some(levels) = self.unsent_levels.as_mut() {
            add_at_level(levels, level, len);
            return;
        }
        *self.written_by_level.entry(level).or_default() += len;
        self.written_total += len;
        if self.written_total > WRITTEN_DECAY_AT {
            self.written_by_level.values_mut().for_each(|b| *b /= 2);
            self.written_total /= 2;
        }
    }

    /// Of the `buffered` bytes QUIC holds unsent, about how many an object at `level` waits
    /// behind: quinn sends the streams of more important levels first, so only what waits at
    /// this level and those above it counts (by the driver's estimate per level if it gave
    /// one, else the share of recent writes).
    fn buffered_ahead(&self, level: Level, buffered: u64) -> u64 {
        if let Some(levels) = &self.unsent_levels {
            return levels.iter().take_while(|(l, _)| *l <= level).map(|(_, b)| b).sum();
        }
        if self.written_total == 0 {
            return buffered;
        }
        let ahead: u64 =
            self.written_by_level.iter().filter(|(l, _)| **l <= level).map(|(_, b)| b).sum();
        (buffered as u128 * ahead as u128 / self.written_total as u128) as u64
    }

    fn next_fifo(&mut self, allowance: u64, budget: &SendBudget) -> Step {
        let mut i = 0;
        while let Some(&(key, seq)) = self.fifo.get(i) {
            let Some(s) = self.streams.get(&key) else {
                self.fifo.remove(i);
                continue;
            };
            let current = if seq == HEADER_ONLY {
                !s.header.is_empty()
            } else if seq == REST {
                s.rest.is_some()
            } else {
                match s.queue.front() {
                    Some(front) if front.seq == seq => true,
                    Some(front) if front.seq < seq => {
                        // An earlier object of this stream is still ahead (held back).
                        i += 1;
                        continue;
                    }
                    _ => false,
                }
            };
            if !current {
                self.fifo.remove(i);
                continue;
            }
            if s.blocked {
                i += 1;
                continue;
            }
            let Some((action, len)) = self.take_chunk(key, allowance, budget) else {
                return Step::Idle;
            };
            let done = match self.streams.get(&key) {
                None => true,
                Some(s) if seq == HEADER_ONLY => s.header.is_empty(),
                Some(s) if seq == REST => s.rest.is_none(),
                Some(s) => s.queue.front().is_none_or(|f| f.seq != seq),
            };
            if done {
                self.fifo.remove(i);
            }
            self.settle(key);
            return Step::Write(action, len);
        }
        Step::Idle
    }

    /// Whether the next object of `key` must not be started, and why.
    fn check_start(
        &self,
        now: Instant,
        key: StreamKey,
        level: Level,
        budget: &SendBudget,
    ) -> Check {
        let Some(s) = self.streams.get(&key) else { return Check::Go };
        if s.rest.is_some() || s.offset > 0 {
            return Check::Go;
        }
        let Some(head) = s.queue.front() else { return Check::Go };
        let mut probe = None;
        if let Some((deadline, reason)) = head.deadline {
            if now >= deadline {
                return Check::Drop(reason, Some(head.seq));
            }
            let pending = head.len() + s.header.len() as u64;
            // Audio does not wait behind video QUIC already holds: at a 600 ms round trip
            // the window holds more video than audio's 400 ms deadline allows to send.
            let ahead = self.buffered_ahead(level, budget.buffered);
            let upper = s.class.is_upper_tier();
            let t = if upper && self.config.tier_share {
                // An upper tier gets what the levels above leave of the path (see `rate`).
                let above =
                    level.checked_sub(1).map_or(0, |l| self.buffered_ahead(l, budget.buffered));
                let path = budget.send_rate_bps.max(self.delivery_bps);
                let taken = self.level_rates.above_bps(now, level);
                // A level offered more than its share carries falls ever further behind:
                // its next object is not started, so its group goes (see `OfferedRates`).
                // Until its rate shows, a tier that joins levels already measured starts on
                // its key frame's check below (up cautiously, one tier at a time). One that
                // starts while a more important upper tier is unmeasured too (a new session,
                // whose ladder starts at one group boundary, where the window per round trip
                // of slow start would pass every key frame) is checked at the rates of its
                // and their first quarter second (`rate::HOLD_SPAN`), and its group, not yet
                // started, waits out of the schedule for them if its key frame can (see
                // `Check::Wait`) rather than go: where the tier fits (`step`'s 3 Mbit/s) the
                // whole group was lost, a second of the top tier on every new session.
                let share = path.saturating_sub(taken);
                let fits = |offered: u64| {
                    rate::keeps_up(offered, share, deadline.saturating_duration_since(now))
                };
                let mut wait = None;
                let keeps_up = match self.offered.bps(now, level) {
                    Some(offered) => fits(offered),
                    None => match self.offered.hold_until(level) {
                        None => true,
                        Some(until) if until <= now => {
                            self.offered.bps_over(now, level, rate::HOLD_SPAN).is_some_and(fits)
                        }
                        // Unless what it and the levels above still in their first window
                        // were offered so far already fits what the other levels above
                        // leave of the path, with no slack at all, read over so short a span
                        // that the rest of the hold can only lower it (a loopback path: the
                        // hold cost the key frame and the frames behind it a quarter second,
                        // for a check that could only pass). What those levels were written
                        // at is in their reading already, not taken from the path again.
                        Some(until) => {
                            let others = self
                                .level_rates
                                .bps_where(now, |l| l < level && !self.offered.in_first_window(l));
                            let starts =
                                self.offered.early_bps(now, level) <= path.saturating_sub(others);
                            if !starts {
                                wait = (!s.started && until < deadline).then_some(until);
                            }
                            starts
                        }
                    },
                };
                // A tier cut for lateness while offered more than its share starts no new
                // group until the path reads clearly more (see `FAILED_HOLD`).
                let held = !s.started
                    && self.failed.iter().any(|(l, at, failed_path)| {
                        *l == level
                            && now.saturating_duration_since(*at) < FAILED_HOLD
                            && path < failed_path.saturating_add(failed_path / 4)
                    });
                if path > 0
                    && !keeps_up
                    && !held
                    && let Some(until) = wait
                {
                    return Check::Wait(until);
                }
                if path > 0 && (held || !keeps_up) && !s.probe {
                    // Unless too little else is sent to show the path's rate (see `Probe`).
                    if !self.probe_due(now, level, taken, keeps_up) || s.started {
                        return Check::Hold(reason, head.seq, level);
                    }
                    probe = Some(level);
                }
                rate::time_to_send(path, taken, ahead, above, pending)
            } else {
                SendBudget { buffered: ahead, ..*budget }.time_to_send(pending)
            };
            if let Some(t) = t
                && now.checked_add(t).is_none_or(|eta| eta > deadline)
            {
                return Check::Drop(reason, Some(head.seq));
            }
        }
        if s.drop_stale {
            let newest = self.tracks.get(&s.track).and_then(|t| t.newest_started);
            if newest.is_some_and(|n| n > s.group)
                && now.saturating_duration_since(head.arrival) >= STALE_GRACE
            {
                // A datagram goes alone; a subgroup goes with the rest of its stream.
                return Check::Drop(DropReason::Stale, s.datagram.then_some(head.seq));
            }
        }
        probe.map_or(Check::Go, Check::Probe)
    }

    /// Whether a group of the upper tier at `level`, held back, is to start as a probe
    /// (see `Probe`): either the link carried the tier lately and the path's reading now
    /// `keeps_up` with what it is offered (only `FAILED_HOLD` holds it), or no more important
    /// upper tier is offered and the levels above it were written at under a quarter of what
    /// it is offered; and either the last probe was written whole or the tier has written
    /// nothing for its probe's gap ([`PROBE_GAP`] if carried lately) with no probe under way.
    fn probe_due(&self, now: Instant, level: Level, taken_bps: u64, keeps_up: bool) -> bool {
        let Some(p) = self.probes.iter().find(|p| p.level == level) else {
            return false;
        };
        let carried = keeps_up && self.carried_lately(now, level);
        if !carried
            && (self.offered.bps(now, level).is_none_or(|o| taken_bps.saturating_mul(4) >= o)
                || self.offered.any_above(now, level))
        {
            return false;
        }
        match p.stream {
            Some(key) => self.streams.get(&key).is_none_or(|s| !s.has_data()),
            None => {
                let gap = if carried { PROBE_GAP } else { p.gap };
                p.passed.is_some_and(|at| now.saturating_duration_since(at) < PROBE_GAP)
                    || now.saturating_duration_since(p.quiet_since) >= gap
            }
        }
    }

    /// Whether the link carried the upper tier at `level` lately: [`CARRIED_RUN`] groups of
    /// it in a row written whole, the last less than [`CARRIED_MEMORY`] before `now` (see
    /// `Probe`).
    fn carried_lately(&self, now: Instant, level: Level) -> bool {
        self.carried.iter().any(|&(l, _, at)| {
            l == level && at.is_some_and(|at| now.saturating_duration_since(at) < CARRIED_MEMORY)
        })
    }

    /// A group of the upper tier at `level` was written whole (`whole`) or cut for lateness,
    /// at `now`: the run of whole groups that tells whether the link carries the tier.
    fn note_carried(&mut self, now: Instant, level: Level, whole: bool) {
        let i = match self.carried.iter().position(|(l, _, _)| *l == level) {
            Some(i) => i,
            None => {
                self.carried.push((level, 0, None));
                self.carried.len() - 1
            }
        };
        let (_, run, at) = &mut self.carried[i];
        if whole {
            *run = run.saturating_add(1);
            if *run >= CARRIED_RUN {
                *at = Some(now);
            }
        } else {
            *run = 0;
        }
    }

    /// A probe's stream ended at `now`, finished (`None`) or dropped for `reason` (see
    /// `Probe`). Cut for lateness, the next probe of its level waits twice as long;
    /// finished, or made stale by a newer group that started, it passed.
    fn end_probe(&mut self, now: Instant, key: StreamKey, reason: Option<DropReason>) {
        let Some(p) = self.probes.iter_mut().find(|p| p.stream == Some(key)) else {
            return;
        };
        p.stream = None;
        match reason {
            None | Some(DropReason::Stale) => {
                p.passed = Some(now);
                p.gap = PROBE_GAP;
                let level = p.level;
                self.failed.retain(|(l, _, _)| *l != level);
            }
            Some(DropReason::DeliveryTimeout | DropReason::CaptureAge) => {
                p.passed = None;
                p.gap = (p.gap * 2).min(PROBE_GAP_MAX);
            }
            Some(DropReason::StreamReset | DropReason::Cancelled) => p.passed = None,
        }
    }

    /// Takes the next chunk of `key`: handed-back bytes, then the stream header, then the
    /// head object. `None` if the allowance is below one packet and the piece is larger.
    fn take_chunk(
        &mut self,
        key: StreamKey,
        allowance: u64,
        budget: &SendBudget,
    ) -> Option<(Action, u64)> {
        // Never more than the headroom, or an empty transport could not unblock it.
        let min_write =
            MIN_WRITE.min(self.config.quantum).min(self.config.get_headroom(budget.cwnd)).max(1);
        let quantum = self.config.quantum;
        let fit = |remaining: usize| -> Option<usize> {
            let remaining = remaining as u64;
            let n = remaining.min(allowance).min(quantum);
            (n == remaining || n >= min_write).then_some(n as usize)
        };
        let s = self.streams.get_mut(&key)?;
        if s.datagram {
            let len = s.queue.front()?.len();
            if len > allowance {
                return None;
            }
            let head = s.queue.pop_front()?;
            let datagram = if head.header.is_empty() {
                head.payload
            } else {
                let mut joined = BytesMut::with_capacity(len as usize);
                joined.extend_from_slice(&head.header);
                joined.extend_from_slice(&head.payload);
                joined.freeze()
            };
            self.queued_bytes -= len;
            self.stats.sent.entry(s.class).or_default().add(len);
            Self::mark_started(&mut self.tracks, s);
            return Some((Action::Datagram { key, datagram }, len));
        }
        let write = |chunk: Bytes, s: &Stream| {
            let len = chunk.len() as u64;
            (Action::Write { key, chunk, quinn_priority: s.quinn_priority }, len)
        };
        if let Some(rest) = s.rest.as_mut() {
            let n = fit(rest.len())?;
            let chunk =
                if n == rest.len() { s.rest.take().unwrap_or_default() } else { rest.split_to(n) };
            return Some(write(chunk, s));
        }
        // Zero-length objects have nothing to write.
        while s.queue.front().is_some_and(|q| q.len() == 0) {
            s.queue.pop_front();
            self.stats.sent.entry(s.class).or_default().add(0);
        }
        if !s.header.is_empty() {
            let n = fit(s.header.len())?;
            let chunk = s.header.split_to(n);
            Self::mark_started(&mut self.tracks, s);
            return Some(write(chunk, s));
        }
        let head = s.queue.front()?;
        let header_len = head.header.len() as u64;
        let (part, at) = if s.offset < header_len {
            (&head.header, s.offset)
        } else {
            (&head.payload, s.offset - header_len)
        };
        let at = at as usize;
        let n = fit(part.len() - at)?;
        let chunk = part.slice(at..at + n);
        let total = head.len();
        s.offset += n as u64;
        self.queued_bytes -= n as u64;
        Self::mark_started(&mut self.tracks, s);
        if s.offset == total {
            s.queue.pop_front();
            s.offset = 0;
            self.stats.sent.entry(s.class).or_default().add(total);
        }
        Some(write(chunk, s))
    }

    fn mark_started(tracks: &mut Map<TrackKey, Track>, s: &mut Stream) {
        if s.started {
            return;
        }
        s.started = true;
        if let Some(t) = tracks.get_mut(&s.track)
            && t.newest_started.is_none_or(|n| s.group > n)
        {
            t.newest_started = Some(s.group);
        }
    }

    /// Brings a stream's place in the schedule up to date after any change, and finishes
    /// it when everything was written.
    fn settle(&mut self, key: StreamKey) {
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        if s.finishing && !s.has_data() && !s.finish_queued {
            // Not ended here: until the next poll the driver may still hand back part of
            // the last chunk (`handle_blocked`).
            s.finish_queued = true;
            self.to_finish.push_back(key);
        }
        if self.config.mode == Mode::Fifo {
            return;
        }
        let want = s.has_data() && !s.blocked && !s.held;
        if want && !s.ready {
            self.make_ready(key);
        } else if !want && s.ready {
            self.unready(key);
        }
    }

    fn make_ready(&mut self, key: StreamKey) {
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        s.ready = true;
        self.ready_streams += 1;
        let level = level_of(&s.order);
        let flow = self.flows.entry((s.track, level)).or_default();
        if flow.ready.is_empty() {
            self.levels.entry(level).or_default().push_back(s.track);
            self.active.insert(level);
        }
        let entry = (s.order, key);
        let at = flow.ready.binary_search(&entry).unwrap_or_else(|i| i);
        flow.ready.insert(at, entry);
    }

    fn unready(&mut self, key: StreamKey) {
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        if !s.ready {
            return;
        }
        s.ready = false;
        self.ready_streams -= 1;
        let level = level_of(&s.order);
        let id = (s.track, level);
        let Some(flow) = self.flows.get_mut(&id) else {
            return;
        };
        if let Ok(at) = flow.ready.binary_search(&(s.order, key)) {
            flow.ready.remove(at);
        }
        if flow.ready.is_empty() {
            // An empty flow starts its next turn afresh (deficit round robin).
            flow.credit = 0;
            if let Some(ring) = self.levels.get_mut(&level) {
                ring.retain(|t| *t != s.track);
                if ring.is_empty() {
                    self.active.remove(level);
                }
            }
        }
    }

    fn remove_stream(&mut self, key: StreamKey) -> Option<Stream> {
        self.unready(key);
        let s = self.streams.remove(&key)?;
        if let Some(t) = self.tracks.get_mut(&s.track) {
            t.streams.remove(&key);
        }
        Some(s)
    }

    /// Drops object `seq` of `key` for `reason`: alone on a datagram lane, with the rest of
    /// its stream on a subgroup stream.
    fn expire(&mut self, key: StreamKey, reason: DropReason, seq: u64) {
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        if !s.datagram {
            self.kill(key, reason, Some(seq), reason.reset_code());
            return;
        }
        let Ok(i) = s.queue.binary_search_by_key(&seq, |q| q.seq) else {
            return;
        };
        if let Some(q) = s.queue.remove(i) {
            self.queued_bytes -= q.len();
            self.stats.dropped.entry((s.class, reason)).or_default().add(q.len());
        }
        self.settle(key);
    }

    /// Ends a stream early, with `code` on its RESET_STREAM if it was started. Object
    /// `trigger` (or every object, if `None`) is counted under `reason`, the others as
    /// `StreamReset`.
    fn kill(&mut self, key: StreamKey, reason: DropReason, trigger: Option<u64>, code: u32) {
        let Some(s) = self.remove_stream(key) else {
            return;
        };
        let mut offset = s.offset;
        for q in &s.queue {
            let r =
                if trigger.is_none_or(|t| t == q.seq) { reason } else { DropReason::StreamReset };
            self.stats.dropped.entry((s.class, r)).or_default().add(q.len());
            self.queued_bytes -= q.len() - offset;
            offset = 0;
        }
        if s.probe
            && let Some((now, _)) = self.seen
        {
            self.end_probe(now, key, Some(reason));
        }
        if self.config.tier_share && s.class.is_upper_tier() {
            let level = level_of(&s.order);
            let late = matches!(reason, DropReason::DeliveryTimeout | DropReason::CaptureAge);
            if s.started
                && (late || reason == DropReason::Stale)
                && let Some((now, path)) = self.seen
            {
                if late {
                    self.note_carried(now, level, false);
                }
                let share = path.saturating_sub(self.level_rates.above_bps(now, level));
                // Clearly more (half as much again): a tier that fits and loses a group to a
                // burst of losses is not held.
                if self.offered.bps(now, level).is_some_and(|o| o > share.saturating_add(share / 2))
                {
                    self.failed.retain(|(l, _, _)| *l != level);
                    self.failed.push((level, now, path));
                }
            }
            if !s.finishing && reason != DropReason::Cancelled {
                self.gone.insert(key, level);
                self.gone_order.push_back(key);
                while self.gone_order.len() > GONE_MEMORY {
                    if let Some(old) = self.gone_order.pop_front() {
                        self.gone.remove(&old);
                    }
                }
            }
        }
        if let Some(t) = self.tracks.get_mut(&s.track).filter(|_| !s.datagram) {
            t.abandoned.insert((s.group, s.subgroup));
            while t.abandoned.len() > ABANDONED_MEMORY {
                t.abandoned.pop_first();
            }
        }
        if s.started && !s.datagram {
            self.stats.resets += 1;
            self.actions.push_back(Action::Reset { key, code, reason });
        } else {
            self.stats.abandons += 1;
            self.actions.push_back(Action::Abandon { key, reason });
        }
    }
}
