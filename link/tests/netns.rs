//! Guards the emulator's main use outside loopback: placed in a middle network namespace
//! between a client namespace and a server namespace (veth pairs, no routing), it forwards
//! both ways and adds its delay. Needs root and `ip` (as CI has); elsewhere it says it was
//! skipped. Each endpoint is this test binary re-run inside `ip netns exec` in a role.

use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, UdpSocket},
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use tiermesh_link::{Emulator, EmulatorConfig, LinkParams};

/// The environment variable that tells a re-run of this binary which role to play.
const ROLE_ENV: &str = "TIERMESH_LINK_NETNS_ROLE";
/// Longest the test waits for any one step.
const DEADLINE: Duration = Duration::from_secs(20);
/// How long the echo server and the emulator live at most (they are killed earlier).
const ROLE_LIFETIME_SECS: u64 = 30;

const CLIENT_ADDR: &str = "10.77.1.1";
const MIDDLE_CLIENT_SIDE: &str = "10.77.1.2";
const MIDDLE_SERVER_SIDE: &str = "10.77.2.1";
const SERVER_ADDR: &str = "10.77.2.2";
const PINGS: usize = 20;

/// Three namespaces wired client — middle — server; deleted on drop (with their veths).
struct Namespaces {
    names: [String; 3],
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Namespaces {
    fn create() -> Result<Self, String> {
        let pid = std::process::id();
        let names = ["c", "m", "s"].map(|role| format!("tml-{pid}-{role}"));
        let ns = Namespaces { names };
        let [c, m, s] = ns.names.each_ref().map(String::as_str);
        for name in [c, m, s] {
            ip(&["netns", "add", name])?;
            ip(&["-n", name, "link", "set", "lo", "up"])?;
        }
        ip(&[
            "-n", c, "link", "add", "veth0", "type", "veth", "peer", "name", "veth-c", "netns", m,
        ])?;
        ip(&[
            "-n", s, "link", "add", "veth0", "type", "veth", "peer", "name", "veth-s", "netns", m,
        ])?;
        for (name, dev, addr) in [
            (c, "veth0", CLIENT_ADDR),
            (m, "veth-c", MIDDLE_CLIENT_SIDE),
            (m, "veth-s", MIDDLE_SERVER_SIDE),
            (s, "veth0", SERVER_ADDR),
        ] {
            ip(&["-n", name, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", name, "link", "set", dev, "up"])?;
        }
        Ok(ns)
    }

    /// Runs this test binary in namespace `index` playing `role`, stdout piped.
    fn spawn(&self, index: usize, role: &str) -> (Role, mpsc::Receiver<String>) {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.names[index]])
            .arg(exe)
            .args(["--exact", "netns_role", "--nocapture", "--test-threads", "1"])
            .env(ROLE_ENV, role)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = lines(child.stdout.take().unwrap());
        (Role(child), out)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// A role's process, killed (by its own id) when the test ends, pass or fail.
struct Role(Child);

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads `stdout` on a thread; lines arrive on the returned channel.
fn lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for the line `ready` from a role.
fn wait_ready(rx: &mpsc::Receiver<String>, what: &str) {
    let until = Instant::now() + DEADLINE;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line == "ready" => return,
            Ok(_) => {}
            Err(e) => panic!("{what} did not get ready: {e}"),
        }
    }
}

fn can_run() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let has_ip = Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success());
    root && has_ip
}

#[test]
fn emulator_between_namespaces_forwards_and_adds_its_delay() {
    if std::env::var_os(ROLE_ENV).is_some() {
        return;
    }
    if !can_run() {
        eprintln!("skipped: needs root and the ip command to build network namespaces");
        return;
    }
    let ns = Namespaces::create().expect("network namespaces");
    // Declared after `ns`, so dropped (killed) before the namespaces are deleted.
    let (_server, server_out) = ns.spawn(2, &format!("echo {SERVER_ADDR}:5000"));
    wait_ready(&server_out, "echo server");
    let (_middle, middle_out) =
        ns.spawn(1, &format!("emulator {MIDDLE_CLIENT_SIDE}:4444 {SERVER_ADDR}:5000"));
    wait_ready(&middle_out, "emulator");
    let (_client, client_out) = ns.spawn(0, &format!("client {MIDDLE_CLIENT_SIDE}:4444"));

    let mut rtts = Vec::new();
    let until = Instant::now() + DEADLINE;
    while rtts.len() < PINGS {
        let left = until.saturating_duration_since(Instant::now());
        let line = client_out.recv_timeout(left).expect("client reports every ping");
        if let Some(us) = line.strip_prefix("rtt_us ") {
            rtts.push(Duration::from_micros(us.parse().unwrap()));
        }
        assert!(!line.starts_with("lost"), "client: {line}");
    }
    let (min, max) = (*rtts.iter().min().unwrap(), *rtts.iter().max().unwrap());
    println!("round trip client ns -> middle ns (40 ms each way) -> server ns: {min:?} .. {max:?}");
    assert!(min >= Duration::from_millis(80), "never early: {min:?}");
    assert!(max < Duration::from_millis(130), "less than 50 ms late: {max:?}");
}

/// Entry point of the re-run binary; does nothing in a normal test run.
#[test]
fn netns_role() {
    let Ok(role) = std::env::var(ROLE_ENV) else { return };
    // The harness has printed "test netns_role ... " without a line end: start a new line so
    // that the parent reads ours whole.
    println!();
    let parts: Vec<&str> = role.split_whitespace().collect();
    let addr = |i: usize| parts[i].parse::<SocketAddr>().unwrap();
    match parts[0] {
        "echo" => {
            let socket = UdpSocket::bind(addr(1)).unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            println!("ready");
            let end = Instant::now() + Duration::from_secs(ROLE_LIFETIME_SECS);
            let mut buf = [0u8; 2048];
            while Instant::now() < end {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        }
        "emulator" => {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let link = LinkParams::default().with_delay(Duration::from_millis(40));
                let config = EmulatorConfig::default()
                    .both(link)
                    .duration(Duration::from_secs(ROLE_LIFETIME_SECS));
                let mut emulator = Emulator::bind_with(addr(1), addr(2), config).await.unwrap();
                println!("ready");
                emulator.finished().await.unwrap();
            });
        }
        "client" => {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            socket.connect(addr(1)).unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 2048];
            for i in 0..PINGS as u8 {
                let sent = Instant::now();
                socket.send(&[i; 100]).unwrap();
                match socket.recv(&mut buf) {
                    Ok(n) if buf[..n] == [i; 100] => {
                        println!("rtt_us {}", sent.elapsed().as_micros());
                    }
                    other => println!("lost ping {i}: {other:?}"),
                }
            }
        }
        other => panic!("unknown role {other}"),
    }
}
