//! Every connection's next deadline in one structure, so the driver arms one timer.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// The deadlines of the driver's connections, by slot. A min-heap with lazy deletion: a
/// changed deadline pushes a new entry and leaves the old one, which is skipped when it comes
/// up because it no longer matches the slot's deadline. quinn-proto's next timeout is mostly
/// an ACK delay, a loss timer or pacing (milliseconds away), so stale entries leave the heap
/// about as fast as they are added.
#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Each slot's current deadline.
    current: Vec<Option<Instant>>,
}

impl Timers {
    /// Sets slot `slot`'s deadline (`None`: no timer).
    pub(super) fn set(&mut self, slot: usize, at: Option<Instant>) {
        if self.current.len() <= slot {
            self.current.resize(slot + 1, None);
        }
        if self.current[slot] == at {
            return;
        }
        self.current[slot] = at;
        if let Some(at) = at {
            self.heap.push(Reverse((at, slot)));
        }
    }

    /// Takes the next slot whose deadline is at or before `now`, clearing its deadline.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<usize> {
        while let Some(&Reverse((at, slot))) = self.heap.peek() {
            if self.current.get(slot).copied().flatten() != Some(at) {
                self.heap.pop();
                continue;
            }
            if at > now {
                return None;
            }
            self.heap.pop();
            self.current[slot] = None;
            return Some(slot);
        }
        None
    }

    /// The earliest deadline still set.
    pub(super) fn next(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, slot))) = self.heap.peek() {
            if self.current.get(slot).copied().flatten() == Some(at) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// Entries held, stale ones included (for tests).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn due_slots_come_out_in_deadline_order_once() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut timers = Timers::default();
        timers.set(3, Some(ms(30)));
        timers.set(1, Some(ms(10)));
        timers.set(2, Some(ms(20)));
        assert_eq!(timers.next(), Some(ms(10)));
        assert_eq!(timers.pop_due(ms(5)), None, "nothing due yet");
        assert_eq!(timers.pop_due(ms(25)), Some(1));
        assert_eq!(timers.pop_due(ms(25)), Some(2));
        assert_eq!(timers.pop_due(ms(25)), None);
        assert_eq!(timers.next(), Some(ms(30)));
        assert_eq!(timers.pop_due(ms(30)), Some(3), "a deadline equal to now is due");
        assert_eq!(timers.next(), None);
    }

    #[test]
    fn a_moved_or_cleared_deadline_leaves_no_stale_firing() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut timers = Timers::default();
        timers.set(0, Some(ms(10)));
        timers.set(0, Some(ms(50)));
        timers.set(1, Some(ms(20)));
        timers.set(1, None);
        assert_eq!(timers.next(), Some(ms(50)), "stale entries are skipped");
        assert_eq!(timers.pop_due(ms(40)), None, "slot 0 moved to 50, slot 1 cleared");
        assert_eq!(timers.pop_due(ms(50)), Some(0));
        assert_eq!(timers.held(), 0, "stale entries were dropped on the way");
        // Setting the same deadline again adds no entry.
        timers.set(2, Some(ms(60)));
        timers.set(2, Some(ms(60)));
        assert_eq!(timers.held(), 1);
    }
}
