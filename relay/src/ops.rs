//! The ops listener: a small HTTP/1.1 server, separate from the media port, with
//! `GET /metrics` (Prometheus text format) and `GET /healthz` (200 when ready, 503 when
//! starting or draining, so a load balancer stops sending new clients to a draining relay).
//! With a web folder configured (`web = "web/dist"`), every other path serves the browser
//! pages from it ([`crate::web`]): `http://127.0.0.1:9090/player.html?url=…&hash=…`.
//! Browsers allow WebTransport only from a secure context, which plain HTTP is on loopback
//! (`127.0.0.1`, `localhost`) but nowhere else; pages for other machines belong on an HTTPS
//! server (they are static files that take the relay URL as a parameter).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::metrics::Metrics;
use crate::web::StaticFiles;

/// Connections served at once. A scraper and a health checker need one or two; the cap keeps
/// a misbehaving client from piling up tasks on the relay.
const MAX_CONNECTIONS: usize = 64;

/// Time a client gets to send its request headers. Scrapers send at once; this frees a
/// connection that opened and went silent.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The relay's state as `/healthz` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthState {
    /// Not yet accepting sessions: 503 `starting`.
    Starting,
    /// Accepting sessions: 200 `ok`.
    Ready,
    /// Sent GOAWAY, accepting no new sessions: 503 `draining`.
    Draining,
}

/// Shared, cheap-to-clone health state. Starts [`HealthState::Ready`].
#[derive(Clone, Debug)]
pub struct Health(Arc<AtomicU8>);

impl Default for Health {
    fn default() -> Self {
        Self(Arc::new(AtomicU8::new(HealthState::Ready as u8)))
    }
}

impl Health {
    /// A new state, [`HealthState::Ready`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the state.
    pub fn set(&self, state: HealthState) {
        self.0.store(state as u8, Ordering::Relaxed);
    }

    /// The current state.
    pub fn get(&self) -> HealthState {
        match self.0.load(Ordering::Relaxed) {
            0 => HealthState::Starting,
            1 => HealthState::Ready,
            _ => HealthState::Draining,
        }
    }
}

/// A bound ops listener; [`Server::run`] serves it.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Health,
    route: Option<RouteHook>,
    web: Option<Arc<StaticFiles>>,
}

/// Answers `GET /route?…` (the mesh's routing API): given the query string and the HTTP
/// client's address, an HTTP status and a JSON body.
#[derive(Clone)]
pub struct RouteHook(pub Arc<RouteFn>);

/// The function behind a [`RouteHook`]: query string and the HTTP client's (source) address
/// in, status and JSON body out.
pub type RouteFn = dyn Fn(&str, std::net::IpAddr) -> (u16, String) + Send + Sync;

impl std::fmt::Debug for RouteHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteHook")
    }
}

impl Server {
    /// Binds `addr` (port 0 picks a free port; see [`Server::local_addr`]).
    pub async fn bind(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        health: Health,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self { listener, metrics, health, route: None, web: None })
    }

    /// Serves `/route` with `hook` too.
    pub fn with_route(mut self, hook: RouteHook) -> Self {
        self.route = Some(hook);
        self
    }

    /// Serves the files of `web` at every path the ops endpoints do not use.
    pub fn with_web(mut self, web: StaticFiles) -> Self {
        self.web = Some(Arc::new(web));
        self
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes; open connections are then closed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => accepted,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let (stream, peer) = match accepted {
                Ok(ok) => ok,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the others.
                    tracing::warn!(error = %e, "ops listener accept failed");
                    continue;
                }
            };
            if connections.len() >= MAX_CONNECTIONS {
                tracing::debug!(%peer, "ops listener busy, dropping connection");
                continue;
            }
            let metrics = self.metrics.clone();
            let health = self.health.clone();
            let route = self.route.clone();
            let web = self.web.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let (metrics, health, route, web) =
                        (metrics.clone(), health.clone(), route.clone(), web.clone());
                    async move {
                        Ok::<_, Infallible>(
                            respond(
                                &req,
                                peer.ip(),
                                &metrics,
                                &health,
                                route.as_ref(),
                                web.as_deref(),
                            )
                            .await,
                        )
                    }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "ops connection ended with an error");
                }
            });
        }
        connections.shutdown().await;
    }
}

async fn respond(
    req: &Request<Incoming>,
    client: std::net::IpAddr,
    metrics: &Metrics,
    health: &Health,
    route: Option<&RouteHook>,
    web: Option<&StaticFiles>,
) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, content_type: &'static str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    };
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "only GET\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", metrics.render())
        }
        "/healthz" => match health.get() {
            HealthState::Ready => text(StatusCode::OK, PLAIN, "ok\n".into()),
            HealthState::Starting => {
                text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "starting\n".into())
            }
            HealthState::Draining => {
                text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "draining\n".into())
            }
        },
        "/route" if route.is_some() => {
            let (status, body) = route
                .map_or((404, String::new()), |r| (r.0)(req.uri().query().unwrap_or(""), client));
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            text(status, "application/json", body)
        }
        path => match web {
            Some(web) => match web.get(path).await {
                Some(file) => {
                    let mut response = Response::new(Full::new(file.body));
                    let headers = response.headers_mut();
                    headers.insert(CONTENT_TYPE, HeaderValue::from_static(file.content_type));
                    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
                    // The pages change with every build; a reload must not show stale ones.
                    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                    response
                }
                None => text(StatusCode::NOT_FOUND, PLAIN, "not found\n".into()),
            },
            None => {
                text(StatusCode::NOT_FOUND, PLAIN, "not found: try /metrics or /healthz\n".into())
            }
        },
    }
}

/// A running ops listener started by [`serve`].
#[derive(Debug)]
pub struct Handle {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Handle {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the listener and waits until it has closed its connections.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Dropping the handle stops the listener rather than leaking it.
        self.task.abort();
    }
}

/// Binds `addr` and serves `/metrics` and `/healthz` on a spawned task until the returned
/// handle is shut down or dropped. Must be called inside a tokio runtime.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Health,
) -> std::io::Result<Handle> {
    serve_with(addr, metrics, health, None, None).await
}

/// [`serve`], plus `/route` answered by `route` and the browser pages from the folder `web`
/// when given.
///
/// # Errors
/// The address cannot be bound, or `web` is not a readable folder (the error names it).
pub async fn serve_with(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Health,
    route: Option<RouteHook>,
    web: Option<&std::path::Path>,
) -> std::io::Result<Handle> {
    let web = web.map(StaticFiles::new).transpose()?;
    let mut server = Server::bind(addr, metrics, health).await?;
    if let Some(r) = route {
        server = server.with_route(r);
    }
    if let Some(w) = web {
        server = server.with_web(w);
    }
    let local_addr = server.local_addr()?;
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Ok(Handle { local_addr, stop: Some(stop), task })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Sends `request_line` as written (no normalisation) and returns the status and head.
    async fn raw_get(addr: SocketAddr, target: &str) -> (u16, String, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {target} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut response))
            .await
            .expect("answered within 10 s")
            .unwrap();
        let status = response.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        (status, head.to_ascii_lowercase(), body.to_owned())
    }

    #[tokio::test]
    async fn pages_are_served_beside_metrics_and_nothing_outside_their_folder() {
        let dir = tempfile::tempdir().unwrap();
        let dist = dir.path().join("dist");
        std::fs::create_dir(&dist).unwrap();
        std::fs::write(dist.join("index.html"), "<p>index</p>").unwrap();
        std::fs::write(dist.join("player.js"), "run()").unwrap();
        std::fs::write(dist.join("style.css"), "body{}").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "private").unwrap();
        let server = serve_with(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(Metrics::new()),
            Health::new(),
            None,
            Some(&dist),
        )
        .await
        .unwrap();
        let addr = server.local_addr();

        let (status, head, body) = raw_get(addr, "/").await;
        assert_eq!((status, body.as_str()), (200, "<p>index</p>"));
        assert!(head.contains("content-type: text/html; charset=utf-8"), "{head}");
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
        let (status, head, _) = raw_get(addr, "/player.js?x=1").await;
        assert_eq!(status, 200);
        assert!(head.contains("content-type: text/javascript"), "{head}");
        let (_, head, _) = raw_get(addr, "/style.css").await;
        assert!(head.contains("content-type: text/css"), "{head}");
        // The ops endpoints keep their paths.
        let (status, _, body) = raw_get(addr, "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));

        for target in ["/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt", "/nope.html"] {
            let (status, _, body) = raw_get(addr, target).await;
            assert_ne!(status, 200, "{target}");
            assert!(!body.contains("private"), "{target}: {body}");
        }

        let missing = dir.path().join("not-built");
        let e = serve_with(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(Metrics::new()),
            Health::new(),
            None,
            Some(&missing),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("not-built"), "{e}");
        server.shutdown().await;
    }
}
