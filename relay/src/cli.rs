//! `tiermesh relay`: runs a relay from a TOML file and/or flags until SIGTERM or ctrl-c,
//! then drains (GOAWAY, grace period) and exits.

use anyhow::Context;

use crate::Relay;
use crate::config::{Flags, RelayConfig};

/// Arguments of `tiermesh relay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration flags (each overrides the file's value).
    #[command(flatten)]
    pub flags: Flags,
    /// Runtime threads: 1 runs the relay on a single-threaded runtime (the least CPU per
    /// object when the relay has one core to itself, e.g. pinned with taskset); 0, the
    /// default, one worker thread per core this process may run on.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub threads: usize,
}

/// Runs the relay on its own runtime until SIGTERM or ctrl-c.
pub fn run(args: Args) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let config = RelayConfig::from_flags(&args.flags).context("relay configuration")?;
    let runtime = match args.threads {
        0 => tokio::runtime::Runtime::new(),
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
    }
    .context("starting the runtime")?;
    runtime.block_on(async move {
        let generated = config.tls.generate;
        let relay = Relay::start(config).await.context("starting the relay")?;
        if generated {
            // The hash a browser pins (serverCertificateHashes) and `--cert-hash` takes.
            println!("{}", relay.cert_hash().hex());
        }
        eprintln!("relay listening on {} (ops on {})", relay.local_addr(), relay.ops_addr());
        wait_for_signal().await;
        tracing::info!("signal received: draining");
        relay.drain().await;
        anyhow::Ok(())
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
