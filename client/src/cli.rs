//! `tiermesh pub` and `tiermesh sub`: the command-line publisher and subscriber.
//!
//! A broadcast URL names a relay and a broadcast: `moqt://host:port/clinic/room-42` (raw
//! QUIC) or `https://host:port/clinic/room-42` (WebTransport) is the broadcast whose track
//! namespace is the tuple (`clinic`, `room-42`) on the relay at `host:port`
//! ([`BroadcastUrl`]). The session itself is opened to the same URL, so a relay sees the
//! path too (PATH in CLIENT_SETUP on raw QUIC, the CONNECT path on WebTransport), and a
//! `?jwt=` query travels with it.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use tiermesh_proto::types::TrackNamespace;

use crate::moq::{self, ClientOptions, Connection, Error as MoqError};
use crate::publish::{Publisher, Served, Source, now_us};
use crate::subscribe::{SubOutput, WatchConfig, path, watch_abr, watch_groups};
use crate::synthetic::BroadcastSpec;
use crate::transport::{CongestionControl, Target, TlsArgs, TransportConfig, Url};

/// A broadcast URL: where to connect and which namespace is the broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastUrl {
    /// The checked URL to connect to (query included; it may hold a token).
    pub target: Target,
    /// The broadcast's track namespace: the URL path's segments, percent-decoded.
    pub namespace: TrackNamespace,
}

impl BroadcastUrl {
    /// Parses `moqt://host:port/a/b` or `https://host:port/a/b`, saying what is wrong.
    ///
    /// # Errors
    /// The URL is not a usable MoQT URL, or its path names no broadcast.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let target = Target::parse(text)?;
        let mut fields = Vec::new();
        for segment in target.path().split('/').filter(|s| !s.is_empty()) {
            let field = percent_decode(segment)
                .with_context(|| format!("bad %-escape in the path segment `{segment}`"))?;
            fields.push(Bytes::from(field));
        }
        if fields.is_empty() {
            bail!(
                "{target} names no broadcast: put its namespace in the path, e.g. \
                 moqt://host:port/clinic/room-42"
            );
        }
        let namespace = TrackNamespace::new(fields)
            .with_context(|| format!("{target}: the path is not a valid track namespace"))?;
        Ok(Self { target, namespace })
    }

    /// The URL to connect to.
    pub fn url(&self) -> &Url {
        self.target.url()
    }
}

impl FromStr for BroadcastUrl {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        Self::parse(s)
    }
}

fn percent_decode(segment: &str) -> Option<Vec<u8>> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// How to reach the relay: URL, TLS trust and token. Shared by `pub` and `sub`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// The broadcast: moqt://host:port/clinic/room-42 (raw QUIC) or https://host:port/…
    /// (WebTransport).
    #[arg(value_name = "URL")]
    pub url: String,
    /// How to trust the relay's certificate.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Access token (a JWT from `tiermesh token issue`), sent as AUTHORIZATION TOKEN.
    #[arg(long, env = "TIERMESH_TOKEN", hide_env_values = true, value_name = "JWT")]
    pub token: Option<String>,
    /// QUIC congestion controller of this connection: delay (the default), cubic, bbr or
    /// newreno; cubic for links shared with TCP downloads (docs/ARCHITECTURE.md)
    #[arg(long = "cc", value_name = "ALGO")]
    pub congestion: Option<CongestionControl>,
    /// Ask a mesh's routing API which relay to use, e.g.
    /// `http://relay-ops:9090/route?region=eu`; URL may then be just the broadcast
    /// (`clinic/room-42`), or a full URL whose path names it.
    #[arg(long, value_name = "ROUTE_URL")]
    pub route: Option<String>,
}

impl ConnectArgs {
    fn broadcast(&self) -> anyhow::Result<BroadcastUrl> {
        BroadcastUrl::parse(&self.url)
    }

    /// The broadcast URL: as given, or, with `--route`, on the relay the routing API names.
    async fn resolve(&self) -> anyhow::Result<BroadcastUrl> {
        let Some(route) = &self.route else { return self.broadcast() };
        let path = match BroadcastUrl::parse(&self.url) {
            Ok(b) => path(&b.namespace),
            Err(_) => self.url.trim_matches('/').to_owned(),
        };
        let relay = ask_route(route, &path).await?;
        tracing::info!(%relay, broadcast = %path, "routing API chose the relay");
        BroadcastUrl::parse(&format!("{}/{path}", relay.trim_end_matches('/')))
    }

    fn token(&self) -> Option<Bytes> {
        self.token.as_ref().map(|t| Bytes::from(t.trim().to_owned()))
    }

    fn options(&self) -> anyhow::Result<ClientOptions> {
        let tls = self.tls.client_tls()?;
        let mut options = ClientOptions::new(tls);
        if let Some(cc) = self.congestion {
            options = options.transport(TransportConfig::default().congestion(cc));
        }
        if let Some(t) = self.token() {
            options = options.token(t);
        }
        Ok(options)
    }
}

/// `tiermesh pub URL`: publish a synthetic broadcast.
#[derive(Debug, Clone, clap::Args)]
pub struct PubArgs {
    /// Relay, broadcast, trust and token.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Stop after this long (e.g. `30s`, `5m`); without it, run until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Real media instead of the synthetic broadcast (see [`MediaArgs`]).
    #[command(flatten)]
    pub media: MediaArgs,
    /// How the uplink chooses what to send when it cannot carry everything: `priority`
    /// (the draft's order, stale and late objects dropped) or `fifo` (arrival order, the
    /// baseline benchmarks compare against).
    #[arg(long, value_enum, default_value = "priority", value_name = "MODE")]
    pub scheduler: SendMode,
}

/// The send scheduler's mode on the command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SendMode {
    /// Priority order with delivery timeouts.
    #[default]
    Priority,
    /// Arrival order, nothing dropped.
    Fifo,
}

/// What `tiermesh pub` sends: without `--test-pattern` or `--input`, the synthetic
/// broadcast (filler payloads).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MediaArgs {
    /// Send a generated moving picture (clock, frame counter) and a tone, encoded for real
    /// on the ladder.
    #[arg(long, conflicts_with = "input")]
    pub test_pattern: bool,
    /// Send a media file: Y4M, IVF (AV1), Annex B H.264, or MP4 (H.264/AV1 + Opus).
    #[arg(long, value_name = "FILE")]
    pub input: Option<std::path::PathBuf>,
    /// Play the input file endlessly.
    #[arg(long = "loop", requires = "input")]
    pub looped: bool,
    /// Encode the ladder here (an encoded file is decoded first); without it an encoded
    /// file is sent as one tier for the relay's ingest to make the ladder.
    #[arg(long)]
    pub ladder: bool,
    /// Video codec of the ladder.
    #[arg(long, value_enum, default_value = "h264")]
    pub codec: VideoCodec,
    /// Only the 360p and 180p rungs (real time on a small machine).
    #[arg(long)]
    pub light: bool,
    /// Keep the rungs' configured bit rates. By default the encoders follow the uplink:
    /// every 500 ms the video rate is set to 80% of the QUIC connection's send-rate
    /// estimate less the audio (lowest rung served first, none below 100 kbit/s; down at
    /// once, up by at most 8% per step), and the top rung is dropped while the uplink
    /// cannot carry it (back at a group start once it fits with 30% to spare for 5 s).
    #[arg(long)]
    pub fixed_rate: bool,
}

/// Video codec choice on the command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum VideoCodec {
    /// H.264 (OpenH264).
    #[default]
    H264,
    /// AV1 (rav1e).
    Av1,
}

impl MediaArgs {
    /// The media source these flags ask for, or `None` for the synthetic broadcast.
    ///
    /// # Errors
    /// The file cannot be read or an encoder is refused.
    pub fn source(&self, now_us: u64) -> anyhow::Result<Option<crate::media::MediaBroadcast>> {
        use crate::media::{MediaBroadcast, ladder_for, light_ladder};
        let codec = match self.codec {
            VideoCodec::H264 => tiermesh_codec::Codec::H264,
            VideoCodec::Av1 => tiermesh_codec::Codec::Av1,
        };
        let ladder = if self.light && codec == tiermesh_codec::Codec::H264 {
            light_ladder()
        } else {
            ladder_for(codec)
        };
        let media = if self.test_pattern {
            MediaBroadcast::test_pattern(ladder, 0, now_us)?
        } else {
            match &self.input {
                Some(path) => MediaBroadcast::file(path, ladder, self.ladder, self.looped, now_us)
                    .with_context(|| format!("--input {}", path.display()))?,
                None => return Ok(None),
            }
        };
        Ok(Some(if self.fixed_rate { media.fixed_rate() } else { media }))
    }
}

/// `tiermesh sub URL`: subscribe to a broadcast and report what arrived.
#[derive(Debug, Clone, clap::Args)]
pub struct SubArgs {
    /// Relay, broadcast, trust and token.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Only these tracks (repeatable); without it, every track of the catalog.
    #[arg(long = "track", value_name = "NAME")]
    pub tracks: Vec<String>,
    /// How long to watch.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Print exactly one JSON object on stdout (see the README for its fields).
    #[arg(long)]
    pub json: bool,
    /// Decode the video tier (`--track video/…`, else the highest) and the audio; report
    /// decoded frames, decode errors and freezes.
    #[arg(long)]
    pub decode: bool,
    /// Write what arrived (one video tier and the audio) into a playable MP4 file.
    #[arg(long, value_name = "FILE.mp4")]
    pub save: Option<std::path::PathBuf>,
    /// Watch the audio and one video tier, moving between the catalog's tiers at group
    /// boundaries from measured throughput and latency; the report lists the switches and
    /// stalls (video gaps over 200 ms). Starts on the lowest tier, or on the one named with
    /// `--track video/…`.
    #[arg(long, conflicts_with_all = ["decode", "save"])]
    pub abr: bool,
    /// With --json: add what arrived of each group of each track (objects, bytes, whole or
    /// not, arrival times).
    #[arg(long, requires = "json")]
    pub groups: bool,
}

/// Logs to stderr, `RUST_LOG` filtering (default `info`), so stdout carries only results.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")
}

/// A termination or request error code as the draft writes it (`UNAUTHORIZED`).
pub fn code_name(debug: &str) -> String {
    let mut out = String::new();
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Explains an error of the MoQT layer with the draft's code names.
pub fn explain(e: &MoqError) -> String {
    match e {
        MoqError::Rejected { code, reason, .. } => {
            format!("refused by the relay with {}: {reason}", code_name(&format!("{code:?}")))
        }
        MoqError::Closed(reason) => explain_close(reason),
        other => other.to_string(),
    }
}

/// A close reason with the termination code's name.
pub fn explain_close(reason: &moq::CloseReason) -> String {
    let name = reason
        .code()
        .and_then(tiermesh_proto::TerminationCode::from_code)
        .map(|c| code_name(&format!("{c:?}")));
    match (reason, name) {
        (moq::CloseReason::Transport(_), _) | (_, None) => format!("session {reason}"),
        (_, Some(name)) => format!("session {reason} ({name})"),
    }
}

async fn connect(args: &ConnectArgs, url: &Url) -> anyhow::Result<Connection> {
    connect_with(args, url, None).await
}

async fn connect_with(
    args: &ConnectArgs,
    url: &Url,
    scheduler: Option<crate::scheduler::SchedulerConfig>,
) -> anyhow::Result<Connection> {
    let mut options = args.options()?;
    if let Some(s) = scheduler {
        options = options.scheduler(s);
    }
    let (conn, driver) = moq::connect(url, options)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {}: {}", redacted(url), explain(&e)))?;
    tokio::spawn(driver.run());
    conn.ready()
        .await
        .map_err(|e| anyhow::anyhow!("SETUP with {} failed: {}", redacted(url), explain(&e)))?;
    Ok(conn)
}

/// How long the routing API may take to answer.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks the routing API at `route` (`http://host:port/route?region=…`) which relay serves
/// `broadcast`; the relay's client URL (`moqt://…` or `https://…`).
async fn ask_route(route: &str, broadcast: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut url = Url::parse(route).with_context(|| format!("--route {route}: not a URL"))?;
    if url.scheme() != "http" {
        bail!("--route {route}: only http:// (the ops listener of a relay) is supported");
    }
    url.query_pairs_mut().append_pair("broadcast", broadcast);
    let host = url.host_str().context("--route: no host")?.to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let answer = tokio::time::timeout(ROUTE_TIMEOUT, async {
        let mut stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        std::io::Result::Ok(text)
    })
    .await
    .map_err(|_| anyhow::anyhow!("--route {route}: no answer within {ROUTE_TIMEOUT:?}"))?
    .with_context(|| format!("--route {route}"))?;
    let (head, body) = answer.split_once("\r\n\r\n").context("--route: not an HTTP answer")?;
    let status = head.lines().next().unwrap_or("");
    let value: serde_json::Value = serde_json::from_str(body.trim())
        .map_err(|_| anyhow::anyhow!("--route {route}: {status}: {}", body.trim()))?;
    if !status.contains(" 200 ") {
        let reason = value["error"].as_str().unwrap_or(body.trim());
        bail!("the routing API found no relay for {broadcast}: {status}: {reason}");
    }
    value["url"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("--route {route}: the answer has no url: {body}"))
}

fn redacted(url: &Url) -> String {
    Target::from_url(url).map_or_else(|_| "the relay".to_owned(), |t| t.to_string())
}

async fn ctrl_c_or(duration: Option<Duration>) {
    let stop = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = stop => {}
    }
}

/// Runs `tiermesh pub`.
///
/// # Errors
/// Bad URL or TLS flags, the relay cannot be reached at first, or it refuses the broadcast.
pub fn run_pub(args: PubArgs) -> anyhow::Result<()> {
    init_logging();
    runtime()?.block_on(publish(&args, ctrl_c_or(args.duration)))
}

/// How long `pub` waits between attempts to reconnect after losing its session: short,
/// so subscribers see a gap of about a second, well within a relay's linger period.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// Publishes the synthetic broadcast named by `args` until `stop` resolves, reconnecting
/// when the session is lost. Prints `published <url> (<namespace>)` on stdout each time the
/// relay accepts the broadcast.
///
/// # Errors
/// Bad URL or TLS flags, the relay cannot be reached at first, or it refuses the broadcast.
pub async fn publish(args: &PubArgs, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let broadcast = args.connect.resolve().await?;
    match args.media.source(now_us())? {
        Some(media) => {
            let publisher =
                Publisher::with_source(broadcast.namespace.clone(), media, args.connect.token());
            publish_with(args, &broadcast, publisher, stop).await
        }
        None => {
            let publisher = Publisher::new(
                broadcast.namespace.clone(),
                BroadcastSpec::default(),
                now_us(),
                args.connect.token(),
            );
            publish_with(args, &broadcast, publisher, stop).await
        }
    }
}

async fn publish_with<S: Source>(
    args: &PubArgs,
    broadcast: &BroadcastUrl,
    mut publisher: Publisher<S>,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(stop);
    let mut first = true;
    let mode = match args.scheduler {
        SendMode::Priority => crate::scheduler::Mode::Priority,
        SendMode::Fifo => crate::scheduler::Mode::Fifo,
    };
    let scheduler = crate::scheduler::SchedulerConfig::default().mode(mode);
    loop {
        let conn = tokio::select! {
            c = connect_with(&args.connect, broadcast.url(), Some(scheduler.clone())) => c,
            () = &mut stop => return Ok(()),
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) if first => return Err(e),
            Err(e) => {
                tracing::warn!("{e:#}; retrying");
                tokio::select! {
                    () = tokio::time::sleep(RECONNECT_DELAY) => continue,
                    () = &mut stop => return Ok(()),
                }
            }
        };
        first = false;
        let shown = broadcast.target.to_string();
        let served = publisher
            .serve(&conn, &mut stop, || {
                println!("published {shown} ({})", path(&broadcast.namespace));
            })
            .await;
        match served {
            Ok(Served::Stopped) => {
                conn.close(tiermesh_proto::TerminationCode::NoError, "publisher stopped");
                // Let the close reach the relay before the process exits.
                let _ = tokio::time::timeout(Duration::from_secs(1), conn.closed()).await;
                println!("stopped after {} objects", publisher.objects_sent());
                if let Some(summary) = publisher.source().summary() {
                    println!("{summary}");
                }
                return Ok(());
            }
            Ok(Served::Closed(reason)) => {
                eprintln!("{}; reconnecting", explain_close(&reason));
            }
            Err(e) => bail!("publishing {} failed: {}", path(&broadcast.namespace), explain(&e)),
        }
        tokio::select! {
            () = tokio::time::sleep(RECONNECT_DELAY) => {}
            () = &mut stop => return Ok(()),
        }
    }
}

/// Runs `tiermesh sub`. Prints the report (JSON with `--json`) on stdout.
///
/// # Errors
/// Bad URL or TLS flags, the relay cannot be reached, or a track failed (the report is
/// printed first).
pub fn run_sub(args: SubArgs) -> anyhow::Result<()> {
    init_logging();
    if args.decode || args.save.is_some() {
        return run_decode(&args);
    }
    let out = runtime()?.block_on(subscribe(&args))?;
    let report = &out.report;
    if args.json {
        // Strings, numbers and lists only: serialization cannot fail.
        println!("{}", serde_json::to_string(&out).unwrap_or_default());
    } else {
        print!("{}", report.to_table());
        if let Some(abr) = &out.abr {
            for sw in &abr.switches {
                let at = sw.at_ms.map_or("not reached".to_owned(), |t| format!("{:.0} ms", t));
                let group = sw.group.map_or("-".to_owned(), |g| g.to_string());
                println!(
                    "switch {} -> {}: decided at {:.0} ms, from group {group} at {at}",
                    sw.from, sw.to, sw.decided_ms
                );
            }
            println!(
                "abr: ended on {}, {} stalls over {} ms, longest video gap {:.0} ms",
                abr.final_tier.as_deref().unwrap_or("-"),
                abr.stalls,
                crate::subscribe::STALL_GAP.as_millis(),
                abr.longest_gap_ms
            );
        }
    }
    let failed: Vec<&str> =
        report.tracks.iter().filter(|t| t.error.is_some()).map(|t| t.name.as_str()).collect();
    if let Some(e) = &report.error {
        bail!("{e}");
    }
    if !failed.is_empty() {
        bail!("tracks failed: {}", failed.join(", "));
    }
    Ok(())
}

/// `tiermesh sub --decode` / `--save`: prints the decode report (JSON with `--json`).
fn run_decode(args: &SubArgs) -> anyhow::Result<()> {
    use crate::decode::{ReceiveConfig, receive};
    if let Some(path) = &args.save
        && !crate::decode::is_mp4_path(path)
    {
        bail!("--save {}: the file must end in .mp4", path.display());
    }
    let report = runtime()?.block_on(async {
        let broadcast = args.connect.resolve().await?;
        let conn = connect(&args.connect, broadcast.url()).await?;
        let report = receive(
            &conn,
            ReceiveConfig {
                namespace: broadcast.namespace.clone(),
                video_track: args.tracks.iter().find(|t| t.starts_with("video/")).cloned(),
                decode: args.decode,
                save: args.save.clone(),
                duration: args.duration,
                token: args.connect.token(),
            },
        )
        .await;
        conn.close(tiermesh_proto::TerminationCode::NoError, "done");
        let _ = tokio::time::timeout(Duration::from_millis(500), conn.closed()).await;
        anyhow::Ok(report)
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "video_track": report.video_track,
                "codec": report.codec,
                "video_objects": report.video_objects,
                "frames_decoded": report.frames_decoded,
                "decode_errors": report.decode_errors,
                "freezes": report.freezes,
                "skipped_before_key": report.skipped_before_key,
                "audio_packets": report.audio_packets,
                "audio_decoded": report.audio_decoded,
                "saved_video": report.saved_video,
                "saved_audio": report.saved_audio,
                "error": report.error,
            })
        );
    } else {
        print!("{}", report.to_text());
    }
    if let Some(e) = report.error {
        bail!("{e}");
    }
    Ok(())
}

async fn subscribe(args: &SubArgs) -> anyhow::Result<SubOutput> {
    let broadcast = args.connect.resolve().await?;
    let conn = connect(&args.connect, broadcast.url()).await?;
    let config = WatchConfig {
        namespace: broadcast.namespace.clone(),
        tracks: args.tracks.clone(),
        duration: args.duration,
        token: args.connect.token(),
    };
    let mut out = if args.abr {
        let (report, abr) = watch_abr(&conn, config).await;
        SubOutput { report, groups: Vec::new(), abr: Some(abr), media_latency_ms: None }
    } else {
        let mut out = watch_groups(&conn, config).await;
        if !args.groups {
            out.groups.clear();
        }
        out
    };
    if let Some(reason) = conn.close_reason() {
        out.report.error = Some(explain_close(&reason));
    } else {
        conn.close(tiermesh_proto::TerminationCode::NoError, "done");
        let _ = tokio::time::timeout(Duration::from_millis(500), conn.closed()).await;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn url_path_is_the_namespace() {
        let b = BroadcastUrl::parse("moqt://127.0.0.1:4443/clinic/room-42").unwrap();
        assert_eq!(b.namespace, TrackNamespace::from_path("clinic/room-42").unwrap());
        assert_eq!(b.target.port(), 4443);
        let b = BroadcastUrl::parse("https://relay.example/clinic/dr%20lee/?jwt=x").unwrap();
        assert_eq!(b.namespace.fields()[1].as_ref(), b"dr lee");
        assert_eq!(b.namespace.len(), 2);
        assert_eq!(b.target.query(), Some("jwt=x"));
    }

    #[test]
    fn url_without_broadcast_or_with_bad_escape_is_refused() {
        let e = BroadcastUrl::parse("moqt://127.0.0.1:4443/").unwrap_err().to_string();
        assert!(e.contains("names no broadcast"), "{e}");
        let e = format!("{:#}", BroadcastUrl::parse("moqt://h:1/a/%zz").unwrap_err());
        assert!(e.contains("%-escape"), "{e}");
        let e = format!("{:#}", BroadcastUrl::parse("http://h:1/a").unwrap_err());
        assert!(e.contains("unsupported scheme"), "{e}");
    }

    #[derive(Parser)]
    enum Cli {
        Pub(PubArgs),
        Sub(SubArgs),
    }

    #[test]
    fn flags_parse() {
        let hash = "ab".repeat(32);
        let Cli::Sub(s) = Cli::try_parse_from([
            "x",
            "sub",
            "moqt://127.0.0.1:1/a/b",
            "--tls-cert-hash",
            &hash,
            "--track",
            "audio",
            "--track",
            "video/180p",
            "--duration",
            "3s",
            "--json",
        ])
        .unwrap() else {
            panic!("not sub")
        };
        assert_eq!(s.tracks, ["audio", "video/180p"]);
        assert_eq!(s.duration, Duration::from_secs(3));
        assert!(s.json);
        let Cli::Pub(p) =
            Cli::try_parse_from(["x", "pub", "https://h:1/a", "--token", "t", "--duration", "1m"])
                .unwrap()
        else {
            panic!("not pub")
        };
        assert_eq!(p.duration, Some(Duration::from_secs(60)));
        assert_eq!(p.connect.token(), Some(Bytes::from_static(b"t")));
    }

    #[test]
    fn code_names_read_like_the_draft() {
        assert_eq!(code_name("Unauthorized"), "UNAUTHORIZED");
        assert_eq!(code_name("ProtocolViolation"), "PROTOCOL_VIOLATION");
    }
}
