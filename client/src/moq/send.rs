//! The connection's one send path for data: every outgoing subgroup stream, fetch stream and
//! datagram goes through it.
//!
//! Writers ([`super::TrackWriter`], [`super::SubgroupStream`], [`super::FetchResponse`])
//! enqueue [`SendCmd`]s: a stream with its [`StreamSpec`] (priorities, group order,
//! delivery timeout), then its objects with their arrival time and capture age. One writer
//! task per connection feeds them to the [`crate::scheduler::Scheduler`] (priority mode,
//! or FIFO as the baseline) and applies its actions to QUIC streams, each written by its
//! own small task so that one stream waiting for flow-control credit never holds up
//! another. Payloads reach QUIC as the same `Bytes` the writer got: fan-out to many
//! subscribers does not copy them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use std::time::Duration;

use crate::scheduler::{
    Action, Object, Scheduler, SchedulerConfig, SendBudget, StreamKey, StreamSpec, TrackClass,
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
    /// Drop a stream: what was not sent is not sent.
    Reset {
        /// The stream.
        stream: u64,
    },
    /// Send one datagram.
    Datagram {
        /// The encoded datagram.
        data: Bytes,
    },
}

/// The handle writers use to enqueue data. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct SendPath {
    tx: mpsc::UnboundedSender<SendCmd>,
    next_stream: Arc<AtomicU64>,
}

impl SendPath {
    /// A send path and the receiving end for its writer task ([`run`]).
    pub(crate) fn new() -> (Self, mpsc::UnboundedReceiver<SendCmd>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx, next_stream: Arc::new(AtomicU64::new(0)) }, rx)
    }

    /// A new stream number.
    pub(crate) fn allocate(&self) -> u64 {
        self.next_stream.fetch_add(1, Ordering::Relaxed)
    }

    /// Enqueues a command; false if the connection is gone.
    pub(crate) fn push(&self, cmd: SendCmd) -> bool {
        self.tx.send(cmd).is_ok()
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

enum StreamCmd {
    Write(Bytes),
    Finish,
    Reset(u32),
}

/// The writer task: hands every command to the send scheduler and applies what it decides
/// (open, write, finish or reset streams; send datagrams) until every [`SendPath`] is
/// dropped.
///
/// The budget: the congestion window may take `cwnd` now (QUIC does not expose what is
/// in flight, and on the links served the window is mostly free when the scheduler is
/// asked), and what QUIC holds unsent is estimated as the bytes handed to it minus the
/// bytes it reports sent.
pub(crate) async fn run(
    session: transport::Session,
    mut rx: mpsc::UnboundedReceiver<SendCmd>,
    config: SchedulerConfig,
) {
    let mut scheduler = Scheduler::new(config);
    let mut streams: HashMap<u64, mpsc::UnboundedSender<StreamCmd>> = HashMap::new();
    let mut tasks = JoinSet::new();
    let (written_tx, mut written_rx) = mpsc::unbounded_channel::<()>();
    let base_sent = session.stats().bytes_sent;
    let mut handed: u64 = 0;
    let mut open = true;
    while open || scheduler.queued_bytes() > 0 {
        let now = Instant::now();
        scheduler.handle_timeout(now);
        let stats = session.stats();
        let sent = stats.bytes_sent.saturating_sub(base_sent);
        let mut budget = SendBudget {
            cwnd: stats.cwnd,
            cwnd_available: stats.cwnd,
            buffered: handed.saturating_sub(sent),
            send_rate_bps: stats.send_rate_estimate_bps,
        };
        while let Some(action) = scheduler.poll_send(now, &mut budget) {
            match action {
                Action::Write { key, chunk, quinn_priority } => {
                    handed += chunk.len() as u64;
                    let tx = streams.entry(key.0).or_insert_with(|| {
                        let (tx, srx) = mpsc::unbounded_channel();
                        tasks.spawn(write_stream(
                            session.clone(),
                            quinn_priority,
                            srx,
                            written_tx.clone(),
                        ));
                        tx
                    });
                    let _ = tx.send(StreamCmd::Write(chunk));
                }
                Action::Datagram { datagram, .. } => {
                    let _ = session.send_datagram(datagram);
                }
                Action::Finish { key } => {
                    if let Some(tx) = streams.remove(&key.0) {
                        let _ = tx.send(StreamCmd::Finish);
                    }
                }
                Action::Reset { key, code, reason } => {
                    tracing::debug!(stream = key.0, ?reason, "stream reset by the scheduler");
                    if let Some(tx) = streams.remove(&key.0) {
                        let _ = tx.send(StreamCmd::Reset(code));
                    }
                }
                Action::Abandon { key, reason } => {
                    tracing::debug!(stream = key.0, ?reason, "stream abandoned by the scheduler");
                    streams.remove(&key.0);
                }
            }
        }
        while tasks.try_join_next().is_some() {}
        let wake = scheduler.poll_timeout();
        let waiting = scheduler.queued_bytes() > 0;
        tokio::select! {
            cmd = rx.recv(), if open => match cmd {
                Some(cmd) => {
                    apply(&mut scheduler, &session, cmd);
                    while let Ok(cmd) = rx.try_recv() {
                        apply(&mut scheduler, &session, cmd);
                    }
                }
                None => open = false,
            },
            Some(()) = written_rx.recv() => {
                while written_rx.try_recv().is_ok() {}
            }
            _ = async { match wake {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            } } => {}
            _ = tokio::time::sleep(TICK), if waiting => {}
        }
    }
    for (_, tx) in streams {
        let _ = tx.send(StreamCmd::Finish);
    }
    while tasks.join_next().await.is_some() {}
}

fn apply(scheduler: &mut Scheduler, session: &transport::Session, cmd: SendCmd) {
    let r = match cmd {
        SendCmd::Open { stream, spec } => scheduler.open_stream(StreamKey(stream), spec),
        SendCmd::Write { stream, head, payload, arrival, capture_age } => {
            let mut object = Object::new(arrival, head, payload);
            if let Some(age) = capture_age {
                object = object.capture_age(age);
            }
            scheduler.push_object(StreamKey(stream), object)
        }
        SendCmd::Finish { stream } => scheduler.finish_stream(StreamKey(stream)),
        SendCmd::Reset { stream } => scheduler.cancel_stream(StreamKey(stream)),
        SendCmd::Datagram { data } => {
            if let Err(e) = session.send_datagram(data) {
                tracing::debug!(error = %e, "datagram not sent");
            }
            Ok(())
        }
    };
    if let Err(e) = r {
        tracing::debug!(error = %e, "send scheduler refused a command");
    }
}

async fn write_stream(
    session: transport::Session,
    priority: i32,
    mut rx: mpsc::UnboundedReceiver<StreamCmd>,
    written: mpsc::UnboundedSender<()>,
) {
    let mut stream = match session.open_uni().await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "could not open a data stream");
            return;
        }
    };
    let _ = stream.set_priority(priority);
    while let Some(cmd) = rx.recv().await {
        match cmd {
            StreamCmd::Write(chunk) => {
                if let Err(e) = stream.write_chunk(chunk).await {
                    tracing::debug!(error = %e, "data stream write failed");
                    return;
                }
                let _ = written.send(());
            }
            StreamCmd::Finish => break,
            StreamCmd::Reset(code) => {
                let _ = stream.reset(code);
                return;
            }
        }
    }
    let _ = stream.finish();
    // Keep the stream until the peer has read it, so that dropping it cannot cut it short.
    let _ = stream.stopped().await;
}
