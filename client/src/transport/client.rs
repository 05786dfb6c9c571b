//! Dialing a server: `moqt://` over raw QUIC, `https://` over WebTransport.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use tracing::Instrument;
use url::Url;
use web_transport_quinn as wt;

use super::tls::Failure;
use super::{ClientTls, Error, Kind, Session, Target, TransportConfig};

/// The TLS alert a server sends when it shares no ALPN with the client (RFC 7301 §3.2),
/// `no_application_protocol`, as a QUIC crypto error code.
const NO_APPLICATION_PROTOCOL: u8 = 120;

/// Connects to a `moqt://` (raw QUIC, ALPN `moqt-16`) or `https://` (WebTransport offering
/// `moqt-16`) URL with the default [`TransportConfig`], from a new UDP socket.
pub async fn connect(url: &Url, tls: &ClientTls) -> Result<Session, Error> {
    connect_with(url, tls, &TransportConfig::default()).await
}

/// [`connect`] with a chosen transport configuration.
pub async fn connect_with(
    url: &Url,
    tls: &ClientTls,
    config: &TransportConfig,
) -> Result<Session, Error> {
    let target = Target::from_url(url)?;
    let addr = resolve(&target).await?;
    let bind = if addr.is_ipv4() {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    };
    let endpoint =
        quinn::Endpoint::client(bind).map_err(|source| Error::Bind { addr: bind, source })?;
    dial(&endpoint, &target, addr, tls, config).await
}

/// Resolves the target's host to one UDP address (the first the resolver gives).
pub(crate) async fn resolve(target: &Target) -> Result<SocketAddr, Error> {
    if let Some(ip) = target.ip() {
        return Ok(SocketAddr::new(ip, target.port()));
    }
    let host = target.host();
    let mut addrs = tokio::net::lookup_host((host, target.port()))
        .await
        .map_err(|e| Error::Resolve { host: host.to_owned(), reason: e.to_string() })?;
    addrs
        .next()
        .ok_or_else(|| Error::Resolve { host: host.to_owned(), reason: "no address found".into() })
}

/// Connects from `endpoint` to `addr`, which `target` names.
pub(crate) async fn dial(
    endpoint: &quinn::Endpoint,
    target: &Target,
    addr: SocketAddr,
    tls: &ClientTls,
    config: &TransportConfig,
) -> Result<Session, Error> {
    let config = &config.for_client();
    let protocols = config.get_protocols().to_vec();
    let alpn = match target.kind() {
        Kind::RawQuic => protocols.clone(),
        Kind::WebTransport => vec![wt::ALPN.to_owned()],
    };
    let failure = Failure::default();
    let rustls = tls.rustls(&alpn, &failure)?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(rustls)
        .map_err(|e| Error::TlsConfig(e.to_string()))?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(quic));
    client_config.transport_config(config.quinn());

    let server = target.to_string();
    let connecting = endpoint
        .connect_with(client_config, addr, target.host())
        .map_err(|e| Error::Connect { server: server.clone(), reason: e.to_string() })?;
    tracing::debug!(%server, %addr, kind = ?target.kind(), "connecting");

    let handshake = async {
        let conn =
            connecting.await.map_err(|e| handshake_error(&e, &server, &failure, &alpn, config))?;
        let inner = match target.kind() {
            Kind::RawQuic => wt::Session::raw(conn),
            Kind::WebTransport => {
                let request = wt::proto::ConnectRequest::new(target.connect_url())
                    .with_protocols(protocols.clone());
                let quic = conn.clone();
                wt::Session::connect(conn, request).await.map_err(|e| {
                    // When the connection itself ended (a TLS alert after the handshake, an
                    // idle timeout), its close reason says more than the HTTP/3 layer's error.
                    match quic.close_reason() {
                        Some(closed) => {
                            handshake_error(&closed, &server, &failure, &protocols, config)
                        }
                        None => connect_error(e, &server, &failure, &protocols, config),
                    }
                })?
            }
        };
        if target.kind() == Kind::WebTransport && inner.protocol().is_none() {
            tracing::debug!(%server, "the server selected no WebTransport protocol");
        }
        let url = (target.kind() == Kind::WebTransport).then(|| target.url());
        Ok(Session::new(inner, target.kind(), url, Some(endpoint.clone()), config.stream_limits()))
    };
    let span = tracing::debug_span!("connect", %server, %addr);
    match tokio::time::timeout(config.get_handshake_timeout(), handshake).instrument(span).await {
        Ok(result) => result,
        Err(_) => Err(Error::HandshakeTimeout { server, after: config.get_handshake_timeout() }),
    }
}

/// Turns a failed QUIC handshake into an error that says what went wrong.
fn handshake_error(
    e: &quinn::ConnectionError,
    server: &str,
    failure: &Failure,
    offered: &[String],
    config: &TransportConfig,
) -> Error {
    if let Some(reason) = failure.take() {
        return Error::UntrustedCertificate { server: server.to_owned(), reason };
    }
    match e {
        quinn::ConnectionError::ConnectionClosed(c)
            if c.error_code == quinn::TransportErrorCode::crypto(NO_APPLICATION_PROTOCOL) =>
        {
            Error::ProtocolRefused {
                server: server.to_owned(),
                offered: offered.join(", "),
                detail: "the server refused the TLS ALPN negotiation (no_application_protocol)"
                    .into(),
            }
        }
        quinn::ConnectionError::TimedOut => {
            Error::HandshakeTimeout { server: server.to_owned(), after: config.get_idle_timeout() }
        }
        other => Error::Connect {
            server: server.to_owned(),
            reason: super::CloseReason::from_quinn(other, Kind::RawQuic).to_string(),
        },
    }
}

/// Turns a failed WebTransport establishment into an error that says what went wrong.
fn connect_error(
    e: wt::ClientError,
    server: &str,
    failure: &Failure,
    offered: &[String],
    config: &TransportConfig,
) -> Error {
    match e {
        wt::ClientError::Connection(c) => handshake_error(&c, server, failure, offered, config),
        wt::ClientError::HttpError(
            wt::ConnectError::ErrorStatus(status)
            | wt::ConnectError::ProtoError(wt::proto::ConnectError::WrongStatus(Some(status))),
        ) => Error::Rejected { server: server.to_owned(), status: status.as_u16() },
        wt::ClientError::HttpError(wt::ConnectError::ProtocolMismatch(p)) => {
            Error::ProtocolRefused {
                server: server.to_owned(),
                offered: offered.join(", "),
                detail: format!("the server selected `{p}`, which was not offered"),
            }
        }
        wt::ClientError::HttpError(wt::ConnectError::ConnectionError(c)) => {
            handshake_error(&c, server, failure, offered, config)
        }
        wt::ClientError::SettingsError(e) => Error::Connect {
            server: server.to_owned(),
            reason: format!("HTTP/3 SETTINGS exchange failed (not a WebTransport server?): {e}"),
        },
        other => Error::Connect {
            server: server.to_owned(),
            reason: format!("WebTransport CONNECT failed: {other}"),
        },
    }
}
