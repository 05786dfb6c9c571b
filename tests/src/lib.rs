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
        cmd.env("NO_COLOR", "1");
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

/// `text` without terminal colour sequences (`ESC [ … letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
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
                        let text = strip_ansi(String::from_utf8_lossy(&buf).trim_end());
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

/// A `tiermesh relay` child on loopback, with what it printed about itself.
pub struct Relay {
    /// The process.
    pub proc: Proc,
    /// The UDP address serving MoQT (raw QUIC and WebTransport).
    pub addr: std::net::SocketAddr,
    /// The ops listener (`/metrics`, `/healthz`).
    pub ops: std::net::SocketAddr,
    /// SHA-256 of its generated certificate, 64 hex digits.
    pub cert_hash: String,
}

impl Relay {
    /// Starts `tiermesh relay` on ephemeral loopback ports with a generated certificate,
    /// plus `extra` flags, and waits until it has printed its addresses and certificate hash.
    pub fn start(extra: &[&str]) -> Result<Relay> {
        let mut args =
            vec!["relay", "--listen", "127.0.0.1:0", "--ops", "127.0.0.1:0", "--tls-generate"];
        args.extend_from_slice(extra);
        let proc = Proc::tiermesh("relay", &args)?;
        let wait = Duration::from_secs(30);
        // `moqt://ADDR`, `listening on ADDR` or `local_addr=ADDR`; `http://ADDR`, `ops on ADDR`
        // or `ops=ADDR`.
        let moqt = |t: &str| {
            find_addr(t, "moqt://")
                .or_else(|| find_addr(t, "listening on "))
                .or_else(|| find_addr(t, "local_addr="))
        };
        let http = |t: &str| {
            find_addr(t, "http://")
                .or_else(|| find_addr(t, "ops on "))
                .or_else(|| find_addr(t, "ops="))
        };
        let addr = moqt(&proc.wait_line(wait, |l| moqt(&l.text).is_some())?.text);
        let ops = http(&proc.wait_line(wait, |l| http(&l.text).is_some())?.text);
        let cert_hash = proc
            .wait_line(wait, |l| find_hash(&l.text).is_some())
            .map(|l| find_hash(&l.text).unwrap())?;
        let (addr, ops) = (addr.context("relay address")?, ops.context("ops address")?);
        Ok(Relay { proc, addr, ops, cert_hash })
    }

    /// `scheme://ADDR/broadcast`.
    pub fn url(&self, scheme: &str, broadcast: &str) -> String {
        format!("{scheme}://{}/{broadcast}", self.addr)
    }

    /// The flag pinning its certificate.
    pub fn pin(&self) -> [String; 2] {
        ["--tls-cert-hash".to_owned(), self.cert_hash.clone()]
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> Result<String> {
        http_get(self.ops, "/metrics")
    }
}

/// The first `host:port` after `scheme` in `text` that parses as a socket address.
pub fn find_addr(text: &str, scheme: &str) -> Option<std::net::SocketAddr> {
    let mut rest = text;
    while let Some(i) = rest.find(scheme) {
        let after = &rest[i + scheme.len()..];
        let end =
            after.find(|c: char| c == '/' || c.is_whitespace() || c == '"').unwrap_or(after.len());
        if let Ok(a) = after[..end].parse() {
            return Some(a);
        }
        rest = after;
    }
    None
}

/// The first word of 64 hex digits in `text` (a certificate's SHA-256).
pub fn find_hash(text: &str) -> Option<String> {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .find(|w| w.len() == 64)
        .map(str::to_ascii_lowercase)
}

/// A plain HTTP/1.1 GET on loopback, returning the body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<String> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Ok(dechunk(body));
    }
    Ok(body.to_owned())
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// The value of an unlabelled Prometheus sample, or the sum over its labelled samples.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else { continue };
        let base = key.split('{').next().unwrap_or(key);
        if base == name {
            let v: f64 = value.parse().ok()?;
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// Runs `tiermesh sub --json` with `args` to the end and parses its report. Returns the
/// report (if it printed one), the exit status and the process (for its stderr).
pub fn sub_json(
    name: &str,
    args: &[String],
    timeout: Duration,
) -> Result<(Option<Report>, bool, Proc)> {
    let mut all = vec!["sub".to_owned(), "--json".to_owned()];
    all.extend_from_slice(args);
    let mut p = Proc::tiermesh(name, &all)?;
    let status = p.wait_exit(timeout)?;
    let out = p.stdout();
    let report = match out.lines().find(|l| l.starts_with('{')) {
        Some(l) => Some(serde_json::from_str(l).with_context(|| format!("bad JSON: {l}"))?),
        None => None,
    };
    Ok((report, status.success(), p))
}

pub use tiermesh_client::report::{Report, TrackReport};

/// Starts `tiermesh pub` on `url` with `extra` flags and waits until the relay has accepted
/// the broadcast (`published …` on stdout).
pub fn start_pub(name: &str, url: &str, extra: &[String]) -> Result<Proc> {
    let mut args = vec!["pub".to_owned(), url.to_owned()];
    args.extend_from_slice(extra);
    let p = Proc::tiermesh(name, &args)?;
    p.wait_line(Duration::from_secs(30), |l| !l.stderr && l.text.starts_with("published "))?;
    Ok(p)
}

/// The `q` quantile (0..1) of a Prometheus histogram, in the histogram's unit, interpolated
/// linearly within the bucket that holds it (as PromQL's `histogram_quantile` does).
pub fn histogram_quantile(text: &str, name: &str, q: f64) -> Option<f64> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else { continue };
        let (le, count) = rest.split_once("\"} ")?;
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
        buckets.push((le, count.trim().parse().ok()?));
    }
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let within = count - below;
            let frac = if within > 0.0 { (rank - below) / within } else { 1.0 };
            return Some(lower + (le - lower) * frac);
        }
        lower = le;
        below = count;
    }
    None
}

/// Objects a report says arrived by subscription (not by FETCH), and their bytes are not
/// known separately, so only objects: all tracks together.
pub fn subscribed_objects(report: &Report) -> u64 {
    report.tracks.iter().map(|t| t.objects - t.fetched_objects).sum()
}

/// Waits until `cond` holds for the relay's metrics text, reading `/metrics` again every
/// 50 ms, with a deadline. (Metrics change without a notification; this is the only way to
/// watch them.)
pub fn wait_metrics(
    relay: &Relay,
    timeout: Duration,
    cond: impl Fn(&str) -> bool,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = relay.metrics()?;
        if cond(&text) {
            return Ok(text);
        }
        if Instant::now() >= deadline {
            bail!("metrics condition not met within {timeout:?}; last metrics:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// stdout and stderr of a process, for searching error messages.
pub fn all_output(p: &Proc) -> String {
    format!("{}{}", p.stdout(), p.stderr())
}
