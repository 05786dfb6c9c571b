//! Small building blocks of the hot path: the set of levels with data ready and a cheap
//! hasher for the scheduler's own keys.

use std::hash::{BuildHasherDefault, Hasher};

/// The set of non-empty priority levels (0..=65535): a two-level bitmap, so inserting,
/// removing and finding the most important level cost a few word operations. Its 8 KiB of
/// words are allocated at the first insert, not before: every connection has a scheduler,
/// and an idle one never queues anything.
#[derive(Debug, Clone, Default)]
pub(super) struct LevelSet {
    /// 1024 words once anything was inserted, empty before.
    words: Vec<u64>,
    summary: [u64; 16],
}

impl LevelSet {
    pub(super) fn insert(&mut self, level: u16) {
        if self.words.is_empty() {
            self.words = vec![0; 1024];
        }
        let w = usize::from(level >> 6);
        self.words[w] |= 1 << (level & 63);
        self.summary[w >> 6] |= 1 << (w & 63);
    }

    pub(super) fn remove(&mut self, level: u16) {
        if self.words.is_empty() {
            return;
        }
        let w = usize::from(level >> 6);
        self.words[w] &= !(1 << (level & 63));
        if self.words[w] == 0 {
            self.summary[w >> 6] &= !(1 << (w & 63));
        }
    }

    /// The smallest (most important) level in the set.
    pub(super) fn first(&self) -> Option<u16> {
        let (i, s) = self.summary.iter().enumerate().find(|(_, s)| **s != 0)?;
        let w = i * 64 + s.trailing_zeros() as usize;
        let bit = self.words[w].trailing_zeros() as usize;
        u16::try_from(w * 64 + bit).ok()
    }
}

/// A multiplicative hasher for the scheduler's maps. Their keys are stream keys the driver
/// assigns and request IDs, which the draft makes sequential, so no peer can pick keys
/// that collide; SipHash's protection would only cost time on every write.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        // Fold the high bits (where multiplication mixes best) into the low ones the
        // table indexes with.
        self.0 ^ (self.0 >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Builds [`KeyHasher`]s.
pub(crate) type BuildKeyHasher = BuildHasherDefault<KeyHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The bitmap agrees with an ordered set under inserts and removes at the edges and
    /// across word boundaries.
    #[test]
    fn level_set_matches_an_ordered_set() {
        let mut bits = LevelSet::default();
        let mut set = BTreeSet::new();
        let ops: [(bool, u16); 12] = [
            (true, 65535),
            (true, 64),
            (true, 63),
            (false, 63),
            (true, 0),
            (true, 4096),
            (false, 0),
            (false, 64),
            (true, 32 + 16),
            (false, 4096),
            (false, 48),
            (false, 65535),
        ];
        assert_eq!(bits.first(), None);
        for (insert, level) in ops {
            if insert {
                bits.insert(level);
                set.insert(level);
            } else {
                bits.remove(level);
                set.remove(&level);
            }
            assert_eq!(bits.first(), set.first().copied(), "after {insert} {level}");
        }
    }
}
