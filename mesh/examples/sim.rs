//! Full-scale mesh simulation: 1,000 relays in 20 regions, 10,000 broadcasts, 5,000
//! subscribers; a hub fails and returns, then 50 random relays fail and return. Prints one
//! table row per phase and checks the converged state after each.
//!
//! `cargo run --release -p tiermesh-mesh --example sim [-- relays regions broadcasts]`

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use tiermesh_mesh::sim::{PhaseReport, Sim, SimConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().context("arguments are numbers: relays regions broadcasts"))
        .collect::<anyhow::Result<_>>()?;
    let mut cfg = SimConfig::full();
    if let [relays, regions, broadcasts, ..] = args[..] {
        cfg.relays = relays;
        cfg.regions = regions;
        cfg.broadcasts = broadcasts;
        cfg.subscribers = broadcasts / 2;
    }
    let wall = Instant::now();
    let mut sim = Sim::new(cfg.clone())?;
    println!(
        "mesh: {} relays ({} hubs), {} regions, {} links, {} broadcasts, {} subscribers, seed {}",
        cfg.relays,
        sim.hubs().len(),
        cfg.regions,
        sim.links(),
        cfg.broadcasts,
        cfg.subscribers,
        cfg.seed
    );
    println!();
    println!(
        "| phase | live relays | convergence (virtual ms) | msgs/relay (mean) | msgs/relay (max) | KB/relay (mean) | KB/relay (max) | upstream moves | NEW GROUP REQUESTs | loops live / dead / samples | check (wall s) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let row = |sim: &mut Sim, r: PhaseReport| -> anyhow::Result<()> {
        let t = Instant::now();
        let check = sim.check().map_err(|e| anyhow!("{}: {e}", r.name))?;
        println!(
            "| {} | {} | {:.1} | {:.1} | {} | {:.1} | {:.1} | {} | {} | {} / {} / {} | {:.1} |",
            r.name,
            r.live_relays,
            r.convergence.as_secs_f64() * 1000.0,
            r.messages_per_relay(),
            r.max_messages_per_relay,
            r.bytes_per_relay() / 1024.0,
            r.max_bytes_per_relay as f64 / 1024.0,
            r.moves,
            r.new_group_requests,
            r.loops_live,
            r.loops_dead,
            r.loop_samples,
            t.elapsed().as_secs_f64(),
        );
        if r.name.starts_with("initial") {
            eprintln!(
                "checked: {} relay-to-origin walks (longest {} hops), {} relay-broadcast lookups, {} upstream subscriptions",
                check.origin_walks,
                check.max_hops,
                check.namespace_lookups,
                check.upstream_subscriptions
            );
        }
        Ok(())
    };
    let r = sim.start();
    row(&mut sim, r)?;
    let r = sim.idle("steady state, 20 s", Duration::from_secs(20));
    row(&mut sim, r)?;
    let hub = sim.hubs()[0];
    let r = sim.fail("hub failure", &[hub]);
    row(&mut sim, r)?;
    let r = sim.restore("hub return", &[hub]);
    row(&mut sim, r)?;
    let batch = sim.pick(cfg.relays / 20, false);
    let r = sim.fail(&format!("{} relays fail", batch.len()), &batch);
    row(&mut sim, r)?;
    let r = sim.restore(&format!("{} relays return", batch.len()), &batch);
    row(&mut sim, r)?;
    println!();
    println!("wall time {:.1} s", wall.elapsed().as_secs_f64());
    Ok(())
}
