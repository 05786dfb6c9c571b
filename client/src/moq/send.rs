//! The connection's one send path for data: every outgoing subgroup stream, fetch stream and
//! datagram goes through it.
//!
//! Writers ([`super::TrackWriter`], [`super::SubgroupStream`], [`super::FetchResponse`])
//! enqueue [`SendCmd`]s: a stream with its [`StreamSpec`] (priorities, group order,
//! delivery timeout), then its objects with their arrival time and capture age. The
//! connection's writer feeds them to the [`crate::scheduler::Scheduler`] (priority mode,
//! or FIFO as the baseline) and applies its actions to QUIC streams. Payloads reach QUIC as
//! the same `Bytes` the writer got: fan-out to many subscribers does not copy them.
//!
//! The hot path of a relay is one object to many subscribers, so per object the writer
//! does as little as it can. A command pushed while the writer is free is applied at once
//! by the pusher (the relay's fan-out loop): scheduled, and each chunk written straight
//! into its QUIC stream when flow control takes it at once (the common case), with no
//! wake-up of the writer task. The task runs only for what needs waiting: bytes the budget
//! held back (it looks again every [`TICK`]), deadlines, commands pushed while another
//! pass was running, and streams that had to wait. The connection's figures are read only
//! when the budget needs them. Only a stream that QUIC makes wait (flow control, the
//! peer's stream limit, or a WebTransport stream header) gets a task of its own, so that
//! it never holds up the others. A connection that never sends data (an idle subscriber)
//! never builds the scheduler.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use crate::scheduler::{
    Action, BuildKeyHasher, Object, Reading, Scheduler, SchedulerConfig, SendBudget, Stats,
    StreamKey, StreamSpec, TrackClass, TrackKey, Unsent, quinn_priority,
};
use crate::transport;

/// One action on the data plane of a connection.
#[derive(Debug)]
pub(crate) enum SendCmd {
    /// Open a stream (subgroup or fetch); its header is in the spec.
    Open {
        /// The send path's stream number.
        stream: u64,
        /// Track, class, priorities, group order, group, subgroup, delivery timeout and
        /// header: what the scheduler orders and drops by.
        spec: StreamSpec,
    },
    /// Queue one object (its head and its payload) on a stream.
    Write {
        /// The stream.
        stream: u64,
        /// Object ID delta, extensions and length (or a whole fetch item).
        head: Bytes,
        /// The payload, shared, never copied.
        payload: Bytes,
        /// When the object reached this endpoint.
        arrival: Instant,
        /// Its age since capture (LOC timestamp), if known.
        capture_age: Option<Duration>,
    },
    /// Finish a stream after what was queued.
    Finish {
        /// The stream.
        stream: u64,
    },
    /// Drop a stream: what was not sent is not sent; a stream already started is reset
    /// with `code`.
    Reset {
        /// The stream.
        stream: u64,
        /// The RESET_STREAM code (draft-16 §10.4.3).
        code: u32,
    },
    /// Send one datagram.
    Datagram {
        /// The encoded datagram.
        data: Bytes,
    },
    /// A new subscriber priority for every stream of a track, queued objects included
    /// (the subscriber's REQUEST_UPDATE).
    Priority {
        /// The track (a subscription's request ID).
        track: TrackKey,
        /// The new SUBSCRIBER_PRIORITY.
        priority: u8,
    },
}

/// Commands waiting for the writer task, and who is still there.
#[derive(Default)]
struct Queue {
    cmds: VecDeque<SendCmd>,
    /// Live [`SendPath`] handles; the writer ends once none is left and all is sent.
    senders: usize,
    /// The writer task has ended: pushes fail.
    receiver_gone: bool,
}

/// The queue behind a [`SendPath`]: a plain deque under a mutex rather than a channel,
/// because a channel allocates its first block of slots when it is made (kilobytes per
/// connection, paid by every idle subscriber) and the writer takes whole batches at once.
struct Shared {
    queue: Mutex<Queue>,
    /// Woken when the queue goes from empty to non-empty and the pusher could not apply it
    /// itself, when a pass left work for later, or when the last sender leaves.
    ready: Notify,
    next_stream: AtomicU64,
    /// The scheduler's counters as of its last drop, for [`super::Connection::send_stats`].
    stats: Arc<Mutex<Stats>>,
    /// The writer's state, built by the writer task at the first command (an idle
    /// connection never builds it) and taken out when the task ends. Whoever holds this
    /// lock applies the queued commands: the task, or a writer pushing a command when the
    /// lock is free (see [`SendPath::push`]). Lock order: this, then `queue`.
    writer: Mutex<Option<Box<Writer>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock leaves the deque itself intact.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_writer(&self) -> MutexGuard<'_, Option<Box<Writer>>> {
        self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves every queued command to the back of `out`; false once every sender is gone
    /// and nothing is left.
    fn drain(&self, out: &mut VecDeque<SendCmd>) -> bool {
        let mut q = self.lock();
        if q.cmds.is_empty() {
            return q.senders > 0;
        }
        if out.is_empty() {
            std::mem::swap(&mut q.cmds, out);
        } else {
            out.extend(q.cmds.drain(..));
        }
        true
    }

    /// Applies `cmd` here and now if the writer is built, no one else is applying commands
    /// and none waits in the queue (which keeps commands in order); else hands it back.
    /// Wakes the writer task if the pass left work for its timer.
    fn apply_now(&self, cmd: SendCmd) -> Result<(), SendCmd> {
        let mut guard = match self.writer.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Err(cmd),
        };
        let Some(w) = guard.as_mut() else { return Err(cmd) };
        // While the writer is built its task is alive (the task takes it out before it ends),
        // so the connection is not gone.
        if !self.lock().cmds.is_empty() {
            return Err(cmd);
        }
        w.apply(cmd);
        w.after_apply(&self.stats);
        let idle = w.idle();
        drop(guard);
        if !idle {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Applies the queued commands here and now, if the writer is built and no one else is
    /// applying commands: the writer task then need not wake up for them. False if the task
    /// must run (the writer is busy or not built yet, or the pass left bytes queued or a
    /// deadline to watch, which need the task's timer).
    fn apply_inline(&self) -> bool {
        let mut guard = match self.writer.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return false,
        };
        let Some(w) = guard.as_mut() else { return false };
        let mut inbox = std::mem::take(&mut w.inbox);
        self.drain(&mut inbox);
        w.pass(&mut inbox, &self.stats);
        w.inbox = inbox;
        w.idle()
    }
}

/// The handle writers use to enqueue data. Cheap to clone.
pub(crate) struct SendPath {
    shared: Arc<Shared>,
}

impl SendPath {
    /// A send path and the receiving end for its writer task ([`run`]).
    pub(crate) fn new(stats: Arc<Mutex<Stats>>) -> (Self, Receiver) {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue { senders: 1, ..Queue::default() }),
            ready: Notify::new(),
            next_stream: AtomicU64::new(0),
            stats,
            writer: Mutex::new(None),
        });
        (Self { shared: shared.clone() }, Receiver { shared })
    }

    /// A new stream number.
    pub(crate) fn allocate(&self) -> u64 {
        self.shared.next_stream.fetch_add(1, Ordering::Relaxed)
    }

    /// Enqueues a command; false if the connection is gone.
    pub(crate) fn push(&self, cmd: SendCmd) -> bool {
        // The common case on a relay (one object to many subscribers): the writer is free and
        // nothing waits in the queue, so the command is applied here without queueing it.
        let cmd = match self.shared.apply_now(cmd) {
            Ok(()) => return true,
            Err(cmd) => cmd,
        };
        let was_empty = {
            let mut q = self.shared.lock();
            if q.receiver_gone {
                return false;
            }
            let was_empty = q.cmds.is_empty();
            q.cmds.push_back(cmd);
            was_empty
        };
        // Whoever applies commands drains the whole queue, so only the first command of a
        // batch needs to see to it: applied here when the writer is free (the common case on
        // a relay: one object to many subscribers, each written straight into QUIC with no
        // wake-up of the writer task), else by the writer task.
        if was_empty && !self.shared.apply_inline() {
            self.shared.ready.notify_one();
        }
        true
    }
}

impl Clone for SendPath {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self { shared: self.shared.clone() }
    }
}

impl Drop for SendPath {
    fn drop(&mut self) {
        let last = {
            let mut q = self.shared.lock();
            q.senders -= 1;
            q.senders == 0
        };
        if last {
            self.shared.ready.notify_one();
        }
    }
}

impl fmt::Debug for SendPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendPath").finish_non_exhaustive()
    }
}

/// The writer task's end of a [`SendPath`].
pub(crate) struct Receiver {
    shared: Arc<Shared>,
}

impl Receiver {
    /// Moves every queued command to the back of `out` (which the caller keeps empty
    /// between calls, so the two deques just swap); false once every sender is gone and
    /// nothing is left.
    fn drain(&self, out: &mut VecDeque<SendCmd>) -> bool {
        self.shared.drain(out)
    }

    /// Waits until commands may be queued or the last sender has gone.
    async fn ready(&self) {
        self.shared.ready.notified().await;
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // The writer task ended or was aborted: its state goes with it (its streams are
        // dropped as before), and no pusher applies commands any more.
        let writer = self.shared.lock_writer().take();
        let dropped = {
            let mut q = self.shared.lock();
            q.receiver_gone = true;
            std::mem::take(&mut q.cmds)
        };
        drop(dropped);
        drop(writer);
    }
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

/// The scheduler's class of a track, from its publisher priority as tiermesh publishers
/// set it (catalog 0, audio 16, lowest video tier 32, each higher tier +16).
pub(crate) fn class_of(publisher_priority: u8) -> TrackClass {
    match publisher_priority {
        0 => TrackClass::Catalog,
        16 => TrackClass::Audio,
        p if p >= 32 && p % 16 == 0 => TrackClass::Video { tier: (p - 32) / 16 },
        _ => TrackClass::Other,
    }
}

/// While the scheduler holds queued bytes, how often it is offered the transport again
/// when no write completes first: short against a 20 ms audio frame, long enough not to
/// spin.
const TICK: Duration = Duration::from_millis(5);

/// How long the connection's figures (congestion window, bytes sent, send rate) are reused
/// while the scheduler keeps up. Reading them takes the connection's lock and copies its
/// statistics, once per object per subscriber on a relay if done at every wake-up. A reused
/// reading only errs on the safe side for the buffer: the bytes sent since are not counted,
/// so the buffer looks fuller than it is, and as soon as that holds anything back the
/// figures are read afresh. What a stale reading can overstate is the window after a loss,
/// for at most this long: a small fraction of a second against real links' round trips.
const STATS_MAX_AGE: Duration = Duration::from_millis(20);

/// How long a reading may be reused, past [`STATS_MAX_AGE`], while what QUIC may still hold
/// plus what the scheduler has queued is at most half the window it showed. A loss shrinks
/// quinn's window to no less than about half (NewReno halves it, CUBIC keeps 0.7), so on
/// such a reading the scheduler lets everything go, as it would on a fresh one; and the
/// moment anything is held back the figures are read afresh (see [`STATS_MAX_AGE`]). With
/// one object every 33 ms (30 fps video) the figures are then read every third object
/// instead of at each one: on a relay, once per object per subscriber less.
const STATS_CLEAR_MAX_AGE: Duration = Duration::from_millis(100);

/// Bytes a stream finished straight into QUIC must still hold unsent, by the estimate, to
/// be watched for a STOP_SENDING that would drop them (`watch_finished`, one task each):
/// about a packet. An audio frame's stream (one a 20 ms frame) is never watched. A stream
/// not watched is not mis-counted if the peer stops it after its FIN: its handle is already
/// dropped, and quinn resets a stopped stream only when the handle is dropped after the stop
/// (its `Drop` finishes, and resets on `Stopped`; a STOP_SENDING alone only records the
/// code), so the bytes left (under a packet) are still sent, and drain from the estimate as
/// sent. What the missing watcher costs is those bytes of link, once per such stream.
const WATCH_MIN: u64 = 1200;

enum StreamCmd {
    Write(Bytes),
    Finish,
    Reset(u32),
}

/// What a stream's task tells the writer.
enum Note {
    /// A chunk went into QUIC: the budget may allow more.
    Written,
    /// The stream (the send path's number) ended without a clean FIN after bytes were
    /// handed to it: the peer stopped it (perhaps after its FIN was handed over: a
    /// subscriber that unsubscribes stops the streams still arriving), or opening or
    /// writing it failed. Its handle, dropped after the stop, resets it (quinn does not on
    /// the STOP_SENDING alone), so QUIC sends no more of it and it leaves the unsent
    /// estimate ([`Unsent::handle_discard`]); else its tail would go on being sent and
    /// counted at that stream's priority and hold every later stream of that priority back
    /// (a tier switched away from under congestion and back to later got no budget).
    Dropped(u64),
}

/// Where the chunks of one QUIC stream go.
enum Out {
    /// Written here, straight into QUIC, while flow control takes every chunk at once
    /// (boxed: the stream handle is several hundred bytes, the map holds many).
    Direct(Box<transport::SendStream>),
    /// Handed to the stream's own task (it had to wait once; order is kept from then on).
    Task(mpsc::UnboundedSender<StreamCmd>),
    /// The stream could not be opened or a write failed (the peer stopped it, say): the
    /// rest of its chunks are dropped, never written to a new stream without its header.
    Failed,
}

/// The writer task: hands every command to the send scheduler and applies what it decides
/// (open, write, finish or reset streams; send datagrams) until every [`SendPath`] is
/// dropped.
///
/// The budget: the congestion window may take `cwnd` now (QUIC does not expose what is in
/// flight; taking the bytes sent in the last round trip as in flight held the base tier back
/// in the scheduler whenever CUBIC's window was full, where the stale-group rule then cut its
/// groups short), and QUIC holds unsent what [`Unsent`] estimates from the chunks handed to it and the
/// connection's counters (QUIC exposes neither figure): bytes sent less per-packet
/// overhead drain it in quinn's priority order, bytes of lost packets count as unsent until
/// resent, and a stream that ends without a clean FIN (reset, stopped by the peer, a failed
/// write) takes only its own unsent bytes with it, also when the peer stops it after its FIN
/// was handed to QUIC (its task watches it until it is read to the end: `Note::Dropped`).
pub(crate) async fn run(session: Arc<transport::Session>, rx: Receiver, config: SchedulerConfig) {
    // Nothing is built until the first command: the state below (and this future's size,
    // which every connection's task would carry) is for connections that send data.
    let mut first = VecDeque::new();
    loop {
        if !rx.drain(&mut first) {
            return;
        }
        if !first.is_empty() {
            break;
        }
        rx.ready().await;
    }
    Box::pin(drive(session, config, rx, first)).await;
}

/// The writer task once the writer is built: applies what pushers left to it, and wakes
/// for the scheduler's timers (queued bytes, deadlines) and for streams that had to wait.
async fn drive(
    session: Arc<transport::Session>,
    config: SchedulerConfig,
    rx: Receiver,
    first: VecDeque<SendCmd>,
) {
    let (written_tx, mut written_rx) = mpsc::unbounded_channel();
    let mut writer = Box::new(Writer::new(session, config, written_tx));
    // Streams that tasks saw end without a clean FIN, to take off the unsent estimate.
    let mut dropped: Vec<u64> = Vec::new();
    writer.inbox = first;
    *rx.shared.lock_writer() = Some(writer);
    let mut open = true;
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    loop {
        let wake = {
            let mut guard = rx.shared.lock_writer();
            let Some(w) = guard.as_mut() else { return };
            for stream in dropped.drain(..) {
                w.discard(stream);
            }
            let mut inbox = std::mem::take(&mut w.inbox);
            if open {
                open = rx.drain(&mut inbox);
            }
            w.pass(&mut inbox, &rx.shared.stats);
            w.inbox = inbox;
            if !open && w.scheduler.queued_bytes() == 0 {
                break;
            }
            while w.tasks.try_join_next().is_some() {}
            w.wake_at(Instant::now())
        };
        if let Some(at) = wake
            && armed != Some(at)
        {
            timer.as_mut().reset(at.into());
            armed = Some(at);
        }
        tokio::select! {
            _ = rx.ready(), if open => {}
            Some(note) = written_rx.recv() => {
                let mut note = Some(note);
                while let Some(n) = note {
                    if let Note::Dropped(stream) = n {
                        dropped.push(stream);
                    }
                    note = written_rx.try_recv().ok();
                }
            }
            _ = &mut timer, if wake.is_some() => {
                armed = None;
            }
        }
    }
    // The tasks that only watch finished streams for a STOP_SENDING (`watch_finished`) end
    // now: nobody reads their notes any more.
    drop(written_rx);
    let writer = rx.shared.lock_writer().take();
    if let Some(mut w) = writer {
        for (_, out) in w.streams.drain() {
            match out {
                Out::Direct(mut s) => {
                    let _ = s.finish();
                }
                Out::Task(tx) => {
                    let _ = tx.send(StreamCmd::Finish);
                }
                Out::Failed => {}
            }
        }
        while w.tasks.join_next().await.is_some() {}
    }
}

struct Writer {
    session: Arc<transport::Session>,
    /// The runtime the writer task runs on: streams that must wait get their task there,
    /// whichever thread applied the command.
    runtime: tokio::runtime::Handle,
    scheduler: Scheduler,
    streams: HashMap<u64, Out, BuildKeyHasher>,
    tasks: JoinSet<()>,
    written_tx: mpsc::UnboundedSender<Note>,
    /// Commands taken from the queue, applied in order (kept to reuse its buffer).
    inbox: VecDeque<SendCmd>,
    /// Objects dropped as of the last copy of the scheduler's counters.
    drops_shown: u64,
    /// What QUIC holds unsent, by the estimate.
    unsent: Unsent,
    stats: transport::Stats,
    stats_at: Instant,
    /// Consecutive chunks of one stream (an object's head and payload, say) collected
    /// during one pass over the scheduler's actions, written to QUIC in one call: one lock
    /// of the connection and one wake-up of its driver instead of one per chunk.
    batch: Vec<Bytes>,
    /// The stream and QUIC priority of `batch`.
    batch_stream: Option<(u64, i32)>,
    /// Fetch streams not ended yet: their FETCH_HEADER and QUIC priority, so that one the
    /// scheduler abandons before writing a byte is still opened and ended (see `act`).
    fetches: HashMap<u64, (Bytes, i32), BuildKeyHasher>,
}

impl Writer {
    fn new(
        session: Arc<transport::Session>,
        config: SchedulerConfig,
        written_tx: mpsc::UnboundedSender<Note>,
    ) -> Self {
        let stats = session.stats();
        let mut unsent = Unsent::new();
        unsent.handle_reading(Instant::now(), reading(&stats));
        // A loss-based controller's window already under-reads the path after each loss:
        // the upper tiers' share would hold back what the link can carry.
        let delay_based = session.delay_based();
        let mut scheduler = Scheduler::new(config.tier_share(delay_based));
        scheduler.handle_unsent(&unsent);
        Self {
            session,
            runtime: tokio::runtime::Handle::current(),
            scheduler,
            streams: HashMap::default(),
            tasks: JoinSet::new(),
            written_tx,
            inbox: VecDeque::new(),
            drops_shown: 0,
            unsent,
            stats,
            stats_at: Instant::now(),
            batch: Vec::new(),
            batch_stream: None,
            fetches: HashMap::default(),
        }
    }

    /// Applies `cmds` (leaving it empty) and hands QUIC what the scheduler allows.
    fn pass(&mut self, cmds: &mut VecDeque<SendCmd>, stats: &Mutex<Stats>) {
        for cmd in cmds.drain(..) {
            self.apply(cmd);
        }
        self.after_apply(stats);
    }

    /// Hands QUIC what the scheduler allows after commands were applied.
    fn after_apply(&mut self, stats: &Mutex<Stats>) {
        self.flush(Instant::now());
        // The counters are copied out only when something more was dropped: a few map
        // entries summed per pass, no copy while nothing is dropped.
        let drops: u64 = self.scheduler.stats().drops().map(|(_, _, n)| n.objects).sum();
        if drops != self.drops_shown {
            self.drops_shown = drops;
            *stats.lock().unwrap_or_else(|e| e.into_inner()) = self.scheduler.stats().clone();
        }
    }

    /// Nothing waits for a timer: no bytes queued, no deadline to watch.
    fn idle(&mut self) -> bool {
        self.scheduler.queued_bytes() == 0 && self.scheduler.poll_timeout().is_none()
    }

    /// When the writer task must look again without being woken: the scheduler's next
    /// deadline, and while bytes are queued, [`TICK`] from `now`.
    fn wake_at(&mut self, now: Instant) -> Option<Instant> {
        let waiting = self.scheduler.queued_bytes() > 0;
        match (self.scheduler.poll_timeout(), waiting.then(|| now + TICK)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The budget from the last reading of the connection's figures, read afresh when
    /// `fresh`, or when it is older than [`STATS_MAX_AGE`] and either older than
    /// [`STATS_CLEAR_MAX_AGE`] or no longer far inside the window it showed.
    fn budget(&mut self, now: Instant, fresh: bool) -> SendBudget {
        let age = now.saturating_duration_since(self.stats_at);
        let stale = age > STATS_MAX_AGE
            && (age > STATS_CLEAR_MAX_AGE || {
                let pending = self.unsent.total().saturating_add(self.scheduler.queued_bytes());
                pending.saturating_mul(2) > self.stats.cwnd
            });
        if fresh || stale {
            self.stats = self.session.stats();
            self.stats_at = now;
            self.unsent.handle_reading(now, reading(&self.stats));
            self.scheduler.handle_unsent(&self.unsent);
        }
        SendBudget {
            cwnd: self.stats.cwnd,
            cwnd_available: self.stats.cwnd,
            buffered: self.unsent.total(),
            send_rate_bps: self.stats.send_rate_estimate_bps,
        }
    }

    /// Hands the scheduler's actions to QUIC while the budget allows.
    fn flush(&mut self, now: Instant) {
        self.scheduler.handle_timeout(now);
        let mut fresh = false;
        loop {
            let mut budget = self.budget(now, fresh);
            while let Some(action) = self.scheduler.poll_send(now, &mut budget) {
                self.act(action);
            }
            self.write_batch();
            // Held back on a reused reading: read the figures once more before waiting.
            if fresh || self.scheduler.queued_bytes() == 0 || self.stats_at == now {
                break;
            }
            fresh = true;
        }
    }

    fn act(&mut self, action: Action) {
        if let Action::Write { key, chunk, quinn_priority } = action {
            if self.batch_stream.is_some_and(|(s, _)| s != key.0) {
                self.write_batch();
            }
            self.batch_stream = Some((key.0, quinn_priority));
            self.batch.push(chunk);
            return;
        }
        // Whatever comes next (a finish, a reset) applies after the chunks before it.
        self.write_batch();
        match action {
            Action::Write { .. } => {}
            Action::Datagram { datagram, .. } => {
                let len = datagram.len() as u64;
                if self.session.send_datagram(datagram).is_ok() {
                    self.unsent.handle_datagram(len);
                }
            }
            Action::Finish { key } => {
                self.forget_fetch(key.0);
                self.finish(key.0);
            }
            Action::Reset { key, code, reason } => {
                self.forget_fetch(key.0);
                tracing::debug!(stream = key.0, ?reason, "stream reset by the scheduler");
                self.discard(key.0);
                match self.streams.remove(&key.0) {
                    Some(Out::Direct(mut s)) => {
                        let _ = s.reset(code);
                    }
                    Some(Out::Task(tx)) => {
                        let _ = tx.send(StreamCmd::Reset(code));
                    }
                    Some(Out::Failed) | None => {}
                }
            }
            Action::Abandon { key, reason } => {
                tracing::debug!(stream = key.0, ?reason, "stream abandoned by the scheduler");
                self.discard(key.0);
                if let Some(Out::Direct(mut s)) = self.streams.remove(&key.0) {
                    // Nothing more will be written: end it rather than leave it open.
                    let _ = s.finish();
                }
                if let Some((header, priority)) = self.take_fetch(key.0) {
                    // A subscription's subgroup may go unsent (the draft lets a publisher
                    // drop objects), but a fetch stays open at the requester until its data
                    // stream ends with a FIN or a reset (draft-16, Fetch State Management).
                    // A reset of a stream that carried nothing yet would not even say which
                    // fetch it was (QUIC drops unsent and unread data on a reset), so the
                    // header goes out with a FIN, the way the draft ends a fetch that has
                    // no objects.
                    tracing::debug!(stream = key.0, "abandoned fetch stream ended with no objects");
                    self.batch_stream = Some((key.0, priority));
                    self.batch.push(header);
                    self.write_batch();
                    self.finish(key.0);
                }
            }
        }
    }

    /// Ends stream `number` with a FIN after what was written to it.
    fn finish(&mut self, number: u64) {
        match self.streams.remove(&number) {
            Some(Out::Direct(mut s)) => {
                // quinn keeps delivering what was written after the handle is dropped;
                // a stream the peer stopped is reset when dropped.
                if s.finish().is_err() {
                    self.discard(number);
                } else if self.unsent.stream(number) >= WATCH_MIN {
                    // Bytes still wait in QUIC: a STOP_SENDING may yet drop them.
                    let written = self.written_tx.clone();
                    self.tasks.spawn_on(watch_finished(*s, number, written), &self.runtime);
                }
            }
            Some(Out::Task(tx)) => {
                // The task still writes what it holds; if it stopped, that is lost.
                if tx.send(StreamCmd::Finish).is_err() {
                    self.discard(number);
                }
            }
            Some(Out::Failed) | None => self.discard(number),
        }
    }

    /// A fetch stream ended: it needs no header kept any more.
    fn forget_fetch(&mut self, number: u64) {
        if !self.fetches.is_empty() {
            self.fetches.remove(&number);
        }
    }

    /// The header and priority of fetch stream `number`, if it is one not ended yet.
    fn take_fetch(&mut self, number: u64) -> Option<(Bytes, i32)> {
        if self.fetches.is_empty() { None } else { self.fetches.remove(&number) }
    }

    /// Writes the collected chunks of one stream: straight into QUIC if it takes them all
    /// now, else through the stream's own task (which then keeps the stream, so its chunks
    /// stay in order).
    fn write_batch(&mut self) {
        let Some((stream, priority)) = self.batch_stream.take() else { return };
        // Counted as QUIC's from here on, whatever happens to the write (a stream that
        // fails is discarded below).
        let len: u64 = self.batch.iter().map(|c| c.len() as u64).sum();
        self.unsent.handle_write(stream, priority, len);
        // The common case: an open stream that takes everything at once.
        if let Some(Out::Direct(s)) = self.streams.get_mut(&stream) {
            match try_write(s, &mut self.batch) {
                Some(true) => return,
                Some(false) => {}
                None => {
                    self.streams.insert(stream, Out::Failed);
                    self.discard(stream);
                    return;
                }
            }
        }
        let waiting = match self.streams.remove(&stream) {
            Some(Out::Failed) => {
                self.batch.clear();
                self.streams.insert(stream, Out::Failed);
                self.discard(stream);
                return;
            }
            Some(Out::Task(tx)) => {
                let mut gone = false;
                for chunk in self.batch.drain(..) {
                    gone |= tx.send(StreamCmd::Write(chunk)).is_err();
                }
                if gone {
                    // The task ended (the peer stopped the stream, say): nothing it was
                    // handed will be sent.
                    self.streams.insert(stream, Out::Failed);
                    self.discard(stream);
                } else {
                    self.streams.insert(stream, Out::Task(tx));
                }
                return;
            }
            // Flow control took part or none of the batch.
            Some(Out::Direct(s)) => Some(*s),
            None => match self.session.try_open_uni() {
                Some(Ok(mut s)) => {
                    let _ = s.set_priority(priority);
                    match try_write(&mut s, &mut self.batch) {
                        Some(true) => {
                            self.streams.insert(stream, Out::Direct(Box::new(s)));
                            return;
                        }
                        Some(false) => Some(s),
                        None => {
                            self.streams.insert(stream, Out::Failed);
                            self.discard(stream);
                            return;
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "could not open a data stream");
                    self.batch.clear();
                    self.streams.insert(stream, Out::Failed);
                    self.discard(stream);
                    return;
                }
                // The peer's stream limit is reached: the task opens it when it can.
                None => None,
            },
        };
        let tx = self.spawn(stream, waiting, priority);
        for chunk in self.batch.drain(..).filter(|c| !c.is_empty()) {
            let _ = tx.send(StreamCmd::Write(chunk));
        }
        self.streams.insert(stream, Out::Task(tx));
    }

    /// A stream ended without a clean FIN: what QUIC did not send of it yet was dropped (by
    /// quinn on reset, or before reaching QUIC), so it no longer counts as unsent.
    fn discard(&mut self, stream: u64) {
        self.unsent.handle_discard(stream);
        self.scheduler.handle_unsent(&self.unsent);
    }

    fn spawn(
        &mut self,
        number: u64,
        stream: Option<transport::SendStream>,
        priority: i32,
    ) -> mpsc::UnboundedSender<StreamCmd> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.tasks.spawn_on(
            write_stream(
                self.session.clone(),
                number,
                stream,
                priority,
                rx,
                self.written_tx.clone(),
            ),
            &self.runtime,
        );
        tx
    }

    fn apply(&mut self, cmd: SendCmd) {
        let scheduler = &mut self.scheduler;
        let r = match cmd {
            SendCmd::Open { stream, spec } => {
                let fetch = (spec.track.0 & super::track::FETCH_TRACK_BIT != 0
                    && !spec.header.is_empty())
                .then(|| (spec.header.clone(), quinn_priority(&spec.send_order())));
                let r = scheduler.open_stream(StreamKey(stream), spec);
                if let (Ok(()), Some(fetch)) = (&r, fetch) {
                    self.fetches.insert(stream, fetch);
                }
                r
            }
            SendCmd::Write { stream, head, payload, arrival, capture_age } => {
                let mut object = Object::new(arrival, head, payload);
                if let Some(age) = capture_age {
                    object = object.capture_age(age);
                }
                scheduler.push_object(StreamKey(stream), object)
            }
            SendCmd::Finish { stream } => scheduler.finish_stream(StreamKey(stream)),
            SendCmd::Reset { stream, code } => scheduler.reset_stream(StreamKey(stream), code),
            SendCmd::Datagram { data } => {
                let len = data.len() as u64;
                match self.session.send_datagram(data) {
                    Ok(()) => self.unsent.handle_datagram(len),
                    Err(e) => tracing::debug!(error = %e, "datagram not sent"),
                }
                Ok(())
            }
            SendCmd::Priority { track, priority } => {
                scheduler.set_subscriber_priority(track, priority);
                Ok(())
            }
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, "send scheduler refused a command");
        }
    }
}

/// The counters [`Unsent`] follows, from a reading of the connection's figures.
fn reading(stats: &transport::Stats) -> Reading {
    Reading {
        bytes_sent: stats.bytes_sent,
        packets_sent: stats.packets_sent,
        bytes_lost: stats.bytes_lost,
        packets_lost: stats.packets_lost,
        rtt: stats.rtt,
    }
}

/// Writes what QUIC takes of `batch` now: `Some(true)` if all of it (the batch is then
/// empty), `Some(false)` if part or none (what is left stays in the batch), `None` if the
/// stream failed (the batch is dropped).
fn try_write(stream: &mut transport::SendStream, batch: &mut Vec<Bytes>) -> Option<bool> {
    match stream.try_write_chunks(batch) {
        Some(Ok(_)) if batch.iter().all(Bytes::is_empty) => {
            batch.clear();
            Some(true)
        }
        Some(Ok(_)) | None => Some(false),
        Some(Err(e)) => {
            tracing::debug!(error = %e, "data stream write failed");
            batch.clear();
            None
        }
    }
}

/// One stream that had to wait: opens it if `stream` is `None`, then writes what it is
/// sent in order, telling the writer after each chunk. An open that waits (for the peer's
/// stream limit, or over WebTransport) is logged (debug) with the send path's stream
/// `number`, its QUIC priority and how long it waited.
async fn write_stream(
    session: Arc<transport::Session>,
    number: u64,
    stream: Option<transport::SendStream>,
    priority: i32,
    mut rx: mpsc::UnboundedReceiver<StreamCmd>,
    written: mpsc::UnboundedSender<Note>,
) {
    let asked = Instant::now();
    if stream.is_none() {
        tracing::debug!(stream = number, priority, "data stream open waits");
    }
    let mut stream = match stream {
        Some(s) => s,
        None => match session.open_uni().await {
            Ok(s) => {
                let _ = s.set_priority(priority);
                tracing::debug!(
                    stream = number,
                    priority,
                    waited_ms = asked.elapsed().as_millis() as u64,
                    "data stream opened after waiting"
                );
                s
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not open a data stream");
                let _ = written.send(Note::Dropped(number));
                return;
            }
        },
    };
    while let Some(cmd) = rx.recv().await {
        match cmd {
            StreamCmd::Write(chunk) => {
                if let Err(e) = stream.write_chunk(chunk).await {
                    tracing::debug!(error = %e, "data stream write failed");
                    let _ = written.send(Note::Dropped(number));
                    return;
                }
                let _ = written.send(Note::Written);
            }
            StreamCmd::Finish => break,
            StreamCmd::Reset(code) => {
                let _ = stream.reset(code);
                return;
            }
        }
    }
    // quinn keeps delivering what was written after the handle is dropped.
    if stream.finish().is_ok() {
        watch_finished(stream, number, written).await;
    }
}

/// Waits until finished stream `number` is read to its end, or stopped by the peer: then
/// the handle, dropped here, resets the stream, so what QUIC still held of it is not sent,
/// which the writer hears of ([`Note::Dropped`]).
/// Ends early when the writer stops listening.
async fn watch_finished(
    stream: transport::SendStream,
    number: u64,
    written: mpsc::UnboundedSender<Note>,
) {
    tokio::select! {
        r = stream.stopped() => {
            if !matches!(r, Ok(None)) {
                let _ = written.send(Note::Dropped(number));
            }
        }
        () = written.closed() => {}
    }
}
