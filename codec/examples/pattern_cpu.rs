//! CPU time per frame of the AV1 ladder that `tiermesh pub --test-pattern --codec av1` runs.
//!
//! `cargo run -p tiermesh-codec --example pattern_cpu [-- FRAMES [360p|180p|360p+180p]]`
//! (debug build: the dev profile's settings) or with `--release`; the second argument runs
//! that case only.
//!
//! The source is what the publisher draws: the 640x360 test pattern without noise, taken
//! through `LadderConfig::av1_low()` (360p at 550 kbit/s, 180p at 150 kbit/s), one rung at
//! a time and both together, as fast as it goes (no frame clock). CPU is the process's
//! user + system time, so the figure does not depend on what else the machine runs.

use std::time::Instant;

use anyhow::Result;
use tiermesh_codec::test_pattern::Generator;
use tiermesh_codec::{Ladder, LadderConfig};

mod common;
use common::cpu_ms;

fn main() -> Result<()> {
    let frames: u32 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(150);
    let full = LadderConfig::av1_low();
    let top = &full.rungs[0];
    let g = Generator::new(top.width, top.height, full.source_fps)?;
    let cases = [
        ("360p", vec![full.rungs[0].clone()]),
        ("180p", vec![full.rungs[1].clone()]),
        ("360p+180p", full.rungs.clone()),
    ];
    let only = std::env::args().nth(2);
    println!("{frames} frames of the {}x{} test pattern, av1_low ladder", top.width, top.height);
    for (name, rungs) in cases {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let mut ladder = Ladder::new(full.clone().rungs(rungs))?;
        let mut bytes = 0;
        let draw_cpu0 = cpu_ms()?;
        let pictures: Vec<_> = (0..frames).map(|i| g.frame(i, u64::from(i) * 33_333)).collect();
        let draw = cpu_ms()? - draw_cpu0;
        let cpu0 = cpu_ms()?;
        let t0 = Instant::now();
        for (i, p) in pictures.iter().enumerate() {
            bytes += ladder.push(p, i as u64 * 33_333)?.iter().map(|e| e.data.len()).sum::<usize>();
        }
        bytes += ladder.flush()?.iter().map(|e| e.data.len()).sum::<usize>();
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_ms()? - cpu0;
        println!(
            "{name}: {:.1} ms CPU a frame ({:.1} fps on the wall), drawing {:.2} ms, {:.0} kbit/s",
            cpu / f64::from(frames),
            f64::from(frames) / wall,
            draw / f64::from(frames),
            bytes as f64 * 8.0 * 30.0 / f64::from(frames) / 1000.0
        );
    }
    Ok(())
}
