//! Request ID bookkeeping (draft-16 §9.1, §9.4, §9.5): the IDs this endpoint hands out, the
//! IDs the peer may use, and the credit (MAX_REQUEST_ID) granted back as requests finish.

use std::collections::BTreeSet;

use crate::coding::{TerminationCode, VARINT_MAX};

/// The most request IDs a peer may skip and fill in later. A gap is legitimate only while a
/// SUBSCRIBE_NAMESPACE travels on its own stream and has not arrived yet, so a handful
/// covers every honest peer; the cap keeps a hostile one from growing the set.
const MAX_GAPS: usize = 64;

/// A rule the peer broke, with the termination code the draft names for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    pub code: TerminationCode,
    pub reason: &'static str,
}

impl Violation {
    pub(crate) fn new(code: TerminationCode, reason: &'static str) -> Self {
        Violation { code, reason }
    }

    pub(crate) fn protocol(reason: &'static str) -> Self {
        Violation::new(TerminationCode::ProtocolViolation, reason)
    }
}

/// The IDs this endpoint uses for its own requests.
#[derive(Debug)]
pub(crate) struct LocalIds {
    /// The next ID to hand out.
    next: u64,
    /// The peer's current Maximum Request ID: IDs at or above it may not be used.
    max: u64,
    /// The maximum for which a REQUESTS_BLOCKED was sent (one per maximum, §9.5).
    blocked_reported: Option<u64>,
}

impl LocalIds {
    /// IDs for an endpoint whose first ID is `first` (0 for a client, 1 for a server).
    pub(crate) fn new(first: u64) -> Self {
        LocalIds { next: first, max: 0, blocked_reported: None }
    }

    /// The first ID of this endpoint's parity.
    pub(crate) fn parity(&self) -> u64 {
        self.next % 2
    }

    /// The peer's Maximum Request ID as last received.
    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// True if `id` has this endpoint's parity and was handed out already.
    pub(crate) fn issued(&self, id: u64) -> bool {
        id % 2 == self.parity() && id < self.next
    }

    /// The ID [`Self::allocate`] would return, without using it.
    pub(crate) fn peek(&self) -> Result<u64, u64> {
        if self.next >= self.max || self.next > VARINT_MAX - 2 {
            return Err(self.max);
        }
        Ok(self.next)
    }

    /// The next ID, or `Err(max)` when the peer's limit is reached.
    pub(crate) fn allocate(&mut self) -> Result<u64, u64> {
        if self.next >= self.max || self.next > VARINT_MAX - 2 {
            return Err(self.max);
        }
        let id = self.next;
        self.next += 2;
        Ok(id)
    }

    /// True if a REQUESTS_BLOCKED should be sent for the current maximum (the first time
    /// this endpoint is blocked at it).
    pub(crate) fn report_blocked(&mut self) -> bool {
        if self.blocked_reported == Some(self.max) {
            return false;
        }
        self.blocked_reported = Some(self.max);
        true
    }

    /// Sets the initial maximum from the peer's SETUP (default 0).
    pub(crate) fn set_initial_max(&mut self, max: u64) {
        self.max = max;
    }

    /// Applies a MAX_REQUEST_ID: it must grow (§9.4). Returns true if this endpoint was
    /// blocked and now may send again.
    pub(crate) fn raise_max(&mut self, max: u64) -> Result<bool, Violation> {
        if max <= self.max {
            return Err(Violation::protocol("MAX_REQUEST_ID did not increase"));
        }
        let was_blocked = self.next >= self.max;
        self.max = max;
        Ok(was_blocked && self.next < self.max)
    }
}

/// Where a request message arrived: the control stream is ordered, a SUBSCRIBE_NAMESPACE
/// stream is not ordered against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// On the control stream.
    Control,
    /// As the first message of a peer-opened bidirectional stream.
    OwnStream,
}

/// The IDs the peer uses for its requests, and the credit this endpoint grants.
#[derive(Debug)]
pub(crate) struct PeerIds {
    parity: u64,
    /// One above the highest ID received (rounded to the peer's parity): the next in sequence.
    high: u64,
    /// IDs below `high` not yet seen: SUBSCRIBE_NAMESPACE streams still in flight.
    gaps: BTreeSet<u64>,
    /// The last ID received on the control stream, which must grow.
    last_control: Option<u64>,
    /// The Maximum Request ID advertised to the peer.
    advertised: u64,
    /// How many peer requests may be open at once.
    window: u64,
    /// Peer requests that have finished.
    finished: u64,
}

impl PeerIds {
    /// Peer IDs starting at `first` (0 when the peer is the client), with `window`
    /// concurrent requests allowed.
    pub(crate) fn new(first: u64, window: u64) -> Self {
        let window = window.min(VARINT_MAX / 4);
        PeerIds {
            parity: first,
            high: first,
            gaps: BTreeSet::new(),
            last_control: None,
            advertised: window * 2,
            window,
            finished: 0,
        }
    }

    /// The initial Maximum Request ID for the SETUP parameter.
    pub(crate) fn advertised(&self) -> u64 {
        self.advertised
    }

    /// True if `id` was used or skipped: a skipped ID belongs to a SUBSCRIBE_NAMESPACE stream
    /// still in flight, so a message naming it is a race rather than a lie.
    pub(crate) fn at_or_below_sequence(&self, id: u64) -> bool {
        id % 2 == self.parity && id < self.high
    }

    /// Checks and records the ID of a new request from the peer.
    pub(crate) fn accept(&mut self, id: u64, arrival: Arrival) -> Result<(), Violation> {
        use TerminationCode::*;
        if id % 2 != self.parity {
            return Err(Violation::new(InvalidRequestId, "request ID has the wrong parity"));
        }
        if id >= self.advertised {
            return Err(Violation::new(
                TooManyRequests,
                "request ID at or above the Maximum Request ID",
            ));
        }
        if arrival == Arrival::Control
            && let Some(last) = self.last_control
            && id <= last
        {
            return Err(Violation::new(InvalidRequestId, "request ID out of sequence"));
        }
        if id >= self.high {
            let skipped = (id - self.high) / 2;
            if skipped as usize > MAX_GAPS.saturating_sub(self.gaps.len()) {
                return Err(Violation::new(InvalidRequestId, "request IDs skipped"));
            }
            let mut g = self.high;
            while g < id {
                self.gaps.insert(g);
                g += 2;
            }
            self.high = id + 2;
        } else if !self.gaps.remove(&id) {
            return Err(Violation::new(InvalidRequestId, "request ID used twice"));
        }
        if arrival == Arrival::Control {
            self.last_control = Some(id);
        }
        Ok(())
    }

    /// Counts one finished peer request. Returns a new Maximum Request ID to advertise once
    /// at least half the window (or, with `force`, any credit) is ready to be given back.
    pub(crate) fn finish(&mut self, force: bool) -> Option<u64> {
        self.finished += 1;
        self.grant(force)
    }

    /// A new Maximum Request ID if enough credit is pending (any, with `force`).
    pub(crate) fn grant(&mut self, force: bool) -> Option<u64> {
        let target = self.window.saturating_add(self.finished).saturating_mul(2).min(VARINT_MAX);
        let pending = target.saturating_sub(self.advertised) / 2;
        // Half a window per MAX_REQUEST_ID, as QUIC stacks do for MAX_STREAMS: the peer never
        // stalls while one message per half window keeps the control stream quiet.
        let threshold = (self.window / 2).max(1);
        if pending > 0 && (force || pending >= threshold) {
            self.advertised = target;
            Some(target)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_ids_follow_parity_and_limit() {
        let mut c = LocalIds::new(0);
        assert_eq!(c.allocate(), Err(0), "no requests before the peer grants any");
        c.set_initial_max(4);
        assert_eq!(c.allocate(), Ok(0));
        assert_eq!(c.allocate(), Ok(2));
        assert_eq!(c.allocate(), Err(4));
        assert!(c.report_blocked());
        assert!(!c.report_blocked(), "one REQUESTS_BLOCKED per maximum");
        assert_eq!(c.raise_max(4).unwrap_err().code, TerminationCode::ProtocolViolation);
        assert_eq!(c.raise_max(6), Ok(true));
        assert_eq!(c.allocate(), Ok(4));

        let mut s = LocalIds::new(1);
        s.set_initial_max(2);
        assert_eq!(s.allocate(), Ok(1));
        assert_eq!(s.allocate(), Err(2));
        assert!(s.issued(1) && !s.issued(3) && !s.issued(0));
    }

    #[test]
    fn peer_ids_enforce_sequence_and_maximum() {
        let mut p = PeerIds::new(0, 4);
        assert_eq!(p.advertised(), 8);
        assert_eq!(
            p.accept(1, Arrival::Control).unwrap_err().code,
            TerminationCode::InvalidRequestId
        );
        p.accept(0, Arrival::Control).unwrap();
        assert_eq!(
            p.accept(0, Arrival::Control).unwrap_err().code,
            TerminationCode::InvalidRequestId
        );
        // A SUBSCRIBE_NAMESPACE stream may overtake the control stream...
        p.accept(4, Arrival::OwnStream).unwrap();
        assert!(p.gaps.contains(&2) && p.at_or_below_sequence(4) && !p.at_or_below_sequence(6));
        // ...and the control stream then fills the gap.
        p.accept(2, Arrival::Control).unwrap();
        assert_eq!(
            p.accept(2, Arrival::OwnStream).unwrap_err().code,
            TerminationCode::InvalidRequestId
        );
        p.accept(6, Arrival::Control).unwrap();
        assert_eq!(
            p.accept(8, Arrival::Control).unwrap_err().code,
            TerminationCode::TooManyRequests
        );
    }

    #[test]
    fn credit_returns_in_half_windows() {
        let mut p = PeerIds::new(1, 4);
        assert_eq!(p.finish(false), None);
        assert_eq!(p.finish(false), Some(12));
        assert_eq!(p.finish(false), None);
        assert_eq!(p.grant(true), Some(14), "REQUESTS_BLOCKED gets whatever is pending");
        assert_eq!(p.grant(true), None);
    }

    #[test]
    fn skipping_many_ids_is_refused() {
        let mut p = PeerIds::new(0, 1000);
        assert_eq!(
            p.accept(2 * (MAX_GAPS as u64 + 1), Arrival::Control).unwrap_err().code,
            TerminationCode::InvalidRequestId
        );
    }
}
