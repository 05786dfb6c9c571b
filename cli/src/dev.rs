//! `tiermesh dev`: one command, no set-up. A relay on localhost with a freshly generated
//! development certificate, and a publisher of the encoded test pattern feeding it one public broadcast. It
//! prints the certificate hash and the broadcast's `moqt://` and `https://` URLs in the
//! form `tiermesh sub` accepts as they are. When the browser pages are built (`npm run
//! build` in web/ makes web/dist), the relay serves them on its ops listener and `dev`
//! prints the player's address with the relay URL and certificate hash filled in.
//!
//! It lives in the binary crate because it needs both the relay and the client library.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tiermesh_client::cli::{ConnectArgs, MediaArgs, PubArgs, init_logging, publish};
use tiermesh_client::transport::TlsArgs;
use tiermesh_relay::Relay;
use tiermesh_relay::config::RelayConfig;

/// Arguments of `tiermesh dev`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// UDP address of the relay (raw QUIC and WebTransport on one port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4443")]
    listen: SocketAddr,
    /// TCP address of the ops listener (/metrics, /healthz and the browser pages).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090")]
    ops: SocketAddr,
    /// Folder of the built browser pages. Default: web/dist in the working directory, else
    /// in the source tree this binary was built from.
    #[arg(long, value_name = "DIR")]
    web: Option<PathBuf>,
    /// The demo broadcast's namespace, fields joined by '/'. Its first field is made a
    /// public prefix: anyone on this machine may subscribe and publish under it without a
    /// token.
    #[arg(long, value_name = "NAMESPACE", default_value = "demo/room-1")]
    broadcast: String,
    /// Stop after this long (e.g. `60s`); without it, run until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Publish the synthetic broadcast (filler payloads) instead of the encoded test
    /// pattern (360p and 180p H.264 and an Opus tone, which run in real time here).
    #[arg(long)]
    synthetic: bool,
}

/// web/dist in the working directory, else in the source tree of this binary, if built.
fn default_web_dir() -> Option<PathBuf> {
    let source_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/dist");
    [PathBuf::from("web/dist"), source_tree]
        .into_iter()
        .find(|dir| dir.join("player.html").is_file())
}

/// The address to print for a bound one: an unspecified address (`0.0.0.0`, `[::]`) is
/// reached on this machine through loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    }
}

/// Runs `tiermesh dev`.
pub fn run(args: Args) -> anyhow::Result<()> {
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(dev(args))
}

async fn dev(args: Args) -> anyhow::Result<()> {
    let broadcast = args.broadcast.trim_matches('/').to_owned();
    let public = broadcast.split('/').next().unwrap_or_default();
    if public.is_empty() {
        anyhow::bail!("--broadcast must name a namespace, e.g. demo/room-1");
    }
    let prefix = public.parse().with_context(|| format!("--broadcast {broadcast}"))?;
    let web = match &args.web {
        Some(dir) => Some(dir.clone()),
        None => default_web_dir(),
    };
    let mut config =
        RelayConfig { listen: args.listen, ops: args.ops, web: web.clone(), ..Default::default() };
    config.tls.generate = true;
    config.auth.public = vec![prefix];
    config.auth.public_publish = config.auth.public.clone();
    let relay = Relay::start(config).await.context("starting the relay")?;
    let addr = reachable(relay.local_addr());
    let ops = reachable(relay.ops_addr());
    let hash = relay.cert_hash().hex();
    let moqt = format!("moqt://{addr}/{broadcast}");
    let https = format!("https://{addr}/{broadcast}");
    println!("relay       moqt://{addr} (raw QUIC) and https://{addr} (WebTransport)");
    println!("cert hash   {hash}");
    println!("metrics     http://{ops}/metrics");
    println!("broadcast   {moqt}");
    println!("            {https}");
    println!("watch it:   tiermesh sub {moqt} --tls-cert-hash {hash}");
    println!("            tiermesh sub {https} --tls-cert-hash {hash}");
    match &web {
        Some(_) => {
            println!("in Chromium: http://{ops}/player.html?url={https}&hash={hash}");
            println!("            (all pages: http://{ops}/?url={https}&hash={hash})");
        }
        None => println!(
            "in Chromium: the browser pages are not built: run `npm ci && npm run build` in web/, \
             then start tiermesh dev again (or pass --web DIR)"
        ),
    }

    let publisher = PubArgs {
        connect: ConnectArgs {
            url: moqt,
            tls: TlsArgs { tls_cert_hash: Some(hash), ..TlsArgs::default() },
            token: None,
            congestion: None,
            route: None,
        },
        duration: args.duration,
        media: MediaArgs { test_pattern: !args.synthetic, light: true, ..MediaArgs::default() },
        scheduler: tiermesh_client::cli::SendMode::Priority,
    };
    let stop = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    let result = publish(&publisher, stop).await;
    relay.shutdown().await;
    result
}
