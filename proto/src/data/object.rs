//! The canonical object of draft-16 §10.2.1: every property a cache stores, whatever form
//! the object arrived in (subgroup stream, datagram or fetch stream).

use bytes::Bytes;

use super::{Datagram, DatagramBody, FetchObject, ObjectStatus, SubgroupHeader, SubgroupObject};
use crate::ext::Extensions;
use crate::types::{Location, TrackAlias};

/// Object Forwarding Preference, with the Subgroup ID for subgroup objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Forwarding {
    /// Sent on the subgroup stream with this Subgroup ID.
    Subgroup(u64),
    /// Sent as a datagram; no Subgroup ID.
    Datagram,
}

impl Forwarding {
    /// The Subgroup ID, for subgroup objects.
    pub fn subgroup_id(self) -> Option<u64> {
        match self {
            Forwarding::Subgroup(id) => Some(id),
            Forwarding::Datagram => None,
        }
    }
}

/// One object with all its canonical properties (the track is known from context).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The Group ID.
    pub group_id: u64,
    /// The Object ID.
    pub object_id: u64,
    /// Subgroup (with its ID) or Datagram.
    pub forwarding: Forwarding,
    /// The Publisher Priority, resolved: the value sent with the object, else the
    /// subscription's default.
    pub publisher_priority: u8,
    /// Normal, End of Group or End of Track.
    pub status: ObjectStatus,
    /// Extension Headers.
    pub extensions: Extensions,
    /// The payload (empty unless the status is Normal).
    pub payload: Bytes,
}

impl Object {
    /// The object's Location.
    pub fn location(&self) -> Location {
        Location::new(self.group_id, self.object_id)
    }

    /// An object read from a subgroup stream. `subgroup_id` is the stream's resolved
    /// Subgroup ID ([`super::SubgroupReader::subgroup_id`]); `default_priority` is the
    /// subscription's publisher priority, used when the header carries none.
    pub fn from_subgroup(
        header: &SubgroupHeader,
        subgroup_id: u64,
        obj: SubgroupObject,
        default_priority: u8,
    ) -> Self {
        Object {
            group_id: header.group_id,
            object_id: obj.object_id,
            forwarding: Forwarding::Subgroup(subgroup_id),
            publisher_priority: header.publisher_priority.unwrap_or(default_priority),
            status: obj.status,
            extensions: obj.extensions,
            payload: obj.payload,
        }
    }

    /// An object read from a datagram. The datagram's END_OF_GROUP bit is not an object
    /// property; read it from the [`Datagram`] before converting.
    pub fn from_datagram(d: Datagram, default_priority: u8) -> Self {
        let (status, payload) = match d.body {
            DatagramBody::Payload(p) => (ObjectStatus::Normal, p),
            DatagramBody::Status(s) => (s, Bytes::new()),
        };
        Object {
            group_id: d.group_id,
            object_id: d.object_id,
            forwarding: Forwarding::Datagram,
            publisher_priority: d.publisher_priority.unwrap_or(default_priority),
            status,
            extensions: d.extensions,
            payload,
        }
    }

    /// An object read from a fetch stream (always Normal: fetch carries no status).
    pub fn from_fetch(o: FetchObject) -> Self {
        Object {
            group_id: o.group_id,
            object_id: o.object_id,
            forwarding: match o.subgroup_id {
                Some(s) => Forwarding::Subgroup(s),
                None => Forwarding::Datagram,
            },
            publisher_priority: o.publisher_priority,
            status: ObjectStatus::Normal,
            extensions: o.extensions,
            payload: o.payload,
        }
    }

    /// The object as it is written on a subgroup stream (its header holds the group,
    /// subgroup and priority).
    pub fn to_subgroup_object(&self) -> SubgroupObject {
        SubgroupObject {
            object_id: self.object_id,
            extensions: self.extensions.clone(),
            status: self.status,
            payload: self.payload.clone(),
        }
    }

    /// The object as a datagram of `track_alias`. The priority is sent unless it equals
    /// `default_priority` (the subscription's), which the receiver then applies.
    pub fn to_datagram(&self, track_alias: TrackAlias, default_priority: Option<u8>) -> Datagram {
        Datagram {
            track_alias,
            group_id: self.group_id,
            object_id: self.object_id,
            publisher_priority: if default_priority == Some(self.publisher_priority) {
                None
            } else {
                Some(self.publisher_priority)
            },
            extensions: self.extensions.clone(),
            end_of_group: false,
            body: match self.status {
                ObjectStatus::Normal => DatagramBody::Payload(self.payload.clone()),
                s => DatagramBody::Status(s),
            },
        }
    }

    /// The object as a fetch stream object; `None` for an End of Group or End of Track
    /// object, which a fetch response conveys by its range instead (fetch objects carry no
    /// status, §10.2.1.1).
    pub fn to_fetch_object(&self) -> Option<FetchObject> {
        if self.status != ObjectStatus::Normal {
            return None;
        }
        Some(FetchObject {
            group_id: self.group_id,
            subgroup_id: self.forwarding.subgroup_id(),
            object_id: self.object_id,
            publisher_priority: self.publisher_priority,
            extensions: self.extensions.clone(),
            payload: self.payload.clone(),
        })
    }
}
