//! Fan-out benchmark: one `tiermesh pub` to N subscribers (default 200) through one
//! `tiermesh relay`, all on loopback, for a bounded time. Reports the relay's CPU time per
//! GB delivered (utime + stime from /proc/<relay pid>/stat, over the measured window),
//! its forwarding delay p50/p99 (from its /metrics histogram) and what the subscribers
//! measured (objects missing, capture-to-arrival latency).
//!
//! ```sh
//! cargo run --release -p tiermesh-tests --example fanout -- [--subscribers 200] [--duration 20s] [--tracks audio,video/360p]
//! ```
//!
//! The subscribers run in this process (one MoQT session each, raw QUIC), so only the relay
//! is measured; they share the machine's cores with it, as the relay and the publisher do.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tiermesh_client::moq::{self, ClientOptions};
use tiermesh_client::report::Report;
use tiermesh_client::subscribe::{WatchConfig, watch};
use tiermesh_client::transport::ClientTls;
use tiermesh_tests::{Relay, histogram_quantile, metric, start_pub, tiermesh_bin};

struct Options {
    subscribers: usize,
    duration: Duration,
    tracks: Vec<String>,
}

fn options() -> Result<Options> {
    let mut o = Options {
        subscribers: 200,
        duration: Duration::from_secs(20),
        tracks: vec!["audio".into(), "video/360p".into()],
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--subscribers" => o.subscribers = value()?.parse()?,
            "--duration" => {
                let v = value()?;
                o.duration = Duration::from_secs_f64(v.trim_end_matches('s').parse()?);
            }
            "--tracks" => o.tracks = value()?.split(',').map(str::to_owned).collect(),
            other => bail!("unknown argument {other}"),
        }
    }
    // Bounded: at most 10 minutes and 1000 subscribers.
    if o.duration > Duration::from_secs(600) || o.subscribers > 1000 || o.subscribers == 0 {
        bail!("--duration at most 600s, --subscribers 1 to 1000");
    }
    Ok(o)
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').context("bad stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here (0-based 11, 12).
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    Ok(ticks / hz)
}

fn main() -> Result<()> {
    let o = options()?;
    eprintln!("building / locating {}", tiermesh_bin().display());
    let relay = Relay::start(&["--public", "bench", "--public-publish", "bench"])?;
    let url = relay.url("moqt", "bench/fanout");
    let _publisher = start_pub("pub", &url, &relay.pin())?;
    let runtime = tokio::runtime::Runtime::new()?;
    let hash = relay.cert_hash.clone();
    let namespace = tiermesh_client::cli::BroadcastUrl::parse(&url)?.namespace;

    // Connect everyone first (a ramp, so the relay is not measured on its handshakes).
    let conns = runtime.block_on(async {
        let mut conns = Vec::new();
        for _ in 0..o.subscribers {
            let tls = ClientTls::pinned_hex(&hash)?;
            let (conn, driver) = moq::connect(&url.parse()?, ClientOptions::new(tls)).await?;
            tokio::spawn(driver.run());
            conn.ready().await?;
            conns.push(conn);
        }
        anyhow::Ok(conns)
    })?;
    eprintln!("{} subscribers connected; watching for {:?}", conns.len(), o.duration);

    let before_metrics = relay.metrics()?;
    let cpu_before = cpu_seconds(relay.proc.pid())?;
    let started = Instant::now();
    let reports: Vec<Report> = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for conn in conns {
            let config = WatchConfig {
                namespace: namespace.clone(),
                tracks: o.tracks.clone(),
                duration: o.duration,
                token: None,
            };
            tasks.spawn(async move { watch(&conn, config).await });
        }
        let mut out = Vec::new();
        while let Some(r) = tasks.join_next().await {
            out.push(r?);
        }
        anyhow::Ok(out)
    })?;
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(relay.proc.pid())? - cpu_before;
    let after_metrics = relay.metrics()?;

    let delta = |name: &str| {
        metric(&after_metrics, name).unwrap_or(0.0) - metric(&before_metrics, name).unwrap_or(0.0)
    };
    let bytes_sent = delta("tiermesh_bytes_sent_total");
    let objects_sent = delta("tiermesh_objects_sent_total");
    let gb = bytes_sent / 1e9;
    let p50 = histogram_quantile(&after_metrics, "tiermesh_forward_delay_seconds", 0.5);
    let p99 = histogram_quantile(&after_metrics, "tiermesh_forward_delay_seconds", 0.99);
    let tracks = reports.iter().flat_map(|r| &r.tracks);
    let (mut objects, mut bytes, mut missing_o, mut missing_g, mut failed) = (0, 0, 0, 0, 0);
    let (mut lat50, mut lat99, mut n) = (0.0, 0.0f64, 0.0);
    for t in tracks {
        objects += t.objects;
        bytes += t.bytes;
        missing_o += t.missing_objects;
        missing_g += t.missing_groups;
        failed += usize::from(t.error.is_some());
        if let Some(l) = t.latency_ms {
            lat50 += l.p50;
            lat99 = lat99.max(l.p99);
            n += 1.0;
        }
    }
    let ms = |s: Option<f64>| s.map_or("-".to_owned(), |v| format!("{:.2}", v * 1000.0));
    println!("## Fan-out");
    println!();
    println!(
        "`cargo run --release -p tiermesh-tests --example fanout -- --subscribers {} --duration {}s --tracks {}`",
        o.subscribers,
        o.duration.as_secs(),
        o.tracks.join(",")
    );
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| subscribers × tracks | {} × {} |", o.subscribers, o.tracks.join(", "));
    println!("| measured window | {wall:.1} s |");
    println!(
        "| relay payload sent | {:.3} GB ({:.0} Mbit/s), {objects_sent:.0} objects |",
        gb,
        bytes_sent * 8.0 / wall / 1e6
    );
    println!("| relay CPU (user+system) | {cpu:.2} s ({:.0} % of one core) |", cpu / wall * 100.0);
    println!(
        "| relay CPU per GB delivered | {:.1} s/GB |",
        if gb > 0.0 { cpu / gb } else { f64::NAN }
    );
    println!("| relay forwarding delay p50 / p99 | {} / {} ms |", ms(p50), ms(p99));
    println!(
        "| subscribers: objects, payload received | {objects}, {:.3} GB |",
        bytes as f64 / 1e9
    );
    println!("| subscribers: missing objects / groups | {missing_o} / {missing_g} |");
    println!(
        "| subscribers: capture→arrival latency, mean p50 / worst p99 | {:.1} / {:.1} ms |",
        if n > 0.0 { lat50 / n } else { f64::NAN },
        lat99
    );
    println!("| tracks that failed | {failed} |");
    Ok(())
}
