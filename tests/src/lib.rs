//! Helpers of tiermesh's end-to-end tests: they start the real `tiermesh` binary as child
//! processes on loopback and watch what those print.
//!
//! - [`tiermesh_bin`] finds the binary (building it once if needed).
//! - [`Proc`] is one child process: its stdout and stderr lines are collected as they come,
//!   [`Proc::wait_line`] waits for a line with a deadline, and dropping it kills the child.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The `tiermesh` binary of this build: `$TIERMESH_BIN` if set, else the one in the target
/// directory these tests run from (the test executable lives in `<target>/<profile>/deps/`,
/// the binary in `<target>/<profile>/`). The first call runs `cargo build -p tiermesh` for
/// that profile so the binary is never older than the sources (cargo makes this quick when it
/// is up to date).
pub fn tiermesh_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match find_or_build() {
        Ok(p) => p,
        Err(e) => panic!("cannot find or build the tiermesh binary: {e:#}"),
    })
}

fn find_or_build() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("TIERMESH_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe().context("current_exe")?;
    // <target>/<profile>/deps/<test>-<hash> or <target>/<profile>/examples/<name>.
    let profile_dir = exe
        .ancestors()
        .find(|p| {
            p.file_name().is_some_and(|n| n == "deps" || n == "examples")
                && p.parent().is_some_and(|pp| pp.join(".fingerprint").is_dir())
        })
        .and_then(Path::parent)
        .context("the test executable is not inside a cargo target directory")?
        .to_path_buf();
    let profile = profile_dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug").to_owned();
    let target = profile_dir.parent().context("no target directory")?.to_path_buf();
    let bin = profile_dir.join(format!("tiermesh{}", std::env::consts::EXE_SUFFIX));
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "tiermesh", "--bin", "tiermesh", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().context("running cargo build -p tiermesh")?;
    if !status.success() {
        bail!("cargo build -p tiermesh failed: {status}");
    }
    if !bin.is_file() {
        bail!("{} does not exist after cargo build", bin.display());
    }
    Ok(bin)
}

#[derive(Default)]
struct Output {
    lines: Vec<Line>,
    /// Streams (stdout, stderr) still open.
    open: usize,
}

/// One line a child printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// True for stderr.
    pub stderr: bool,
    /// The text, without the newline.
    pub text: String,
}

type Shared = Arc<(Mutex<Output>, Condvar)>;

/// A child process whose output is collected line by line; killed when dropped.
pub struct Proc {
    name: String,
    child: Child,
    out: Shared,
}

impl Proc {
    /// Starts `tiermesh` with `args`. `name` labels its output in failure messages.
    pub fn tiermesh<I, S>(name: &str, args: I) -> Result<Proc>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(tiermesh_bin());
        cmd.args(args);
        Proc::spawn(name, cmd)
    }

    /// Starts `cmd` with stdout and stderr captured and stdin closed.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Proc> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd.spawn().with_context(|| format!("starting {name}: {cmd:?}"))?;
        let out: Shared =
            Arc::new((Mutex::new(Output { lines: Vec::new(), open: 2 }), Condvar::new()));
        let stdout = child.stdout.take().context("no stdout")?;
        let stderr = child.stderr.take().context("no stderr")?;
        collect(stdout, false, out.clone(), name);
        collect(stderr, true, out.clone(), name);
        Ok(Proc { name: name.to_owned(), child, out })
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<Line> {
        self.out.0.lock().unwrap().lines.clone()
    }

    /// Everything printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.joined(false)
    }

    /// Everything printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.joined(true)
    }

    fn joined(&self, stderr: bool) -> String {
        let out = self.out.0.lock().unwrap();
        let mut s = String::new();
        for l in out.lines.iter().filter(|l| l.stderr == stderr) {
            s.push_str(&l.text);
            s.push('\n');
        }
        s
    }

    /// Waits until a line matching `pred` has been printed (on either stream) and returns
    /// it; fails at the deadline or when the process has closed its output without one.
    pub fn wait_line(&self, timeout: Duration, pred: impl Fn(&Line) -> bool) -> Result<Line> {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.out;
        let mut out = lock.lock().unwrap();
        loop {
            if let Some(l) = out.lines.iter().find(|l| pred(l)) {
                return Ok(l.clone());
            }
            if out.open == 0 {
                drop(out);
                bail!("{} ended without printing the line awaited\n{}", self.name, self.dump());
            }
            let now = Instant::now();
            if now >= deadline {
                drop(out);
                bail!("{}: no such line within {timeout:?}\n{}", self.name, self.dump());
            }
            out = cond.wait_timeout(out, deadline - now).unwrap().0;
        }
    }

    /// Waits for a stdout line starting with `prefix` and returns the rest of it.
    pub fn wait_stdout_prefix(&self, timeout: Duration, prefix: &str) -> Result<String> {
        let l = self.wait_line(timeout, |l| !l.stderr && l.text.starts_with(prefix))?;
        Ok(l.text[prefix.len()..].trim().to_owned())
    }

    /// Waits for the process to exit (killing it at the deadline) and for its output to be
    /// read to the end.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.wait_output_closed(deadline);
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("{} did not exit within {timeout:?}\n{}", self.name, self.dump());
            }
            // The child's exit is not an event we can block on alongside a deadline
            // without a helper thread; its output closing is. Wait on that first.
            self.wait_output_closed(deadline.min(Instant::now() + Duration::from_millis(50)));
        }
    }

    fn wait_output_closed(&self, deadline: Instant) {
        let (lock, cond) = &*self.out;
        let mut out = lock.lock().unwrap();
        while out.open > 0 {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            out = cond.wait_timeout(out, deadline - now).unwrap().0;
        }
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGINT (Ctrl-C), which `tiermesh` subcommands take as "stop cleanly".
    pub fn interrupt(&self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .context("running kill -INT")?;
        if !status.success() {
            bail!("kill -INT {} failed", self.child.id());
        }
        Ok(())
    }

    /// Every line, labelled, for failure messages.
    pub fn dump(&self) -> String {
        let out = self.out.0.lock().unwrap();
        let mut s = format!("--- output of {} ---\n", self.name);
        for l in &out.lines {
            s.push_str(if l.stderr { "[err] " } else { "[out] " });
            s.push_str(&l.text);
            s.push('\n');
        }
        s
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() || std::env::var_os("TIERMESH_TEST_VERBOSE").is_some() {
            eprintln!("{}", self.dump());
        }
    }
}

fn collect(stream: impl Read + Send + 'static, stderr: bool, out: Shared, name: &str) {
    let name = name.to_owned();
    let spawned = std::thread::Builder::new().name(format!("{name}-output")).spawn({
        let out = out.clone();
        move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&buf).trim_end().to_owned();
                        let (lock, cond) = &*out;
                        lock.lock().unwrap().lines.push(Line { stderr, text });
                        cond.notify_all();
                    }
                }
            }
            let (lock, cond) = &*out;
            lock.lock().unwrap().open -= 1;
            cond.notify_all();
        }
    });
    if spawned.is_err() {
        let (lock, cond) = &*out;
        lock.lock().unwrap().open -= 1;
        cond.notify_all();
    }
}
