//! Guards the decoders and the session against inputs the fuzzers found or kept: every file
//! under `fuzz/corpus/<target>/` and `fuzz/artifacts/<target>/` is replayed through the
//! fuzz target's own code (`fuzz/src/lib.rs`), so plain `cargo test` catches a regression
//! without nightly or cargo-fuzz. A panic here is a bug in tiermesh-proto.

#[path = "../../fuzz/src/lib.rs"]
mod targets;

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Runs `f` on every saved input of `target`; returns how many there were.
fn replay(target: &str, f: fn(&[u8])) -> usize {
    let mut n = 0;
    for kind in ["corpus", "artifacts"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        files.sort();
        for path in files.into_iter().filter(|p| p.is_file()) {
            let data = std::fs::read(&path).unwrap();
            let name = path.display().to_string();
            let outcome = std::panic::catch_unwind(|| f(&data));
            assert!(outcome.is_ok(), "{name} panicked ({} bytes)", data.len());
            n += 1;
        }
    }
    n
}

#[test]
fn control_message_inputs_replay() {
    let n = replay("control_message", targets::control_message);
    assert!(n > 0, "no saved inputs for control_message under {}", fuzz_dir().display());
}

#[test]
fn data_stream_inputs_replay() {
    let n = replay("data_stream", targets::data_stream);
    assert!(n > 0, "no saved inputs for data_stream under {}", fuzz_dir().display());
}

#[test]
fn session_input_inputs_replay() {
    let n = replay("session_input", targets::session_input);
    assert!(n > 0, "no saved inputs for session_input under {}", fuzz_dir().display());
}
