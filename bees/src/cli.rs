//! `tiermesh bees`: run a load against relays on this host, or merge shard reports.
//!
//! ```text
//! tiermesh bees moqt://127.0.0.1:4443/bench --tls-cert-hash HEX --subscribers 200 \
//!     --rate 50 --duration 30s --publishers 1 --relay-pid PID --json run.json --html run.html
//! tiermesh bees merge a.json b.json --html all.html
//! ```

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use tiermesh_client::cli::BroadcastUrl;
use tiermesh_client::transport::TlsArgs;

use crate::Error;
use crate::load::{self, LoadConfig};
use crate::report::Report;

/// Arguments of `tiermesh bees`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// `merge`, or nothing to run a load.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The load to run.
    #[command(flatten)]
    pub load: LoadArgs,
}

/// Subcommands of `tiermesh bees`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Merge the JSON reports of several shards into one report.
    Merge(MergeArgs),
}

/// `tiermesh bees merge`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// JSON reports (`tiermesh bees --json FILE`) to merge.
    #[arg(required = true, value_name = "JSON")]
    pub inputs: Vec<PathBuf>,
    /// Output flags.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Where results go.
#[derive(Debug, Clone, clap::Args)]
pub struct OutputArgs {
    /// Write the JSON report to this file (`-`: stdout, instead of the table).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report with plots to this file.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// A shard: `i/n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardArg(pub u32, pub u32);

impl std::str::FromStr for ShardArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = s.split_once('/').ok_or("expected i/n, e.g. 0/2")?;
        let i: u32 = i.trim().parse().map_err(|_| format!("bad shard index `{i}`"))?;
        let n: u32 = n.trim().parse().map_err(|_| format!("bad shard count `{n}`"))?;
        if n == 0 || i >= n {
            return Err(format!("shard {i}/{n}: need 0 <= i < n"));
        }
        Ok(ShardArg(i, n))
    }
}

/// Running a load.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Relay broadcast URLs: moqt://host:port/ns (raw QUIC) or https://host:port/ns
    /// (WebTransport). Subscriber k uses URL k mod (number of URLs).
    #[arg(value_name = "URL")]
    pub urls: Vec<String>,
    /// How to trust the relays' certificates.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Access token (JWT) for SETUP, SUBSCRIBE and PUBLISH_NAMESPACE.
    #[arg(long, env = "TIERMESH_TOKEN", hide_env_values = true, value_name = "JWT")]
    pub token: Option<String>,
    /// Virtual subscribers over all shards, each on its own connection.
    #[arg(long, default_value_t = 10)]
    pub subscribers: u64,
    /// Synthetic publishers over all shards: publisher j publishes broadcast `<ns>/p<j>` to
    /// every URL and subscriber k watches `<ns>/p<k mod M>`. 0: watch `<ns>` published by
    /// someone else.
    #[arg(long, default_value_t = 0)]
    pub publishers: u64,
    /// Subscribers started per second (over all shards).
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// How long the run lasts, ramp included (at most 1 hour).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Tracks each subscriber joins (repeatable).
    #[arg(long = "track", value_name = "NAME", default_values_t = ["audio".to_owned(), "video/180p".to_owned()])]
    pub tracks: Vec<String>,
    /// Idle subscribers: connect and finish SETUP, subscribe to nothing (to measure the
    /// relay's memory per connected subscriber).
    #[arg(long, conflicts_with = "tracks")]
    pub idle: bool,
    /// A wait between objects longer than this counts as a stall.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    pub stall: Duration,
    /// Run part i of n of the subscribers (and publishers); merge the JSON reports after.
    #[arg(long, default_value = "0/1", value_name = "i/n")]
    pub shard: ShardArg,
    /// Process ID of a relay on this host: its CPU time and memory are read from /proc.
    #[arg(long, value_name = "PID")]
    pub relay_pid: Option<u32>,
    /// Worker threads; 1 runs everything on one current-thread runtime (one core).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// With --publishers: add the track `video/bench` to their broadcast, 30 objects a
    /// second of this many bytes on average (watch it with --track video/bench), to
    /// measure the relay per object of a chosen size.
    #[arg(long, value_name = "BYTES")]
    pub object_bytes: Option<u64>,
    /// Allow relays that are not on a loopback address.
    #[arg(long)]
    pub allow_remote: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Output flags.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The longest run allowed: every load stops by itself.
const MAX_DURATION: Duration = Duration::from_secs(3600);

/// Refuses targets that are not loopback unless `allow_remote`.
///
/// # Errors
/// [`Error::Remote`] for a host other than 127.0.0.0/8, ::1 or `localhost`.
pub fn check_local(target: &BroadcastUrl, allow_remote: bool) -> Result<(), Error> {
    if allow_remote {
        return Ok(());
    }
    let local = match target.target.ip() {
        Some(IpAddr::V4(ip)) => ip.is_loopback(),
        Some(IpAddr::V6(ip)) => ip.is_loopback(),
        None => target.target.host().eq_ignore_ascii_case("localhost"),
    };
    if local { Ok(()) } else { Err(Error::Remote(target.target.host().to_owned())) }
}

impl LoadArgs {
    /// The load these flags describe.
    ///
    /// # Errors
    /// No URL, a bad URL, a remote URL without `--allow-remote`, bad TLS flags or numbers.
    pub fn config(&self) -> anyhow::Result<LoadConfig> {
        if self.urls.is_empty() {
            bail!("give at least one relay URL, e.g. moqt://127.0.0.1:4443/bench");
        }
        let mut targets = Vec::new();
        for u in &self.urls {
            let t = BroadcastUrl::parse(u)?;
            check_local(&t, self.allow_remote)?;
            targets.push(t);
        }
        if self.duration > MAX_DURATION {
            bail!("--duration is at most {}", humantime::format_duration(MAX_DURATION));
        }
        if self.threads == 0 {
            bail!("--threads must be at least 1");
        }
        let config = LoadConfig {
            targets,
            tls: self.tls.client_tls()?,
            token: self.token.as_ref().map(|t| Bytes::from(t.trim().to_owned())),
            subscribers: self.subscribers,
            publishers: self.publishers,
            rate: self.rate,
            duration: self.duration,
            tracks: if self.idle { Vec::new() } else { self.tracks.clone() },
            stall: self.stall,
            shard: (self.shard.0, self.shard.1),
            relay_pid: self.relay_pid,
            progress: !self.quiet,
            object_bytes: self.object_bytes,
        };
        config.validate()?;
        Ok(config)
    }
}

/// Writes the report where `output` says; the table goes to stdout unless JSON does.
///
/// # Errors
/// A file cannot be written.
pub fn write_outputs(report: &Report, output: &OutputArgs) -> anyhow::Result<()> {
    let json_to_stdout = output.json.as_deref() == Some(std::path::Path::new("-"));
    if json_to_stdout {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
        if let Some(p) = &output.json {
            std::fs::write(p, report.to_json() + "\n")
                .with_context(|| format!("writing {}", p.display()))?;
        }
    }
    if let Some(p) = &output.html {
        std::fs::write(p, crate::html::render(report))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Reads and merges shard reports.
///
/// # Errors
/// A file cannot be read, is not a bees report, or has another format version.
pub fn merge_files(inputs: &[PathBuf]) -> anyhow::Result<Report> {
    let mut all = Report::new();
    for p in inputs {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let r: Report = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a tiermesh bees JSON report", p.display()))?;
        all.merge(&r).with_context(|| p.display().to_string())?;
    }
    Ok(all)
}

/// Logs to stderr at `warn` unless `RUST_LOG` says otherwise: the progress line is the
/// normal output there.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Runs `tiermesh bees`.
///
/// # Errors
/// Bad flags, unreadable inputs, or a load that could not run.
pub fn run(args: Args) -> anyhow::Result<()> {
    init_logging();
    if let Some(Command::Merge(m)) = args.command {
        let report = merge_files(&m.inputs)?;
        return write_outputs(&report, &m.output);
    }
    let config = args.load.config()?;
    let runtime = if args.load.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.load.threads)
            .enable_all()
            .build()
    }
    .context("tokio runtime")?;
    let report = runtime.block_on(load::run(config))?;
    // Sessions and their tasks end with the runtime; do not wait for stragglers.
    runtime.shutdown_timeout(Duration::from_millis(100));
    write_outputs(&report, &args.load.output)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Top,
    }

    #[derive(clap::Subcommand)]
    enum Top {
        Bees(Args),
    }

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        let mut v = vec!["x", "bees"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).map(|c| match c.cmd {
            Top::Bees(a) => a,
        })
    }

    #[test]
    fn load_and_merge_flags_parse() {
        let a = parse(&[
            "moqt://127.0.0.1:4443/bench",
            "--tls-insecure",
            "--subscribers",
            "200",
            "--shard",
            "1/3",
            "--duration",
            "30s",
        ])
        .unwrap();
        assert!(a.command.is_none());
        assert_eq!(a.load.subscribers, 200);
        assert_eq!(a.load.shard, ShardArg(1, 3));
        assert_eq!(a.load.tracks, ["audio", "video/180p"]);
        assert_eq!(a.load.stall, Duration::from_millis(200));
        let m = parse(&["merge", "a.json", "b.json", "--html", "out.html"]).unwrap();
        let Some(Command::Merge(m)) = m.command else { panic!("not merge") };
        assert_eq!(m.inputs.len(), 2);
        assert_eq!(m.output.html, Some(PathBuf::from("out.html")));
        assert!(parse(&["moqt://127.0.0.1:1/a", "--shard", "3/3"]).is_err());
    }

    #[test]
    fn remote_targets_are_refused_without_the_flag() {
        for local in ["moqt://127.0.0.1:1/a", "moqt://[::1]:1/a", "https://localhost:1/a"] {
            check_local(&BroadcastUrl::parse(local).unwrap(), false).unwrap();
        }
        for remote in ["moqt://192.0.2.1:1/a", "https://relay.example:443/a"] {
            let t = BroadcastUrl::parse(remote).unwrap();
            let e = check_local(&t, false).unwrap_err().to_string();
            assert!(e.contains("--allow-remote"), "{e}");
            check_local(&t, true).unwrap();
        }
        let a = parse(&["moqt://192.0.2.1:1/a", "--tls-insecure"]).unwrap();
        assert!(a.load.config().is_err());
    }
}
