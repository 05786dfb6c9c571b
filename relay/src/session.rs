//! One relay session: SETUP and its token, then every request the peer makes, each passing
//! the one authorization check, and the upstream subscriptions the relay makes for them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tiermesh_client::moq::{
    self, Connection, Event, IncomingFetch, IncomingPublish, NamespaceRequest,
    NamespaceSubscribeRequest, ServerOptions, SubscribeOptions, SubscribeRequest, TrackEvent,
    TrackReader, TrackStatusRequest,
};
use tiermesh_client::scheduler::reset_code;
use tiermesh_client::transport;
use tiermesh_proto::TerminationCode;
use tiermesh_proto::coding::VARINT_MAX;
use tiermesh_proto::data::{EndOfRange, RangeKind};
use tiermesh_proto::message::{MessageParams, PublishDoneCode, RequestErrorCode};
use tiermesh_proto::types::{Location, RequestId, SubscriptionFilter, TrackNamespace};

use tracing::Instrument;

use crate::auth::{Action, AuthError, Grant, TOKEN_TYPE, token_from_query};
use crate::registry::{Announcement, NamespaceSubscriber};
use crate::server::Ctx;
use crate::track::{SessionId, Track, Upstream, filter_bounds};

/// How long a client has to complete SETUP after its control stream opened. SETUP is one
/// round trip; 10 s bounds what a client that never sends it costs.
const SETUP_WAIT: Duration = Duration::from_secs(10);

/// How often a session's send-scheduler drops are added to the metrics (and once more when
/// it ends): a Prometheus scrape every 10-15 s sees them at most a second late, and a
/// session costs one copy of a few counters a second.
const DROP_TALLY: Duration = Duration::from_secs(1);

/// How long the relay waits for its upstream SUBSCRIBE to be answered before the
/// subscribers parked on it get REQUEST_ERROR TIMEOUT (draft-16 §9.8: "a relay could not
/// establish an upstream subscription within the timeout"). A publisher answers in one round
/// trip (under a second even over satellite); 5 s leaves room for a chain of relays.
const UPSTREAM_SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);

/// How long an established upstream's objects wait for the subscribers parked on it to be
/// answered and added to the fan-out (`run_upstream`): answering is a command to each
/// subscriber's local session driver, done in well under a second even on a loaded machine.
const PARKED_ATTACH_WAIT: Duration = Duration::from_secs(1);

/// How long the relay's joining FETCH upstream may go on filling the cache with the current
/// group (downstream joining fetches pass its objects on as they come, and end when it
/// does). A video group is 1 s: what has not come in 2 s is rarely still wanted.
const UPSTREAM_FETCH_WAIT: Duration = Duration::from_secs(2);

/// How long the objects of an ended upstream joining fetch stay at hand for the downstream
/// joining fetches of the subscribers answered while it filled (`TrackState::filling`):
/// they come a downstream round trip after their SUBSCRIBE_OK, 600 ms over satellite; at
/// most one group per track is kept so.
const FILL_KEPT: Duration = Duration::from_secs(2);

/// The MoQT accept of a transport session (control stream, SETUP), boxed.
type Accepting =
    std::pin::Pin<Box<dyn Future<Output = Result<(Connection, moq::Driver), moq::Error>> + Send>>;

/// Runs one accepted transport session to its end.
// A plain function handing out the session's future rather than an `async fn`: the
// transport session (several hundred bytes) is moved into the boxed MoQT accept here, so
// the long-lived future keeps no slot for it.
pub(crate) fn run(
    ctx: Arc<Ctx>,
    session: transport::Session,
    id: SessionId,
) -> impl Future<Output = ()> + Send + 'static {
    let span = tracing::info_span!("session", id, peer = %session.peer(), kind = %session.kind());
    let query_token = session.query().and_then(token_from_query);
    let limits = &ctx.config.limits;
    let mode = match ctx.config.scheduler.mode {
        crate::config::SchedulerMode::Priority => tiermesh_client::scheduler::Mode::Priority,
        crate::config::SchedulerMode::Fifo => tiermesh_client::scheduler::Mode::Fifo,
    };
    let options = ServerOptions::default()
        .max_requests(limits.max_requests_per_session)
        .max_auth_token_cache(limits.max_auth_token_cache)
        .scheduler(tiermesh_client::scheduler::SchedulerConfig::default().mode(mode));
    // Boxed: the accept phase (SETUP written, the MoQT session state built) is larger than
    // what the session keeps afterwards, and is freed once it is done.
    let accept = Box::pin(moq::accept(session, options));
    run_session(ctx, accept, query_token, id).instrument(span)
}

async fn run_session(
    ctx: Arc<Ctx>,
    accept: Accepting,
    query_token: Option<crate::auth::Secret<String>>,
    id: SessionId,
) {
    let (conn, driver) = match accept.await {
        Ok(x) => x,
        Err(e) => {
            tracing::info!(error = %e, "session not started");
            return;
        }
    };
    let driver = tokio::spawn(driver.run());
    ctx.sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(id, conn.clone());
    ctx.metrics.sessions_accepted.inc();
    let mut drops = tiermesh_client::scheduler::Stats::default();
    serve(&ctx, &conn, id, query_token, &mut drops).await;
    let reason = conn.closed().await;
    let _ = driver.await;
    ctx.metrics.add_scheduler_drops(&drops, &conn.send_stats());
    tracing::info!(%reason, "session ended");
    ctx.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    ctx.session_gone.notify_waiters();
    session_closed(&ctx, id);
}

async fn serve(
    ctx: &Arc<Ctx>,
    conn: &Connection,
    id: SessionId,
    query_token: Option<crate::auth::Secret<String>>,
    drops: &mut tiermesh_client::scheduler::Stats,
) {
    let setup = match tokio::time::timeout(SETUP_WAIT, conn.ready()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(error = %e, "SETUP failed");
            return;
        }
        Err(_) => {
            tracing::info!("SETUP not completed in time");
            conn.close(TerminationCode::ControlMessageTimeout, "SETUP not completed in time");
            return;
        }
    };
    // The session's token: CLIENT_SETUP's AUTHORIZATION TOKEN, else `?jwt=` in the URL
    // (WebTransport CONNECT, or the PATH of raw QUIC).
    let now = SystemTime::now();
    let path_token = setup
        .path
        .as_deref()
        .and_then(|p| p.split_once('?'))
        .and_then(|(_, q)| token_from_query(q));
    let setup_token =
        setup.auth_tokens.iter().find(|(t, _)| *t == TOKEN_TYPE).map(|(_, v)| v.0.clone());
    let verified = match (setup_token, query_token.or(path_token)) {
        (Some(t), _) => Some(ctx.authorizer.verify_bytes(&t, now)),
        (None, Some(q)) => Some(ctx.authorizer.verify(q.expose(), now)),
        (None, None) => None,
    };
    let grant = match verified {
        None => None,
        Some(Ok(g)) => Some(g),
        Some(Err(e)) => {
            let code = match e {
                AuthError::Expired { .. } => TerminationCode::ExpiredAuthToken,
                AuthError::Malformed(_) => TerminationCode::MalformedAuthToken,
                _ => TerminationCode::Unauthorized,
            };
            tracing::info!(error = %e, "session token refused");
            conn.close(code, &e.to_string());
            return;
        }
    };
    let expiry = grant.as_ref().map(|g| g.expires_in(SystemTime::now()));
    let expired = async {
        match expiry {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expired);
    let grant = grant.map(Arc::new);
    let mut tally = tokio::time::interval(DROP_TALLY);
    loop {
        tokio::select! {
            _ = tally.tick() => {
                let now = conn.send_stats();
                ctx.metrics.add_scheduler_drops(drops, &now);
                *drops = now;
            }
            event = conn.next_event() => match event {
                Some(e) => handle(ctx, conn, id, grant.clone(), e),
                None => return,
            },
            _ = conn.closed() => return,
            _ = &mut expired => {
                // draft-16 §3.4 (Termination) defines EXPIRED_AUTH_TOKEN (0x18) for "the
                // authorization token has expired"; UNAUTHORIZED (0x2) is for a client "not
                // authorized to establish a session", which it was until now. So the session
                // whose token runs out is closed with EXPIRED_AUTH_TOKEN, as is one whose
                // SETUP token has already expired (above).
                tracing::info!("session token expired: closing");
                conn.close(TerminationCode::ExpiredAuthToken, "authorization token expired");
                return;
            }
        }
    }
}

pub(crate) fn handle(
    ctx: &Arc<Ctx>,
    conn: &Connection,
    id: SessionId,
    grant: Option<Arc<Grant>>,
    event: Event,
) {
    // A session that publishes opens a stream per group (audio one every 20 ms): it gets
    // the stream credit a client grants its server at once, rather than waiting a loaded
    // round trip for the idle-sized limit to grow. Raised on the request (a refused one
    // costs only credit the receive window still bounds); idle subscribers keep the small
    // limit. Mesh links come through here too (`mesh::Mesh::run_link`); a link the relay
    // subscribes over is raised in `join_upstream`.
    if matches!(event, Event::Publish(_) | Event::PublishNamespace(_)) {
        conn.grant_publisher_streams();
    }
    match event {
        Event::Subscribe(r) => {
            let ctx = ctx.clone();
            tokio::spawn(async move { subscribe(ctx, id, grant, r).await });
        }
        Event::Fetch(f) => {
            let ctx = ctx.clone();
            tokio::spawn(async move { fetch(ctx, grant, f).await });
        }
        Event::Publish(p) => {
            let ctx = ctx.clone();
            let conn = conn.clone();
            tokio::spawn(async move { publish(ctx, id, conn, grant, p).await });
        }
        Event::PublishNamespace(r) => publish_namespace(ctx, id, conn, grant.as_deref(), r),
        Event::PublishNamespaceDone { namespace, .. } => unannounce(ctx, id, &namespace),
        Event::SubscribeNamespace(r) => subscribe_namespace(ctx, id, conn, grant.as_deref(), r),
        Event::SubscribeNamespaceEnded { request_id } => {
            ctx.registry
                .lock()
                .ns_subscribers
                .retain(|s| !(s.session == id && s.request_id == request_id));
        }
        Event::TrackStatus(r) => {
            let ctx = ctx.clone();
            tokio::spawn(async move { track_status(ctx, grant, r).await });
        }
        Event::SubscriptionUpdate { request_id, params } => {
            update_subscription(ctx, id, request_id, &params)
        }
        Event::Goaway { .. } => {}
    }
}

/// The one authorization check: a token in the request itself, else the session's.
fn authorize(
    ctx: &Ctx,
    grant: Option<&Grant>,
    params: &MessageParams,
    action: Action,
    namespace: &TrackNamespace,
) -> Result<(), AuthError> {
    let now = SystemTime::now();
    let own = params.auth_tokens.iter().find_map(|t| match t {
        tiermesh_proto::message::AuthToken::UseValue { token_type, value }
            if *token_type == TOKEN_TYPE =>
        {
            Some(value.0.clone())
        }
        _ => None,
    });
    let own = match own {
        Some(t) => Some(ctx.authorizer.verify_bytes(&t, now)?),
        None => None,
    };
    ctx.authorizer.authorize(own.as_ref().or(grant), action, namespace.fields(), now)
}

/// Checks the configured namespace limits; the error is the reason to refuse with.
fn check_namespace(ctx: &Ctx, namespace: &TrackNamespace) -> Result<(), String> {
    let l = &ctx.config.limits;
    if namespace.len() > l.max_namespace_depth {
        return Err(format!("namespace deeper than {} fields", l.max_namespace_depth));
    }
    if namespace.byte_len() > l.max_namespace_len {
        return Err(format!("namespace longer than {} bytes", l.max_namespace_len));
    }
    Ok(())
}

/// The REQUEST_ERROR code for a request whose token check failed (draft-16 §9.8, codes in
/// §13.4.2): EXPIRED_AUTH_TOKEN (0x5) for a token whose `exp` has passed ("Authorization
/// token has expired"), MALFORMED_AUTH_TOKEN (0x4) for a token value that cannot be parsed
/// (§9.2.2.1: a well-formed Token structure with an invalid parameter value), UNAUTHORIZED
/// (0x1) for everything else: no token, a bad signature or unknown key, or a valid token
/// that does not grant this action on this namespace.
fn refusal_code(e: &AuthError) -> RequestErrorCode {
    match e {
        AuthError::Expired { .. } => RequestErrorCode::ExpiredAuthToken,
        AuthError::Malformed(_) => RequestErrorCode::MalformedAuthToken,
        _ => RequestErrorCode::Unauthorized,
    }
}

macro_rules! admit {
    ($ctx:expr, $grant:expr, $req:expr, $action:expr, $ns:expr) => {
        if let Err(reason) = check_namespace($ctx, $ns) {
            tracing::info!(%reason, "request refused: limit");
            $req.reject(RequestErrorCode::NotSupported, &reason);
            return;
        }
        if let Err(e) = authorize($ctx, $grant, &$req.params, $action, $ns) {
            tracing::info!(error = %e, action = %$action, "request refused: unauthorized");
            $ctx.metrics.auth_refused($action);
            $req.reject(refusal_code(&e), &e.to_string());
            return;
        }
    };
}

/// A downstream SUBSCRIBE. A second one for a track the session already subscribes to
/// (pending or established) never reaches here: the session's state machine refuses it
/// with DUPLICATE_SUBSCRIPTION (draft-16 §5.1; `relay/tests/relay_duplicate_subscribe.rs`).
async fn subscribe(ctx: Arc<Ctx>, id: SessionId, grant: Option<Arc<Grant>>, req: SubscribeRequest) {
    // The mesh's internal routes track is served on mesh links only (crate::mesh).
    let Some(req) = crate::mesh::refuse_routes(req) else { return };
    admit!(&ctx, grant.as_deref(), req, Action::Subscribe, &req.track.namespace);
    tracing::debug!(track = %req.track, "SUBSCRIBE");
    match route(&ctx, id, req) {
        Route::Attach(track, req) => attach(ctx, track, req, id, None).await,
        Route::Waiting => {}
        Route::NoPublisher(req) => {
            tracing::info!(track = %req.track, "subscribe refused: no publisher");
            req.reject(RequestErrorCode::DoesNotExist, "no publisher for this track");
        }
        Route::New(track, publisher, conn) => {
            tokio::spawn(upstream(ctx, track, publisher, conn));
        }
    }
}

enum Route {
    Attach(Arc<Track>, SubscribeRequest),
    Waiting,
    NoPublisher(SubscribeRequest),
    New(Arc<Track>, SessionId, Connection),
}

/// Decides where a downstream SUBSCRIBE goes: onto a known track, into the wait list of a
/// pending upstream, or onto a new track with a new upstream subscription.
fn route(ctx: &Ctx, id: SessionId, req: SubscribeRequest) -> Route {
    let name = req.track.clone();
    // The registry lock is held while the request is parked, so that a refused upstream
    // (which takes the parked requests and forgets the track under the same lock) answers
    // every request parked on it.
    let mut reg = ctx.registry.lock();
    if let Some(track) = reg.tracks.get(&name).cloned() {
        let mut st = track.lock();
        if !st.removed {
            if let Upstream::Pending { .. } = st.upstream {
                if let Some(v) = req.params.new_group_request {
                    st.new_group_for_subscribe =
                        Some(st.new_group_for_subscribe.map_or(v, |x| x.max(v)));
                }
                st.park(req, id, &ctx.metrics);
                return Route::Waiting;
            }
            // Counted before the registry lock is released, so that the last subscriber
            // leaving meanwhile does not end the track under this one.
            st.attaching += 1;
            drop(st);
            return Route::Attach(track, req);
        }
        // A track on its way out: forget it here and start afresh.
        drop(st);
        reg.tracks.remove(&name);
        ctx.metrics.tracks.dec();
    }
    // No local publisher: the next hop of the best mesh route, if any.
    let found = reg
        .publisher_for(&name)
        .or_else(|| ctx.mesh.as_ref().and_then(|m| m.next_hop(&name.namespace)));
    let Some((publisher, conn)) = found else {
        return Route::NoPublisher(req);
    };
    let track =
        Track::new(name.clone(), ctx.config.cache.groups, Upstream::Pending { session: publisher });
    {
        let mut st = track.lock();
        // A NEW_GROUP_REQUEST for a track without an established subscription goes in the
        // upstream SUBSCRIBE (draft-16 §9.2.2.9).
        st.new_group_for_subscribe = req.params.new_group_request;
        st.park(req, id, &ctx.metrics);
    }
    reg.tracks.insert(name, track.clone());
    ctx.metrics.tracks.inc();
    Route::New(track, publisher, conn)
}

/// Accepts a downstream SUBSCRIBE for a track whose upstream is established (or lingering)
/// and adds it to the fan-out. The caller counted it in `attaching`. `answered` is dropped
/// once the subscription is answered and added (or not added).
async fn attach(
    ctx: Arc<Ctx>,
    track: Arc<Track>,
    req: SubscribeRequest,
    session: SessionId,
    answered: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let added = attach_inner(&ctx, &track, req, session).await;
    drop(answered);
    {
        let mut st = track.lock();
        st.attaching = st.attaching.saturating_sub(1);
    }
    let Some((key, writer)) = added else {
        // Not added: release the track if nothing else holds it.
        release_downstream(&ctx, &track, u64::MAX);
        return;
    };
    ctx.metrics.subscriptions.inc();
    tracing::debug!(track = %track.name, "downstream subscription added");
    let end = writer.closed().await;
    tracing::debug!(track = %track.name, ?end, "downstream subscription ended");
    release_downstream(&ctx, &track, key);
}

/// Answers the SUBSCRIBE and adds the subscription; its key and writer if it was added.
async fn attach_inner(
    ctx: &Arc<Ctx>,
    track: &Arc<Track>,
    req: SubscribeRequest,
    session: SessionId,
) -> Option<(u64, moq::TrackWriter)> {
    let filter = req.params.subscription_filter;
    let (req_forward, new_group) = (req.params.forward, req.params.new_group_request);
    let (extensions, largest) = {
        let st = track.lock();
        (st.extensions.clone(), st.cache.largest())
    };
    if let (Some(SubscriptionFilter::AbsoluteRange { end_group, .. }), Some(l)) = (filter, largest)
        && end_group.0 < l.group.0
    {
        req.reject(RequestErrorCode::InvalidRange, "the range's end group has passed");
        return None;
    }
    let (start, end_group) = filter_bounds(filter, largest);
    let writer = match req.accept(extensions, largest).await {
        Ok(w) => w,
        Err(e) => {
            tracing::debug!(error = %e, "downstream subscription not accepted");
            return None;
        }
    };
    let mut st = track.lock();
    if st.removed {
        writer.publish_done(PublishDoneCode::TrackEnded, "track ended");
        return None;
    }
    let forward = req_forward.unwrap_or(true);
    // Groups from `start` on that came while the SUBSCRIBE_OK was sent (after `largest`) and
    // left the cache since cannot reach this subscriber: its stream starts after a gap.
    if let (Some(oldest), Some(read)) = (st.cache.oldest(), largest)
        && forward
        && oldest.group.0 > start.group.0.max(read.group.0 + 1)
    {
        tracing::warn!(track = %track.name, ?start, ?oldest, "groups after a new subscription's start left the cache while it was answered");
    }
    let key = st.add_downstream(writer.clone(), session, start, end_group, forward, &ctx.metrics);
    drop(st);
    if let Some(v) = new_group {
        track.request_new_group(v);
    }
    track.sync_upstream_forward();
    Some((key, writer))
}

/// Removes a downstream subscription; the last one releases the relay's own upstream
/// SUBSCRIBE.
fn release_downstream(ctx: &Ctx, track: &Arc<Track>, key: u64) {
    let mut st = track.lock();
    if st.remove_downstream(key) {
        ctx.metrics.subscriptions.dec();
    }
    if !st.downstream.is_empty() || !st.waiting.is_empty() || st.attaching > 0 || st.removed {
        return;
    }
    let release = match &mut st.upstream {
        Upstream::Active { pushed: false, release, .. } => release.take(),
        Upstream::Lingering => None,
        _ => return,
    };
    if let Some(r) = release {
        let _ = r.send(());
    }
    st.removed = true;
    drop(st);
    remove_track(ctx, track);
}

fn remove_track(ctx: &Ctx, track: &Arc<Track>) {
    let mut reg = ctx.registry.lock();
    if reg.tracks.get(&track.name).is_some_and(|t| Arc::ptr_eq(t, track)) {
        reg.tracks.remove(&track.name);
        ctx.metrics.tracks.dec();
    }
}

/// The relay's one SUBSCRIBE for a track, to the session publishing its namespace.
pub(crate) async fn upstream(
    ctx: Arc<Ctx>,
    track: Arc<Track>,
    session: SessionId,
    conn: Connection,
) {
    match join_upstream(&track, &conn, &ctx).await {
        Ok((reader, ngr, epoch)) => {
            run_upstream(ctx, track, session, reader, Some((conn, ngr, epoch))).await
        }
        Err((code, reason)) => {
            tracing::info!(track = %track.name, ?code, %reason, "upstream subscription failed");
            // Under the registry lock, as `route` parks requests: none can be parked
            // after the parked ones are taken.
            let (waiting, held) = {
                let mut reg = ctx.registry.lock();
                let mut st = track.lock();
                let waiting = st.take_waiting(&ctx.metrics);
                let held = !st.downstream.is_empty() || st.attaching > 0;
                if held {
                    // New subscribers attach to the held track rather than park.
                    st.upstream = Upstream::Lingering;
                } else if !st.removed {
                    st.removed = true;
                    if reg.tracks.get(&track.name).is_some_and(|t| Arc::ptr_eq(t, &track)) {
                        reg.tracks.remove(&track.name);
                        ctx.metrics.tracks.dec();
                    }
                }
                (waiting, held)
            };
            for (req, _) in waiting {
                req.reject(code, &reason);
            }
            if held {
                lose_upstream(&ctx, &track, None);
            }
        }
    }
}

/// Subscribes to a second publisher of a track whose upstream is established elsewhere (a
/// publisher that reconnected before its old session was seen to die, or a newer publisher
/// of the namespace): draft-16 §8.5 requires a SUBSCRIBE to a publisher whose
/// PUBLISH_NAMESPACE matches an existing subscription. The relay keeps one upstream per
/// track (§8.3 lets it UNSUBSCRIBE a publisher it cannot keep): once the new subscription
/// is established it replaces the old one, which is released. If the new publisher
/// refuses, the old upstream carries on untouched.
pub(crate) async fn take_over(
    ctx: Arc<Ctx>,
    track: Arc<Track>,
    session: SessionId,
    conn: Connection,
) {
    match join_upstream(&track, &conn, &ctx).await {
        Ok((reader, ngr, epoch)) => {
            run_upstream(ctx, track, session, reader, Some((conn, ngr, epoch))).await
        }
        Err((code, reason)) => {
            // A mesh move whose old upstream was lost while it waited: the mesh held back
            // the track's new subscription for it (`Mesh::reroute`) and subscribes now.
            let lingering = matches!(track.lock().upstream, Upstream::Lingering);
            if !lingering {
                tracing::info!(track = %track.name, ?code, %reason, "second publisher refused: the current upstream stays");
            } else if let Some(m) = &ctx.mesh {
                tracing::info!(track = %track.name, ?code, %reason, "move refused after the old upstream was lost: subscribing along the best route again");
                m.move_failed(&track.name);
            } else {
                tracing::info!(track = %track.name, ?code, %reason, "second publisher refused after the old upstream was lost: the track lingers");
            }
        }
    }
}

/// SUBSCRIBE (Largest Object) upstream with a joining FETCH for the current group, whose
/// objects are forwarded (to the cache and to subscribers already held on the track, so
/// that a track continued by a new publisher restarts at its group's first object).
///
/// Returns the subscription, the NEW_GROUP_REQUEST it carried, and the feed its joining
/// fetch's objects were forwarded as (none without one).
///
/// On failure, the REQUEST_ERROR code and reason for the downstream subscribers: the
/// publisher's own refusal, TIMEOUT when it does not answer in time, DOES_NOT_EXIST when its
/// session ended first (the track is no longer available, as for a SUBSCRIBE that arrives
/// after the publisher left), INTERNAL_ERROR when the session refused to send the request.
async fn join_upstream(
    track: &Arc<Track>,
    conn: &Connection,
    ctx: &Arc<Ctx>,
) -> Result<(TrackReader, Option<u64>, Option<crate::track::Feed>), (RequestErrorCode, String)> {
    // Largest Object: downstream subscribers with different filters come and go without
    // changing the upstream subscription (draft-16 §8.4).
    let mut options = SubscribeOptions::largest_object();
    let new_group = track.lock().new_group_for_subscribe.take();
    options.new_group_request = new_group;
    // With a joining FETCH for the current group: the subscription starts after the
    // largest object, which downstream joiners are then told of, so their joining fetches
    // need that group up to and including it: the cache, as this fetch fills it.
    // The upstream opens a stream per group of this track towards us: over a mesh link the
    // relay accepted, that peer started at the idle-sized stream limit (a link the relay
    // dialled, and a local publisher's session, have the raise already).
    conn.grant_publisher_streams();
    let asked = std::time::Instant::now();
    let joined =
        tokio::time::timeout(UPSTREAM_SUBSCRIBE_WAIT, conn.join(track.name.clone(), options, 0))
            .await;
    let (reader, fetch) = match joined {
        Ok(Ok(x)) => x,
        Ok(Err(moq::Error::Rejected { code, reason, .. })) => {
            return Err((code, format!("the publisher refused the subscription: {reason}")));
        }
        Ok(Err(e @ moq::Error::Session(_))) => {
            return Err((RequestErrorCode::InternalError, format!("upstream: {e}")));
        }
        Ok(Err(e)) => {
            return Err((RequestErrorCode::DoesNotExist, format!("the publisher left: {e}")));
        }
        Err(_) => {
            return Err((
                RequestErrorCode::Timeout,
                "the publisher did not answer the subscription in time".into(),
            ));
        }
    };
    let answered_ms = asked.elapsed().as_millis() as u64;
    let f = match fetch {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(track = %track.name, answered_ms, error = %e, "no upstream joining fetch");
            return Ok((reader, new_group, None));
        }
    };
    tracing::debug!(track = %track.name, answered_ms, end = ?f.end_location(), "upstream joining fetch answered");
    // The fetch covers the current group up to the subscription's largest object; live
    // objects follow it. Subscribers already held on the track (a publisher that came back,
    // another one taking over) must get the fetched objects before the live ones on their
    // streams, so for them the fill completes first, as long as it takes up to
    // UPSTREAM_FETCH_WAIT. Otherwise the subscribers are answered at once and the fill
    // goes on beside the subscription: on a lossy uplink each lost packet of the fetch
    // stream holds the rest of it back for a loss-recovery round (about half a second on
    // `congested`), so waiting for the whole fetch held every subscriber of the track up to
    // the full 2 s (docs/BENCHMARKS.md, "publisher behind the link").
    let (held, feed) = {
        let mut st = track.lock();
        (!st.downstream.is_empty(), st.new_feed())
    };
    // The relative joining fetch of the current group (Joining Start 0): from its start.
    let fill_start = reader.largest().map(|l| Location::new(l.group.0, 0));
    match reader.largest() {
        Some(largest) if !held => {
            let bound = Location::new(largest.group.0, largest.object.0 + 1);
            let (tx, rx) = tokio::sync::watch::channel(crate::track::Fill::default());
            track.lock().filling = Some((bound, rx.clone()));
            let (ctx, track) = (ctx.clone(), track.clone());
            tokio::spawn(async move {
                fill_from_upstream(ctx, track.clone(), f, fill_start, feed, tx, asked).await;
                // The subscribers answered meanwhile send their joining FETCH a round trip
                // later, maybe after the fill ended: its objects stay at hand for them a
                // while, since live groups arriving meanwhile can evict its group from the
                // cache (or have it not kept at all when it comes after them).
                tokio::time::sleep(FILL_KEPT).await;
                let mut st = track.lock();
                // Unless a newer fill (of a new upstream) has taken its place.
                if st.filling.as_ref().is_some_and(|(_, r)| r.same_channel(&rx)) {
                    st.filling = None;
                }
            });
        }
        _ => {
            let (tx, _rx) = tokio::sync::watch::channel(crate::track::Fill::default());
            fill_from_upstream(ctx.clone(), track.clone(), f, fill_start, feed, tx, asked).await;
        }
    }
    Ok((reader, new_group, Some(feed)))
}

/// Forwards the objects of the relay's upstream joining FETCH (to the cache, and to the
/// subscribers whose filter passes them, as `feed`) until its stream ends or
/// [`UPSTREAM_FETCH_WAIT`] has passed, adding each one to `progress`, which is marked
/// `fin` if the fetch ended with its FIN in time, and dropped (closed) when it ends. What
/// the fetch made known of its range, which starts at `start`, is noted in the cache (the
/// locations up to its last item but those it marked unknown, and the rest of the range
/// after a FIN), so that a FETCH served from the cache later says unknown only where it
/// was. A fetch given up here is cancelled upstream (the reader is dropped).
async fn fill_from_upstream(
    ctx: Arc<Ctx>,
    track: Arc<Track>,
    mut fetch: moq::FetchReader,
    start: Option<Location>,
    feed: crate::track::Feed,
    progress: tokio::sync::watch::Sender<crate::track::Fill>,
    asked: std::time::Instant,
) {
    let mut objects = 0u64;
    let mut known = Known::new(start);
    let fill = async {
        while let Some(e) = fetch.next_event().await {
            let o = match e {
                moq::FetchEvent::Object(o) => o,
                moq::FetchEvent::EndOfRange(r) => {
                    let at = Location::new(r.group_id, r.object_id);
                    known.marker(r.kind, at);
                    if r.kind == RangeKind::Unknown {
                        progress.send_modify(|fetched| fetched.unknown.push(at));
                    }
                    continue;
                }
            };
            objects += 1;
            let ms = asked.elapsed().as_millis() as u64;
            tracing::trace!(track = %track.name, location = ?o.location(), ms, "upstream joining fetch object");
            known.item(o.location());
            track.lock().forward(&o, feed, &ctx.metrics);
            progress.send_modify(|fetched| fetched.objects.push(o.to_object()));
        }
    };
    let filled = tokio::time::timeout(UPSTREAM_FETCH_WAIT, fill).await;
    let ms = asked.elapsed().as_millis() as u64;
    let end = fetch.end();
    let fin =
        filled.is_ok() && matches!(end, Some(moq::FetchEnd::Whole | moq::FetchEnd::Unknown(_)));
    if fin {
        known.item(last_location(fetch.end_location()));
    }
    {
        let mut st = track.lock();
        for (first, last) in known.ranges {
            st.cache.note_known(first, last);
        }
    }
    if fin {
        progress.send_modify(|fetched| fetched.fin = true);
    }
    if filled.is_ok() && end == Some(moq::FetchEnd::Whole) {
        tracing::debug!(track = %track.name, objects, ms, "upstream joining fetch complete");
    } else {
        tracing::info!(track = %track.name, objects, ms, ?end, "upstream joining fetch incomplete");
    }
}

/// What a fetch stream read in order makes known: the locations from the range's start up
/// to each item (its object, or the last location of an End of Non-Existent Range), but
/// those an End of Unknown Range covers.
struct Known {
    /// The first location not yet accounted for; `None` if the range's start is unknown.
    next: Option<Location>,
    /// Known ranges, first and last location each, ascending.
    ranges: Vec<(Location, Location)>,
}

impl Known {
    fn new(start: Option<Location>) -> Self {
        Self { next: start, ranges: Vec::new() }
    }

    /// An object, or the end of a range known not to exist, at `at`.
    fn item(&mut self, at: Location) {
        let Some(next) = self.next.filter(|n| *n <= at) else { return };
        match self.ranges.last_mut() {
            Some(r) if after(r.1) == next => r.1 = at,
            _ => self.ranges.push((next, at)),
        }
        self.next = Some(after(at));
    }

    fn marker(&mut self, kind: RangeKind, at: Location) {
        match kind {
            RangeKind::NonExistent => self.item(at),
            RangeKind::Unknown => {
                if self.next.is_some_and(|n| n <= at) {
                    self.next = Some(after(at));
                }
            }
        }
    }
}

/// The location after `l` (the first of the next group after a group's last).
fn after(l: Location) -> Location {
    if l.object.0 >= VARINT_MAX {
        Location::new(l.group.0.saturating_add(1), 0)
    } else {
        Location::new(l.group.0, l.object.0 + 1)
    }
}

/// The location before `l`, which is not `{0, 0}`.
fn before(l: Location) -> Location {
    match l.object.0 {
        0 => Location::new(l.group.0.saturating_sub(1), VARINT_MAX),
        o => Location::new(l.group.0, o - 1),
    }
}

/// The last location of a range whose End Location is `end` (the last plus one; an object
/// of 0: the whole end group).
fn last_location(end: Location) -> Location {
    match end.object.0 {
        0 => Location::new(end.group.0, VARINT_MAX),
        o => Location::new(end.group.0, o - 1),
    }
}

/// Forwards an established upstream subscription's objects until it ends. `subscribed`:
/// the session, NEW_GROUP_REQUEST and joining fetch's feed of the relay's own SUBSCRIBE
/// (none for a publisher's PUBLISH).
pub(crate) async fn run_upstream(
    ctx: Arc<Ctx>,
    track: Arc<Track>,
    session: SessionId,
    mut reader: TrackReader,
    subscribed: Option<(Connection, Option<u64>, Option<crate::track::Feed>)>,
) {
    let pushed = subscribed.is_none();
    let (release, mut released) = tokio::sync::oneshot::channel();
    let (waiting, generation, feed) = {
        let mut st = track.lock();
        if st.removed {
            // Nobody holds the track any more: dropping the reader unsubscribes.
            let waiting = st.take_waiting(&ctx.metrics);
            drop(st);
            for (req, _) in waiting {
                req.reject(RequestErrorCode::DoesNotExist, "the track ended");
            }
            return;
        }
        // A newer publisher takes the track over: the older upstream is released. The
        // streams that mirrored it stay open for the new one to continue; those it does not
        // continue are reset (`TrackState::upstream_established`, `upstream_cut`).
        let replaced = match &mut st.upstream {
            Upstream::Active { release, .. } => Some(release.take()),
            _ => None,
        };
        if let Some(old) = replaced {
            if let Some(r) = old {
                let _ = r.send(());
            }
            st.upstream_cut(crate::track::RESET_HANDOFF);
            tracing::info!(track = %track.name, "new publisher takes over the track");
        }
        st.set_upstream_info(reader.extensions(), reader.largest());
        let epoch = subscribed.as_ref().and_then(|(_, _, e)| *e);
        let feed = st.upstream_established(reader.largest(), epoch);
        st.upstream = Upstream::Active { session, pushed, release: Some(release) };
        st.upstream_forward = true;
        st.upstream_request = subscribed.as_ref().map(|(c, _, _)| (c.clone(), reader.request_id()));
        if let Some((_, Some(v), _)) = &subscribed {
            st.new_group_sent_on_subscribe(*v);
        }
        st.generation += 1;
        let waiting = st.take_waiting(&ctx.metrics);
        st.attaching += waiting.len();
        (waiting, st.generation, feed)
    };
    ctx.upstreams.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(track = %track.name, pushed, "upstream established");
    // A NEW_GROUP_REQUEST that arrived after the SUBSCRIBE left goes as REQUEST_UPDATE.
    let late_new_group = track.lock().new_group_for_subscribe.take();
    if let Some(v) = late_new_group {
        track.request_new_group(v);
    }
    let mut answered = Vec::new();
    for (req, s) in waiting {
        let (tx, rx) = tokio::sync::oneshot::channel();
        answered.push(rx);
        tokio::spawn(attach(ctx.clone(), track.clone(), req, s, Some(tx)));
    }
    // The subscribers parked on the track start after the largest object it has now, so its
    // objects wait in `reader` until they are added: those that came with or before the
    // SUBSCRIBE_OK (streams wait for it; over a lossy link it can come after a few hundred
    // ms of them) would otherwise be forwarded meanwhile and push the groups they want out
    // of the cache (two groups: 40 ms of audio), a gap at the start of their streams.
    let _ = tokio::time::timeout(PARKED_ATTACH_WAIT, futures::future::join_all(answered)).await;
    let mut done = None;
    let lost = loop {
        tokio::select! {
            e = reader.next() => match e {
                Some(TrackEvent::Object(o)) => track.lock().forward(&o, feed, &ctx.metrics),
                Some(TrackEvent::StreamEnd { group_id, subgroup_id, reset }) => {
                    let ended = track.lock().end_stream(group_id, subgroup_id, reset);
                    if ended > 0 {
                        ctx.metrics.subscriptions.set(ctx.metrics.subscriptions.get() - ended as i64);
                    }
                }
                Some(TrackEvent::Done(d)) => done = Some(d),
                None => break true,
            },
            _ = &mut released => break false,
        }
    };
    ctx.upstreams.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    {
        let mut st = track.lock();
        if st.generation == generation {
            st.upstream_request = None;
        }
    }
    if !lost {
        tracing::info!(track = %track.name, "upstream released");
        return;
    }
    if track.lock().generation != generation {
        tracing::info!(track = %track.name, "replaced upstream ended");
        return;
    }
    match done {
        Some(d) => {
            tracing::info!(track = %track.name, code = ?d.code, "publisher ended the track");
            let n = {
                let mut st = track.lock();
                st.removed = true;
                // Streams it did not end: the publisher ended the subscription (CANCELLED).
                st.end_all(d.code, &d.reason, reset_code::CANCELLED)
            };
            ctx.metrics.subscriptions.set(ctx.metrics.subscriptions.get() - n as i64);
            remove_track(&ctx, &track);
        }
        None => lose_upstream(&ctx, &track, Some(session)),
    }
}

/// The publisher left without ending the track: hold the subscribers for the linger time.
/// `lost` is the session of an established upstream that was lost: if another session
/// publishes the track's namespace (a publisher that came back before the old session was
/// seen to die), the track is resubscribed there at once.
fn lose_upstream(ctx: &Arc<Ctx>, track: &Arc<Track>, lost: Option<SessionId>) {
    let generation = {
        let mut st = track.lock();
        if st.removed {
            return;
        }
        if st.downstream.is_empty() && st.waiting.is_empty() && st.attaching == 0 {
            st.removed = true;
            drop(st);
            remove_track(ctx, track);
            return;
        }
        // The subscribers' open streams stay open: the next upstream continues the
        // subgroups it has more objects of, and the others are reset with SESSION_CLOSED
        // (`TrackState::upstream_established`), as they all are when the linger ends. A
        // subgroup cut so is never finished as whole, nor served whole from the cache.
        st.upstream_cut(reset_code::SESSION_CLOSED);
        st.upstream = Upstream::Lingering;
        st.generation += 1;
        st.generation
    };
    tracing::info!(track = %track.name, linger = ?ctx.config.linger, "publisher gone: holding subscribers");
    let other = lost.and_then(|s| ctx.registry.lock().publisher_for_except(&track.name, s));
    if let Some((session, conn)) = other {
        let mut st = track.lock();
        if matches!(st.upstream, Upstream::Lingering) && !st.removed {
            st.upstream = Upstream::Pending { session };
            drop(st);
            tracing::info!(track = %track.name, "another publisher of the namespace: resubscribing");
            tokio::spawn(upstream(ctx.clone(), track.clone(), session, conn));
        }
    } else if let Some(m) = &ctx.mesh {
        m.wake();
    }
    let ctx = ctx.clone();
    let track = track.clone();
    tokio::spawn(async move {
        tokio::time::sleep(ctx.config.linger).await;
        let n = {
            let mut st = track.lock();
            if st.generation != generation || st.removed {
                return;
            }
            st.removed = true;
            st.end_all(
                PublishDoneCode::TrackEnded,
                "the publisher left",
                reset_code::SESSION_CLOSED,
            )
        };
        tracing::info!(track = %track.name, subscribers = n, "linger over: PUBLISH_DONE");
        ctx.metrics.subscriptions.set(ctx.metrics.subscriptions.get() - n as i64);
        remove_track(&ctx, &track);
    });
}

/// A subscriber's REQUEST_UPDATE (already answered by the session): FORWARD and the
/// narrowed filter apply to its downstream subscription, FORWARD is reflected upstream
/// when it changes what the relay's own subscription needs, and a NEW_GROUP_REQUEST goes
/// upstream by the relay rules (`Track::request_new_group`).
fn update_subscription(ctx: &Ctx, id: SessionId, request_id: RequestId, params: &MessageParams) {
    let tracks: Vec<Arc<Track>> = ctx.registry.lock().tracks.values().cloned().collect();
    for track in tracks {
        let applied = {
            let mut st = track.lock();
            match st.downstream_key(id, request_id) {
                Some(key) => st.update_downstream(key, params),
                None => false,
            }
        };
        if !applied {
            continue;
        }
        tracing::debug!(track = %track.name, ?params, "subscription updated");
        if params.forward.is_some() {
            track.sync_upstream_forward();
        }
        if let Some(v) = params.new_group_request {
            track.request_new_group(v);
        }
        return;
    }
}

/// TRACK_STATUS (draft-16 §9.19): answered from the track's state when the relay has an
/// established (or lingering) subscription, with the parameters a SUBSCRIBE_OK would carry
/// (LARGEST_OBJECT); otherwise forwarded to the track's publisher (§9.19 lets a relay
/// without an established subscription forward it), whose answer is passed back.
async fn track_status(ctx: Arc<Ctx>, grant: Option<Arc<Grant>>, req: TrackStatusRequest) {
    admit!(&ctx, grant.as_deref(), req, Action::Subscribe, &req.track.namespace);
    let name = req.track.clone();
    let (local, upstream) = {
        let reg = ctx.registry.lock();
        let local = reg.tracks.get(&name).and_then(|t| {
            let st = t.lock();
            match st.upstream {
                Upstream::Active { .. } | Upstream::Lingering => Some(st.cache.largest()),
                Upstream::Pending { .. } => None,
            }
        });
        let upstream = reg
            .publisher_for(&name)
            .or_else(|| ctx.mesh.as_ref().and_then(|m| m.next_hop(&name.namespace)));
        (local, upstream)
    };
    if let Some(largest) = local {
        tracing::debug!(track = %name, ?largest, "TRACK_STATUS answered from the track state");
        req.accept(MessageParams { largest_object: largest, ..Default::default() });
        return;
    }
    let Some((_, conn)) = upstream else {
        req.reject(RequestErrorCode::DoesNotExist, "no publisher for this track");
        return;
    };
    let asked = tokio::time::timeout(
        UPSTREAM_SUBSCRIBE_WAIT,
        conn.track_status(name.clone(), MessageParams::default()),
    )
    .await;
    match asked {
        Ok(Ok(params)) => {
            tracing::debug!(track = %name, "TRACK_STATUS answered by the publisher");
            req.accept(MessageParams { largest_object: params.largest_object, ..params });
        }
        Ok(Err(moq::Error::Rejected { code, reason, .. })) => req.reject(code, &reason),
        Ok(Err(e)) => {
            req.reject(RequestErrorCode::DoesNotExist, &format!("the publisher left: {e}"))
        }
        Err(_) => req.reject(RequestErrorCode::Timeout, "the publisher did not answer in time"),
    }
}

/// The code logged when a fetch forwarded upstream is given up (draft-16's INTERNAL_ERROR
/// for a fetch stream; `FetchResponse::reset` ends the stream with an End of Unknown Range
/// and a FIN, so the code does not travel).
const FETCH_UPSTREAM_FAILED: u32 = 0x0;

/// A FETCH for objects older than the cache holds (or of a track the relay does not
/// hold): forwarded to the track's publisher (draft-16 §8.5: an upstream FETCH goes to a
/// publisher chosen as for SUBSCRIBE), its objects and End of Range markers passed on as
/// they arrive. An upstream fetch that does not end whole ends incomplete here too, and
/// one that stalls (nothing for `limits.upstream_fetch_idle`, without a FIN or a reset) is
/// cancelled upstream (FETCH_CANCEL) and ends here with the rest of its range unknown, so
/// that a publisher that accepted a FETCH and went quiet cannot hold the requester forever.
async fn fetch_upstream(ctx: &Ctx, req: IncomingFetch) {
    let name = req.range.track.clone();
    let upstream = {
        let reg = ctx.registry.lock();
        reg.publisher_for(&name)
            .or_else(|| ctx.mesh.as_ref().and_then(|m| m.next_hop(&name.namespace)))
    };
    let Some((_, conn)) = upstream else {
        req.reject(RequestErrorCode::DoesNotExist, "no publisher for this track");
        return;
    };
    let (start, end) = (req.range.start, req.range.end);
    let asked =
        tokio::time::timeout(UPSTREAM_SUBSCRIBE_WAIT, conn.fetch(name.clone(), start, end, None))
            .await;
    let mut upstream = match asked {
        Ok(Ok(f)) => f,
        Ok(Err(moq::Error::Rejected { code, reason, .. })) => {
            req.reject(code, &reason);
            return;
        }
        Ok(Err(e)) => {
            req.reject(RequestErrorCode::DoesNotExist, &format!("the publisher left: {e}"));
            return;
        }
        Err(_) => {
            req.reject(RequestErrorCode::Timeout, "the publisher did not answer in time");
            return;
        }
    };
    tracing::debug!(track = %name, ?start, ?end, "fetch forwarded upstream");
    let accepted = req
        .accept(upstream.end_of_track(), upstream.end_location(), upstream.extensions().clone())
        .await;
    match accepted {
        Ok(mut resp) => {
            let idle = ctx.config.limits.upstream_fetch_idle;
            loop {
                let next = tokio::select! {
                    biased;
                    () = resp.cancelled() => {
                        // The requester's FETCH_CANCEL goes upstream at once (dropping the
                        // reader sends it), not when the next upstream object shows it.
                        tracing::debug!(track = %name, "fetch cancelled: cancelled upstream");
                        return;
                    }
                    next = tokio::time::timeout(idle, upstream.next_event()) => next,
                };
                let e = match next {
                    Ok(Some(e)) => e,
                    Ok(None) => break,
                    Err(_) => {
                        tracing::info!(
                            track = %name,
                            idle_ms = idle.as_millis() as u64,
                            "upstream fetch stalled: cancelled, the rest of its range unknown"
                        );
                        // Dropping the reader sends FETCH_CANCEL.
                        drop(upstream);
                        resp.reset(FETCH_UPSTREAM_FAILED);
                        return;
                    }
                };
                let written = match e {
                    moq::FetchEvent::Object(o) => resp.write(&o.to_object()),
                    moq::FetchEvent::EndOfRange(r) => resp.write_end_of_range(r),
                };
                if let Err(e) = written {
                    tracing::debug!(track = %name, error = %e, "upstream fetch not passed on");
                    resp.reset(FETCH_UPSTREAM_FAILED);
                    return;
                }
            }
            // The upstream's End of Range markers went on as received; a fetch that ended
            // without its FIN (reset, broken, its publisher gone) is not claimed whole: the
            // rest of the range goes as unknown (`FetchResponse::reset`).
            match upstream.end() {
                Some(moq::FetchEnd::Whole | moq::FetchEnd::Unknown(_)) => resp.finish(),
                end => {
                    tracing::debug!(track = %name, ?end, "upstream fetch ended incomplete");
                    resp.reset(FETCH_UPSTREAM_FAILED);
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "fetch not accepted"),
    }
}

async fn fetch(ctx: Arc<Ctx>, grant: Option<Arc<Grant>>, req: IncomingFetch) {
    let ns = req.range.track.namespace.clone();
    admit!(&ctx, grant.as_deref(), req, Action::Subscribe, &ns);
    let track = ctx.registry.lock().tracks.get(&req.range.track).cloned();
    // A joining FETCH is always served here (its subscription is on this relay); a
    // standalone one for objects older than the cache goes upstream.
    let cached = track
        .as_ref()
        .is_some_and(|t| t.lock().cache.oldest().is_some_and(|o| o <= req.range.start));
    let joining = req.range.joining.is_some();
    let track = match track {
        Some(t) if cached || joining => t,
        _ => return fetch_upstream(&ctx, req).await,
    };
    let (start, asked_end) = (req.range.start, req.range.end);
    let (extensions, largest) = {
        let st = track.lock();
        (st.extensions.clone(), st.cache.largest())
    };
    if let Some(l) = largest
        && start > l
    {
        req.reject(RequestErrorCode::InvalidRange, "the start is after the largest object");
        return;
    }
    let end = served_end(asked_end, largest);
    tracing::debug!(track = %track.name, ?start, ?end, "fetch served");
    match req.accept(false, end, extensions).await {
        Ok(mut resp) => {
            if serve_cached(&track, start, end, &mut resp).await {
                resp.finish();
            }
        }
        Err(e) => tracing::debug!(error = %e, "fetch not accepted"),
    }
}

/// FETCH_OK's End Location for a FETCH asking up to `asked` (its End Location) served
/// from the cache of a track whose largest object is `largest`: what was asked, or the
/// location after the largest where the range goes beyond it (draft-16, FETCH_OK): objects
/// not published yet are not in the answer, nor marked unknown in it.
fn served_end(asked: Location, largest: Option<Location>) -> Location {
    match largest {
        // The last Object ID a varint holds: that group whole (its End Location + 1 would
        // not fit on the wire).
        Some(l) if last_location(asked) > l && l.object.0 >= VARINT_MAX => {
            Location::new(l.group.0, 0)
        }
        Some(l) if last_location(asked) > l => after(l),
        _ => asked,
    }
}

/// Writes the cached objects of `[start, end)` to `resp` in order. While the relay's
/// joining FETCH upstream still fills the cache (`TrackState::filling`), the objects it
/// covers are written as they arrive (from the fill itself too: live groups arriving
/// meanwhile can evict its group from the cache), and those after it (live objects already
/// cached) once it has ended, so that a downstream joiner starts with the group's first
/// objects as soon as they reach the relay rather than once the whole group has. The
/// fill's End of Unknown Range markers go on between the objects around them, and a fill
/// that did not end with its FIN leaves what it did not bring unknown: an End of Unknown
/// Range up to the last location it covers goes before the objects after it.
///
/// Past the fill, what the cache does not know (`Cache::unknown`: a reset or open subgroup
/// stream, a group never received, the start of a group before the relay's subscription
/// with no fetch to fill it) goes as End of Unknown Range between the cached objects, each
/// after an End of Non-Existent Range over the locations before it known not to exist
/// (draft-16, End of Range: only to split those from the unknown ones); gaps the cache
/// knows to be empty are left to the FIN. False if the response stream failed.
async fn serve_cached(
    track: &Track,
    start: Location,
    end: Location,
    resp: &mut moq::FetchResponse,
) -> bool {
    let mut fill = track.lock().filling.clone().filter(|(bound, _)| may_fill(start, end, *bound));
    // The fill's sender is gone: one more read of what it brought, then the rest.
    let mut fill_over = false;
    // The location after the last item written.
    let mut next = start;
    // Locations before this one are accounted for by the fill: the cache's knowledge is
    // asked from here on.
    let mut settled = start;
    let last = last_location(end);
    loop {
        let (objects, unknown, upto, fin) = {
            let st = track.lock();
            let upto = match &fill {
                Some((bound, _)) if end.object.0 == 0 || *bound < end => *bound,
                _ => end,
            };
            let mut objects = st.cache.range(next, upto);
            let mut fin = true;
            let unknown: Vec<Unknown> = match &mut fill {
                Some((_, rx)) => {
                    // Seen as it is read: an object added after this read changes it again.
                    let fetched = rx.borrow_and_update();
                    let within =
                        |o: &&tiermesh_proto::data::Object| (next..upto).contains(&o.location());
                    objects.extend(fetched.objects.iter().filter(within).cloned());
                    objects.sort_by_key(|o| o.location());
                    objects.dedup_by_key(|o| o.location());
                    fin = fetched.fin;
                    fetched
                        .unknown
                        .iter()
                        .filter(|l| (next..upto).contains(*l))
                        .map(|l| Unknown { from: None, to: *l })
                        .collect()
                }
                None => st
                    .cache
                    .unknown(next.max(settled), last)
                    .into_iter()
                    .map(|(from, to)| Unknown { from: Some(from), to })
                    .collect(),
            };
            (objects, unknown, upto, fin)
        };
        // Unknown ranges go between the objects around them (one that covers nothing after
        // the item written last is left out).
        let mut unknown = unknown.into_iter().peekable();
        for o in &objects {
            while let Some(u) = unknown.next_if(|u| u.to < o.location()) {
                if !write_unknown(resp, &mut next, u) {
                    return false;
                }
            }
            if resp.write(o).is_err() {
                return false;
            }
            next = after(o.location());
        }
        for u in unknown {
            if !write_unknown(resp, &mut next, u) {
                return false;
            }
        }
        match &mut fill {
            None => return true,
            Some(_) if fill_over => {
                // `upto` is the fill's bound here, or the end of the asked range before it
                // (an End Location's object is then above 0): the last location it covers
                // is the one before.
                if !fin
                    && upto.object.0 > 0
                    && !write_unknown(resp, &mut next, Unknown { from: None, to: before(upto) })
                {
                    return false;
                }
                settled = upto;
                fill = None;
            }
            // Woken by the next object, or by the fill's end (its sender dropped).
            Some((_, rx)) => fill_over = rx.changed().await.is_err(),
        }
    }
}

/// A range of locations whose objects are unknown, up to `to`: from `from` when it is
/// known where it starts (the locations between the last item written and it are then
/// known not to exist), else from the last item written.
struct Unknown {
    from: Option<Location>,
    to: Location,
}

/// Writes an End of Unknown Range for `u` and moves `next` past it, after an End of
/// Non-Existent Range up to its start if that is after `next`; nothing if it ends before
/// `next` (nothing left to mark). False if the response stream failed.
fn write_unknown(resp: &mut moq::FetchResponse, next: &mut Location, u: Unknown) -> bool {
    if u.to < *next {
        return true;
    }
    let marker =
        |kind, l: Location| EndOfRange { kind, group_id: l.group.0, object_id: l.object.0 };
    if let Some(from) = u.from
        && from > *next
        && resp.write_end_of_range(marker(RangeKind::NonExistent, before(from))).is_err()
    {
        return false;
    }
    *next = after(u.to);
    resp.write_end_of_range(marker(RangeKind::Unknown, u.to)).is_ok()
}

/// Whether the fill of the relay's upstream joining fetch, which covers `bound`'s group up
/// to `bound` (exclusive), may add objects to the range `[start, end)` (an `end` object of
/// 0: the whole end group). A fetch of older groups does not wait for it.
fn may_fill(start: Location, end: Location, bound: Location) -> bool {
    let from = Location::new(bound.group.0, 0);
    let ends_after = if end.object.0 == 0 { end.group.0 >= bound.group.0 } else { end > from };
    start < bound && ends_after
}

async fn publish(
    ctx: Arc<Ctx>,
    id: SessionId,
    conn: Connection,
    grant: Option<Arc<Grant>>,
    req: IncomingPublish,
) {
    admit!(&ctx, grant.as_deref(), req, Action::Publish, &req.track.namespace);
    let name = req.track.clone();
    let track = {
        let mut reg = ctx.registry.lock();
        match reg.tracks.get(&name).cloned() {
            Some(t) => {
                let refuse = match t.lock().upstream {
                    // Another publisher's track: this PUBLISH takes it over once accepted
                    // (draft-16 §8.5 requires PUBLISH_OK for a track with subscribers).
                    Upstream::Active { session, .. } => session == id,
                    Upstream::Pending { .. } => true,
                    Upstream::Lingering => false,
                };
                if refuse {
                    drop(reg);
                    req.reject(RequestErrorCode::DuplicateSubscription, "track already published");
                    return;
                }
                t
            }
            None => {
                let t = Track::new(
                    name.clone(),
                    ctx.config.cache.groups,
                    Upstream::Pending { session: id },
                );
                reg.tracks.insert(name.clone(), t.clone());
                ctx.metrics.tracks.inc();
                t
            }
        }
    };
    let taking_over = {
        let mut st = track.lock();
        let active = matches!(st.upstream, Upstream::Active { .. });
        if !active {
            st.upstream = Upstream::Pending { session: id };
            st.generation += 1;
        }
        active
    };
    match req.accept().await {
        Ok(reader) => {
            announce(&ctx, id, &conn, name.namespace.clone(), false);
            run_upstream(ctx, track, id, reader, None).await;
        }
        Err(e) => {
            tracing::debug!(error = %e, "PUBLISH not accepted");
            if !taking_over {
                lose_upstream(&ctx, &track, None);
            }
        }
    }
}

fn publish_namespace(
    ctx: &Arc<Ctx>,
    id: SessionId,
    conn: &Connection,
    grant: Option<&Grant>,
    req: NamespaceRequest,
) {
    admit!(ctx, grant, req, Action::Publish, &req.namespace);
    let ns = req.namespace.clone();
    req.accept();
    tracing::info!(namespace = %ns, "namespace published");
    announce(ctx, id, conn, ns.clone(), true);
    // A publisher that comes back continues the tracks its subscribers are held on.
    let lingering: Vec<Arc<Track>> = ctx
        .registry
        .lock()
        .tracks
        .values()
        .filter(|t| t.name.namespace.has_prefix(&ns))
        .filter(|t| matches!(t.lock().upstream, Upstream::Lingering))
        .cloned()
        .collect();
    for track in lingering {
        {
            let mut st = track.lock();
            st.upstream = Upstream::Pending { session: id };
            st.generation += 1;
        }
        tracing::info!(track = %track.name, "publisher back: resubscribing");
        tokio::spawn(upstream(ctx.clone(), track, id, conn.clone()));
    }
    // Tracks established from another session that this one now publishes best (draft-16
    // §8.5: a SUBSCRIBE goes to the new publisher for each matching subscription). This is
    // how a publisher whose old connection died silently (no close seen before its idle
    // timeout) continues its subscribers' tracks at once.
    let active: Vec<Arc<Track>> = {
        let reg = ctx.registry.lock();
        reg.tracks
            .values()
            .filter(|t| t.name.namespace.has_prefix(&ns))
            .filter(|t| {
                matches!(t.lock().upstream, Upstream::Active { session, pushed: false, .. } if session != id)
            })
            .filter(|t| reg.publisher_for(&t.name).is_some_and(|(s, _)| s == id))
            .cloned()
            .collect()
    };
    for track in active {
        tracing::info!(track = %track.name, "new publisher of the namespace: subscribing");
        tokio::spawn(take_over(ctx.clone(), track, id, conn.clone()));
    }
}

/// Records a published namespace and tells the namespace subscribers about it.
fn announce(
    ctx: &Ctx,
    id: SessionId,
    conn: &Connection,
    namespace: TrackNamespace,
    subscribable: bool,
) {
    let mut reg = ctx.registry.lock();
    let known = reg.is_announced(&namespace);
    if reg
        .announcements
        .iter()
        .any(|a| a.session == id && a.namespace == namespace && a.subscribable == subscribable)
    {
        return;
    }
    reg.announcements.push(Announcement {
        session: id,
        namespace: namespace.clone(),
        conn: conn.clone(),
        subscribable,
    });
    if !known {
        for s in reg.subscribers_of(&namespace) {
            s.conn.namespace(s.request_id, namespace.clone());
        }
    }
    if let Some(m) = &ctx.mesh {
        m.wake();
    }
}

fn unannounce(ctx: &Ctx, id: SessionId, namespace: &TrackNamespace) {
    let mut reg = ctx.registry.lock();
    reg.announcements.retain(|a| !(a.session == id && &a.namespace == namespace));
    if let Some(m) = &ctx.mesh {
        m.wake();
    }
    if !reg.is_announced(namespace) {
        for s in reg.subscribers_of(namespace) {
            s.conn.namespace_done(s.request_id, namespace.clone());
        }
    }
}

fn subscribe_namespace(
    ctx: &Ctx,
    id: SessionId,
    conn: &Connection,
    grant: Option<&Grant>,
    req: NamespaceSubscribeRequest,
) {
    admit!(ctx, grant, req, Action::Subscribe, &req.prefix);
    let prefix = req.prefix.clone();
    let request_id = req.request_id();
    req.accept();
    let mut reg = ctx.registry.lock();
    for ns in reg.announced_under(&prefix) {
        conn.namespace(request_id, ns);
    }
    reg.ns_subscribers.push(NamespaceSubscriber {
        session: id,
        prefix,
        request_id,
        conn: conn.clone(),
    });
}

/// Forgets what a closed session published and subscribed to namespaces.
fn session_closed(ctx: &Ctx, id: SessionId) {
    let gone: Vec<TrackNamespace> = {
        let mut reg = ctx.registry.lock();
        reg.ns_subscribers.retain(|s| s.session != id);
        let gone = reg
            .announcements
            .iter()
            .filter(|a| a.session == id)
            .map(|a| a.namespace.clone())
            .collect();
        reg.announcements.retain(|a| a.session != id);
        gone
    };
    if let Some(m) = &ctx.mesh {
        m.wake();
    }
    for ns in gone {
        let reg = ctx.registry.lock();
        if !reg.is_announced(&ns) {
            for s in reg.subscribers_of(&ns) {
                s.conn.namespace_done(s.request_id, ns.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fetch served from the cache waits for the upstream joining fetch's fill only when
    /// that fill may still add objects to its range: the fill covers group 7 up to object 9.
    #[test]
    fn a_fetch_waits_for_the_fill_only_where_it_may_add_objects() {
        let bound = Location::new(7, 10);
        let l = Location::new;
        assert!(may_fill(l(7, 0), l(7, 10), bound), "the joining fetch's range");
        assert!(may_fill(l(6, 0), l(7, 0), bound), "up to the whole of group 7");
        assert!(may_fill(l(7, 5), l(8, 3), bound), "from inside the fill on");
        assert!(!may_fill(l(6, 0), l(6, 0), bound), "the whole of group 6 only");
        assert!(!may_fill(l(5, 0), l(6, 4), bound), "older groups");
        assert!(!may_fill(l(7, 10), l(8, 0), bound), "after the fill: live objects");
    }
}
