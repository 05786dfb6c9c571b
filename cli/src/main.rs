//! The `tiermesh` command: one binary with a subcommand per job. Each subcommand's arguments
//! and start-up live in the library crate that does the work, so tests and embedders call
//! the same function; this file only wires them together.

use clap::{Parser, Subcommand};

mod dev;
mod malloc;

#[derive(Parser)]
#[command(name = "tiermesh", version, about = "Media relay mesh for real-time video over QUIC")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    // Each subcommand is one variant: `Name(crate::cli::Args)`, dispatched in `main` below.
    /// Make and inspect TLS material: dev certificates, the mesh CA, node certificates.
    Cert(tiermesh_certs::cli::Args),
    /// Emulate a slow, lossy or changing link: a UDP relay with rate, delay, jitter and loss.
    Link(tiermesh_link::cli::Args),
    /// Create token signing keys, issue and check access tokens.
    Token(tiermesh_relay::token_cli::Args),
    /// Run a relay: MoQT over raw QUIC and WebTransport on one UDP port, plus /metrics.
    Relay(tiermesh_relay::cli::Args),
    /// Publish a synthetic broadcast (catalog, audio, three video tiers) to a relay.
    Pub(tiermesh_client::cli::PubArgs),
    /// Subscribe to a broadcast and report objects, gaps and latency per track.
    Sub(tiermesh_client::cli::SubArgs),
    /// A relay on localhost with a generated certificate and a synthetic publisher.
    Dev(dev::Args),
    /// Load a relay with many subscribers (and publishers); report latency, stalls, relay CPU.
    Bees(tiermesh_bees::cli::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Cert(args) => tiermesh_certs::cli::run(args)?,
        Command::Link(args) => tiermesh_link::cli::run(args)?,
        Command::Token(args) => tiermesh_relay::token_cli::run(args)?,
        Command::Relay(args) => {
            malloc::tune_for_relay();
            tiermesh_relay::cli::run(args)?
        }
        Command::Pub(args) => tiermesh_client::cli::run_pub(args)?,
        Command::Sub(args) => tiermesh_client::cli::run_sub(args)?,
        Command::Dev(args) => dev::run(args)?,
        Command::Bees(args) => tiermesh_bees::cli::run(args)?,
    }
    Ok(())
}
