//! `tiermesh dev`: one command, no set-up. A relay on localhost with a freshly generated
//! development certificate, and a publisher of the encoded test pattern feeding it one public broadcast. It
//! prints the certificate hash and the broadcast's `moqt://` and `https://` URLs in the
//! form `tiermesh sub` accepts as they are.
//!
//! It lives in the binary crate because it needs both the relay and the client library.

use std::net::SocketAddr;
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
    /// TCP address of the ops listener (/metrics, /healthz).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090")]
    ops: SocketAddr,
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
    let mut config = RelayConfig { listen: args.listen, ops: args.ops, ..Default::default() };
    config.tls.generate = true;
    config.auth.public = vec![prefix];
    config.auth.public_publish = config.auth.public.clone();
    let relay = Relay::start(config).await.context("starting the relay")?;
    let addr = relay.local_addr();
    let hash = relay.cert_hash().hex();
    let moqt = format!("moqt://{addr}/{broadcast}");
    let https = format!("https://{addr}/{broadcast}");
    println!("relay       moqt://{addr} (raw QUIC) and https://{addr} (WebTransport)");
    println!("cert hash   {hash}");
    println!("metrics     http://{}/metrics", relay.ops_addr());
    println!("broadcast   {moqt}");
    println!("            {https}");
    println!("watch it:   tiermesh sub {moqt} --tls-cert-hash {hash}");
    println!("            tiermesh sub {https} --tls-cert-hash {hash}");

    let publisher = PubArgs {
        connect: ConnectArgs {
            url: moqt,
            tls: TlsArgs { tls_cert_hash: Some(hash), ..TlsArgs::default() },
            token: None,
        },
        duration: args.duration,
        media: MediaArgs { test_pattern: !args.synthetic, ..MediaArgs::default() },
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
