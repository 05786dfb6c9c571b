//! Send order between schedulable objects (draft-16 §7).
//!
//! A priority number is 0..=255 and **lower is more important**. When a publisher can send
//! one of several schedulable objects (the next object of a subgroup, a datagram, the next
//! object of a fetch response), §7.2 picks, in order:
//!
//! 1. the lower **subscriber priority** (of the request that caused the object to be sent);
//! 2. then the lower **publisher priority**;
//! 3. then, for two objects of the same request in different groups, the **group order** of
//!    that subscription: Ascending sends the lower Group ID first, Descending the higher;
//! 4. then, in the same group, the lower **Subgroup ID** (subgroup objects) or the lower
//!    **Object ID** (datagrams). Between a subgroup object and a datagram the order is
//!    implementation dependent: tiermesh sends the subgroup object first.
//!
//! [`SendOrder`] packs these into one `Ord` key: `a < b` means `a` is sent first. Objects of
//! different requests with equal priorities have no order in the draft; the key then still
//! compares group and subgroup, which keeps the result a total order and lets every
//! subscription make progress.

use std::cmp::Ordering;

/// The publisher priority of a subscription whose track has no DEFAULT PUBLISHER PRIORITY
/// extension (draft-16 §11), and the subscriber priority when the request omits it
/// (§9.2.2.3).
pub const DEFAULT_PRIORITY: u8 = 128;

pub use crate::types::GroupOrder;

/// The order a subscription uses: the subscriber's GROUP ORDER parameter if it sent one,
/// else the publisher's DEFAULT PUBLISHER GROUP ORDER extension, else Ascending
/// (§9.2.2.4 and §11 DEFAULT PUBLISHER GROUP ORDER).
pub fn resolve_group_order(
    subscriber: Option<GroupOrder>,
    publisher: Option<GroupOrder>,
) -> GroupOrder {
    subscriber.or(publisher).unwrap_or(GroupOrder::Ascending)
}

/// Compares two Group IDs of one subscription: `Less` means group `a` is sent first.
pub fn compare_groups(order: GroupOrder, a: u64, b: u64) -> Ordering {
    match order {
        GroupOrder::Ascending => a.cmp(&b),
        GroupOrder::Descending => b.cmp(&a),
    }
}

/// Where in its group a schedulable object sits (step 4 of §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    /// The next object of a subgroup (subscription) or of a fetch response; ordered by
    /// Subgroup ID.
    Subgroup(u64),
    /// A datagram; ordered by Object ID.
    Datagram(u64),
}

/// The scheduling key of one schedulable object. Smaller keys are sent first; see the
/// module docs for the rules it encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SendOrder {
    subscriber_priority: u8,
    publisher_priority: u8,
    group_order: GroupOrder,
    group_id: u64,
    position: Position,
}

impl SendOrder {
    /// The key of the next object of a subgroup (or of a fetch response).
    pub fn subgroup(
        subscriber_priority: u8,
        publisher_priority: u8,
        group_order: GroupOrder,
        group_id: u64,
        subgroup_id: u64,
    ) -> Self {
        SendOrder {
            subscriber_priority,
            publisher_priority,
            group_order,
            group_id,
            position: Position::Subgroup(subgroup_id),
        }
    }

    /// The key of a datagram.
    pub fn datagram(
        subscriber_priority: u8,
        publisher_priority: u8,
        group_order: GroupOrder,
        group_id: u64,
        object_id: u64,
    ) -> Self {
        SendOrder {
            subscriber_priority,
            publisher_priority,
            group_order,
            group_id,
            position: Position::Datagram(object_id),
        }
    }

    /// The subscriber priority.
    pub fn subscriber_priority(&self) -> u8 {
        self.subscriber_priority
    }

    /// The publisher priority.
    pub fn publisher_priority(&self) -> u8 {
        self.publisher_priority
    }

    /// The Group ID.
    pub fn group_id(&self) -> u64 {
        self.group_id
    }

    /// Sets a new subscriber priority (REQUEST_UPDATE changed it, §7.1).
    pub fn with_subscriber_priority(mut self, p: u8) -> Self {
        self.subscriber_priority = p;
        self
    }

    /// The group as an ascending key: Descending subscriptions invert the Group ID so that a
    /// plain ascending comparison sends newer groups first.
    fn group_key(&self) -> u64 {
        match self.group_order {
            GroupOrder::Ascending => self.group_id,
            GroupOrder::Descending => u64::MAX - self.group_id,
        }
    }

    fn position_key(&self) -> (u8, u64) {
        match self.position {
            Position::Subgroup(id) => (0, id),
            Position::Datagram(id) => (1, id),
        }
    }
}

impl Ord for SendOrder {
    fn cmp(&self, other: &Self) -> Ordering {
        self.subscriber_priority
            .cmp(&other.subscriber_priority)
            .then(self.publisher_priority.cmp(&other.publisher_priority))
            .then(self.group_key().cmp(&other.group_key()))
            .then(self.position_key().cmp(&other.position_key()))
    }
}

impl PartialOrd for SendOrder {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compares two schedulable objects: `Less` means `a` is sent first (draft-16 §7.2).
pub fn compare(a: &SendOrder, b: &SendOrder) -> Ordering {
    a.cmp(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use GroupOrder::*;

    /// §7.2 rule 1: a different subscriber priority decides first, whatever the
    /// publisher priority ("the one with the highest subscriber priority", lower number).
    #[test]
    fn subscriber_priority_decides_first() {
        let a = SendOrder::subgroup(1, 255, Ascending, 100, 9);
        let b = SendOrder::subgroup(2, 0, Ascending, 0, 0);
        assert!(a < b);
    }

    /// §7.2 rule 2: with equal subscriber priority, the lower publisher priority number
    /// goes first, even from an older or later group.
    #[test]
    fn publisher_priority_decides_second() {
        let audio = SendOrder::subgroup(128, 16, Descending, 5, 0);
        let video = SendOrder::subgroup(128, 32, Descending, 9, 0);
        assert!(audio < video);
    }

    /// §7.2 rule 3: same priorities, different groups: the subscription's group order.
    #[test]
    fn group_order_ascending_and_descending() {
        let old = SendOrder::subgroup(128, 128, Ascending, 3, 0);
        let new = SendOrder::subgroup(128, 128, Ascending, 4, 0);
        assert!(old < new, "Ascending: lower Group ID first");
        let old = SendOrder::subgroup(128, 128, Descending, 3, 0);
        let new = SendOrder::subgroup(128, 128, Descending, 4, 0);
        assert!(new < old, "Descending: higher Group ID first");
        // Extremes do not wrap.
        let zero = SendOrder::subgroup(0, 0, Descending, 0, 0);
        let max = SendOrder::subgroup(0, 0, Descending, crate::coding::VARINT_MAX, 0);
        assert!(max < zero);
    }

    /// §7.2 rule 4: same group: lowest Subgroup ID, or lowest Object ID for datagrams.
    #[test]
    fn lowest_subgroup_then_object_id() {
        let base = SendOrder::subgroup(128, 128, Ascending, 7, 0);
        let enhancement = SendOrder::subgroup(128, 128, Ascending, 7, 1);
        assert!(base < enhancement);
        let d1 = SendOrder::datagram(128, 128, Ascending, 7, 1);
        let d2 = SendOrder::datagram(128, 128, Ascending, 7, 2);
        assert!(d1 < d2);
        // Mixed forwarding preferences: implementation dependent; ours is subgroup first,
        // and the order is total and antisymmetric.
        assert!(enhancement < d1);
        assert_eq!(compare(&d1, &enhancement), Ordering::Greater);
    }

    /// A sorted queue follows the rules in order: catalog, audio, the base tier, newest
    /// group first within a tier.
    #[test]
    fn sorting_a_mixed_queue() {
        let mut q = [
            ("video-hi g9", SendOrder::subgroup(128, 48, Descending, 9, 0)),
            ("video-lo g8", SendOrder::subgroup(128, 32, Descending, 8, 0)),
            ("audio g100", SendOrder::subgroup(128, 16, Descending, 100, 0)),
            ("video-lo g9", SendOrder::subgroup(128, 32, Descending, 9, 0)),
            ("catalog g1", SendOrder::subgroup(128, 0, Descending, 1, 0)),
            ("urgent fetch", SendOrder::subgroup(0, 200, Ascending, 1, 0)),
        ];
        q.sort_by_key(|a| a.1);
        let names: Vec<_> = q.iter().map(|x| x.0).collect();
        assert_eq!(
            names,
            [
                "urgent fetch",
                "catalog g1",
                "audio g100",
                "video-lo g9",
                "video-lo g8",
                "video-hi g9"
            ]
        );
    }

    #[test]
    fn group_order_resolution_and_codes() {
        assert_eq!(resolve_group_order(None, None), Ascending);
        assert_eq!(resolve_group_order(None, Some(Descending)), Descending);
        assert_eq!(resolve_group_order(Some(Ascending), Some(Descending)), Ascending);
        assert_eq!(compare_groups(Ascending, 1, 2), Ordering::Less);
        assert_eq!(compare_groups(Descending, 1, 2), Ordering::Greater);
    }
}
