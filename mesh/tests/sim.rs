//! Guards the mesh's routing at small scale on virtual time: 100 relays in 5 regions with
//! 500 broadcasts converge, form no loops, hold one upstream subscription per track, and
//! re-route subscribers around a failed hub and a batch of failed relays.

use std::time::Duration;

use tiermesh_mesh::sim::{PhaseReport, Sim, SimConfig};

fn show(r: &PhaseReport) {
    println!(
        "{:<20} live {:>4}  converged {:>6.1} ms  msgs/relay {:>6.1}  bytes/relay {:>8.0}  moves {:>4}  NGR {:>4}  loops live {} dead {} of {} samples",
        r.name,
        r.live_relays,
        r.convergence.as_secs_f64() * 1000.0,
        r.messages_per_relay(),
        r.bytes_per_relay(),
        r.moves,
        r.new_group_requests,
        r.loops_live,
        r.loops_dead,
        r.loop_samples,
    );
}

#[test]
fn small_mesh_converges_fails_over_and_recovers() {
    let mut sim = Sim::new(SimConfig::default()).unwrap();
    let start = sim.start();
    show(&start);
    let check = sim.check().unwrap();
    assert_eq!(check.origin_walks, 100 * 100);
    assert_eq!(check.namespace_lookups, 100 * 500);
    assert!(check.upstream_subscriptions > 0);
    assert!(
        start.convergence < Duration::from_secs(2),
        "initial convergence took {:?}",
        start.convergence
    );

    // The hub that carries the most upstream subscriptions fails.
    let hub = sim.hubs()[0];
    let fail = sim.fail("hub failure", &[hub]);
    show(&fail);
    sim.check().unwrap();
    assert!(fail.convergence < Duration::from_secs(2), "failover took {:?}", fail.convergence);
    assert!(
        fail.new_group_requests > 0,
        "subscriptions behind the hub moved with NEW GROUP REQUEST"
    );
    assert_eq!(fail.loops_live + fail.loops_dead, 0, "no loop seen while routes changed");

    let back = sim.restore("hub return", &[hub]);
    show(&back);
    sim.check().unwrap();

    let batch = sim.pick(10, false);
    let down = sim.fail("10 relays fail", &batch);
    show(&down);
    sim.check().unwrap();
    assert_eq!(down.loops_live, 0);
    let up = sim.restore("10 relays return", &batch);
    show(&up);
    sim.check().unwrap();

    // Dead relays' membership records age out after the TTL.
    let idle = sim.idle("idle 40 s", Duration::from_secs(40));
    show(&idle);
    sim.check().unwrap();
    let members = sim.node(0).unwrap().members();
    assert_eq!(members.len(), 100);
    assert_eq!(idle.moves, 0, "nothing moves when nothing changes");
}

/// Same seed, same run: every figure of every phase repeats exactly.
#[test]
fn simulation_is_deterministic() {
    let cfg = SimConfig {
        relays: 40,
        regions: 4,
        broadcasts: 100,
        subscribers: 60,
        ..SimConfig::default()
    };
    let run = || {
        let mut sim = Sim::new(cfg.clone()).unwrap();
        let a = sim.start();
        let hub = sim.hubs()[1];
        let b = sim.fail("hub failure", &[hub]);
        let c = sim.restore("hub return", &[hub]);
        sim.check().unwrap();
        [a, b, c].map(|r| (r.convergence, r.messages, r.bytes, r.moves, r.new_group_requests))
    };
    assert_eq!(run(), run());
}

/// Other seeds, other topologies and failure sets: the checks and the absence of loops do
/// not depend on one lucky layout.
#[test]
fn other_seeds_converge_without_loops() {
    for seed in 2..8 {
        let cfg = SimConfig {
            relays: 60,
            regions: 4,
            broadcasts: 150,
            subscribers: 100,
            seed,
            ..SimConfig::default()
        };
        let mut sim = Sim::new(cfg).unwrap();
        let mut reports = vec![sim.start()];
        sim.check().unwrap_or_else(|e| panic!("seed {seed} start: {e}"));
        let batch = sim.pick(6, false);
        reports.push(sim.fail("6 relays fail", &batch));
        sim.check().unwrap_or_else(|e| panic!("seed {seed} fail: {e}"));
        let hubs = sim.pick(2, true);
        reports.push(sim.fail("2 hubs fail", &hubs));
        sim.check().unwrap_or_else(|e| panic!("seed {seed} hubs: {e}"));
        reports.push(sim.restore("all return", &[batch, hubs].concat()));
        sim.check().unwrap_or_else(|e| panic!("seed {seed} return: {e}"));
        for r in &reports {
            show(r);
            assert_eq!(r.loops_live, 0, "seed {seed} {}", r.name);
        }
    }
}
