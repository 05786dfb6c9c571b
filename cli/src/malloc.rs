//! How `tiermesh relay` sets up glibc's allocator: one arena, on transparent huge pages.
//!
//! A relay's hot state is spread over its connections (quinn's connection state, the send
//! scheduler's queues, each stream's buffers), and fanning one object out touches every
//! subscriber's share of it: on 4 KiB pages that is one TLB miss after another, which in a
//! virtual machine costs a two-level page walk each. On 2 MiB pages the same state takes a
//! few dozen TLB entries (docs/BENCHMARKS.md, "Huge pages for glibc's heap").
//!
//! Linux backs anonymous memory with transparent huge pages when
//! `/sys/kernel/mm/transparent_hugepage/enabled` is `always`, or is `madvise` (the common
//! default) and the program asks for them with `madvise(MADV_HUGEPAGE)`. glibc asks for its
//! heap when its tunable `glibc.malloc.hugetlb` is 1, but only in the main arena (the heap
//! that grows with `brk`, which it then grows in 2 MiB steps); the arenas it gives other
//! threads are never advised. `glibc.malloc.arena_max=1` puts every thread, the runtime's
//! workers too, on the main arena; small allocations still come from each thread's own
//! cache first, so its lock is taken rarely. The heap stays as dense as glibc's usually is,
//! so an idle subscriber costs about what it did on 4 KiB pages.
//!
//! glibc reads tunables once, as the process starts, from the environment variable
//! `GLIBC_TUNABLES`, and they cannot be set later without `unsafe` calls into the C
//! library. So a relay started without them executes itself again at once with them added
//! (same process ID, arguments, standard streams and otherwise the same environment). An
//! operator who sets `glibc.malloc.hugetlb` or `glibc.malloc.arena_max` in `GLIBC_TUNABLES`
//! keeps what they set: `GLIBC_TUNABLES=glibc.malloc.hugetlb=0` turns huge pages off.

use std::ffi::{OsStr, OsString};

/// The environment variable glibc reads its tunables from.
const VARIABLE: &str = "GLIBC_TUNABLES";

/// Set in the environment of the relay's second start: it never executes itself a third
/// time, whatever glibc did with `GLIBC_TUNABLES` (a program with file capabilities or
/// set-user-ID runs in glibc's secure mode, which removes tunables from its environment).
const RESTARTED: &str = "TIERMESH_RELAY_MALLOC_SET";

/// What the relay adds: a heap on transparent huge pages, one arena for every thread.
const RELAY_TUNABLES: &str = "glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1";

#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
/// The value `GLIBC_TUNABLES` should have for the relay, or `None` to leave it as it is: when
/// it already names either setting (the operator's choice wins) or is not UTF-8.
fn relay_tunables(current: Option<&OsStr>) -> Option<OsString> {
    let Some(current) = current else {
        return Some(RELAY_TUNABLES.into());
    };
    let current = current.to_str()?;
    let named = current.split(':').any(|t| {
        t.starts_with("glibc.malloc.hugetlb=") || t.starts_with("glibc.malloc.arena_max=")
    });
    match (named, current.is_empty()) {
        (true, _) => None,
        (false, true) => Some(RELAY_TUNABLES.into()),
        (false, false) => Some(format!("{current}:{RELAY_TUNABLES}").into()),
    }
}

/// Executes this program again with the relay's tunables unless they are set already; on
/// return, the process runs with what it has (a failed `exec` is reported on stderr).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune_for_relay() {
    use std::os::unix::process::CommandExt;

    if std::env::var_os(RESTARTED).is_some() {
        return;
    }
    let Some(tunables) = relay_tunables(std::env::var_os(VARIABLE).as_deref()) else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "tiermesh".into());
    // /proc/self/exe, not the path the program was started by: it is this very binary even
    // if that path now names another file (a rebuild) or none.
    let err = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .env(VARIABLE, tunables)
        .env(RESTARTED, "1")
        .exec();
    eprintln!(
        "tiermesh relay: running without huge pages for the heap: could not restart with {VARIABLE} set: {err}"
    );
}

/// Other C libraries (and other systems) keep their own allocator settings.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_for_relay() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_tunables_are_added_to_what_the_operator_set() {
        assert_eq!(relay_tunables(None), Some(RELAY_TUNABLES.into()));
        assert_eq!(relay_tunables(Some(OsStr::new(""))), Some(RELAY_TUNABLES.into()));
        assert_eq!(
            relay_tunables(Some(OsStr::new("glibc.malloc.tcache_count=16"))),
            Some(format!("glibc.malloc.tcache_count=16:{RELAY_TUNABLES}").into())
        );
    }

    #[test]
    fn an_operator_setting_of_either_tunable_is_kept() {
        for set in [
            "glibc.malloc.hugetlb=0",
            "glibc.malloc.arena_max=4",
            "glibc.malloc.tcache_count=16:glibc.malloc.hugetlb=1",
            RELAY_TUNABLES,
        ] {
            assert_eq!(relay_tunables(Some(OsStr::new(set))), None, "{set}");
        }
        // A name that only starts like one of them is another tunable.
        assert!(relay_tunables(Some(OsStr::new("glibc.malloc.hugetlbx=1"))).is_some());
    }
}
