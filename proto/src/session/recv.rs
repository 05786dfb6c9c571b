//! What the session does with bytes and messages from the peer.

use std::time::Instant;

use super::ids::{Arrival, Violation};
use super::{
    Event, FetchRange, FetchState, JoinKind, NsSubscription, PeerSetup, Phase, Request, Role,
    Session, Stream, SubState, Subscription, Timer, Transport,
};
use crate::coding::{DecodeError, TerminationCode};
use crate::message::{
    self, AuthToken, Fetch, FetchType, Message, MessageParams, RequestErrorCode, UpdateTarget,
};
use crate::types::{FilterType, Location, ReasonPhrase, RequestId, SubscriptionFilter};

/// The most bytes a SUBSCRIBE_NAMESPACE stream may carry before SETUP completes: two whole
/// control messages (a frame is at most 65535 bytes of payload plus its header).
const MAX_EARLY_STREAM_BYTES: usize = 2 * (crate::message::MAX_PAYLOAD_LEN + 16);

/// What a message that refers to an earlier request finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ref {
    /// The request is live.
    Live,
    /// The request existed and has finished: a racing message, ignored.
    Finished,
    /// No such request was ever made.
    Never,
}

impl Session {
    /// Bytes read from the control stream, in order, split anywhere. Partial messages are
    /// kept until the rest arrives.
    pub fn handle_control_bytes(&mut self, now: Instant, data: &[u8]) {
        if self.phase == Phase::Closed {
            return;
        }
        self.stats.bytes_received += data.len() as u64;
        self.control_buf.extend_from_slice(data);
        let mut consumed = 0;
        while self.phase != Phase::Closed {
            let parsed = {
                let mut cur = &self.control_buf[consumed..];
                let before = cur.len();
                Message::decode(&mut cur).map(|m| (m, before - cur.len()))
            };
            match parsed {
                Ok((msg, used)) => {
                    consumed += used;
                    self.handle_control_message(now, msg);
                }
                Err(DecodeError::Short) => break,
                Err(DecodeError::Malformed { code, reason }) => {
                    self.close_with(code, reason);
                    return;
                }
            }
        }
        if self.phase != Phase::Closed {
            self.control_buf.drain(..consumed);
        }
    }

    /// Bytes read from a stream: the control stream or a SUBSCRIBE_NAMESPACE stream.
    /// `fin` says the peer finished its side after `data`. Finishing the control stream
    /// closes the session with PROTOCOL_VIOLATION (draft-16 §3.3).
    pub fn handle_stream_bytes(&mut self, now: Instant, stream: Stream, data: &[u8], fin: bool) {
        if self.phase == Phase::Closed {
            return;
        }
        if stream == Stream::Control {
            self.handle_control_bytes(now, data);
            if fin {
                self.close_with(TerminationCode::ProtocolViolation, "control stream closed");
            }
            return;
        }
        let entry = match stream {
            Stream::Peer(_) => self.streams.entry(stream).or_default(),
            _ => match self.streams.get_mut(&stream) {
                Some(e) => e,
                // A stream this endpoint already forgot: its subscription ended.
                None => return,
            },
        };
        if entry.recv_closed {
            return;
        }
        entry.buf.extend_from_slice(data);
        self.stats.bytes_received += data.len() as u64;
        entry.recv_closed |= fin;
        if self.phase == Phase::Setup {
            if entry.buf.len() > MAX_EARLY_STREAM_BYTES {
                self.close_with(
                    TerminationCode::ProtocolViolation,
                    "too much data on a bidirectional stream before SETUP",
                );
            }
            return;
        }
        self.process_stream(now, stream);
    }

    /// The peer reset its side of a stream. For the control stream that closes the session
    /// with PROTOCOL_VIOLATION; for a SUBSCRIBE_NAMESPACE stream it ends the subscription.
    pub fn handle_stream_reset(&mut self, now: Instant, stream: Stream) {
        if self.phase == Phase::Closed {
            return;
        }
        if stream == Stream::Control {
            self.close_with(TerminationCode::ProtocolViolation, "control stream reset");
            return;
        }
        if let Some(e) = self.streams.get_mut(&stream) {
            e.buf.clear();
            e.recv_closed = true;
            if self.phase == Phase::Ready {
                self.process_stream(now, stream);
            }
        }
    }

    fn process_stream(&mut self, now: Instant, stream: Stream) {
        loop {
            if self.phase == Phase::Closed {
                return;
            }
            let Some(entry) = self.streams.get_mut(&stream) else { return };
            let parsed = {
                let mut cur = &entry.buf[..];
                let before = cur.len();
                Message::decode(&mut cur).map(|m| (m, before - cur.len()))
            };
            match parsed {
                Ok((msg, used)) => {
                    entry.buf.drain(..used);
                    self.handle_stream_message(now, stream, msg);
                }
                Err(DecodeError::Short) => break,
                Err(DecodeError::Malformed { code, reason }) => {
                    self.close_with(code, reason);
                    return;
                }
            }
        }
        let Some(entry) = self.streams.get(&stream) else { return };
        if !entry.recv_closed {
            return;
        }
        if !entry.buf.is_empty() {
            self.close_with(
                TerminationCode::ProtocolViolation,
                "stream ended in the middle of a control message",
            );
            return;
        }
        self.namespace_stream_ended(stream);
    }

    /// The peer finished a SUBSCRIBE_NAMESPACE stream: the subscription is over.
    fn namespace_stream_ended(&mut self, stream: Stream) {
        let Some(entry) = self.streams.get(&stream) else { return };
        let request = entry.request;
        let send_closed = entry.send_closed;
        if let Some(id) = request
            && let Some(Request::SubscribeNamespace(_)) = self.requests.get(&id)
        {
            self.requests.remove(&id);
            self.cancel_timer(Timer::Response(id));
            self.events.push_back(Event::SubscribeNamespaceEnded { request_id: id });
            self.finish_peer_request(id);
        }
        if !send_closed {
            self.queue_bytes(stream, Vec::new(), true);
        }
        self.streams.remove(&stream);
    }

    fn violation(&mut self, reason: &'static str) {
        self.close_with(TerminationCode::ProtocolViolation, reason);
    }

    fn fail(&mut self, v: Violation) {
        self.close_with(v.code, v.reason);
    }

    fn handle_control_message(&mut self, now: Instant, msg: Message) {
        self.stats.messages_received += 1;
        if self.phase == Phase::Setup {
            match (self.role, msg) {
                (Role::Server, Message::ClientSetup(m)) => self.on_client_setup(now, m),
                (Role::Client, Message::ServerSetup(m)) => self.on_server_setup(now, m),
                (Role::Server, Message::ServerSetup(_)) => {
                    self.violation("SERVER_SETUP sent by a client")
                }
                (Role::Client, Message::ClientSetup(_)) => {
                    self.violation("CLIENT_SETUP sent by a server")
                }
                _ => self.violation("control message before SETUP"),
            }
            return;
        }
        match msg {
            Message::ClientSetup(_) | Message::ServerSetup(_) => self.violation("second SETUP"),
            Message::GoAway(m) => self.on_goaway(m),
            Message::MaxRequestId(m) => match self.local_ids.raise_max(m.max_request_id.0) {
                Ok(true) => self.events.push_back(Event::RequestsUnblocked),
                Ok(false) => {}
                Err(v) => self.fail(v),
            },
            Message::RequestsBlocked(m) => {
                self.events.push_back(Event::RequestsBlocked { max_request_id: m.max_request_id });
                if let Some(max) = self.peer_ids.grant(true) {
                    self.queue(
                        Stream::Control,
                        &message::MaxRequestId { max_request_id: RequestId(max) }.into(),
                    );
                }
            }
            Message::Subscribe(m) => self.on_subscribe(m),
            Message::SubscribeOk(m) => self.on_subscribe_ok(m),
            Message::RequestOk(m) => self.on_request_ok(m),
            Message::RequestError(m) => self.on_request_error(m),
            Message::RequestUpdate(m) => self.on_request_update(m, Arrival::Control),
            Message::Unsubscribe(m) => self.on_unsubscribe(m.request_id),
            Message::Publish(m) => self.on_publish(m),
            Message::PublishOk(m) => self.on_publish_ok(m),
            Message::PublishDone(m) => self.on_publish_done(now, m),
            Message::Fetch(m) => self.on_fetch(m),
            Message::FetchOk(m) => self.on_fetch_ok(m),
            Message::FetchCancel(m) => self.on_fetch_cancel(m.request_id),
            Message::TrackStatus(m) => self.on_track_status(m),
            Message::PublishNamespace(m) => self.on_publish_namespace(m),
            Message::PublishNamespaceDone(m) => self.on_publish_namespace_done(m.request_id),
            Message::PublishNamespaceCancel(m) => self.on_publish_namespace_cancel(m),
            Message::SubscribeNamespace(_) => {
                self.violation("SUBSCRIBE_NAMESPACE on the control stream")
            }
            Message::Namespace(_) | Message::NamespaceDone(_) => {
                self.violation("NAMESPACE or NAMESPACE_DONE on the control stream")
            }
        }
    }

    // ----- setup -----

    fn on_client_setup(&mut self, now: Instant, mut m: message::ClientSetup) {
        let wt = self.config.transport == Transport::WebTransport;
        if let Some(path) = &m.params.path {
            if wt {
                return self.close_with(TerminationCode::InvalidPath, "PATH over WebTransport");
            }
            if self.config.allowed_paths.as_ref().is_some_and(|a| !a.contains(path)) {
                return self.close_with(TerminationCode::InvalidPath, "PATH not served here");
            }
        }
        if let Some(authority) = &m.params.authority {
            if wt {
                return self
                    .close_with(TerminationCode::InvalidAuthority, "AUTHORITY over WebTransport");
            }
            if self.config.allowed_authorities.as_ref().is_some_and(|a| !a.contains(authority)) {
                return self
                    .close_with(TerminationCode::InvalidAuthority, "AUTHORITY not served here");
            }
        }
        if let Err(v) = self.resolve_tokens(&mut m.params.auth_tokens, true) {
            return self.fail(v);
        }
        self.local_ids.set_initial_max(m.params.max_request_id());
        let params = self.own_setup_params();
        self.queue(Stream::Control, &message::ServerSetup { params }.into());
        self.setup_done(now, m.params);
    }

    fn on_server_setup(&mut self, now: Instant, mut m: message::ServerSetup) {
        if let Err(v) = self.resolve_tokens(&mut m.params.auth_tokens, false) {
            return self.fail(v);
        }
        self.local_ids.set_initial_max(m.params.max_request_id());
        self.setup_done(now, m.params);
    }

    fn setup_done(&mut self, now: Instant, params: message::SetupParams) {
        self.phase = Phase::Ready;
        self.cancel_timer(Timer::Setup);
        let auth_tokens = params
            .auth_tokens
            .iter()
            .filter_map(|t| t.type_and_value().map(|(ty, v)| (ty, v.clone())))
            .collect();
        let peer = PeerSetup {
            path: params.path.clone(),
            authority: params.authority.clone(),
            implementation: params.implementation.clone(),
            auth_tokens,
            params,
        };
        self.events.push_back(Event::SetupComplete { peer: Box::new(peer) });
        // SUBSCRIBE_NAMESPACE streams that arrived before the control stream.
        // In the transport's stream order, so that a run can be repeated exactly.
        let mut early: Vec<Stream> = self.streams.keys().copied().collect();
        early.sort_by_key(|s| match s {
            Stream::Peer(k) => *k,
            _ => u64::MAX,
        });
        for s in early {
            self.process_stream(now, s);
        }
    }

    fn on_goaway(&mut self, m: message::GoAway) {
        if self.goaway_received {
            return self.violation("second GOAWAY");
        }
        if self.role == Role::Server && !m.new_session_uri.is_empty() {
            return self.violation("GOAWAY with a URI sent by a client");
        }
        self.goaway_received = true;
        self.events.push_back(Event::Goaway { uri: m.new_session_uri });
    }

    // ----- helpers for requests from the peer -----

    /// Accepts the ID of a new request from the peer; closes the session if it is invalid.
    fn new_request(&mut self, id: RequestId, arrival: Arrival) -> bool {
        self.stats.requests_received += 1;
        match self.peer_ids.accept(id.0, arrival) {
            Ok(()) => true,
            Err(v) => {
                self.fail(v);
                false
            }
        }
    }

    /// Resolves a message's authorization tokens; closes the session on a token error.
    fn tokens(&mut self, params: &mut MessageParams) -> bool {
        match self.resolve_tokens(&mut params.auth_tokens, false) {
            Ok(()) => {
                params.auth_tokens.retain(|t| matches!(t, AuthToken::UseValue { .. }));
                true
            }
            Err(v) => {
                self.fail(v);
                false
            }
        }
    }

    /// Sends REQUEST_ERROR for a peer request the session refuses by itself.
    fn auto_reject(&mut self, stream: Stream, id: RequestId, code: RequestErrorCode, why: &str) {
        self.stats.requests_refused += 1;
        let retry_interval = match code {
            // Retry at once, on the session the GOAWAY points to.
            RequestErrorCode::InternalError if self.goaway_sent => 1,
            _ => 0,
        };
        let msg = message::RequestError {
            request_id: id,
            error_code: code,
            retry_interval,
            reason: ReasonPhrase::truncated(why),
        };
        self.queue(stream, &msg.into());
        if let Stream::Peer(_) = stream {
            self.queue_bytes(stream, Vec::new(), true);
            if let Some(e) = self.streams.get_mut(&stream) {
                e.send_closed = true;
            }
        }
        self.finish_peer_request(id);
    }

    /// After this endpoint's GOAWAY, refuses a new request if so configured.
    fn refused_after_goaway(&mut self, stream: Stream, id: RequestId) -> bool {
        if self.goaway_sent && self.config.reject_requests_after_goaway {
            self.auto_reject(stream, id, RequestErrorCode::InternalError, "going away");
            return true;
        }
        false
    }

    fn classify(&self, id: RequestId) -> Ref {
        if self.requests.contains_key(&id) {
            Ref::Live
        } else if (self.is_local(id) && self.local_ids.issued(id.0))
            || (!self.is_local(id) && self.peer_ids.at_or_below_sequence(id.0))
        {
            Ref::Finished
        } else {
            Ref::Never
        }
    }

    /// Checks the ID of an answer to one of this endpoint's requests: the wrong parity closes
    /// with INVALID_REQUEST_ID, an ID never used with PROTOCOL_VIOLATION. Returns true if
    /// the request is live.
    fn answer_target(&mut self, id: RequestId) -> bool {
        if !self.is_local(id) {
            self.close_with(
                TerminationCode::InvalidRequestId,
                "answer carries a request ID of the wrong parity",
            );
            return false;
        }
        match self.classify(id) {
            Ref::Live => true,
            Ref::Finished => false,
            Ref::Never => {
                self.violation("answer to a request that was never sent");
                false
            }
        }
    }

    /// Checks a message that refers to an earlier request (UNSUBSCRIBE, PUBLISH_DONE, ...):
    /// an ID never used closes with PROTOCOL_VIOLATION. Returns true if it is live.
    fn reference_target(&mut self, id: RequestId, what: &'static str) -> bool {
        match self.classify(id) {
            Ref::Live => true,
            Ref::Finished => false,
            Ref::Never => {
                self.violation(what);
                false
            }
        }
    }

    // ----- subscriptions -----

    fn on_subscribe(&mut self, mut m: message::Subscribe) {
        let id = m.request_id;
        if !self.new_request(id, Arrival::Control) || !self.tokens(&mut m.params) {
            return;
        }
        if self.refused_after_goaway(Stream::Control, id) {
            return;
        }
        if self.by_track.contains_key(&(m.track.clone(), true)) {
            return self.auto_reject(
                Stream::Control,
                id,
                RequestErrorCode::DuplicateSubscription,
                "already subscribed to this track",
            );
        }
        if let Some(SubscriptionFilter::AbsoluteRange { start, end_group }) =
            m.params.subscription_filter
            && end_group < start.group
        {
            return self.auto_reject(
                Stream::Control,
                id,
                RequestErrorCode::InvalidRange,
                "end group before start group",
            );
        }
        self.by_track.insert((m.track.clone(), true), id);
        self.requests.insert(
            id,
            Request::Subscription(Subscription {
                track: m.track.clone(),
                we_publish: true,
                via_publish: false,
                state: SubState::Pending,
                alias: None,
                largest: None,
                filter: m.params.subscription_filter,
                forward: m.params.forward.unwrap_or(true),
                streams: 0,
                expected_streams: None,
                waiting_fetches: Vec::new(),
                answered: false,
                dynamic_groups: false,
            }),
        );
        self.events.push_back(Event::SubscribeRequested {
            request_id: id,
            track: m.track,
            params: m.params,
        });
    }

    /// Checks an incoming alias against the live subscriptions: reuse for a different track
    /// closes the session with DUPLICATE_TRACK_ALIAS (draft-16 §9.9, §9.13).
    fn alias_conflict(&self, alias: crate::types::TrackAlias, id: RequestId) -> bool {
        let Some(&other) = self.incoming_aliases.get(&alias) else { return false };
        if other == id {
            return false;
        }
        let (Some(Request::Subscription(o)), Some(Request::Subscription(s))) =
            (self.requests.get(&other), self.requests.get(&id))
        else {
            return false;
        };
        o.state != SubState::Ended && o.track != s.track
    }

    fn on_subscribe_ok(&mut self, m: message::SubscribeOk) {
        let id = m.request_id;
        if !self.answer_target(id) {
            return;
        }
        let Some(Request::Subscription(s)) = self.requests.get_mut(&id) else {
            return self.violation("SUBSCRIBE_OK for a request that is not a SUBSCRIBE");
        };
        if s.we_publish || s.via_publish {
            return self.violation("SUBSCRIBE_OK for a request that is not a SUBSCRIBE");
        }
        if s.answered {
            return self.violation("second answer to a SUBSCRIBE");
        }
        s.answered = true;
        if s.state == SubState::Ended {
            // This endpoint unsubscribed before the answer came.
            return self.release_subscription(id);
        }
        s.alias = Some(m.track_alias);
        if self.alias_conflict(m.track_alias, id) {
            return self.close_with(
                TerminationCode::DuplicateTrackAlias,
                "SUBSCRIBE_OK reuses a live track alias",
            );
        }
        let Some(Request::Subscription(s)) = self.requests.get_mut(&id) else { return };
        s.state = SubState::Established;
        s.largest = m.params.largest_object;
        s.dynamic_groups = m.extensions.dynamic_groups();
        self.incoming_aliases.insert(m.track_alias, id);
        self.cancel_timer(Timer::Response(id));
        self.events.push_back(Event::SubscribeOk {
            request_id: id,
            track_alias: m.track_alias,
            params: m.params,
            extensions: m.extensions,
        });
    }

    fn on_unsubscribe(&mut self, id: RequestId) {
        if !self.reference_target(id, "UNSUBSCRIBE for a subscription that never existed") {
            return;
        }
        match self.requests.get(&id) {
            Some(Request::Subscription(s)) if s.we_publish => {}
            _ => return self.violation("UNSUBSCRIBE for a subscription this endpoint receives"),
        }
        self.drop_published_subscription(id);
        self.events.push_back(Event::Unsubscribed { request_id: id });
        self.finish_peer_request(id);
    }

    /// Forgets a subscription this endpoint publishes, refusing the joining fetches that
    /// waited for it.
    pub(super) fn drop_published_subscription(&mut self, id: RequestId) {
        let waiting = match self.requests.get_mut(&id) {
            Some(Request::Subscription(s)) => std::mem::take(&mut s.waiting_fetches),
            _ => Vec::new(),
        };
        self.release_subscription(id);
        for (fetch_id, ..) in waiting {
            self.requests.remove(&fetch_id);
            self.auto_reject(
                Stream::Control,
                fetch_id,
                RequestErrorCode::InvalidJoiningRequestId,
                "the joined subscription ended",
            );
        }
    }

    fn on_publish(&mut self, mut m: message::Publish) {
        let id = m.request_id;
        if !self.new_request(id, Arrival::Control) || !self.tokens(&mut m.params) {
            return;
        }
        if let Some(&other) = self.incoming_aliases.get(&m.track_alias)
            && let Some(Request::Subscription(o)) = self.requests.get(&other)
            && o.state != SubState::Ended
            && o.track != m.track
        {
            return self.close_with(
                TerminationCode::DuplicateTrackAlias,
                "PUBLISH reuses a live track alias",
            );
        }
        if self.refused_after_goaway(Stream::Control, id) {
            return;
        }
        if self.by_track.contains_key(&(m.track.clone(), false)) {
            return self.auto_reject(
                Stream::Control,
                id,
                RequestErrorCode::DuplicateSubscription,
                "already subscribed to this track",
            );
        }
        self.by_track.insert((m.track.clone(), false), id);
        self.incoming_aliases.insert(m.track_alias, id);
        self.requests.insert(
            id,
            Request::Subscription(Subscription {
                track: m.track.clone(),
                we_publish: false,
                via_publish: true,
                state: SubState::Pending,
                alias: Some(m.track_alias),
                largest: m.params.largest_object,
                filter: None,
                forward: m.params.forward.unwrap_or(true),
                streams: 0,
                expected_streams: None,
                waiting_fetches: Vec::new(),
                answered: true,
                dynamic_groups: m.extensions.dynamic_groups(),
            }),
        );
        self.events.push_back(Event::PublishRequested {
            request_id: id,
            track: m.track,
            track_alias: m.track_alias,
            params: m.params,
            extensions: m.extensions,
        });
    }

    fn on_publish_ok(&mut self, m: message::PublishOk) {
        let id = m.request_id;
        if !self.answer_target(id) {
            return;
        }
        let Some(Request::Subscription(s)) = self.requests.get_mut(&id) else {
            return self.violation("PUBLISH_OK for a request that is not a PUBLISH");
        };
        if !(s.we_publish && s.via_publish) {
            return self.violation("PUBLISH_OK for a request that is not a PUBLISH");
        }
        if s.answered {
            return self.violation("second answer to a PUBLISH");
        }
        s.answered = true;
        s.state = SubState::Established;
        s.forward = m.params.forward.unwrap_or(true);
        if m.params.subscription_filter.is_some() {
            s.filter = m.params.subscription_filter;
        }
        self.cancel_timer(Timer::Response(id));
        self.events.push_back(Event::PublishOk { request_id: id, params: m.params });
    }

    fn on_publish_done(&mut self, now: Instant, m: message::PublishDone) {
        let id = m.request_id;
        if !self.reference_target(id, "PUBLISH_DONE for a subscription that never existed") {
            return;
        }
        let Some(Request::Subscription(s)) = self.requests.get_mut(&id) else {
            return self.violation("PUBLISH_DONE for a request that is not a subscription");
        };
        if s.we_publish {
            return self.violation("PUBLISH_DONE for a subscription this endpoint publishes");
        }
        s.expected_streams = Some(m.stream_count);
        let all_streams_seen = s.streams >= m.stream_count;
        if s.state == SubState::Ended {
            // This endpoint unsubscribed already; the answer only settles the stream count.
            if all_streams_seen {
                self.release_subscription(id);
            }
            return;
        }
        self.end_incoming_subscription(now, id);
        if all_streams_seen {
            self.release_subscription(id);
        }
        self.events.push_back(Event::PublishDone {
            request_id: id,
            status: m.status_code,
            stream_count: m.stream_count,
            reason: m.reason,
        });
        self.finish_peer_request(id);
    }

    // ----- fetch -----

    fn on_fetch(&mut self, mut m: Fetch) {
        let id = m.request_id;
        if !self.new_request(id, Arrival::Control) || !self.tokens(&mut m.params) {
            return;
        }
        if self.refused_after_goaway(Stream::Control, id) {
            return;
        }
        let (join, kind) = match m.fetch_type {
            FetchType::Standalone(f) => {
                if range_is_backwards(f.start, f.end) {
                    return self.auto_reject(
                        Stream::Control,
                        id,
                        RequestErrorCode::InvalidRange,
                        "end location before start location",
                    );
                }
                self.requests.insert(
                    id,
                    Request::Fetch(FetchState {
                        we_publish: true,
                        established: false,
                        start: Some(f.start),
                        announced: true,
                    }),
                );
                let range =
                    FetchRange { track: f.track, start: f.start, end: f.end, joining: None };
                self.events.push_back(Event::FetchRequested {
                    request_id: id,
                    range,
                    params: m.params,
                });
                return;
            }
            FetchType::RelativeJoining(j) => (j, JoinKind::Relative),
            FetchType::AbsoluteJoining(j) => (j, JoinKind::Absolute),
        };
        let sub_id = join.joining_request_id;
        // A subscription made with SUBSCRIBE waits for this endpoint's SUBSCRIBE_OK, which
        // fixes its largest location; one made with PUBLISH carried it from the start.
        let wait = match self.requests.get(&sub_id) {
            Some(Request::Subscription(s)) if s.we_publish && s.state != SubState::Ended => {
                if s.filter.is_some_and(|f| f.filter_type() != FilterType::LargestObject) {
                    return self.violation(
                        "joining FETCH for a subscription without the Largest Object filter",
                    );
                }
                s.state == SubState::Pending && !s.via_publish
            }
            _ => {
                return self.auto_reject(
                    Stream::Control,
                    id,
                    RequestErrorCode::InvalidJoiningRequestId,
                    "no such subscription to join",
                );
            }
        };
        self.requests.insert(
            id,
            Request::Fetch(FetchState {
                we_publish: true,
                established: false,
                start: None,
                announced: false,
            }),
        );
        if wait {
            if let Some(Request::Subscription(s)) = self.requests.get_mut(&sub_id) {
                s.waiting_fetches.push((id, kind, join.joining_start, m.params));
            }
            return;
        }
        self.announce_joining_fetch(sub_id, id, kind, join.joining_start, m.params);
    }

    /// Emits a joining fetch whose subscription is established, with its range computed
    /// (draft-16 §9.16.3.1), or refuses it when the range cannot be served.
    pub(super) fn announce_joining_fetch(
        &mut self,
        sub_id: RequestId,
        id: RequestId,
        kind: JoinKind,
        joining_start: u64,
        params: MessageParams,
    ) {
        let Some(Request::Subscription(s)) = self.requests.get(&sub_id) else { return };
        let track = s.track.clone();
        let Some(largest) = s.largest else {
            self.requests.remove(&id);
            return self.auto_reject(
                Stream::Control,
                id,
                RequestErrorCode::InvalidRange,
                "nothing published on the track yet",
            );
        };
        let start_group = match kind {
            JoinKind::Relative => largest.group.0.saturating_sub(joining_start),
            JoinKind::Absolute => joining_start,
        };
        let start = Location::new(start_group, 0);
        if start > largest {
            self.requests.remove(&id);
            return self.auto_reject(
                Stream::Control,
                id,
                RequestErrorCode::InvalidRange,
                "joining start after the largest object",
            );
        }
        let end = Location::new(largest.group.0, largest.object.0.saturating_add(1));
        if let Some(Request::Fetch(f)) = self.requests.get_mut(&id) {
            f.start = Some(start);
            f.announced = true;
        }
        self.events.push_back(Event::FetchRequested {
            request_id: id,
            range: FetchRange { track, start, end, joining: Some(sub_id) },
            params,
        });
    }

    fn on_fetch_ok(&mut self, m: message::FetchOk) {
        let id = m.request_id;
        if !self.answer_target(id) {
            return;
        }
        let Some(Request::Fetch(f)) = self.requests.get_mut(&id) else {
            return self.violation("FETCH_OK for a request that is not a FETCH");
        };
        if f.established {
            return self.violation("second answer to a FETCH");
        }
        if f.start.is_some_and(|start| range_is_backwards(start, m.end_location)) {
            return self.violation("FETCH_OK end location before the fetch's start");
        }
        f.established = true;
        self.cancel_timer(Timer::Response(id));
        self.events.push_back(Event::FetchOk {
            request_id: id,
            end_of_track: m.end_of_track,
            end_location: m.end_location,
            params: m.params,
            extensions: m.extensions,
        });
    }

    fn on_fetch_cancel(&mut self, id: RequestId) {
        if !self.reference_target(id, "FETCH_CANCEL for a fetch that never existed") {
            return;
        }
        let announced = match self.requests.get(&id) {
            Some(Request::Fetch(f)) if f.we_publish => f.announced,
            _ => return self.violation("FETCH_CANCEL for a fetch this endpoint did not serve"),
        };
        self.requests.remove(&id);
        if announced {
            self.events.push_back(Event::FetchCancelled { request_id: id });
        } else {
            for r in self.requests.values_mut() {
                if let Request::Subscription(s) = r {
                    s.waiting_fetches.retain(|w| w.0 != id);
                }
            }
        }
        self.finish_peer_request(id);
    }

    // ----- generic answers -----

    fn on_request_ok(&mut self, m: message::RequestOk) {
        let id = m.request_id;
        if !self.answer_target(id) {
            return;
        }
        let kind = match self.requests.get_mut(&id) {
            Some(Request::PublishNamespace { established }) => {
                if *established {
                    return self.violation("second answer to a PUBLISH_NAMESPACE");
                }
                *established = true;
                super::RequestKind::PublishNamespace
            }
            Some(r @ (Request::TrackStatus | Request::Update { .. })) => {
                let kind = r.kind();
                self.requests.remove(&id);
                kind
            }
            Some(Request::SubscribeNamespace(_)) => {
                return self.violation("SUBSCRIBE_NAMESPACE answered on the control stream");
            }
            _ => return self.violation("REQUEST_OK for a request that takes another answer"),
        };
        self.cancel_timer(Timer::Response(id));
        self.events.push_back(Event::RequestOk { request_id: id, kind, params: m.params });
    }

    fn on_request_error(&mut self, m: message::RequestError) {
        let id = m.request_id;
        if !self.answer_target(id) {
            return;
        }
        let Some(req) = self.requests.get(&id) else { return };
        let kind = req.kind();
        let quiet = match req {
            Request::Subscription(s) => {
                if s.answered {
                    return self.violation("second answer to a subscription request");
                }
                s.state == SubState::Ended
            }
            Request::Fetch(f) => {
                if f.established {
                    return self.violation("second answer to a FETCH");
                }
                false
            }
            Request::PublishNamespace { established } => {
                if *established {
                    return self.violation("second answer to a PUBLISH_NAMESPACE");
                }
                false
            }
            Request::SubscribeNamespace(_) => {
                return self.violation("SUBSCRIBE_NAMESPACE answered on the control stream");
            }
            Request::TrackStatus | Request::Update { .. } => false,
        };
        match req {
            Request::Subscription(_) => self.release_subscription(id),
            _ => {
                self.requests.remove(&id);
            }
        }
        self.cancel_timer(Timer::Response(id));
        if !quiet {
            self.events.push_back(Event::RequestError {
                request_id: id,
                kind,
                code: m.error_code,
                retry_interval: m.retry_interval,
                reason: m.reason,
            });
        }
    }

    fn on_track_status(&mut self, mut m: message::TrackStatus) {
        let id = m.request_id;
        if !self.new_request(id, Arrival::Control) || !self.tokens(&mut m.params) {
            return;
        }
        if self.refused_after_goaway(Stream::Control, id) {
            return;
        }
        self.requests.insert(id, Request::TrackStatus);
        self.events.push_back(Event::TrackStatusRequested {
            request_id: id,
            track: m.track,
            params: m.params,
        });
    }

    fn on_request_update(&mut self, mut m: message::RequestUpdate, arrival: Arrival) {
        let id = m.request_id;
        if !self.new_request(id, arrival) || !self.tokens(&mut m.params) {
            return;
        }
        let existing = m.existing_request_id;
        let remote = !self.is_local(existing);
        let target = match self.classify(existing) {
            Ref::Never => return self.violation("REQUEST_UPDATE for a request that never existed"),
            Ref::Finished => {
                return self.auto_reject(
                    Stream::Control,
                    id,
                    RequestErrorCode::DoesNotExist,
                    "the updated request has ended",
                );
            }
            Ref::Live => match self.requests.get(&existing) {
                Some(Request::Subscription(s)) if s.we_publish || remote => {
                    if s.state == SubState::Ended {
                        return self.auto_reject(
                            Stream::Control,
                            id,
                            RequestErrorCode::DoesNotExist,
                            "the updated subscription has ended",
                        );
                    }
                    UpdateTarget::Subscription
                }
                Some(Request::Fetch(f)) if f.we_publish => UpdateTarget::Fetch,
                Some(
                    Request::TrackStatus
                    | Request::PublishNamespace { .. }
                    | Request::SubscribeNamespace(_),
                ) if remote => UpdateTarget::Other,
                _ => return self.violation("REQUEST_UPDATE for a request the peer did not make"),
            },
        };
        if let Err(DecodeError::Malformed { code, reason }) = m.params.check_update(target) {
            return self.close_with(code, reason);
        }
        self.requests.insert(id, Request::Update { existing, params: m.params.clone() });
        self.events.push_back(Event::UpdateRequested {
            request_id: id,
            existing,
            params: m.params,
        });
    }

    // ----- namespaces -----

    fn on_publish_namespace(&mut self, mut m: message::PublishNamespace) {
        let id = m.request_id;
        if !self.new_request(id, Arrival::Control) || !self.tokens(&mut m.params) {
            return;
        }
        if self.refused_after_goaway(Stream::Control, id) {
            return;
        }
        self.requests.insert(id, Request::PublishNamespace { established: false });
        self.events.push_back(Event::PublishNamespaceRequested {
            request_id: id,
            namespace: m.namespace,
            params: m.params,
        });
    }

    fn on_publish_namespace_done(&mut self, id: RequestId) {
        if !self.reference_target(id, "PUBLISH_NAMESPACE_DONE for a namespace never published") {
            return;
        }
        if self.is_local(id)
            || !matches!(self.requests.get(&id), Some(Request::PublishNamespace { .. }))
        {
            return self.violation(
                "PUBLISH_NAMESPACE_DONE for a request that is not the peer's PUBLISH_NAMESPACE",
            );
        }
        self.requests.remove(&id);
        self.events.push_back(Event::PublishNamespaceDone { request_id: id });
        self.finish_peer_request(id);
    }

    fn on_publish_namespace_cancel(&mut self, m: message::PublishNamespaceCancel) {
        let id = m.request_id;
        if !self.reference_target(id, "PUBLISH_NAMESPACE_CANCEL for a namespace never published") {
            return;
        }
        if !self.is_local(id)
            || !matches!(self.requests.get(&id), Some(Request::PublishNamespace { .. }))
        {
            return self.violation("PUBLISH_NAMESPACE_CANCEL for a request that is not this endpoint's PUBLISH_NAMESPACE");
        }
        self.requests.remove(&id);
        self.cancel_timer(Timer::Response(id));
        self.events.push_back(Event::PublishNamespaceCancelled {
            request_id: id,
            code: m.error_code,
            reason: m.reason,
        });
    }

    fn handle_stream_message(&mut self, now: Instant, stream: Stream, msg: Message) {
        if stream != Stream::Control {
            self.stats.messages_received += 1;
        }
        match stream {
            Stream::Peer(_) => self.on_peer_stream_message(stream, msg),
            Stream::SubscribeNamespace(id) => self.on_own_stream_message(now, id, msg),
            Stream::Control => self.handle_control_message(now, msg),
        }
    }

    fn on_peer_stream_message(&mut self, stream: Stream, msg: Message) {
        let known = self.streams.get(&stream).and_then(|e| e.request);
        match (known, msg) {
            (None, Message::SubscribeNamespace(m)) => self.on_subscribe_namespace(stream, m),
            (Some(ns), Message::RequestUpdate(m)) if m.existing_request_id == ns => {
                self.on_request_update(m, Arrival::OwnStream)
            }
            (None, _) => {
                self.violation("bidirectional stream does not begin with SUBSCRIBE_NAMESPACE")
            }
            (Some(_), _) => self.violation("unexpected message on a SUBSCRIBE_NAMESPACE stream"),
        }
    }

    fn on_subscribe_namespace(&mut self, stream: Stream, mut m: message::SubscribeNamespace) {
        let id = m.request_id;
        if !self.new_request(id, Arrival::OwnStream) || !self.tokens(&mut m.params) {
            return;
        }
        if let Some(e) = self.streams.get_mut(&stream) {
            e.request = Some(id);
        }
        if self.refused_after_goaway(stream, id) {
            return;
        }
        let overlaps = self.requests.values().any(|r| match r {
            Request::SubscribeNamespace(n) if n.we_publish => {
                n.prefix.has_prefix(&m.prefix) || m.prefix.has_prefix(&n.prefix)
            }
            _ => false,
        });
        if overlaps {
            return self.auto_reject(
                stream,
                id,
                RequestErrorCode::PrefixOverlap,
                "prefix overlaps another namespace subscription",
            );
        }
        self.requests.insert(
            id,
            Request::SubscribeNamespace(NsSubscription {
                prefix: m.prefix.clone(),
                options: m.options,
                stream,
                we_publish: true,
                established: false,
                active: Default::default(),
            }),
        );
        self.events.push_back(Event::SubscribeNamespaceRequested {
            request_id: id,
            prefix: m.prefix,
            options: m.options,
            params: m.params,
        });
    }

    fn on_own_stream_message(&mut self, _now: Instant, id: RequestId, msg: Message) {
        let Some(Request::SubscribeNamespace(ns)) = self.requests.get_mut(&id) else {
            // This endpoint ended the subscription; what is still in flight is dropped.
            return;
        };
        if !ns.established {
            match msg {
                Message::RequestOk(m) if m.request_id == id => {
                    ns.established = true;
                    self.cancel_timer(Timer::Response(id));
                    self.events.push_back(Event::RequestOk {
                        request_id: id,
                        kind: super::RequestKind::SubscribeNamespace,
                        params: m.params,
                    });
                }
                Message::RequestError(m) if m.request_id == id => {
                    self.requests.remove(&id);
                    self.cancel_timer(Timer::Response(id));
                    self.events.push_back(Event::RequestError {
                        request_id: id,
                        kind: super::RequestKind::SubscribeNamespace,
                        code: m.error_code,
                        retry_interval: m.retry_interval,
                        reason: m.reason,
                    });
                }
                _ => self.violation("SUBSCRIBE_NAMESPACE stream does not begin with its answer"),
            }
            return;
        }
        match msg {
            Message::Namespace(m) => {
                let Ok(namespace) = ns.prefix.join(&m.suffix) else {
                    return self.violation("NAMESPACE makes a namespace longer than allowed");
                };
                ns.active.insert(m.suffix);
                self.events.push_back(Event::Namespace { request_id: id, namespace });
            }
            Message::NamespaceDone(m) => {
                if !ns.active.remove(&m.suffix) {
                    return self.violation("NAMESPACE_DONE before NAMESPACE");
                }
                let Ok(namespace) = ns.prefix.join(&m.suffix) else { return };
                self.events.push_back(Event::NamespaceDone { request_id: id, namespace });
            }
            Message::RequestOk(_) | Message::RequestError(_) => {
                self.violation("second answer to a SUBSCRIBE_NAMESPACE")
            }
            _ => self.violation("unexpected message on a SUBSCRIBE_NAMESPACE stream"),
        }
    }
}

/// True if a fetch range (or a FETCH_OK end) ends before it starts. `end` is "plus one":
/// an object of 0 covers the whole end group.
pub(super) fn range_is_backwards(start: Location, end: Location) -> bool {
    end.group < start.group
        || (end.group == start.group && end.object.0 != 0 && end.object < start.object)
}
