//! Guards that `tiermesh relay` runs on glibc's heap with huge pages and one arena unless the
//! operator chose otherwise: the relay's environment (as /proc shows it, after it executed
//! itself again) carries the tunables, or exactly what the operator set, and it restarts at
//! most once.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// What the relay adds to `GLIBC_TUNABLES`.
const RELAY_TUNABLES: &str = "glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1";

/// A relay on free loopback ports, killed when dropped.
struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a relay with these environment variables and no others, and returns it once it
/// printed its certificate hash (it is running, past any restart), with the
/// `GLIBC_TUNABLES` it runs with (`None`: not set) and whether it restarted itself.
fn relay_with(env: &[(&str, &str)]) -> (Relay, Option<String>, bool) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tiermesh"));
    cmd.args(["relay", "--listen", "127.0.0.1:0", "--ops", "127.0.0.1:0", "--tls-generate"])
        .env_clear()
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut relay = Relay(cmd.spawn().expect("starting tiermesh relay"));
    let stdout = relay.0.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let hash = rx.recv_timeout(Duration::from_secs(30)).expect("the relay printed nothing in 30 s");
    assert_eq!(hash.trim().len(), 64, "expected the certificate hash, got {hash:?}");
    let environ = std::fs::read(format!("/proc/{}/environ", relay.0.id())).expect("environ");
    // glibc ends each tunable's value it reads with a NUL in place (in the memory /proc
    // shows), so the variable reads as NUL-separated pieces, each a `glibc.` tunable.
    let environ = String::from_utf8_lossy(&environ);
    let mut vars = environ.split('\0');
    let tunables = vars.find_map(|v| v.strip_prefix("GLIBC_TUNABLES=")).map(|first| {
        let rest = vars.clone().take_while(|t| t.starts_with("glibc."));
        std::iter::once(first).chain(rest).collect::<Vec<_>>().join(":")
    });
    let restarted = environ.split('\0').any(|v| v == "TIERMESH_RELAY_MALLOC_SET=1");
    (relay, tunables, restarted)
}

#[test]
fn a_relay_runs_with_huge_pages_and_one_arena() {
    let (_relay, tunables, restarted) = relay_with(&[]);
    assert_eq!(tunables.as_deref(), Some(RELAY_TUNABLES));
    assert!(restarted);
    let (_relay, tunables, _) = relay_with(&[("GLIBC_TUNABLES", "glibc.malloc.tcache_count=8")]);
    assert_eq!(
        tunables,
        Some(format!("glibc.malloc.tcache_count=8:{RELAY_TUNABLES}")),
        "other tunables are kept"
    );
}

#[test]
fn an_operator_choice_of_either_tunable_is_kept() {
    for set in ["glibc.malloc.hugetlb=0", "glibc.malloc.arena_max=2"] {
        let (_relay, tunables, restarted) = relay_with(&[("GLIBC_TUNABLES", set)]);
        assert_eq!(tunables.as_deref(), Some(set));
        assert!(!restarted, "{set}");
    }
}

#[test]
fn a_restarted_relay_does_not_restart_again() {
    // As in glibc's secure mode (file capabilities, set-user-ID), which drops the tunables
    // from the environment: the mark alone stops a second restart.
    let (_relay, tunables, _) = relay_with(&[("TIERMESH_RELAY_MALLOC_SET", "1")]);
    assert_eq!(tunables, None);
}
