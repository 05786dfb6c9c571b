//! The relay's configuration: a TOML file and/or command-line flags.
//!
//! Every key is optional; a missing key takes its default. Unknown keys are an error that
//! names the key. Durations are written the way people say them: `"5s"`, `"250ms"`, `"1m"`.
//! Relative paths in the file are relative to the file's folder; relative paths in flags are
//! relative to the working directory. A flag given on the command line replaces the file's
//! value; a flag not given leaves it alone. See relay/README.md for a full example.

use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tiermesh_client::transport::{CongestionControl, TransportDriver};

use crate::auth::{Action, Authorizer, KeyError, Prefix};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema; the message names the key and line.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error (names unknown or mistyped keys).
        source: toml::de::Error,
    },
    /// A value is out of range or inconsistent with another.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key, dotted (`tls.cert`).
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// The relay's whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// UDP address for MoQT over QUIC and WebTransport. Default `[::]:4443`: a relay exists to
    /// be reached from other machines, every request needs a token unless a prefix is made
    /// public, and on Linux `[::]` also accepts IPv4. Use `127.0.0.1:4443` for local tests.
    pub listen: SocketAddr,
    /// TCP address of the ops listener (`/metrics`, `/healthz`). Default `127.0.0.1:9090`:
    /// metrics carry no authentication, so they stay on loopback unless the operator opens
    /// them to a scraper.
    pub ops: SocketAddr,
    /// Certificate and key.
    pub tls: TlsConfig,
    /// Token keys and public prefixes.
    pub auth: AuthConfig,
    /// The per-track cache that serves joining subscribers.
    pub cache: CacheConfig,
    /// How long a track stays subscribed upstream after its last subscriber leaves, so a tier
    /// switch or a page reload finds it warm. Default 5 s: longer than a player's tier switch
    /// or reload, short enough that an abandoned track soon stops costing upstream bandwidth.
    #[serde(with = "duration")]
    pub linger: Duration,
    /// Resource limits.
    pub limits: LimitsConfig,
    /// After sending GOAWAY, how long sessions get to move to another relay before they are
    /// closed. Default 10 s: a client needs one round trip to learn the new relay and one
    /// group (about 2 s) to start there; 10 s covers a slow link several times over.
    #[serde(with = "duration")]
    pub goaway_grace: Duration,
    /// The send scheduler.
    pub scheduler: SchedulerConfig,
    /// The QUIC congestion controller of client sessions and of this relay's end of its mesh
    /// links: `cubic`, `bbr`, `newreno` or `delay`. The default is `delay`: on the link
    /// profiles it keeps `rural`'s p95 within 210 ms where cubic's full buffer does not,
    /// after `step`'s cut every tier came back within 3 s under load as under cubic, and
    /// since 3e18171 its slow start no longer overshoots a long link (`satellite` with the
    /// publisher behind it: the lowest tier 65 of 70 groups whole against 55 of 69)
    /// (docs/ARCHITECTURE.md, "`delay` is the default"). Choose `cubic` for links shared
    /// with loss-based flows, which a delay-based controller yields to.
    pub congestion: CongestionControl,
    /// What drives the connections of the MoQT port: `quinn` (the default: raw QUIC and
    /// WebTransport) or `batched`, one task driving every connection through quinn-proto
    /// (opt-in; raw QUIC only: WebTransport clients are refused after the handshake with a
    /// reason saying so). Mesh links keep quinn on the mesh's own port
    /// (docs/ARCHITECTURE.md, "The batched transport driver").
    pub transport_driver: TransportDriver,
    /// The regional mesh; absent (the default), the relay runs alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mesh: Option<MeshConfig>,
    /// Folder of the browser pages (`web/dist` after `npm run build` in web/), served on the
    /// ops listener at `/` (`http://127.0.0.1:9090/player.html`). Absent (the default), no
    /// pages are served. Plain HTTP is a secure context for WebTransport only on loopback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web: Option<PathBuf>,
    /// The ingest that makes the tier ladder of `<broadcast>/source` publishers
    /// (`[ingest]`, see [`crate::ingest`]); absent (the default), the relay only forwards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest: Option<crate::ingest::IngestConfig>,
}

/// The relay's place in the regional mesh (`[mesh]`). Mesh links are QUIC sessions on their
/// own port (`listen`) that require a client certificate from the mesh CA.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshConfig {
    /// This relay's name: unique in the mesh, and the name its node certificate was issued
    /// for.
    pub name: String,
    /// The region this relay serves (`eu-west`, ...).
    pub region: String,
    /// The public URL clients use to reach this relay (the routing API hands it out).
    pub url: String,
    /// UDP address of the mesh listener (mutual TLS, mesh peers only).
    pub listen: SocketAddr,
    /// Node directory with `node.pem`, `node.key` and `ca.pem` (`tiermesh cert node`).
    pub dir: PathBuf,
    /// Peers this relay dials. List each link on one side only; the other side accepts it.
    #[serde(default)]
    pub peers: Vec<MeshPeer>,
    /// Cost of a link to a peer of the same region. Default 10.
    #[serde(default = "default_intra_cost")]
    pub intra_cost: u64,
    /// Cost of a link to a peer of another region. Default 100.
    #[serde(default = "default_inter_cost")]
    pub inter_cost: u64,
    /// Mesh listeners of seed relays (`moqt://host:port`): this relay links to them and
    /// learns the rest of the mesh from them, then links to the relays [`Self::discover`]
    /// asks for.
    #[serde(default)]
    pub seeds: Vec<String>,
    /// Where other relays dial this relay's mesh listener (`moqt://host:port`), announced to
    /// the mesh so that relays that learn of it through seeds can link to it.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Which learned relays to link to.
    #[serde(default)]
    pub discover: DiscoverConfig,
    /// The routing API's map from client addresses to regions (`[mesh.client_regions]`):
    /// address prefix (`"10.1.0.0/16"`, `"2001:db8::/32"`) to region; the longest prefix
    /// covering an address wins. Used when a `/route` query gives no `region`: for its
    /// `addr` parameter, else for the HTTP client's own address. Default empty.
    #[serde(default)]
    pub client_regions: std::collections::BTreeMap<String, String>,
}

/// Which relays learned through the mesh a relay links to (`[mesh.discover]`). Both ends of a
/// link make the same choice from the same membership, and only the one with the smaller
/// name dials, so each pair gets one link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverConfig {
    /// Link to every relay of the same region. Default true.
    #[serde(default = "default_true")]
    pub same_region: bool,
    /// Link to this many relays of each other region (the first by name). Default 1.
    #[serde(default = "default_per_region")]
    pub per_other_region: usize,
}

impl Default for DiscoverConfig {
    fn default() -> Self {
        Self { same_region: true, per_other_region: 1 }
    }
}

fn default_true() -> bool {
    true
}

fn default_per_region() -> usize {
    1
}

/// A mesh peer to dial.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshPeer {
    /// The peer's relay name (its certificate must be valid for the host in `addr`).
    pub name: String,
    /// The peer's region.
    pub region: String,
    /// The peer's mesh listener, `moqt://host:port`.
    pub addr: String,
}

fn default_intra_cost() -> u64 {
    10
}

fn default_inter_cost() -> u64 {
    100
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 4443),
            ops: SocketAddr::from(([127, 0, 0, 1], 9090)),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            cache: CacheConfig::default(),
            linger: Duration::from_secs(5),
            limits: LimitsConfig::default(),
            goaway_grace: Duration::from_secs(10),
            scheduler: SchedulerConfig::default(),
            congestion: CongestionControl::default(),
            transport_driver: TransportDriver::default(),
            mesh: None,
            web: None,
            ingest: None,
        }
    }
}

/// TLS material: a certificate and key, or a generated development certificate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Generate a development certificate at start-up (browsers accept it by its SHA-256,
    /// which the relay prints as 64 hex digits). Only when no `cert`/`key` is given.
    pub generate: bool,
}

/// Token verification and public prefixes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Public key files (PEM, JWK or JWK Set) whose tokens the relay trusts.
    pub keys: Vec<PathBuf>,
    /// Namespace prefixes anyone may subscribe to without a token.
    pub public: Vec<Prefix>,
    /// Namespace prefixes anyone may publish under without a token (development only: anyone
    /// could then impersonate a broadcast there).
    pub public_publish: Vec<Prefix>,
}

impl AuthConfig {
    /// Builds the authorizer: reads every key file and adds the public prefixes.
    pub fn authorizer(&self) -> Result<Authorizer, KeyError> {
        let mut authorizer = Authorizer::load(&self.keys)?;
        for prefix in &self.public {
            authorizer = authorizer.with_public(Action::Subscribe, prefix.clone());
        }
        for prefix in &self.public_publish {
            authorizer = authorizer.with_public(Action::Publish, prefix.clone());
        }
        Ok(authorizer)
    }
}

/// The per-track cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Newest groups kept per track. Default 2: the group in progress plus the one before it,
    /// so a joining FETCH can always start at a key frame even right after a new group began.
    pub groups: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { groups: 2 }
    }
}

/// Resource limits: what one client or all of them together can make the relay hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Concurrent sessions. Default 1000: a two-core relay forwarding a few tiers to each
    /// subscriber saturates its CPU well before that; the limit stops a connection flood
    /// from exhausting memory.
    pub max_sessions: usize,
    /// Concurrent requests one session may have open (the MAX_REQUEST_ID the relay grants).
    /// Default 100: a player needs catalog, audio, one or two video tiers and their joining
    /// fetches; 100 leaves room for many broadcasts per session.
    pub max_requests_per_session: u64,
    /// Namespace fields accepted. Default 32, the draft's maximum (cannot be raised above it).
    pub max_namespace_depth: usize,
    /// Bytes of a Full Track Name accepted. Default 4096, the draft's maximum.
    pub max_namespace_len: usize,
    /// Bytes of registered authorization tokens one session may keep (the relay's
    /// MAX_AUTH_TOKEN_CACHE_SIZE). Default 16 KiB: a few tokens of a few hundred bytes each.
    pub max_auth_token_cache: u64,
    /// A session with no traffic for this long is closed (the QUIC idle timeout). Default
    /// 30 s: rides out a mobile handover, frees a vanished client's state soon enough.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// A FETCH the relay forwarded upstream whose publisher sends nothing more (no object,
    /// no End of Range, no FIN or reset) for this long is cancelled upstream (FETCH_CANCEL)
    /// and ends at the requester with the rest of its range unknown. Default 5 s: longer
    /// than a large key frame takes on the slowest link profile (200 kB at 600 kbit/s is
    /// under 3 s) plus a loss-recovery round over satellite, so a slow fetch is not cut,
    /// and short enough that a player asking for older groups is not held much past the
    /// point where it would give up itself. Must be more than 0 s.
    #[serde(with = "duration")]
    pub upstream_fetch_idle: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_sessions: 1000,
            max_requests_per_session: 100,
            max_namespace_depth: 32,
            max_namespace_len: 4096,
            max_auth_token_cache: 16 * 1024,
            idle_timeout: Duration::from_secs(30),
            upstream_fetch_idle: Duration::from_secs(5),
        }
    }
}

/// The send scheduler.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// How a congested link chooses what to send.
    pub mode: SchedulerMode,
}

/// How a congested link chooses what to send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulerMode {
    /// Publisher priority and group order: stale groups and the highest tiers go first, the
    /// catalog, audio and base tier keep flowing.
    #[default]
    Priority,
    /// Arrival order, nothing dropped by priority: the baseline benchmarks compare against.
    Fifo,
}

/// Flags of `tiermesh relay` that override the file. Each is `None` (or empty, or unset)
/// unless given, and then leaves the file's value alone.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Flags {
    /// TOML configuration file (flags given here override its values)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// UDP address for MoQT (QUIC and WebTransport) [default: port 4443, all addresses]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// TCP address of the ops listener (/metrics, /healthz) [default: 127.0.0.1:9090]
    #[arg(long, value_name = "ADDR")]
    pub ops: Option<SocketAddr>,
    /// PEM certificate chain
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Generate a development certificate and print its SHA-256
    #[arg(long)]
    pub tls_generate: bool,
    /// Public key file trusted for tokens (repeatable; replaces the file's list)
    #[arg(long = "auth-key", value_name = "FILE")]
    pub auth_keys: Vec<PathBuf>,
    /// Namespace prefix anyone may subscribe to (repeatable; replaces the file's list)
    #[arg(long, value_name = "PREFIX")]
    pub public: Vec<Prefix>,
    /// Namespace prefix anyone may publish under (repeatable; development only)
    #[arg(long, value_name = "PREFIX")]
    pub public_publish: Vec<Prefix>,
    /// Newest groups cached per track [default: 2]
    #[arg(long, value_name = "N")]
    pub cache_groups: Option<usize>,
    /// Keep an unwatched track subscribed upstream this long [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub linger: Option<Duration>,
    /// Concurrent sessions [default: 1000]
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<usize>,
    /// Close a silent session after this long [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Time sessions get to move after GOAWAY [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub goaway_grace: Option<Duration>,
    /// Send scheduler [default: priority]
    #[arg(long, value_name = "MODE")]
    pub scheduler: Option<SchedulerMode>,
    /// Folder of the browser pages (web/dist) to serve on the ops listener
    #[arg(long, value_name = "DIR")]
    pub web: Option<PathBuf>,
    /// QUIC congestion controller: delay (the default), cubic, bbr or newreno; cubic for links
    /// shared with TCP downloads (docs/ARCHITECTURE.md)
    #[arg(long = "cc", value_name = "ALGO")]
    pub congestion: Option<CongestionControl>,
    /// What drives the MoQT port's connections: quinn (the default) or batched (raw QUIC
    /// only, opt-in; docs/ARCHITECTURE.md)
    #[arg(long, value_name = "DRIVER", env = "TIERMESH_TRANSPORT_DRIVER")]
    pub transport_driver: Option<TransportDriver>,
    /// Make the tier ladder of every `<broadcast>/source` (the file's `[ingest]` section, else
    /// the default ladder)
    #[arg(long)]
    pub ingest: bool,
}

impl RelayConfig {
    /// Reads `path` (if any), applies `flags` over it, and checks the result.
    pub fn load(path: Option<&Path>, flags: &Flags) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                let mut config = Self::parse(&text, path)?;
                config.resolve_paths(path.parent().unwrap_or(Path::new("")));
                config
            }
            None => Self::default(),
        };
        config.apply(flags);
        config.validate()?;
        Ok(config)
    }

    /// Reads the file named by `--config` (if any) and applies the other flags over it:
    /// `load(flags.config.as_deref(), flags)`.
    pub fn from_flags(flags: &Flags) -> Result<Self, ConfigError> {
        Self::load(flags.config.as_deref(), flags)
    }

    /// Parses TOML text; `path` names it in errors. Relative paths are left as written.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source })
    }

    fn resolve_paths(&mut self, dir: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        self.tls.cert.as_mut().map(resolve);
        self.tls.key.as_mut().map(resolve);
        self.auth.keys.iter_mut().for_each(resolve);
        if let Some(m) = self.mesh.as_mut() {
            resolve(&mut m.dir);
        }
        self.web.as_mut().map(resolve);
    }

    /// Applies every flag that was given.
    pub fn apply(&mut self, flags: &Flags) {
        fn set<T: Clone>(target: &mut T, flag: &Option<T>) {
            if let Some(value) = flag {
                *target = value.clone();
            }
        }
        fn replace<T: Clone>(target: &mut Vec<T>, flag: &[T]) {
            if !flag.is_empty() {
                *target = flag.to_vec();
            }
        }
        set(&mut self.listen, &flags.listen);
        set(&mut self.ops, &flags.ops);
        if flags.tls_cert.is_some() {
            self.tls.cert = flags.tls_cert.clone();
        }
        if flags.tls_key.is_some() {
            self.tls.key = flags.tls_key.clone();
        }
        if flags.tls_generate {
            self.tls.generate = true;
        }
        replace(&mut self.auth.keys, &flags.auth_keys);
        replace(&mut self.auth.public, &flags.public);
        replace(&mut self.auth.public_publish, &flags.public_publish);
        set(&mut self.cache.groups, &flags.cache_groups);
        set(&mut self.linger, &flags.linger);
        set(&mut self.limits.max_sessions, &flags.max_sessions);
        set(&mut self.limits.idle_timeout, &flags.idle_timeout);
        set(&mut self.goaway_grace, &flags.goaway_grace);
        set(&mut self.scheduler.mode, &flags.scheduler);
        set(&mut self.congestion, &flags.congestion);
        set(&mut self.transport_driver, &flags.transport_driver);
        if flags.web.is_some() {
            self.web = flags.web.clone();
        }
        if flags.ingest && self.ingest.is_none() {
            self.ingest = Some(crate::ingest::IngestConfig::default());
        }
    }

    /// Checks values that TOML types alone cannot: ranges and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |key, reason: &str| Err(ConfigError::Invalid { key, reason: reason.to_owned() });
        match (&self.tls.cert, &self.tls.key, self.tls.generate) {
            (Some(_), None, _) => return invalid("tls.key", "tls.cert is set but tls.key is not"),
            (None, Some(_), _) => return invalid("tls.cert", "tls.key is set but tls.cert is not"),
            (Some(_), Some(_), true) => {
                return invalid(
                    "tls.generate",
                    "give either tls.cert and tls.key, or tls.generate, not both",
                );
            }
            (None, None, false) => {
                return invalid(
                    "tls",
                    "no certificate: set tls.cert and tls.key, or tls.generate (--tls-generate)",
                );
            }
            _ => {}
        }
        if self.cache.groups == 0 {
            return invalid(
                "cache.groups",
                "must be at least 1 (joining subscribers start from the cache)",
            );
        }
        let limits = &self.limits;
        if limits.max_sessions == 0 {
            return invalid("limits.max_sessions", "must be at least 1");
        }
        if limits.max_requests_per_session == 0 {
            return invalid("limits.max_requests_per_session", "must be at least 1");
        }
        if !(1..=32).contains(&limits.max_namespace_depth) {
            return invalid("limits.max_namespace_depth", "must be 1 to 32 (the draft's maximum)");
        }
        if !(1..=4096).contains(&limits.max_namespace_len) {
            return invalid("limits.max_namespace_len", "must be 1 to 4096 (the draft's maximum)");
        }
        if limits.idle_timeout.is_zero() {
            return invalid("limits.idle_timeout", "must be more than 0s");
        }
        if limits.upstream_fetch_idle.is_zero() {
            return invalid("limits.upstream_fetch_idle", "must be more than 0s");
        }
        if let Some(ingest) = &self.ingest {
            ingest.validate().map_err(|reason| ConfigError::Invalid { key: "ingest", reason })?;
        }
        if self.listen == self.ops && self.listen.port() != 0 {
            // Different protocols (UDP vs TCP) could share a port, but one address for both is
            // almost always a typo.
            return invalid("ops", "must differ from listen");
        }
        Ok(())
    }

    /// The configuration as TOML, every key written out.
    pub fn to_toml(&self) -> String {
        // Every field is a plain value, path, list or table: serialization cannot fail.
        toml::to_string(self).unwrap_or_default()
    }
}

/// serde for `Duration` as human-readable text ("5s", "250ms", "1m 30s").
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("{e} (write durations like \"5s\" or \"250ms\")"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_only_a_certificate_choice() {
        let mut config = RelayConfig::default();
        assert!(matches!(config.validate(), Err(ConfigError::Invalid { key: "tls", .. })));
        config.tls.generate = true;
        config.validate().unwrap();
        assert_eq!(config.ops.to_string(), "127.0.0.1:9090");
        assert_eq!(config.listen.to_string(), "[::]:4443");
        assert_eq!(config.limits.max_namespace_depth, 32);
        assert_eq!(config.cache.groups, 2);
        assert_eq!(config.linger, Duration::from_secs(5));
        assert_eq!(config.limits.upstream_fetch_idle, Duration::from_secs(5));
    }

    #[test]
    fn upstream_fetch_idle_from_file_and_not_zero() {
        let text = "[tls]\ngenerate = true\n[limits]\nupstream_fetch_idle = \"750ms\"\n";
        let config = RelayConfig::parse(text, Path::new("x.toml")).unwrap();
        assert_eq!(config.limits.upstream_fetch_idle, Duration::from_millis(750));
        config.validate().unwrap();
        let zero = text.replace("750ms", "0s");
        let config = RelayConfig::parse(&zero, Path::new("x.toml")).unwrap();
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Invalid { key: "limits.upstream_fetch_idle", .. })
        ));
    }

    #[test]
    fn round_trips_through_toml() {
        let mut config = RelayConfig::default();
        config.tls.cert = Some("c.pem".into());
        config.tls.key = Some("k.pem".into());
        config.auth.public.push("demo".parse().unwrap());
        config.limits.idle_timeout = Duration::from_millis(1500);
        let text = config.to_toml();
        assert_eq!(RelayConfig::parse(&text, Path::new("x.toml")).unwrap(), config);
    }

    #[test]
    fn congestion_controller_from_file_and_flag() {
        let file = RelayConfig::parse("congestion = \"newreno\"\n", Path::new("x.toml")).unwrap();
        assert_eq!(file.congestion, CongestionControl::NewReno);
        let mut config = file.clone();
        config.apply(&Flags::default());
        assert_eq!(config.congestion, CongestionControl::NewReno, "no flag keeps the file's");
        config.apply(&Flags { congestion: Some(CongestionControl::Bbr), ..Flags::default() });
        assert_eq!(config.congestion, CongestionControl::Bbr);
        let e = RelayConfig::parse("congestion = \"vegas\"\n", Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("vegas"), "{e}");
    }

    #[test]
    fn transport_driver_from_file_and_flag() {
        assert_eq!(RelayConfig::default().transport_driver, TransportDriver::Quinn);
        let file =
            RelayConfig::parse("transport_driver = \"batched\"\n", Path::new("x.toml")).unwrap();
        assert_eq!(file.transport_driver, TransportDriver::Batched);
        let mut config = file.clone();
        config.apply(&Flags::default());
        assert_eq!(config.transport_driver, TransportDriver::Batched, "no flag keeps the file's");
        config.apply(&Flags { transport_driver: Some(TransportDriver::Quinn), ..Flags::default() });
        assert_eq!(config.transport_driver, TransportDriver::Quinn);
        let e =
            RelayConfig::parse("transport_driver = \"tokio\"\n", Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("tokio"), "{e}");
    }
}
