//! The application's side: requests this endpoint makes and its answers to the peer's.
//!
//! Every method checks first and changes state only when the message can be sent; an `Err`
//! means nothing happened.

use std::time::Instant;

use super::recv::range_is_backwards;
use super::{
    Error, FetchRequest, FetchState, NsStream, NsSubscription, Phase, Request, Role, Session,
    Stream, SubState, Subscription, Timer,
};
use crate::ext::Extensions;
use crate::message::{
    self, FetchType, JoiningFetch, MAX_GOAWAY_URI_LEN, Message, MessageParams, PublishDoneCode,
    RequestErrorCode, StandaloneFetch, SubscribeOptions, UpdateTarget,
};
use crate::types::{FullTrackName, Location, ReasonPhrase, RequestId, TrackAlias, TrackNamespace};

/// Encodes an application-built message, refusing one longer than a control message can be.
fn encode(msg: &Message) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    msg.try_encode(&mut out).map_err(|_| Error::Invalid("message longer than 65535 bytes"))?;
    Ok(out)
}

impl Session {
    fn check_open(&self) -> Result<(), Error> {
        match self.phase {
            Phase::Closed => Err(Error::Closed),
            Phase::Setup => Err(Error::NotReady),
            Phase::Ready => Ok(()),
        }
    }

    /// Builds and encodes a new request with the next request ID; allocates the ID only if
    /// the message can be sent. When the peer's limit is reached, sends REQUESTS_BLOCKED
    /// (once per limit) and fails with [`Error::Blocked`].
    fn start_request(
        &mut self,
        build: impl FnOnce(RequestId) -> Message,
    ) -> Result<(RequestId, Vec<u8>), Error> {
        self.check_open()?;
        if self.goaway_received {
            return Err(Error::GoingAway);
        }
        let id = match self.local_ids.peek() {
            Ok(id) => RequestId(id),
            Err(max) => {
                if self.local_ids.report_blocked() {
                    self.queue(
                        Stream::Control,
                        &message::RequestsBlocked { max_request_id: RequestId(max) }.into(),
                    );
                }
                return Err(Error::Blocked(max));
            }
        };
        let bytes = encode(&build(id))?;
        let allocated = self.local_ids.allocate();
        debug_assert_eq!(allocated, Ok(id.0));
        self.stats.requests_sent += 1;
        Ok((id, bytes))
    }

    /// Arms the CONTROL_MESSAGE_TIMEOUT for one of this endpoint's requests.
    fn await_answer(&mut self, now: Instant, id: RequestId) {
        if let Some(t) = self.config.control_message_timeout {
            self.set_timer(Timer::Response(id), now, t);
        }
    }

    fn send_control(&mut self, bytes: Vec<u8>) {
        self.queue_bytes(Stream::Control, bytes, false);
    }

    fn new_subscription(
        track: FullTrackName,
        we_publish: bool,
        via_publish: bool,
        params: &MessageParams,
    ) -> Subscription {
        Subscription {
            track,
            we_publish,
            via_publish,
            state: SubState::Pending,
            alias: None,
            largest: None,
            filter: params.subscription_filter,
            forward: params.forward.unwrap_or(true),
            streams: 0,
            expected_streams: None,
            waiting_fetches: Vec::new(),
            answered: false,
            dynamic_groups: false,
        }
    }

    // ----- subscribing -----

    /// Sends SUBSCRIBE for `track`. The answer arrives as [`super::Event::SubscribeOk`] or
    /// [`super::Event::RequestError`].
    pub fn subscribe(
        &mut self,
        now: Instant,
        track: FullTrackName,
        params: MessageParams,
    ) -> Result<RequestId, Error> {
        if self.by_track.contains_key(&(track.clone(), false)) {
            return Err(Error::DuplicateSubscription);
        }
        let (id, bytes) = self.start_request(|request_id| {
            message::Subscribe { request_id, track: track.clone(), params: params.clone() }.into()
        })?;
        self.by_track.insert((track.clone(), false), id);
        self.requests.insert(
            id,
            Request::Subscription(Self::new_subscription(track, false, false, &params)),
        );
        self.send_control(bytes);
        self.await_answer(now, id);
        Ok(id)
    }

    /// Sends UNSUBSCRIBE for this endpoint's SUBSCRIBE or for an accepted PUBLISH from the
    /// peer. The alias keeps resolving, as ended, for the configured linger time.
    pub fn unsubscribe(&mut self, now: Instant, request_id: RequestId) -> Result<(), Error> {
        self.check_open()?;
        match self.requests.get(&request_id) {
            Some(Request::Subscription(s))
                if !s.we_publish
                    && s.state != SubState::Ended
                    && (!s.via_publish || s.state == SubState::Established) => {}
            _ => return Err(Error::UnknownRequest(request_id)),
        }
        let bytes = encode(&message::Unsubscribe { request_id }.into())?;
        self.send_control(bytes);
        self.end_incoming_subscription(now, request_id);
        self.finish_peer_request(request_id);
        Ok(())
    }

    /// Accepts the peer's SUBSCRIBE with SUBSCRIBE_OK and returns the Track Alias chosen for
    /// it. Put LARGEST_OBJECT in `params` if anything was published: joining fetches use it.
    pub fn accept_subscribe(
        &mut self,
        _now: Instant,
        request_id: RequestId,
        params: MessageParams,
        extensions: Extensions,
    ) -> Result<TrackAlias, Error> {
        self.check_open()?;
        match self.requests.get(&request_id) {
            Some(Request::Subscription(s))
                if s.we_publish && !s.via_publish && s.state == SubState::Pending => {}
            _ => return Err(Error::UnknownRequest(request_id)),
        }
        let track_alias = TrackAlias(self.next_alias);
        let largest = params.largest_object;
        let bytes =
            encode(&message::SubscribeOk { request_id, track_alias, params, extensions }.into())?;
        self.next_alias += 1;
        self.send_control(bytes);
        let waiting = match self.requests.get_mut(&request_id) {
            Some(Request::Subscription(s)) => {
                s.state = SubState::Established;
                s.alias = Some(track_alias);
                s.largest = largest;
                std::mem::take(&mut s.waiting_fetches)
            }
            _ => Vec::new(),
        };
        for (fetch_id, kind, start, params) in waiting {
            self.announce_joining_fetch(request_id, fetch_id, kind, start, params);
        }
        Ok(track_alias)
    }

    // ----- publishing -----

    /// Sends PUBLISH for `track`, returning its request ID and the Track Alias its data
    /// streams carry. Objects may flow before the peer's PUBLISH_OK (draft-16 §5.1).
    pub fn publish(
        &mut self,
        now: Instant,
        track: FullTrackName,
        params: MessageParams,
        extensions: Extensions,
    ) -> Result<(RequestId, TrackAlias), Error> {
        if self.by_track.contains_key(&(track.clone(), true)) {
            return Err(Error::DuplicateSubscription);
        }
        let track_alias = TrackAlias(self.next_alias);
        let (id, bytes) = self.start_request(|request_id| {
            message::Publish {
                request_id,
                track: track.clone(),
                track_alias,
                params: params.clone(),
                extensions,
            }
            .into()
        })?;
        self.next_alias += 1;
        let mut sub = Self::new_subscription(track.clone(), true, true, &params);
        sub.alias = Some(track_alias);
        sub.largest = params.largest_object;
        self.by_track.insert((track, true), id);
        self.requests.insert(id, Request::Subscription(sub));
        self.send_control(bytes);
        self.await_answer(now, id);
        Ok((id, track_alias))
    }

    /// Accepts the peer's PUBLISH with PUBLISH_OK.
    pub fn accept_publish(
        &mut self,
        _now: Instant,
        request_id: RequestId,
        params: MessageParams,
    ) -> Result<(), Error> {
        self.check_open()?;
        match self.requests.get(&request_id) {
            Some(Request::Subscription(s))
                if !s.we_publish && s.via_publish && s.state == SubState::Pending =>
            {
                if params.new_group_request.is_some() && !s.dynamic_groups {
                    return Err(Error::Invalid(
                        "NEW_GROUP_REQUEST for a track without DYNAMIC_GROUPS",
                    ));
                }
            }
            _ => return Err(Error::UnknownRequest(request_id)),
        }
        let forward = params.forward.unwrap_or(true);
        let filter = params.subscription_filter;
        let bytes = encode(&message::PublishOk { request_id, params }.into())?;
        self.send_control(bytes);
        if let Some(Request::Subscription(s)) = self.requests.get_mut(&request_id) {
            s.state = SubState::Established;
            s.forward = forward;
            s.filter = filter;
        }
        Ok(())
    }

    /// Ends a subscription this endpoint publishes with PUBLISH_DONE. Close or reset its data
    /// streams first (draft-16 §9.15); the Stream Count sent is the number of streams opened
    /// through [`Self::open_data_stream`].
    pub fn publish_done(
        &mut self,
        _now: Instant,
        request_id: RequestId,
        status: PublishDoneCode,
        reason: &str,
    ) -> Result<(), Error> {
        self.check_open()?;
        let stream_count = match self.requests.get(&request_id) {
            Some(Request::Subscription(s))
                if s.we_publish && (s.via_publish || s.state == SubState::Established) =>
            {
                s.streams
            }
            _ => return Err(Error::UnknownRequest(request_id)),
        };
        let msg = message::PublishDone {
            request_id,
            status_code: status,
            stream_count,
            reason: ReasonPhrase::truncated(reason),
        };
        let bytes = encode(&msg.into())?;
        self.send_control(bytes);
        self.drop_published_subscription(request_id);
        self.finish_peer_request(request_id);
        Ok(())
    }

    // ----- fetching -----

    /// Sends FETCH. A joining fetch names this endpoint's SUBSCRIBE (pending or established).
    pub fn fetch(
        &mut self,
        now: Instant,
        request: FetchRequest,
        params: MessageParams,
    ) -> Result<RequestId, Error> {
        let (fetch_type, start) = match request {
            FetchRequest::Standalone { track, start, end } => {
                if range_is_backwards(start, end) {
                    return Err(Error::Invalid("fetch end location before its start"));
                }
                (FetchType::Standalone(StandaloneFetch { track, start, end }), Some(start))
            }
            FetchRequest::RelativeJoining { subscription, groups_back } => {
                let largest = self.joinable(subscription)?;
                let start =
                    largest.map(|l| Location::new(l.group.0.saturating_sub(groups_back), 0));
                let j =
                    JoiningFetch { joining_request_id: subscription, joining_start: groups_back };
                (FetchType::RelativeJoining(j), start)
            }
            FetchRequest::AbsoluteJoining { subscription, start_group } => {
                self.joinable(subscription)?;
                let j =
                    JoiningFetch { joining_request_id: subscription, joining_start: start_group };
                (FetchType::AbsoluteJoining(j), Some(Location::new(start_group, 0)))
            }
        };
        let (id, bytes) = self
            .start_request(|request_id| message::Fetch { request_id, fetch_type, params }.into())?;
        self.requests.insert(
            id,
            Request::Fetch(FetchState {
                we_publish: false,
                established: false,
                start,
                announced: true,
            }),
        );
        self.send_control(bytes);
        self.await_answer(now, id);
        Ok(id)
    }

    /// The largest location of this endpoint's SUBSCRIBE that a joining fetch may name.
    fn joinable(&self, subscription: RequestId) -> Result<Option<Location>, Error> {
        match self.requests.get(&subscription) {
            Some(Request::Subscription(s))
                if !s.we_publish && !s.via_publish && s.state != SubState::Ended =>
            {
                Ok(s.largest)
            }
            _ => Err(Error::UnknownRequest(subscription)),
        }
    }

    /// Accepts the peer's FETCH with FETCH_OK. Send it only once the end location is known
    /// (draft-16 §9.17); objects may already flow on the fetch stream.
    pub fn accept_fetch(
        &mut self,
        _now: Instant,
        request_id: RequestId,
        end_of_track: bool,
        end_location: Location,
        params: MessageParams,
        extensions: Extensions,
    ) -> Result<(), Error> {
        self.check_open()?;
        match self.requests.get(&request_id) {
            Some(Request::Fetch(f)) if f.we_publish && !f.established && f.announced => {}
            _ => return Err(Error::UnknownRequest(request_id)),
        }
        let msg = message::FetchOk { request_id, end_of_track, end_location, params, extensions };
        let bytes = encode(&msg.into())?;
        self.send_control(bytes);
        if let Some(Request::Fetch(f)) = self.requests.get_mut(&request_id) {
            f.established = true;
        }
        Ok(())
    }

    /// Sends FETCH_CANCEL for this endpoint's fetch and forgets it (stop reading its stream).
    pub fn fetch_cancel(&mut self, _now: Instant, request_id: RequestId) -> Result<(), Error> {
        self.check_open()?;
        match self.requests.get(&request_id) {
            Some(Request::Fetch(f)) if !f.we_publish => {}
            _ => return Err(Error::UnknownRequest(request_id)),
        }
        let bytes = encode(&message::FetchCancel { request_id }.into())?;
        self.send_control(bytes);
        self.requests.remove(&request_id);
        self.cancel_timer(Timer::Response(request_id));
        Ok(())
    }

    /// A fetch's data stream ended with FIN (either role): its state is released
    /// (draft-16 §5.2).
    pub fn fetch_finished(&mut self, _now: Instant, request_id: RequestId) -> Result<(), Error> {
        match self.requests.get(&request_id) {
            Some(Request::Fetch(f)) if f.established || !f.we_publish => {}
            _ => return Err(Error::UnknownRequest(request_id)),
        }
        self.requests.remove(&request_id);
        self.cancel_timer(Timer::Response(request_id));
        self.finish_peer_request(request_id);
        Ok(())
    }

    // ----- other requests -----

    /// Sends TRACK_STATUS; the answer is [`super::Event::RequestOk`] (with LARGEST_OBJECT
    /// and the other SUBSCRIBE_OK parameters) or [`super::Event::RequestError`].
    pub fn track_status(
        &mut self,
        now: Instant,
        track: FullTrackName,
        params: MessageParams,
    ) -> Result<RequestId, Error> {
        let (id, bytes) = self.start_request(|request_id| {
            message::TrackStatus { request_id, track, params }.into()
        })?;
        self.requests.insert(id, Request::TrackStatus);
        self.send_control(bytes);
        self.await_answer(now, id);
        Ok(id)
    }

    /// Sends REQUEST_UPDATE for one of this endpoint's requests, or for a subscription it
    /// receives through the peer's PUBLISH.
    pub fn request_update(
        &mut self,
        now: Instant,
        existing: RequestId,
        params: MessageParams,
    ) -> Result<RequestId, Error> {
        let local = self.is_local(existing);
        let target = match self.requests.get(&existing) {
            Some(Request::Subscription(s))
                if s.state != SubState::Ended && (local || (!s.we_publish && s.via_publish)) =>
            {
                if params.new_group_request.is_some() && !s.we_publish && !s.dynamic_groups {
                    return Err(Error::Invalid(
                        "NEW_GROUP_REQUEST for a track without DYNAMIC_GROUPS",
                    ));
                }
                UpdateTarget::Subscription
            }
            Some(Request::Fetch(f)) if !f.we_publish => UpdateTarget::Fetch,
            Some(
                Request::TrackStatus
                | Request::PublishNamespace { .. }
                | Request::SubscribeNamespace(_),
            ) if local => UpdateTarget::Other,
            _ => return Err(Error::UnknownRequest(existing)),
        };
        if params.check_update(target).is_err() {
            return Err(Error::Invalid("parameter not allowed in an update of this request"));
        }
        let (id, bytes) = self.start_request(|request_id| {
            message::RequestUpdate {
                request_id,
                existing_request_id: existing,
                params: params.clone(),
            }
            .into()
        })?;
        self.requests.insert(id, Request::Update { existing, params });
        self.send_control(bytes);
        self.await_answer(now, id);
        Ok(id)
    }

    /// Answers the peer's TRACK_STATUS, PUBLISH_NAMESPACE, SUBSCRIBE_NAMESPACE or
    /// REQUEST_UPDATE with REQUEST_OK. An accepted update of a subscription this endpoint
    /// publishes takes effect here (FORWARD, filter).
    pub fn accept_request(
        &mut self,
        _now: Instant,
        request_id: RequestId,
        params: MessageParams,
    ) -> Result<(), Error> {
        self.check_open()?;
        if self.is_local(request_id) {
            return Err(Error::UnknownRequest(request_id));
        }
        let stream = match self.requests.get(&request_id) {
            Some(Request::TrackStatus | Request::Update { .. }) => Stream::Control,
            Some(Request::PublishNamespace { established: false }) => Stream::Control,
            Some(Request::SubscribeNamespace(n)) if !n.established => n.stream,
            _ => return Err(Error::UnknownRequest(request_id)),
        };
        let bytes = encode(&message::RequestOk { request_id, params }.into())?;
        self.queue_bytes(stream, bytes, false);
        match self.requests.get_mut(&request_id) {
            Some(Request::PublishNamespace { established }) => *established = true,
            Some(Request::SubscribeNamespace(n)) => n.established = true,
            Some(Request::TrackStatus) => {
                self.requests.remove(&request_id);
                self.finish_peer_request(request_id);
            }
            Some(Request::Update { .. }) => {
                if let Some(Request::Update { existing, params }) =
                    self.requests.remove(&request_id)
                {
                    self.apply_update(existing, &params);
                }
                self.finish_peer_request(request_id);
            }
            _ => {}
        }
        Ok(())
    }

    fn apply_update(&mut self, existing: RequestId, params: &MessageParams) {
        if let Some(Request::Subscription(s)) = self.requests.get_mut(&existing) {
            if let Some(f) = params.forward {
                s.forward = f;
            }
            if let Some(f) = params.subscription_filter {
                s.filter = Some(f);
            }
        }
    }

    /// Refuses a pending request of the peer with REQUEST_ERROR: a SUBSCRIBE, PUBLISH, FETCH,
    /// TRACK_STATUS, PUBLISH_NAMESPACE, SUBSCRIBE_NAMESPACE or REQUEST_UPDATE. Refusing an
    /// update of a subscription this endpoint publishes also ends that subscription with
    /// PUBLISH_DONE (UPDATE_FAILED), as draft-16 §9.10.1 requires: reset its streams first.
    pub fn reject(
        &mut self,
        _now: Instant,
        request_id: RequestId,
        code: RequestErrorCode,
        retry_interval: u64,
        reason: &str,
    ) -> Result<(), Error> {
        self.check_open()?;
        if self.is_local(request_id) {
            return Err(Error::UnknownRequest(request_id));
        }
        let stream = match self.requests.get(&request_id) {
            Some(Request::Subscription(s)) if s.state == SubState::Pending => Stream::Control,
            Some(Request::Fetch(f)) if !f.established && f.announced => Stream::Control,
            Some(Request::TrackStatus | Request::Update { .. }) => Stream::Control,
            Some(Request::PublishNamespace { established: false }) => Stream::Control,
            Some(Request::SubscribeNamespace(n)) if !n.established => n.stream,
            _ => return Err(Error::UnknownRequest(request_id)),
        };
        let msg = message::RequestError {
            request_id,
            error_code: code,
            retry_interval,
            reason: ReasonPhrase::truncated(reason),
        };
        let bytes = encode(&msg.into())?;
        self.queue_bytes(stream, bytes, false);
        match self.requests.get(&request_id) {
            Some(Request::Subscription(s)) if s.we_publish => {
                self.drop_published_subscription(request_id)
            }
            Some(Request::Subscription(_)) => self.release_subscription(request_id),
            Some(Request::SubscribeNamespace(n)) => {
                let stream = n.stream;
                self.requests.remove(&request_id);
                // A refused SUBSCRIBE_NAMESPACE's stream is closed at once (draft-16 §9.25).
                self.queue_bytes(stream, Vec::new(), true);
                if let Some(e) = self.streams.get_mut(&stream) {
                    e.send_closed = true;
                }
            }
            Some(Request::Update { .. }) => {
                if let Some(Request::Update { existing, .. }) = self.requests.remove(&request_id) {
                    self.update_failed(existing);
                }
            }
            _ => {
                self.requests.remove(&request_id);
            }
        }
        self.finish_peer_request(request_id);
        Ok(())
    }

    /// Ends a subscription this endpoint publishes after refusing an update of it.
    fn update_failed(&mut self, existing: RequestId) {
        let count = match self.requests.get(&existing) {
            Some(Request::Subscription(s)) if s.we_publish => s.streams,
            _ => return,
        };
        let msg = message::PublishDone {
            request_id: existing,
            status_code: PublishDoneCode::UpdateFailed,
            stream_count: count,
            reason: ReasonPhrase::truncated("update refused"),
        };
        self.queue(Stream::Control, &msg.into());
        self.drop_published_subscription(existing);
        self.finish_peer_request(existing);
    }

    // ----- namespaces -----

    /// Sends PUBLISH_NAMESPACE; the answer is [`super::Event::RequestOk`] or
    /// [`super::Event::RequestError`].
    pub fn publish_namespace(
        &mut self,
        now: Instant,
        namespace: TrackNamespace,
        params: MessageParams,
    ) -> Result<RequestId, Error> {
        if namespace.is_empty() {
            return Err(Error::Invalid("a published namespace has at least one field"));
        }
        let (id, bytes) = self.start_request(|request_id| {
            message::PublishNamespace { request_id, namespace, params }.into()
        })?;
        self.requests.insert(id, Request::PublishNamespace { established: false });
        self.send_control(bytes);
        self.await_answer(now, id);
        Ok(id)
    }

    /// Withdraws this endpoint's PUBLISH_NAMESPACE with PUBLISH_NAMESPACE_DONE.
    pub fn publish_namespace_done(
        &mut self,
        _now: Instant,
        request_id: RequestId,
    ) -> Result<(), Error> {
        self.check_open()?;
        if !self.is_local(request_id)
            || !matches!(self.requests.get(&request_id), Some(Request::PublishNamespace { .. }))
        {
            return Err(Error::UnknownRequest(request_id));
        }
        let bytes = encode(&message::PublishNamespaceDone { request_id }.into())?;
        self.send_control(bytes);
        self.requests.remove(&request_id);
        self.cancel_timer(Timer::Response(request_id));
        Ok(())
    }

    /// Revokes this endpoint's acceptance of the peer's PUBLISH_NAMESPACE with
    /// PUBLISH_NAMESPACE_CANCEL.
    pub fn publish_namespace_cancel(
        &mut self,
        _now: Instant,
        request_id: RequestId,
        code: RequestErrorCode,
        reason: &str,
    ) -> Result<(), Error> {
        self.check_open()?;
        if self.is_local(request_id)
            || !matches!(
                self.requests.get(&request_id),
                Some(Request::PublishNamespace { established: true })
            )
        {
            return Err(Error::UnknownRequest(request_id));
        }
        let msg = message::PublishNamespaceCancel {
            request_id,
            error_code: code,
            reason: ReasonPhrase::truncated(reason),
        };
        let bytes = encode(&msg.into())?;
        self.send_control(bytes);
        self.requests.remove(&request_id);
        self.finish_peer_request(request_id);
        Ok(())
    }

    /// Sends SUBSCRIBE_NAMESPACE on a new bidirectional stream
    /// ([`Stream::SubscribeNamespace`] with the returned ID).
    pub fn subscribe_namespace(
        &mut self,
        now: Instant,
        prefix: TrackNamespace,
        options: SubscribeOptions,
        params: MessageParams,
    ) -> Result<RequestId, Error> {
        let overlaps = self.requests.values().any(|r| match r {
            Request::SubscribeNamespace(n) if !n.we_publish => {
                n.prefix.has_prefix(&prefix) || prefix.has_prefix(&n.prefix)
            }
            _ => false,
        });
        if overlaps {
            return Err(Error::Invalid("prefix overlaps another namespace subscription"));
        }
        let (id, bytes) = self.start_request(|request_id| {
            message::SubscribeNamespace { request_id, prefix: prefix.clone(), options, params }
                .into()
        })?;
        let stream = Stream::SubscribeNamespace(id);
        self.streams.insert(stream, NsStream { request: Some(id), ..Default::default() });
        self.requests.insert(
            id,
            Request::SubscribeNamespace(NsSubscription {
                prefix,
                options,
                stream,
                we_publish: false,
                established: false,
                active: Default::default(),
            }),
        );
        self.queue_bytes(stream, bytes, false);
        self.await_answer(now, id);
        Ok(id)
    }

    /// Ends this endpoint's SUBSCRIBE_NAMESPACE by finishing its stream.
    pub fn unsubscribe_namespace(
        &mut self,
        _now: Instant,
        request_id: RequestId,
    ) -> Result<(), Error> {
        self.check_open()?;
        let stream = match self.requests.get(&request_id) {
            Some(Request::SubscribeNamespace(n)) if !n.we_publish => n.stream,
            _ => return Err(Error::UnknownRequest(request_id)),
        };
        self.requests.remove(&request_id);
        self.cancel_timer(Timer::Response(request_id));
        self.queue_bytes(stream, Vec::new(), true);
        let forget = match self.streams.get_mut(&stream) {
            Some(e) => {
                e.send_closed = true;
                e.recv_closed
            }
            None => false,
        };
        if forget {
            self.streams.remove(&stream);
        }
        Ok(())
    }

    fn served_namespace_stream(
        &mut self,
        request_id: RequestId,
    ) -> Result<(Stream, &mut NsSubscription), Error> {
        self.check_open()?;
        match self.requests.get_mut(&request_id) {
            Some(Request::SubscribeNamespace(n)) if n.we_publish && n.established => {
                if !n.options.wants_namespace() {
                    return Err(Error::Invalid("the subscriber did not ask for NAMESPACE"));
                }
                Ok((n.stream, n))
            }
            _ => Err(Error::UnknownRequest(request_id)),
        }
    }

    /// Tells the peer's accepted SUBSCRIBE_NAMESPACE about a matching namespace (NAMESPACE
    /// with the part after the prefix).
    pub fn namespace(
        &mut self,
        _now: Instant,
        request_id: RequestId,
        namespace: &TrackNamespace,
    ) -> Result<(), Error> {
        let (stream, n) = self.served_namespace_stream(request_id)?;
        let suffix = namespace
            .strip_prefix(&n.prefix)
            .ok_or(Error::Invalid("namespace outside the subscribed prefix"))?;
        let bytes = encode(&message::Namespace { suffix: suffix.clone() }.into())?;
        n.active.insert(suffix);
        self.queue_bytes(stream, bytes, false);
        Ok(())
    }

    /// Tells the peer's SUBSCRIBE_NAMESPACE that a namespace announced with
    /// [`Self::namespace`] went away (NAMESPACE_DONE).
    pub fn namespace_done(
        &mut self,
        _now: Instant,
        request_id: RequestId,
        namespace: &TrackNamespace,
    ) -> Result<(), Error> {
        let (stream, n) = self.served_namespace_stream(request_id)?;
        let suffix = namespace
            .strip_prefix(&n.prefix)
            .ok_or(Error::Invalid("namespace outside the subscribed prefix"))?;
        if !n.active.contains(&suffix) {
            return Err(Error::Invalid("NAMESPACE_DONE before NAMESPACE"));
        }
        let bytes = encode(&message::NamespaceDone { suffix: suffix.clone() }.into())?;
        n.active.remove(&suffix);
        self.queue_bytes(stream, bytes, false);
        Ok(())
    }

    // ----- session -----

    /// Sends GOAWAY. A server may name a new URI; a client must not. After it, the peer is
    /// given the configured GOAWAY timeout to close the session, and new requests from the
    /// peer are refused if so configured.
    pub fn goaway(&mut self, now: Instant, uri: &str) -> Result<(), Error> {
        self.check_open()?;
        if self.goaway_sent {
            return Err(Error::Invalid("GOAWAY already sent"));
        }
        if self.role == Role::Client && !uri.is_empty() {
            return Err(Error::Invalid("a client's GOAWAY carries no URI"));
        }
        if uri.len() > MAX_GOAWAY_URI_LEN {
            return Err(Error::Invalid("GOAWAY URI longer than 8192 bytes"));
        }
        let msg =
            message::GoAway { new_session_uri: bytes::Bytes::copy_from_slice(uri.as_bytes()) };
        let bytes = encode(&msg.into())?;
        self.send_control(bytes);
        self.goaway_sent = true;
        if let Some(t) = self.config.goaway_timeout {
            self.set_timer(Timer::Goaway, now, t);
        }
        Ok(())
    }
}
