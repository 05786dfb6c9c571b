//! Guards that the end-to-end harness runs the real `tiermesh` binary of this build, and
//! that the client subcommands exist with the flags the README tour uses.

use std::time::Duration;

use tiermesh_tests::Proc;

#[test]
fn tiermesh_binary_runs_and_names_its_version() {
    let mut p = Proc::tiermesh("tiermesh --version", ["--version"]).unwrap();
    assert!(p.wait_exit(Duration::from_secs(30)).unwrap().success());
    assert!(p.stdout().starts_with("tiermesh "), "{}", p.dump());
}
