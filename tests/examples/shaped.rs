//! Prints the side-by-side table of docs/BENCHMARKS.md "Shaped links": the synthetic
//! broadcast through a relay to a subscriber behind `tiermesh link` with the relay's
//! priority scheduler and in FIFO mode.
//!
//! `cargo run -p tiermesh-tests --example shaped [PROFILE...]` (default: rural).

#[path = "../tests/shaped_rural.rs"]
mod shaped;

fn main() {
    let mut profiles: Vec<String> = std::env::args().skip(1).collect();
    if profiles.is_empty() {
        profiles.push("rural".to_owned());
    }
    println!("{}", shaped::HEADER);
    for profile in &profiles {
        let rate = match profile.as_str() {
            "congested" => 600_000.0,
            "satellite" => 2_000_000.0,
            "step" => 3_000_000.0,
            _ => shaped::RURAL_RATE,
        };
        for mode in ["priority", "fifo"] {
            let report = shaped::run(mode, profile);
            println!("{}", shaped::row(profile, &shaped::figures(mode, &report, rate)));
        }
    }
}
