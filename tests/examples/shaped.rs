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
//! the cut's end until 720p delivers every group complete again. An unknown key or value is
//! an error that lists what is accepted. `fiber` is not taken: the figures are shares of the
//! link's rate, and `fiber` has none.
//!
//! `dumped=DIR` prints the rows of the runs saved in DIR (`TIERMESH_SHAPED_DUMP=DIR` keeps
//! each run's report, creating DIR if needed; a report that could not be written stops the
//! harness with an error) instead of running anything: the figures computed again, e.g. after
//! a change of their definitions.

#[path = "../tests/shaped_link/mod.rs"]
mod shaped;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

/// The keys the harness takes.
const KEYS: [&str; 6] = ["profile", "side", "mode", "cc", "watch", "dumped"];
/// What `side=` takes, and who is behind the link.
const SIDES: [(&str, shaped::Side); 2] =
    [("sub", shaped::Side::Subscriber), ("pub", shaped::Side::Publisher)];
/// What `mode=` takes.
const MODES: [&str; 2] = ["priority", "fifo"];
/// What `cc=` takes, and the controller passed on (`None`: the binaries' default).
const CCS: [(&str, Option<&str>); 5] = [
    ("default", None),
    ("cubic", Some("cubic")),
    ("bbr", Some("bbr")),
    ("newreno", Some("newreno")),
    ("delay", Some("delay")),
];

/// The command line, checked.
#[derive(Debug)]
struct Args {
    profiles: Vec<shaped::Profile>,
    sides: Vec<shaped::Side>,
    modes: Vec<&'static str>,
    ccs: Vec<Option<&'static str>>,
    watch: u64,
    dumped: Option<PathBuf>,
}

/// Each comma-separated item of `value` looked up in `accepted` by name; an unknown one is
/// an error naming `key` and every accepted name.
fn pick<T: Copy>(
    key: &str,
    value: &str,
    accepted: &[T],
    name: impl Fn(&T) -> &str,
) -> anyhow::Result<Vec<T>> {
    value
        .split(',')
        .map(|item| {
            accepted.iter().find(|a| name(a) == item).copied().with_context(|| {
                let names: Vec<&str> = accepted.iter().map(&name).collect();
                format!("unknown {key} `{item}`: {key}= takes {}", names.join(", "))
            })
        })
        .collect()
}

impl Args {
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut given: Vec<(&str, &str)> = Vec::new();
        for arg in args {
            let Some((key, value)) = arg.split_once('=').filter(|(k, _)| KEYS.contains(k)) else {
                bail!(
                    "unknown argument `{arg}`: expected KEY=VALUE with KEY one of {}",
                    KEYS.join(", ")
                );
            };
            if given.iter().any(|(k, _)| *k == key) {
                bail!("`{key}=` given twice");
            }
            given.push((key, value));
        }
        let get = |key: &str, default: &'static str| {
            given.iter().find(|(k, _)| *k == key).map_or(default, |(_, v)| *v)
        };
        let watch = get("watch", "15");
        Ok(Self {
            profiles: pick("profile", get("profile", "rural"), &shaped::PROFILES, |p| p.name)?,
            sides: pick("side", get("side", "sub"), &SIDES, |s| s.0)?
                .into_iter()
                .map(|s| s.1)
                .collect(),
            modes: pick("mode", get("mode", "priority,fifo"), &MODES, |m| m)?,
            ccs: pick("cc", get("cc", "default"), &CCS, |c| c.0)?
                .into_iter()
                .map(|c| c.1)
                .collect(),
            watch: watch.parse().ok().with_context(|| {
                format!("watch=`{watch}`: watch= takes whole seconds, e.g. watch=15")
            })?,
            dumped: given.iter().find(|(k, _)| *k == "dumped").map(|(_, v)| PathBuf::from(v)),
        })
    }
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

/// The `.json` files in `dir`.
fn json_files(dir: &Path) -> anyhow::Result<BTreeSet<PathBuf>> {
    Ok(std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect())
}

/// Creates the folder `TIERMESH_SHAPED_DUMP` names, if missing, so that a bad one stops the
/// harness before any run.
fn create_dump_dir() -> anyhow::Result<()> {
    let Some(dir) = std::env::var_os("TIERMESH_SHAPED_DUMP").map(PathBuf::from) else {
        return Ok(());
    };
    std::fs::create_dir_all(&dir).with_context(|| {
        format!("cannot create TIERMESH_SHAPED_DUMP={} to write the reports in", dir.display())
    })
}

fn main() -> anyhow::Result<()> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let args = Args::parse(&raw)?;
    if args.dumped.is_none() {
        create_dump_dir()?;
    }
    println!("{} 720p back after step (s) |", shaped::HEADER.lines().next().unwrap_or(""));
    println!("{}---|", shaped::HEADER.lines().nth(1).unwrap_or(""));
    if let Some(dir) = &args.dumped {
        for path in json_files(dir)? {
            let Some(outcome) = shaped::dumped(&path) else {
                eprintln!("{}: not a saved shaped run", path.display());
                continue;
            };
            print_row(&outcome);
        }
        return Ok(());
    }
    for &p in &args.profiles {
        for &side in &args.sides {
            for &cc in &args.ccs {
                for &mode in &args.modes {
                    let mut run = shaped::Run::new(p);
                    run.mode = mode;
                    run.side = side;
                    run.cc = cc;
                    run.watch = Duration::from_secs(args.watch);
                    if p.name == "step" {
                        run.link_run = Duration::from_secs(30);
                        run.watch = Duration::from_secs(26);
                    }
                    let outcome = shaped::run(&run);
                    print_row(&outcome);
                    if let Some(Err(why)) = &outcome.saved {
                        bail!("the run above: {why}");
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Args> {
        Args::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn bad_arguments_are_errors_that_list_what_is_accepted() {
        let err = parse(&["profile=rural,fiber"]).unwrap_err().to_string();
        assert!(
            err.contains("`fiber`") && err.contains("rural, congested, satellite, step"),
            "{err}"
        );
        let err = parse(&["side=both"]).unwrap_err().to_string();
        assert!(err.contains("`both`") && err.contains("sub, pub"), "{err}");
        let err = parse(&["mode=lifo"]).unwrap_err().to_string();
        assert!(err.contains("priority, fifo"), "{err}");
        let err = parse(&["cc=reno"]).unwrap_err().to_string();
        assert!(err.contains("default, cubic, bbr, newreno, delay"), "{err}");
        let err = parse(&["watch=15s"]).unwrap_err().to_string();
        assert!(err.contains("whole seconds"), "{err}");
        let err = parse(&["profiles=rural"]).unwrap_err().to_string();
        assert!(err.contains("`profiles=rural`") && err.contains("profile, side"), "{err}");
        assert!(parse(&["rural"]).is_err());
        assert!(parse(&["cc=bbr", "cc=delay"]).is_err());
    }

    #[test]
    fn good_arguments_and_defaults_parse() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.profiles.iter().map(|p| p.name).collect::<Vec<_>>(), ["rural"]);
        assert_eq!(a.sides, [shaped::Side::Subscriber]);
        assert_eq!(a.modes, ["priority", "fifo"]);
        assert_eq!(a.ccs, [None]);
        assert_eq!(a.watch, 15);
        assert!(a.dumped.is_none());
        let a = parse(&["profile=step,congested", "side=pub,sub", "cc=delay,default", "watch=26"])
            .unwrap();
        assert_eq!(a.profiles.iter().map(|p| p.name).collect::<Vec<_>>(), ["step", "congested"]);
        assert_eq!(a.sides, [shaped::Side::Publisher, shaped::Side::Subscriber]);
        assert_eq!(a.ccs, [Some("delay"), None]);
        assert_eq!(a.watch, 26);
    }
}
