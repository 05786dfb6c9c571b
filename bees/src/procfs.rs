//! Reading a local process's CPU time and resident memory from `/proc/<pid>`.

use std::path::PathBuf;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// User plus system CPU time, seconds.
    pub cpu_s: f64,
    /// Resident set size (VmRSS), KiB.
    pub rss_kib: u64,
}

/// Why a process could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// `/proc/<pid>/…` could not be read (no such process, or not Linux).
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file did not have the expected fields.
    #[error("unexpected contents of {0}")]
    Format(PathBuf),
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`); Linux has used
/// 100 on every common architecture for decades, so that is the fallback.
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}

/// A process to sample.
#[derive(Debug, Clone)]
pub struct Process {
    pid: u32,
    ticks: f64,
}

impl Process {
    /// The process `pid`; checks that it can be read now.
    ///
    /// # Errors
    /// The process does not exist or its files do not parse.
    pub fn new(pid: u32) -> Result<Self, ProcError> {
        let p = Self { pid, ticks: clock_ticks() };
        p.sample()?;
        Ok(p)
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Reads CPU time and memory now.
    ///
    /// # Errors
    /// The process is gone or its files do not parse.
    pub fn sample(&self) -> Result<Sample, ProcError> {
        let stat = read(self.pid, "stat")?;
        let status = read(self.pid, "status")?;
        Ok(Sample {
            cpu_s: parse_cpu_ticks(&stat)
                .ok_or_else(|| path(self.pid, "stat"))
                .map_err(ProcError::Format)? as f64
                / self.ticks,
            rss_kib: parse_rss_kib(&status)
                .ok_or_else(|| path(self.pid, "status"))
                .map_err(ProcError::Format)?,
        })
    }
}

fn path(pid: u32, file: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{file}"))
}

fn read(pid: u32, file: &str) -> Result<String, ProcError> {
    let path = path(pid, file);
    std::fs::read_to_string(&path).map_err(|source| ProcError::Read { path, source })
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field 2)
/// is in parentheses and may hold spaces and parentheses, so fields are counted after the
/// last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ")" come field 3 (state) onwards: utime is field 14, the 12th from here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The `VmRSS:` line of `/proc/<pid>/status`, KiB.
fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status_parse() {
        let stat = "1234 (tier mesh) (x) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        let status = "Name:\ttiermesh\nVmPeak:\t 9 kB\nVmRSS:\t   20480 kB\n";
        assert_eq!(parse_rss_kib(status), Some(20480));
        assert_eq!(parse_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let p = Process::new(std::process::id()).unwrap();
        let s = p.sample().unwrap();
        assert!(s.rss_kib > 0);
        assert!(s.cpu_s >= 0.0);
        assert!(Process::new(u32::MAX).is_err());
    }
}
