//! What the relay knows across sessions: tracks, published namespaces and namespace
//! subscribers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tiermesh_client::moq::Connection;
use tiermesh_proto::types::{FullTrackName, RequestId, TrackNamespace};

use crate::track::{SessionId, Track};

/// A namespace a session publishes (PUBLISH_NAMESPACE, or implied by a PUBLISH).
#[derive(Debug, Clone)]
pub struct Announcement {
    pub(crate) session: SessionId,
    pub(crate) namespace: TrackNamespace,
    pub(crate) conn: Connection,
    /// True for a PUBLISH_NAMESPACE the relay may send SUBSCRIBEs under; false for the
    /// namespace of a track pushed with PUBLISH.
    pub(crate) subscribable: bool,
}

/// A session's SUBSCRIBE_NAMESPACE.
#[derive(Debug, Clone)]
pub struct NamespaceSubscriber {
    pub(crate) session: SessionId,
    pub(crate) prefix: TrackNamespace,
    pub(crate) request_id: RequestId,
    pub(crate) conn: Connection,
}

/// The relay-wide tables.
#[derive(Debug, Default)]
pub struct State {
    pub(crate) tracks: HashMap<FullTrackName, Arc<Track>>,
    pub(crate) announcements: Vec<Announcement>,
    pub(crate) ns_subscribers: Vec<NamespaceSubscriber>,
}

impl State {
    /// The session to send a SUBSCRIBE for `track` to: the one whose published namespace is
    /// the longest prefix of the track's namespace (the newest on a tie).
    pub(crate) fn publisher_for(&self, track: &FullTrackName) -> Option<(SessionId, Connection)> {
        self.announcements
            .iter()
            .enumerate()
            .filter(|(_, a)| a.subscribable && track.namespace.has_prefix(&a.namespace))
            .max_by_key(|(i, a)| (a.namespace.len(), *i))
            .map(|(_, a)| (a.session, a.conn.clone()))
    }

    /// Like [`State::publisher_for`], leaving out the session `except` (one whose upstream
    /// was just lost and whose announcements may not be cleared yet).
    pub(crate) fn publisher_for_except(
        &self,
        track: &FullTrackName,
        except: SessionId,
    ) -> Option<(SessionId, Connection)> {
        self.announcements
            .iter()
            .enumerate()
            .filter(|(_, a)| {
                a.subscribable && a.session != except && track.namespace.has_prefix(&a.namespace)
            })
            .max_by_key(|(i, a)| (a.namespace.len(), *i))
            .map(|(_, a)| (a.session, a.conn.clone()))
    }

    /// True if some session announces exactly `namespace`.
    pub(crate) fn is_announced(&self, namespace: &TrackNamespace) -> bool {
        self.announcements.iter().any(|a| &a.namespace == namespace)
    }

    /// Every distinct announced namespace under `prefix`.
    pub(crate) fn announced_under(&self, prefix: &TrackNamespace) -> Vec<TrackNamespace> {
        let mut out: Vec<TrackNamespace> = Vec::new();
        for a in &self.announcements {
            if a.namespace.has_prefix(prefix) && !out.contains(&a.namespace) {
                out.push(a.namespace.clone());
            }
        }
        out
    }

    /// The namespace subscribers `namespace` matches.
    pub(crate) fn subscribers_of(&self, namespace: &TrackNamespace) -> Vec<NamespaceSubscriber> {
        self.ns_subscribers.iter().filter(|s| namespace.has_prefix(&s.prefix)).cloned().collect()
    }
}

/// The tables behind one lock (held only for short, synchronous updates).
#[derive(Debug, Default)]
pub struct Registry {
    state: Mutex<State>,
}

impl Registry {
    /// The tables, locked.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
