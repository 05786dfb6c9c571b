//! `tiermesh-bees`: the load tool on its own, for load hosts that need no relay code. The
//! same as `tiermesh bees`.

use clap::Parser;

/// Load relays with many subscribers (and publishers); report latency, stalls, relay CPU.
#[derive(Parser)]
#[command(name = "tiermesh-bees", version)]
struct Cli {
    #[command(flatten)]
    args: tiermesh_bees::cli::Args,
}

fn main() -> anyhow::Result<()> {
    tiermesh_bees::cli::run(Cli::parse().args)
}
