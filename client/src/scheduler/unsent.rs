//! An estimate of what QUIC holds unsent, from the counters the transport reports (bytes
//! and packets sent and declared lost, the round trip).
//!
//! quinn does not report the bytes that wait in its stream buffers, so a driver keeps this
//! estimate beside its [`Scheduler`](super::Scheduler): it tells [`Unsent`] every chunk it
//! writes to a stream ([`Unsent::handle_write`]), every datagram, every stream that ends
//! without a clean FIN ([`Unsent::handle_discard`]) and each reading of the transport's
//! counters ([`Unsent::handle_reading`]), and passes [`Unsent::total`] into
//! the [`SendBudget`](super::SendBudget) and the estimate per priority into the scheduler
//! ([`Scheduler::handle_unsent`](super::Scheduler::handle_unsent)).
//!
//! How the estimate follows QUIC, and why it does not drift:
//! - **Sent.** Between two readings QUIC sent `Δbytes - OVERHEAD × Δpackets` bytes of frame
//!   payload. That progress drains the bytes it holds in quinn's own order: streams of higher
//!   quinn priority before lower ones, within a priority the lost bytes waiting to be resent
//!   first (see below), then its streams in turn (quinn's round robin). Progress beyond what
//!   the estimate holds (control messages, acknowledgements, an overhead taken too small) is
//!   dropped: the estimate is kept step by step and never goes below zero, so an error that
//!   makes it read low is undone the next time QUIC empties, instead of piling up as it did
//!   when the estimate was the difference of two running totals (which read zero while tens of
//!   kilobytes waited, once retransmissions and packet headers had been counted as sent).
//! - **Lost.** Bytes of packets declared lost count as unsent again until they are resent
//!   (quinn queues lost stream data for retransmission, at its stream's priority). Which
//!   streams they were of is not reported, so they are shared between priorities as the
//!   bytes recently sent were. A lost packet of a stream reset since is never resent, so lost
//!   bytes still waiting after [`LOST_WAIT_RTTS`] round trips are taken as gone: quinn resends
//!   a lost range within about a round trip unless more important streams fill the window all
//!   that time.
//! - **Discarded.** A reset stream takes with it only the bytes of it still unsent, as this
//!   estimate tracks them per stream, not everything it was handed.
//! - **Per priority.** [`Unsent::by_priority`] tells how much waits at each priority, so the
//!   scheduler knows what an object waits behind: only what QUIC sends before it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::ready::BuildKeyHasher;

/// Bytes of a QUIC packet that carry no stream data: a short header with an 8-byte
/// connection ID and a 1-byte packet number (10), the 16-byte AEAD tag, and the smallest
/// STREAM frame header (type and stream ID, 2). Taken at its smallest: an overhead counted
/// too small makes the estimate read low, which the next time QUIC empties undoes; one
/// counted too large would make it read high for good.
pub const PACKET_OVERHEAD: u64 = 28;

/// Lost bytes not resent within this many smoothed round trips are taken as gone with a
/// stream that was reset (see the module docs). Two: a lost range is resent as soon as its
/// stream's turn comes, and it is declared lost about a round trip after it left.
pub const LOST_WAIT_RTTS: u32 = 2;

/// The wait for lost bytes when the round trip is not known yet (or below 50 ms, where a
/// few milliseconds of scheduling would dominate).
const LOST_WAIT_MIN: Duration = Duration::from_millis(100);

/// The pseudo-stream of datagrams: quinn sends them before stream data.
const DATAGRAMS: u64 = u64::MAX;

/// Marks lost bytes in the drain order (drained before the streams of their priority).
const LOST: u64 = u64::MAX - 1;

/// When the recent sends per priority pass this many bytes they are halved: the shares
/// follow the last few hundred kilobytes, a second or a few at the rates served.
const RECENT_DECAY_AT: u64 = 256 * 1024;

/// One reading of the transport's counters (running totals since the connection began).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reading {
    /// UDP payload bytes sent.
    pub bytes_sent: u64,
    /// Packets sent.
    pub packets_sent: u64,
    /// Bytes of packets declared lost.
    pub bytes_lost: u64,
    /// Packets declared lost.
    pub packets_lost: u64,
    /// The smoothed round-trip time.
    pub rtt: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// quinn priority: higher is sent first.
    priority: i32,
    unsent: u64,
}

/// The estimate of what QUIC holds unsent. How it is kept is in this module's docs.
#[derive(Debug, Default)]
pub struct Unsent {
    /// Per stream (by the driver's number), the bytes handed to QUIC and not sent yet; only
    /// streams with some.
    streams: HashMap<u64, Entry, BuildKeyHasher>,
    /// Lost bytes waiting to be resent, oldest first: when they were declared lost, the
    /// quinn priority they are counted at, bytes.
    lost: VecDeque<(Instant, i32, u64)>,
    /// Bytes sent per quinn priority lately (halved now and then): how lost bytes are shared.
    recent: Vec<(i32, u64)>,
    total: u64,
    last: Option<Reading>,
    /// The path's delivery rate, for the deadline check of the upper tiers.
    delivery: super::rate::DeliveryRate,
}

impl Unsent {
    /// An empty estimate; the first reading is the baseline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes QUIC holds unsent, by the estimate.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes of stream `stream` QUIC holds unsent, by the estimate.
    pub fn stream(&self, stream: u64) -> u64 {
        self.streams.get(&stream).map_or(0, |e| e.unsent)
    }

    /// The largest rate at which the path delivered bytes (sent and not declared lost) over
    /// the last two seconds, in bits per second; 0 before two readings an interval apart.
    pub fn delivery_bps(&self) -> u64 {
        self.delivery.max_bps()
    }

    /// Lost bytes waiting to be resent, by the estimate.
    pub fn lost(&self) -> u64 {
        self.lost.iter().map(|(_, _, b)| b).sum()
    }

    /// What waits unsent at each quinn priority (streams and lost bytes), highest first.
    pub fn by_priority(&self) -> Vec<(i32, u64)> {
        let mut out: Vec<(i32, u64)> = Vec::new();
        let all = self.streams.values().map(|e| (e.priority, e.unsent));
        for (p, b) in all.chain(self.lost.iter().map(|&(_, p, b)| (p, b))) {
            match out.iter_mut().find(|(q, _)| *q == p) {
                Some((_, sum)) => *sum += b,
                None => out.push((p, b)),
            }
        }
        out.sort_unstable_by_key(|&(p, _)| std::cmp::Reverse(p));
        out
    }

    /// `len` bytes were written to stream `stream`, whose quinn priority is `priority`.
    pub fn handle_write(&mut self, stream: u64, priority: i32, len: u64) {
        if len == 0 {
            return;
        }
        self.streams.entry(stream).or_insert(Entry { priority, unsent: 0 }).unsent += len;
        self.total += len;
    }

    /// A datagram of `len` bytes was queued.
    pub fn handle_datagram(&mut self, len: u64) {
        self.handle_write(DATAGRAMS, i32::MAX, len);
    }

    /// Stream `stream` ended without a clean FIN (reset, stopped by the peer, a failed
    /// write): QUIC drops what it held of it.
    pub fn handle_discard(&mut self, stream: u64) {
        if let Some(e) = self.streams.remove(&stream) {
            self.total -= e.unsent;
        }
    }

    /// A new reading of the transport's counters, taken at `now`.
    pub fn handle_reading(&mut self, now: Instant, r: Reading) {
        self.delivery.handle_reading(now, &r);
        let Some(prev) = self.last.replace(r) else { return };
        let packets = r.packets_sent.saturating_sub(prev.packets_sent);
        let sent = r.bytes_sent.saturating_sub(prev.bytes_sent);
        let lost_packets = r.packets_lost.saturating_sub(prev.packets_lost);
        let lost = r.bytes_lost.saturating_sub(prev.bytes_lost);
        // Lost bytes not resent in time went with a reset stream.
        let wait = (r.rtt * LOST_WAIT_RTTS).max(LOST_WAIT_MIN);
        while let Some(&(at, _, bytes)) = self.lost.front()
            && now.saturating_duration_since(at) >= wait
        {
            self.lost.pop_front();
            self.total -= bytes;
        }
        let lost = lost.saturating_sub(lost_packets.saturating_mul(PACKET_OVERHEAD));
        self.add_lost(now, lost);
        self.drain(sent.saturating_sub(packets.saturating_mul(PACKET_OVERHEAD)));
    }

    /// Shares `lost` bytes between priorities as recent sends were (all at the lowest
    /// priority if nothing was sent yet).
    fn add_lost(&mut self, now: Instant, lost: u64) {
        if lost == 0 {
            return;
        }
        self.total += lost;
        let sum: u64 = self.recent.iter().map(|(_, b)| b).sum();
        if sum == 0 {
            self.lost.push_back((now, i32::MIN, lost));
            return;
        }
        let mut left = lost;
        for (i, &(p, b)) in self.recent.iter().enumerate() {
            let share = if i + 1 == self.recent.len() {
                left
            } else {
                (lost as u128 * b as u128 / sum as u128) as u64
            };
            let share = share.min(left);
            if share > 0 {
                self.lost.push_back((now, p, share));
                left -= share;
            }
        }
    }

    /// Counts `n` bytes sent at priority `p` in the recent sends.
    fn note_sent(&mut self, p: i32, n: u64) {
        match self.recent.iter_mut().find(|(q, _)| *q == p) {
            Some((_, b)) => *b += n,
            None => self.recent.push((p, n)),
        }
        let sum: u64 = self.recent.iter().map(|(_, b)| b).sum();
        if sum > RECENT_DECAY_AT {
            self.recent.iter_mut().for_each(|(_, b)| *b /= 2);
            self.recent.retain(|(_, b)| *b > 0);
        }
    }

    /// Takes `progress` bytes sent off the estimate in quinn's order.
    fn drain(&mut self, mut progress: u64) {
        if progress == 0 || self.total == 0 {
            return;
        }
        let mut order: Vec<(i32, u64)> =
            self.streams.iter().map(|(k, e)| (e.priority, *k)).collect();
        // Lost bytes go first within their priority: an entry with no stream.
        order.extend(self.lost.iter().map(|&(_, p, _)| (p, LOST)));
        // Higher priority first; the stream numbers only make the order repeatable.
        order.sort_unstable_by(|a, b| b.cmp(a));
        order.dedup();
        let mut i = 0;
        while progress > 0 && i < order.len() {
            let priority = order[i].0;
            let end =
                order[i..].iter().position(|o| o.0 != priority).map_or(order.len(), |n| i + n);
            let before = progress;
            if order[i..end].iter().any(|o| o.1 == LOST) {
                for entry in self.lost.iter_mut().filter(|e| e.1 == priority) {
                    let n = progress.min(entry.2);
                    entry.2 -= n;
                    progress -= n;
                    self.total -= n;
                }
                self.lost.retain(|e| e.2 > 0);
            }
            let mut group: Vec<u64> =
                order[i..end].iter().map(|o| o.1).filter(|&k| k != LOST).collect();
            // quinn's round robin between streams of one priority: equal shares, a stream
            // that has less giving the rest to the others.
            while progress > 0 && !group.is_empty() {
                let share = (progress / group.len() as u64).max(1);
                group.retain(|k| {
                    let Some(e) = self.streams.get_mut(k) else { return false };
                    let n = share.min(e.unsent).min(progress);
                    e.unsent -= n;
                    progress -= n;
                    self.total -= n;
                    if e.unsent == 0 {
                        self.streams.remove(k);
                        false
                    } else {
                        true
                    }
                });
            }
            self.note_sent(priority, before - progress);
            i = end;
        }
    }
}
