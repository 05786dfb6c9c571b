//! Where to connect: `moqt://` (raw QUIC) and `https://` (WebTransport) URLs.

use std::fmt;
use std::net::IpAddr;

use url::Url;

use super::{Error, Kind};

/// The port used when a URL names none. `https` defaults to 443, and draft-16 §3.1.2 gives
/// `moqt` the same default, so one UDP port serves both.
pub const DEFAULT_PORT: u16 = 443;

/// A parsed and checked MoQT server URL.
///
/// `moqt://host:port/path?query` is raw QUIC with ALPN `moqt-16`, and
/// `https://host:port/path?query` is WebTransport over HTTP/3. The query may carry a token
/// (`?jwt=…`), so [`Display`](fmt::Display) and [`Debug`](fmt::Debug) print `?…` in its place.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    url: Url,
    kind: Kind,
    host: String,
    port: u16,
}

impl Target {
    /// Parses and checks a URL, saying what is wrong with it if it is not usable.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let url = Url::parse(text.trim()).map_err(|e| Error::InvalidUrl {
            url: redact(text),
            reason: match e {
                url::ParseError::RelativeUrlWithoutBase => {
                    "not an absolute URL: expected moqt://host:port/path or \
                     https://host:port/path"
                        .to_owned()
                }
                url::ParseError::InvalidPort => "the port is not a number from 0 to 65535".into(),
                url::ParseError::EmptyHost => "the host is empty".into(),
                other => other.to_string(),
            },
        })?;
        Self::from_url(&url)
    }

    /// Checks an already parsed URL.
    pub fn from_url(url: &Url) -> Result<Self, Error> {
        let bad = |reason: &str| Error::InvalidUrl {
            url: redact(url.as_str()),
            reason: reason.to_owned(),
        };
        let kind = match url.scheme() {
            "moqt" => Kind::RawQuic,
            "https" => Kind::WebTransport,
            other => {
                return Err(bad(&format!(
                    "unsupported scheme `{other}`: use moqt:// for raw QUIC or https:// for \
                     WebTransport"
                )));
            }
        };
        let host = match url.host_str() {
            Some("") | None => return Err(bad("the URL names no host")),
            Some(h) => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "credentials in the URL are not supported: pass a token in the query instead",
            ));
        }
        if url.fragment().is_some() {
            return Err(bad("a URL fragment (#…) has no meaning here"));
        }
        let port = match url.port() {
            Some(0) => return Err(bad("port 0 cannot be connected to")),
            Some(p) => p,
            None => DEFAULT_PORT,
        };
        Ok(Self { url: url.clone(), kind, host, port })
    }

    /// Raw QUIC (`moqt://`) or WebTransport (`https://`).
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The host name or address, without IPv6 brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The host as an IP address, if it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The UDP port: the URL's, or [`DEFAULT_PORT`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path, `/` when the URL has none.
    pub fn path(&self) -> &str {
        match self.url.path() {
            "" => "/",
            p => p,
        }
    }

    /// The query without its `?`, if any. It may hold a token: do not log it.
    pub fn query(&self) -> Option<&str> {
        self.url.query()
    }

    /// The full URL, query included. It may hold a token: do not log it.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The URL sent in the WebTransport CONNECT request: the scheme is `https` and the port
    /// is always written out.
    pub(crate) fn connect_url(&self) -> Url {
        let mut url = self.url.clone();
        // Only fails for URLs that cannot have a port, which `from_url` refused.
        let _ = url.set_port(Some(self.port));
        url
    }
}

impl std::str::FromStr for Target {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl TryFrom<&Url> for Target {
    type Error = Error;

    fn try_from(url: &Url) -> Result<Self, Error> {
        Self::from_url(url)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match self.ip() {
            Some(IpAddr::V6(v6)) => format!("[{v6}]"),
            _ => self.host.clone(),
        };
        write!(f, "{}://{}:{}{}", self.url.scheme(), host, self.port, self.path())?;
        if self.query().is_some() {
            f.write_str("?…")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({self})")
    }
}

/// A URL as it may appear in an error or a log: the query (which may be a token) replaced by
/// `?…`.
pub(crate) fn redact(text: &str) -> String {
    match text.split_once('?') {
        Some((head, _)) => format!("{head}?…"),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(text: &str) -> String {
        match Target::parse(text) {
            Err(Error::InvalidUrl { reason, .. }) => reason,
            other => panic!("expected InvalidUrl for {text}, got {other:?}"),
        }
    }

    #[test]
    fn moqt_url_gives_host_port_path() {
        let t = Target::parse("moqt://relay.example:4443/a/b").unwrap();
        assert_eq!(t.kind(), Kind::RawQuic);
        assert_eq!(
            (t.host(), t.port(), t.path(), t.query()),
            ("relay.example", 4443, "/a/b", None)
        );
    }

    #[test]
    fn https_url_keeps_query_but_never_prints_it() {
        let t = Target::parse("https://127.0.0.1:4443/room/42?jwt=secret.token").unwrap();
        assert_eq!(t.kind(), Kind::WebTransport);
        assert_eq!(t.ip(), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(t.query(), Some("jwt=secret.token"));
        let shown = format!("{t} {t:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert_eq!(t.to_string(), "https://127.0.0.1:4443/room/42?…");
    }

    #[test]
    fn default_port_is_443_for_both_schemes() {
        assert_eq!(Target::parse("https://relay.example/x").unwrap().port(), 443);
        assert_eq!(Target::parse("moqt://relay.example").unwrap().port(), 443);
        assert_eq!(Target::parse("moqt://relay.example").unwrap().path(), "/");
    }

    #[test]
    fn ipv6_hosts_lose_their_brackets() {
        let t = Target::parse("moqt://[::1]:9000/x").unwrap();
        assert_eq!(t.host(), "::1");
        assert_eq!(t.ip(), Some("::1".parse().unwrap()));
        assert_eq!(t.to_string(), "moqt://[::1]:9000/x");
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        assert!(reason("http://relay.example/x").contains("unsupported scheme `http`"));
        assert!(
            reason("relay.example:443/x").contains("unsupported scheme")
                || reason("relay.example:443/x").contains("not an absolute URL")
        );
        assert!(reason("/just/a/path").contains("not an absolute URL"));
        assert!(reason("moqt://relay.example:99999/x").contains("port"));
        assert!(reason("https://:443/x").contains("host"));
        assert!(reason("moqt:///x").contains("no host"));
        assert!(reason("https://user:pw@relay.example/x").contains("credentials"));
        assert!(reason("moqt://relay.example:0/x").contains("port 0"));
    }

    #[test]
    fn errors_do_not_echo_tokens() {
        let err = Target::parse("http://relay.example/x?jwt=secret").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
