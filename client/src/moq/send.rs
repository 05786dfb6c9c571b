//! The connection's one send path for data: every outgoing subgroup stream, fetch stream and
//! datagram goes through it.
//!
//! Writers ([`super::TrackWriter`], [`super::SubgroupStream`], [`super::FetchResponse`])
//! enqueue [`SendCmd`]s tagged with the draft's send order ([`SendOrder`]); one writer task
//! per connection takes them in arrival order (FIFO) and applies them to QUIC streams, each
//! written by its own small task so that one stream waiting for flow-control credit never
//! holds up another. QUIC sends streams by the priority set here, derived from the same
//! send order, so the draft's order holds on the wire (lower MoQT numbers first). Payloads
//! are handed to QUIC as the same `Bytes` the writer got: fan-out to many subscribers does
//! not copy them.
//!
//! This writer task is where a send scheduler plugs in: it sees every command with its
//! send order and the instant it was enqueued, and decides what to hand to QUIC and what
//! to drop.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use tiermesh_proto::priority::SendOrder;
use tiermesh_proto::types::GroupOrder;

use crate::transport;

/// One action on the data plane of a connection.
#[derive(Debug)]
pub(crate) enum SendCmd {
    /// Open a unidirectional stream and write its header.
    Open {
        /// The send path's stream number.
        stream: u64,
        /// The draft's send order of the stream's objects.
        #[allow(dead_code)]
        order: SendOrder,
        /// The QUIC stream priority (higher first) derived from `order`.
        quic_priority: i32,
        /// SUBGROUP_HEADER or FETCH_HEADER bytes.
        header: Bytes,
    },
    /// Append bytes (an object's head and its payload) to a stream.
    Write {
        /// The stream.
        stream: u64,
        /// The chunks, written without copying.
        chunks: Vec<Bytes>,
        /// When the object was enqueued.
        #[allow(dead_code)]
        enqueued: Instant,
    },
    /// Finish a stream after what was written.
    Finish {
        /// The stream.
        stream: u64,
    },
    /// Reset a stream with a code.
    Reset {
        /// The stream.
        stream: u64,
        /// The reset code.
        code: u32,
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

/// The QUIC priority (higher is sent first) of a stream with this send order: subscriber
/// priority, then publisher priority, then group by the group order. 8 + 8 + 15 bits fill
/// an `i32`; groups are compared by their low 15 bits, so two groups 32768 apart (9 hours
/// of one-second groups) could briefly swap places.
pub(crate) fn quic_priority(
    subscriber_priority: u8,
    publisher_priority: u8,
    group_order: GroupOrder,
    group_id: u64,
) -> i32 {
    let g = (group_id & 0x7fff) as i32;
    let g = match group_order {
        GroupOrder::Descending => g,
        GroupOrder::Ascending => 0x7fff - g,
    };
    ((255 - i32::from(subscriber_priority)) << 23)
        | ((255 - i32::from(publisher_priority)) << 15)
        | g
}

enum StreamCmd {
    Write(Vec<Bytes>),
    Finish,
    Reset(u32),
}

/// The writer task: applies commands in arrival order until every [`SendPath`] is dropped.
pub(crate) async fn run(session: transport::Session, mut rx: mpsc::UnboundedReceiver<SendCmd>) {
    let mut streams: HashMap<u64, mpsc::UnboundedSender<StreamCmd>> = HashMap::new();
    let mut tasks = JoinSet::new();
    while let Some(cmd) = rx.recv().await {
        match cmd {
            SendCmd::Open { stream, quic_priority, header, .. } => {
                let (tx, srx) = mpsc::unbounded_channel();
                streams.insert(stream, tx);
                tasks.spawn(write_stream(session.clone(), quic_priority, header, srx));
            }
            SendCmd::Write { stream, chunks, .. } => {
                if let Some(tx) = streams.get(&stream) {
                    let _ = tx.send(StreamCmd::Write(chunks));
                }
            }
            SendCmd::Finish { stream } => {
                if let Some(tx) = streams.remove(&stream) {
                    let _ = tx.send(StreamCmd::Finish);
                }
            }
            SendCmd::Reset { stream, code } => {
                if let Some(tx) = streams.remove(&stream) {
                    let _ = tx.send(StreamCmd::Reset(code));
                }
            }
            SendCmd::Datagram { data } => {
                if let Err(e) = session.send_datagram(data) {
                    tracing::debug!(error = %e, "datagram not sent");
                }
            }
        }
        while tasks.try_join_next().is_some() {}
    }
}

async fn write_stream(
    session: transport::Session,
    priority: i32,
    header: Bytes,
    mut rx: mpsc::UnboundedReceiver<StreamCmd>,
) {
    let mut stream = match session.open_uni().await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "could not open a data stream");
            return;
        }
    };
    let _ = stream.set_priority(priority);
    if stream.write_chunk(header).await.is_err() {
        return;
    }
    while let Some(cmd) = rx.recv().await {
        match cmd {
            StreamCmd::Write(mut chunks) => {
                if let Err(e) = stream.write_chunks(&mut chunks).await {
                    tracing::debug!(error = %e, "data stream write failed");
                    return;
                }
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
