//! Subscribing to a broadcast and measuring what arrives: what `tiermesh sub` runs.
//!
//! [`watch`] joins every track of a broadcast (those its MSF catalog lists, or those named)
//! the way a player does: SUBSCRIBE with the Largest Object filter plus a relative joining
//! FETCH of the current group, so each track starts at the first object of a group (a key
//! frame) at once. Every object is recorded in the track's [`TrackStats`]; after the
//! duration (or when every track has ended) the statistics become a [`Report`].

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tiermesh_proto::catalog::{CATALOG_TRACK_NAME, Catalog};
use tiermesh_proto::types::{FullTrackName, TrackNamespace};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::moq::{Connection, ReceivedObject, SubscribeOptions, TrackEvent};
use crate::report::{Report, TrackStats};

/// What to watch.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The broadcast.
    pub namespace: TrackNamespace,
    /// Track names; empty means every track of the catalog (and the catalog itself).
    pub tracks: Vec<String>,
    /// How long to watch.
    pub duration: Duration,
    /// AUTHORIZATION TOKEN sent with each SUBSCRIBE and FETCH.
    pub token: Option<Bytes>,
}

/// Converts [`Instant`]s to wall-clock microseconds, from one reading of both clocks.
#[derive(Debug, Clone, Copy)]
struct Clock {
    instant: Instant,
    wall_us: u64,
}

impl Clock {
    fn now() -> Self {
        let wall_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self { instant: Instant::now(), wall_us }
    }

    fn wall_us(&self, at: Instant) -> u64 {
        match at.checked_duration_since(self.instant) {
            Some(d) => self.wall_us + u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            None => self
                .wall_us
                .saturating_sub(u64::try_from((self.instant - at).as_micros()).unwrap_or(0)),
        }
    }
}

/// Watches a broadcast on `conn` and reports what arrived.
pub async fn watch(conn: &Connection, config: WatchConfig) -> Report {
    let clock = Clock::now();
    let deadline = tokio::time::Instant::now() + config.duration;
    let mut tasks = JoinSet::new();
    let mut order: Vec<String> = Vec::new();
    let options = SubscribeOptions { token: config.token.clone(), ..Default::default() };
    let track = |name: &str| FullTrackName::new(config.namespace.clone(), name);

    let mut missing_catalog = false;
    let names = if config.tracks.is_empty() {
        // The catalog first: it names the rest.
        let (tx, rx) = oneshot::channel();
        order.push(CATALOG_TRACK_NAME.to_owned());
        match track(CATALOG_TRACK_NAME) {
            Ok(t) => {
                tasks.spawn(follow(conn.clone(), t, options.clone(), clock, deadline, Some(tx)));
            }
            Err(e) => {
                return Report {
                    broadcast: path(&config.namespace),
                    duration_s: 0.0,
                    tracks: Vec::new(),
                    error: Some(format!("bad broadcast name: {e}")),
                };
            }
        }
        let names = tokio::select! {
            r = rx => r.ok(),
            () = tokio::time::sleep_until(deadline) => None,
        };
        match names {
            Some(n) => n,
            None => {
                missing_catalog = true;
                Vec::new()
            }
        }
    } else {
        config.tracks.clone()
    };

    for name in names {
        if order.contains(&name) {
            continue;
        }
        order.push(name.clone());
        match track(&name) {
            Ok(t) => {
                tasks.spawn(follow(conn.clone(), t, options.clone(), clock, deadline, None));
            }
            Err(e) => {
                let mut s = TrackStats::new(&name, clock.wall_us, false);
                s.set_error(format!("bad track name: {e}"));
                tasks.spawn(async move { s });
            }
        }
    }

    let mut stats = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(s) => stats.push(s),
            Err(e) => tracing::error!(error = %e, "a track task failed"),
        }
    }
    stats.sort_by_key(|s| order.iter().position(|n| n == s.name()));
    if missing_catalog
        && let Some(catalog) = stats.iter_mut().find(|s| s.name() == CATALOG_TRACK_NAME)
        && catalog.report().error.is_none()
    {
        catalog.set_error("no catalog arrived: the broadcast's tracks are unknown");
    }
    Report {
        broadcast: path(&config.namespace),
        duration_s: clock.instant.elapsed().as_secs_f64(),
        tracks: stats.iter().map(TrackStats::report).collect(),
        error: conn.close_reason().map(|r| r.to_string()),
    }
}

/// The namespace as `a/b/c`.
pub fn path(namespace: &TrackNamespace) -> String {
    namespace.fields().iter().map(|f| String::from_utf8_lossy(f)).collect::<Vec<_>>().join("/")
}

/// Joins one track and records what arrives until `deadline` or the track's end. For the
/// catalog, `catalog` receives the track names of the first catalog object.
async fn follow(
    conn: Connection,
    track: FullTrackName,
    options: SubscribeOptions,
    clock: Clock,
    deadline: tokio::time::Instant,
    mut catalog: Option<oneshot::Sender<Vec<String>>>,
) -> TrackStats {
    let name = String::from_utf8_lossy(&track.name.0).into_owned();
    let started = Instant::now();
    let mut stats = TrackStats::new(&name, clock.wall_us(started), name != CATALOG_TRACK_NAME);
    let joined = tokio::select! {
        r = conn.join(track, options, 0) => r,
        () = tokio::time::sleep_until(deadline) => {
            stats.set_error("no answer to SUBSCRIBE before the end");
            return stats;
        }
    };
    let (mut reader, fetch) = match joined {
        Ok(j) => j,
        Err(e) => {
            stats.set_error(crate::cli::explain(&e));
            return stats;
        }
    };
    let mut fetch = match fetch {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::info!(track = %name, error = %e, "joining FETCH refused; starting live");
            None
        }
    };
    let mut record = |stats: &mut TrackStats, o: &ReceivedObject, fetched: bool| {
        stats.record(
            o.group_id,
            o.object_id,
            o.payload.len(),
            &o.extensions,
            clock.wall_us(o.arrival),
            fetched,
        );
        if let Some(tx) = catalog.take() {
            match Catalog::from_slice(&o.payload) {
                Ok(c) if !c.is_delta() => {
                    let names = c.tracks().iter().map(|t| t.name.clone()).collect();
                    let _ = tx.send(names);
                }
                Ok(_) => catalog = Some(tx),
                Err(e) => {
                    stats.set_error(format!("catalog: {e}"));
                    catalog = Some(tx);
                }
            }
        }
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            o = async { fetch.as_mut()?.next().await }, if fetch.is_some() => match o {
                Some(o) => record(&mut stats, &o, true),
                None => fetch = None,
            },
            e = reader.next() => match e {
                Some(TrackEvent::Object(o)) => record(&mut stats, &o, false),
                Some(TrackEvent::StreamEnd { .. }) => {}
                Some(TrackEvent::Done(done)) => {
                    stats.set_ended(format!("{:?}: {}", done.code, done.reason));
                    break;
                }
                None => {
                    if let Some(reason) = conn.close_reason() {
                        stats.set_error(format!("session {reason}"));
                    }
                    break;
                }
            },
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tiermesh_certs::dev;

    use super::*;
    use crate::moq::{self, ClientOptions, Event, ServerOptions};
    use crate::publish::{Publisher, now_us};
    use crate::synthetic::BroadcastSpec;
    use crate::transport::{ClientTls, Server, ServerTls};

    /// The publisher serves a subscriber directly (no relay between): the subscriber finds
    /// the tracks in the catalog, joins each at a key frame, and counts nothing missing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_joins_every_catalog_track_at_a_key_frame() {
        let names: Vec<String> = dev::DEFAULT_NAMES.iter().map(|s| s.to_string()).collect();
        let cert = dev::generate(&names, dev::DEFAULT_VALIDITY).unwrap();
        let tls =
            ServerTls::from_der(vec![cert.cert.to_vec()], cert.key.secret_pkcs8_der().to_vec())
                .unwrap();
        let mut server = Server::bind("127.0.0.1:0".parse().unwrap(), tls).unwrap();
        let url = format!("moqt://127.0.0.1:{}/clinic/room-42", server.local_addr().port())
            .parse()
            .unwrap();
        let namespace = TrackNamespace::from_path("clinic/room-42").unwrap();

        // The publisher is the server side here; it publishes its namespace to the client.
        let ns = namespace.clone();
        let publisher = tokio::spawn(async move {
            let session = server.accept().await.unwrap().accept().await.unwrap();
            let (conn, driver) = moq::accept(session, ServerOptions::default()).await.unwrap();
            tokio::spawn(driver.run());
            let mut p = Publisher::new(ns, BroadcastSpec::default(), now_us(), None);
            let stop = tokio::time::sleep(Duration::from_secs(30));
            let _ = p.serve(&conn, stop, || {}).await;
            drop(server);
        });

        let (conn, driver) =
            moq::connect(&url, ClientOptions::new(ClientTls::pinned(cert.sha256))).await.unwrap();
        tokio::spawn(driver.run());
        let events = conn.clone();
        tokio::spawn(async move {
            while let Some(e) = events.next_event().await {
                if let Event::PublishNamespace(req) = e {
                    req.accept();
                }
            }
        });
        let report = watch(
            &conn,
            WatchConfig {
                namespace,
                tracks: Vec::new(),
                duration: Duration::from_millis(3500),
                token: None,
            },
        )
        .await;
        publisher.abort();
        let names: Vec<&str> = report.tracks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["catalog", "audio", "video/180p", "video/360p", "video/720p"]);
        for t in &report.tracks {
            assert_eq!(t.error, None, "{}", t.name);
            assert_eq!((t.missing_objects, t.missing_groups), (0, 0), "{t:?}");
            assert!(t.objects > 0, "{}", t.name);
            if t.name.starts_with("video/") {
                // Video starts at the next whole second, then 30 frames a second.
                assert!(t.objects >= 45, "{t:?}");
                let l = t.latency_ms.unwrap();
                assert!(l.p99 < 200.0, "{t:?}");
            }
            if t.name == "audio" {
                assert!(t.objects >= 100, "{t:?}");
            }
            assert_eq!(t.first_object, Some(0), "{t:?}");
        }
    }
}
