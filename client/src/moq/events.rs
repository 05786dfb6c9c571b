//! Requests and notices from the peer, each with its way of answering.
//!
//! A request dropped without an answer is refused with INTERNAL_ERROR, so the peer never
//! waits for an answer that cannot come.

use tiermesh_proto::ext::Extensions;
use tiermesh_proto::message::{MessageParams, RequestErrorCode};
use tiermesh_proto::session::FetchRange;
use tiermesh_proto::types::{FullTrackName, Location, RequestId, TrackAlias, TrackNamespace};

use super::driver::Command;
use super::{Connection, Error, FetchResponse, TrackReader, TrackWriter};

/// Something the peer asked for or told this endpoint.
#[derive(Debug)]
pub enum Event {
    /// The peer subscribes to a track (SUBSCRIBE).
    Subscribe(SubscribeRequest),
    /// The peer fetches objects (FETCH, standalone or joining).
    Fetch(IncomingFetch),
    /// The peer offers a track (PUBLISH).
    Publish(IncomingPublish),
    /// The peer publishes a namespace (PUBLISH_NAMESPACE).
    PublishNamespace(NamespaceRequest),
    /// The peer withdrew a namespace (PUBLISH_NAMESPACE_DONE).
    PublishNamespaceDone {
        /// The peer's PUBLISH_NAMESPACE.
        request_id: RequestId,
        /// The namespace.
        namespace: TrackNamespace,
    },
    /// The peer subscribes to namespaces under a prefix (SUBSCRIBE_NAMESPACE).
    SubscribeNamespace(NamespaceSubscribeRequest),
    /// A namespace subscription of the peer ended (its stream closed).
    SubscribeNamespaceEnded {
        /// The peer's SUBSCRIBE_NAMESPACE.
        request_id: RequestId,
    },
    /// The peer asks for a track's status (TRACK_STATUS).
    TrackStatus(TrackStatusRequest),
    /// The peer updated a subscription this endpoint serves (REQUEST_UPDATE, already
    /// answered with REQUEST_OK; FORWARD and the filter already apply to the session).
    SubscriptionUpdate {
        /// The subscription's request ID (as [`TrackWriter::request_id`]).
        request_id: RequestId,
        /// The parameters the update changes.
        params: MessageParams,
    },
    /// The peer sent GOAWAY: open a new session (at `uri`, or the same URI when empty).
    Goaway {
        /// Where to reconnect.
        uri: String,
    },
}

macro_rules! refuse_on_drop {
    ($ty:ident) => {
        impl Drop for $ty {
            fn drop(&mut self) {
                if !self.answered {
                    self.conn.send(Command::Reject {
                        request_id: self.request_id,
                        code: RequestErrorCode::InternalError,
                        reason: "not answered".into(),
                    });
                }
            }
        }

        impl $ty {
            /// Refuses the request with REQUEST_ERROR.
            pub fn reject(mut self, code: RequestErrorCode, reason: &str) {
                self.answered = true;
                self.conn.send(Command::Reject {
                    request_id: self.request_id,
                    code,
                    reason: reason.to_owned(),
                });
            }

            /// The peer's request ID.
            pub fn request_id(&self) -> RequestId {
                self.request_id
            }
        }
    };
}

/// A SUBSCRIBE from the peer.
#[derive(Debug)]
pub struct SubscribeRequest {
    pub(crate) conn: Connection,
    pub(crate) request_id: RequestId,
    pub(crate) answered: bool,
    /// The track.
    pub track: FullTrackName,
    /// The parameters (filter, priority, tokens resolved, ...).
    pub params: MessageParams,
}
refuse_on_drop!(SubscribeRequest);

impl SubscribeRequest {
    /// Accepts with SUBSCRIBE_OK, giving the track's extensions and the largest location
    /// published so far (joining fetches are computed from it). Returns the writer for the
    /// subscription's objects.
    pub async fn accept(
        mut self,
        extensions: Extensions,
        largest: Option<Location>,
    ) -> Result<TrackWriter, Error> {
        self.answered = true;
        let params = MessageParams { largest_object: largest, ..Default::default() };
        let request_id = self.request_id;
        let sub = self.params.clone();
        self.conn
            .call(|reply| Command::AcceptSubscribe {
                request_id,
                params,
                extensions,
                subscriber: sub,
                reply,
            })
            .await
    }
}

/// A FETCH from the peer, with its range resolved (for a joining fetch, from the joined
/// subscription's largest location).
#[derive(Debug)]
pub struct IncomingFetch {
    pub(crate) conn: Connection,
    pub(crate) request_id: RequestId,
    pub(crate) answered: bool,
    /// Track, start, end (exclusive; object 0 means the whole end group), joined request.
    pub range: FetchRange,
    /// The parameters.
    pub params: MessageParams,
}
refuse_on_drop!(IncomingFetch);

impl IncomingFetch {
    /// Accepts with FETCH_OK and returns the writer of the fetch stream.
    pub async fn accept(
        mut self,
        end_of_track: bool,
        end_location: Location,
        extensions: Extensions,
    ) -> Result<FetchResponse, Error> {
        self.answered = true;
        let request_id = self.request_id;
        self.conn
            .call(|reply| Command::AcceptFetch {
                request_id,
                end_of_track,
                end_location,
                extensions,
                reply,
            })
            .await
    }
}

/// A PUBLISH from the peer.
#[derive(Debug)]
pub struct IncomingPublish {
    pub(crate) conn: Connection,
    pub(crate) request_id: RequestId,
    pub(crate) answered: bool,
    /// The track.
    pub track: FullTrackName,
    /// The alias its data streams carry.
    pub track_alias: TrackAlias,
    /// The parameters (LARGEST_OBJECT, tokens, ...).
    pub params: MessageParams,
    /// Track extension headers.
    pub extensions: Extensions,
}
refuse_on_drop!(IncomingPublish);

impl IncomingPublish {
    /// Accepts with PUBLISH_OK (forwarding on) and returns the reader of the track's objects,
    /// including any that arrived before.
    pub async fn accept(mut self) -> Result<TrackReader, Error> {
        self.answered = true;
        let request_id = self.request_id;
        self.conn.call(|reply| Command::AcceptPublish { request_id, reply }).await
    }
}

/// A PUBLISH_NAMESPACE from the peer.
#[derive(Debug)]
pub struct NamespaceRequest {
    pub(crate) conn: Connection,
    pub(crate) request_id: RequestId,
    pub(crate) answered: bool,
    /// The namespace.
    pub namespace: TrackNamespace,
    /// The parameters (tokens resolved).
    pub params: MessageParams,
}
refuse_on_drop!(NamespaceRequest);

impl NamespaceRequest {
    /// Accepts with REQUEST_OK.
    pub fn accept(mut self) {
        self.answered = true;
        self.conn.send(Command::AcceptRequest {
            request_id: self.request_id,
            params: MessageParams::default(),
        });
    }
}

/// A SUBSCRIBE_NAMESPACE from the peer.
#[derive(Debug)]
pub struct NamespaceSubscribeRequest {
    pub(crate) conn: Connection,
    pub(crate) request_id: RequestId,
    pub(crate) answered: bool,
    /// The prefix.
    pub prefix: TrackNamespace,
    /// The parameters (tokens resolved).
    pub params: MessageParams,
}
refuse_on_drop!(NamespaceSubscribeRequest);

impl NamespaceSubscribeRequest {
    /// Accepts with REQUEST_OK; then report namespaces with [`Connection::namespace`] and
    /// [`Connection::namespace_done`] under this request ID.
    pub fn accept(mut self) {
        self.answered = true;
        self.conn.send(Command::AcceptRequest {
            request_id: self.request_id,
            params: MessageParams::default(),
        });
    }
}

/// A TRACK_STATUS from the peer.
#[derive(Debug)]
pub struct TrackStatusRequest {
    pub(crate) conn: Connection,
    pub(crate) request_id: RequestId,
    pub(crate) answered: bool,
    /// The track.
    pub track: FullTrackName,
    /// The parameters (tokens resolved).
    pub params: MessageParams,
}
refuse_on_drop!(TrackStatusRequest);

impl TrackStatusRequest {
    /// Answers with REQUEST_OK carrying the parameters a SUBSCRIBE_OK would (draft-16
    /// §9.19): LARGEST_OBJECT when something was published, ...
    pub fn accept(mut self, params: MessageParams) {
        self.answered = true;
        self.conn.send(Command::AcceptRequest { request_id: self.request_id, params });
    }
}
