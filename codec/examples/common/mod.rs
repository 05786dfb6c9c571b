//! What the codec examples share.

use anyhow::{Context, Result};

/// Process CPU time (user + system, all threads) in milliseconds, from /proc/self/stat.
pub fn cpu_ms() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<f64> {
        Ok(f.get(i).context("stat has too few fields")?.parse::<f64>()?)
    };
    let ticks = field(11)? + field(12)?;
    // Linux reports in USER_HZ, 100 on every mainstream configuration.
    Ok(ticks * 10.0)
}
