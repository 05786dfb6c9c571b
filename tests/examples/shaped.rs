//! Prints the tables of docs/BENCHMARKS.md "Shaped links": the synthetic broadcast through a
//! relay with `tiermesh link` in front of the subscriber or the publisher, every combination
//! of the lists given, one run each, in order.
//!
//! ```text
//! cargo run -p tiermesh-tests --example shaped -- \
//!     profile=rural,congested,satellite,step side=sub,pub mode=priority,fifo cc=default watch=15
//! ```
//! Defaults: `profile=rural side=sub mode=priority,fifo cc=default watch=15`. `cc` takes
//! `default`, `cubic`, `bbr`, `newreno`, `delay`. For `step` the link runs 30 s (the cut is 10 s to
//! 20 s after the link starts) and the watch is 26 s; the last column gives the seconds from
//! the cut's end until 720p delivers every group complete again.
//!
//! `dumped=DIR` prints the rows of the runs saved in DIR (`TIERMESH_SHAPED_DUMP=DIR` keeps
//! each run's report) instead of running anything: the figures computed again, e.g. after
//! a change of their definitions.

#[path = "../tests/shaped_link/mod.rs"]
mod shaped;

use std::time::Duration;

fn list(args: &[String], key: &str, default: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    let value = args.iter().find_map(|a| a.strip_prefix(&prefix)).unwrap_or(default);
    value.split(',').map(str::to_owned).collect()
}

/// Prints the table row of `outcome`, with the seconds 720p took to recover for `step`.
fn print_row(outcome: &shaped::Outcome) {
    let f = shaped::figures(outcome);
    let back = if outcome.run.profile.name == "step" {
        shaped::recovery_s(outcome, "video/720p").map_or("never".to_owned(), |s| format!("{s:.1}"))
    } else {
        "-".to_owned()
    };
    println!("{} {back} |", shaped::row(outcome, &f));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let profiles = list(&args, "profile", "rural");
    let sides = list(&args, "side", "sub");
    let modes = list(&args, "mode", "priority,fifo");
    let ccs = list(&args, "cc", "default");
    let watch: u64 = list(&args, "watch", "15")[0].parse().expect("watch=SECONDS");
    println!("{} 720p back after step (s) |", shaped::HEADER.lines().next().unwrap_or(""));
    println!("{}---|", shaped::HEADER.lines().nth(1).unwrap_or(""));
    if let Some(dir) = args.iter().find_map(|a| a.strip_prefix("dumped=")) {
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot read {dir}: {e}"))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for path in paths {
            let Some(outcome) = shaped::dumped(&path) else {
                eprintln!("{}: not a saved shaped run", path.display());
                continue;
            };
            print_row(&outcome);
        }
        return;
    }
    for profile in &profiles {
        let p = shaped::profile(profile).unwrap_or_else(|| panic!("unknown profile {profile}"));
        for side in &sides {
            for cc in &ccs {
                for mode in &modes {
                    let mut run = shaped::Run::new(p);
                    run.mode = if mode == "fifo" { "fifo" } else { "priority" };
                    run.side = if side == "pub" {
                        shaped::Side::Publisher
                    } else {
                        shaped::Side::Subscriber
                    };
                    run.cc = match cc.as_str() {
                        "cubic" => Some("cubic"),
                        "bbr" => Some("bbr"),
                        "newreno" => Some("newreno"),
                        "delay" => Some("delay"),
                        _ => None,
                    };
                    run.watch = Duration::from_secs(watch);
                    if p.name == "step" {
                        run.link_run = Duration::from_secs(30);
                        run.watch = Duration::from_secs(26);
                    }
                    let outcome = shaped::run(&run);
                    print_row(&outcome);
                }
            }
        }
    }
}
