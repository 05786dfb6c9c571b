//! Shared by the mesh tests (`tests/mesh_regions.rs`, `tests/mesh_publisher_move.rs`): a
//! scratch folder with a mesh CA made with `tiermesh cert`, short `tiermesh` commands, free
//! UDP ports, `tiermesh relay` processes of a mesh, reading the relays' metrics, and what a
//! subscriber saw (order, decoded freeze, one stream per subgroup).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tiermesh_client::moq::{self, ClientOptions, SubscribeOptions};
use tiermesh_client::transport::{ClientTls, Url};
use tiermesh_proto::types::{FullTrackName, TrackNamespace};
use tiermesh_tests::{Proc, find_hash, http_get};

/// How long a step may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// A scratch folder with a mesh CA and the client-facing certificate shared by all relays.
pub struct Env {
    pub root: PathBuf,
    pub dev_hash: String,
}

impl Env {
    pub fn new(tag: &str) -> Result<Env> {
        let root = std::env::temp_dir().join(format!("tiermesh-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)?;
        cli(&["cert", "ca", "--name", tag, "--out", path(&root.join("ca"))])?;
        let out = cli(&["cert", "dev", "--out", path(&root.join("dev"))])?;
        let dev_hash = find_hash(&out).context("cert dev printed no hash")?;
        Ok(Env { root, dev_hash })
    }

    /// A node certificate for `name` from this mesh's CA (or the CA in `ca`).
    pub fn node(&self, name: &str, ca: Option<&Path>) -> Result<PathBuf> {
        let dir = self.root.join(name);
        let ca = ca.map_or_else(|| self.root.join("ca"), Path::to_path_buf);
        cli(&[
            "cert",
            "node",
            "--ca",
            path(&ca),
            "--name",
            name,
            "--san",
            "127.0.0.1",
            "--out",
            path(&dir),
        ])?;
        Ok(dir)
    }

    pub fn pin(&self) -> Vec<String> {
        vec!["--tls-cert-hash".to_owned(), self.dev_hash.clone()]
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// Runs a short `tiermesh` command to the end; its stdout.
pub fn cli(args: &[&str]) -> Result<String> {
    let mut p = Proc::tiermesh(args[0], args)?;
    let status = p.wait_exit(WAIT)?;
    if !status.success() {
        bail!("tiermesh {args:?} failed\n{}", p.dump());
    }
    Ok(p.stdout())
}

/// A UDP port that was free a moment ago and that this test process has not handed out
/// before: the kernel may give the same ephemeral port to two binds in a row once the first
/// socket is closed, and a relay's client and mesh ports must differ.
pub fn free_udp_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// How one relay of the mesh is configured.
pub struct Spec<'a> {
    pub name: &'a str,
    pub region: &'a str,
    pub node_dir: PathBuf,
    /// Mesh ports of seed relays.
    pub seeds: Vec<u16>,
    /// Static peers: (name, region, mesh address), as [`peer`] makes them.
    pub peers: Vec<(String, String, String)>,
    /// Announce the mesh address (so relays that learn of this one link to it per the
    /// discover policy); false for a mesh of static links only.
    pub discover: bool,
    /// How long the relay keeps a departed publisher's tracks for its return.
    pub linger: &'a str,
    /// How long a draining relay waits for its sessions to leave; `None`: the default.
    pub goaway_grace: Option<&'a str>,
    pub port: u16,
    pub mesh_port: u16,
}

impl<'a> Spec<'a> {
    /// Discovery on, no seed or peer, linger and GOAWAY grace of 5 s, fresh ports.
    pub fn new(name: &'a str, region: &'a str, node_dir: PathBuf) -> Self {
        Spec {
            name,
            region,
            node_dir,
            seeds: Vec::new(),
            peers: Vec::new(),
            discover: true,
            linger: "5s",
            goaway_grace: Some("5s"),
            port: free_udp_port(),
            mesh_port: free_udp_port(),
        }
    }
}

/// A static peer of [`Spec::peers`]: the relay `name` of `region` at mesh port `port`.
pub fn peer(name: &str, region: &str, port: u16) -> (String, String, String) {
    (name.to_owned(), region.to_owned(), format!("moqt://127.0.0.1:{port}"))
}

/// A `tiermesh relay` process of the mesh, `e2e` public.
pub struct MeshRelay {
    pub name: String,
    pub proc: Proc,
    pub port: u16,
    pub mesh_port: u16,
    pub ops: SocketAddr,
}

impl MeshRelay {
    /// Writes `spec` as the relay's config file and starts it; returns once its ops
    /// listener is up.
    pub fn start(env: &Env, spec: Spec<'_>) -> Result<MeshRelay> {
        let grace = spec.goaway_grace.map(|g| format!("goaway_grace = \"{g}\"\n"));
        let mut toml = format!(
            "listen = \"127.0.0.1:{port}\"\nops = \"127.0.0.1:0\"\nlinger = \"{linger}\"\n{grace}\n\
             [tls]\ncert = \"{dev}/cert.pem\"\nkey = \"{dev}/key.pem\"\n\n\
             [mesh]\nname = \"{name}\"\nregion = \"{region}\"\nurl = \"moqt://127.0.0.1:{port}\"\n\
             listen = \"127.0.0.1:{mesh}\"\ndir = \"{dir}\"\n",
            port = spec.port,
            linger = spec.linger,
            grace = grace.unwrap_or_default(),
            dev = path(&env.root.join("dev")),
            name = spec.name,
            region = spec.region,
            mesh = spec.mesh_port,
            dir = path(&spec.node_dir),
        );
        if spec.discover {
            toml.push_str(&format!("advertise = \"moqt://127.0.0.1:{}\"\n", spec.mesh_port));
        }
        let seeds: Vec<String> =
            spec.seeds.iter().map(|p| format!("\"moqt://127.0.0.1:{p}\"")).collect();
        toml.push_str(&format!("seeds = [{}]\n", seeds.join(", ")));
        for (n, r, a) in &spec.peers {
            toml.push_str(&format!(
                "[[mesh.peers]]\nname = \"{n}\"\nregion = \"{r}\"\naddr = \"{a}\"\n"
            ));
        }
        let file = env.root.join(format!("{}.toml", spec.name));
        std::fs::write(&file, toml)?;
        let proc = Proc::tiermesh(
            spec.name,
            ["relay", "--config", path(&file), "--public", "e2e", "--public-publish", "e2e"],
        )?;
        let line = proc.wait_line(WAIT, |l| l.text.contains("ops on "))?;
        let ops = line
            .text
            .split("ops on ")
            .nth(1)
            .and_then(|rest| rest.trim_end_matches(')').parse().ok())
            .context("ops address")?;
        Ok(MeshRelay {
            name: spec.name.to_owned(),
            proc,
            port: spec.port,
            mesh_port: spec.mesh_port,
            ops,
        })
    }

    /// `moqt://127.0.0.1:PORT/{broadcast}`, this relay's client address for `broadcast`.
    pub fn url(&self, broadcast: &str) -> String {
        format!("moqt://127.0.0.1:{}/{broadcast}", self.port)
    }

    pub fn metrics(&self) -> Result<String> {
        http_get(self.ops, "/metrics")
    }

    /// Waits until this relay's routing API names `origin` as the origin of `broadcast`
    /// for a client of `region`.
    #[allow(dead_code)] // mesh_regions waits on its subscriptions instead
    pub fn wait_origin(&self, broadcast: &str, region: &str, origin: &str) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        let q = format!("/route?broadcast={broadcast}&region={region}");
        loop {
            let body = http_get(self.ops, &q).unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if v["origin"] == origin {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{}: origin not {origin} within {WAIT:?}: {body}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `cond` holds on this relay's metrics (read every 50 ms: metrics change
    /// without a notification).
    pub fn wait_metrics(&self, what: &str, cond: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.metrics()?;
            if cond(&text) {
                return Ok(text);
            }
            if Instant::now() >= deadline {
                bail!("{}: {what} not reached within {WAIT:?}\n{text}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The value of `name{peer="<peer>"}` in a metrics text.
pub fn link_metric(text: &str, name: &str, peer: &str) -> Option<f64> {
    let key = format!("{name}{{peer=\"{peer}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.trim().parse().ok())
}

/// The value of the unlabelled sample `name` in a metrics text.
pub fn plain_metric(text: &str, name: &str) -> Option<f64> {
    let key = format!("{name} ");
    text.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.trim().parse().ok())
}

/// Connects to the relay at `relay_port` on loopback and subscribes to `track` of
/// `broadcast`, asking again while the relay refuses (the route has not reached it yet).
/// The connection is returned beside the reader: it lives as long as the caller keeps it.
pub fn subscribe_when_routed(
    rt: &tokio::runtime::Runtime,
    relay_port: u16,
    dev_hash: &str,
    broadcast: &str,
    track: &str,
) -> Result<(moq::TrackReader, moq::Connection)> {
    let url: Url = format!("moqt://127.0.0.1:{relay_port}/{broadcast}").parse()?;
    let tls = ClientTls::pinned_hex(dev_hash)?;
    let track = FullTrackName::new(TrackNamespace::from_path(broadcast)?, track)?;
    rt.block_on(async move {
        let (conn, driver) = moq::connect(&url, ClientOptions::new(tls)).await?;
        tokio::spawn(driver.run());
        let reader = tokio::time::timeout(WAIT, async {
            loop {
                match conn.subscribe(track.clone(), SubscribeOptions::default()).await {
                    Ok(r) => return Ok(r),
                    Err(e) if conn.close_reason().is_some() => return Err(e),
                    // Not routed yet: the relay refused; ask again.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        })
        .await
        .context("subscribe")??;
        Ok((reader, conn))
    })
}

/// Objects seen by a subscriber, in arrival order: (group, object, arrival).
pub type Arrived = [(u64, u64, Instant)];

/// Fails if an object came twice or out of order within its group; otherwise the number of
/// objects of an older group that arrived after a newer group had started (the tracks'
/// group order is newest first; a player drops such objects).
pub fn late_objects(seen: &Arrived) -> Result<usize> {
    let mut last_in_group: std::collections::HashMap<u64, u64> = Default::default();
    let (mut newest, mut late) = (0, 0);
    for &(g, o, _) in seen {
        if let Some(prev) = last_in_group.insert(g, o)
            && o <= prev
        {
            bail!("object {g}/{o} after {g}/{prev}: duplicated or out of order");
        }
        if g < newest {
            late += 1;
        }
        newest = newest.max(g);
    }
    Ok(late)
}

/// How many times each (group, subgroup)'s stream ended with FIN at a subscriber.
pub type StreamEnds = std::collections::HashMap<(u64, u64), u32>;

/// Records one event of a subscription: an object's (group, object) in `seen` with its
/// arrival, a FIN in `ends`. False once the subscription has nothing more to say.
pub fn record(
    event: Option<moq::TrackEvent>,
    seen: &std::sync::Mutex<Vec<(u64, u64, Instant)>>,
    ends: &std::sync::Mutex<StreamEnds>,
) -> bool {
    match event {
        Some(moq::TrackEvent::Object(o)) => {
            seen.lock().unwrap().push((o.group_id, o.object_id, Instant::now()))
        }
        Some(moq::TrackEvent::StreamEnd { group_id, subgroup_id, reset: None }) => {
            *ends.lock().unwrap().entry((group_id, subgroup_id)).or_default() += 1
        }
        Some(_) => {}
        None => return false,
    }
    true
}

/// Fails if a subgroup's stream ended with FIN more than once: the subgroup came on two
/// streams (draft-16 §2.4.2 calls that a malformed track), whose objects the subscriber
/// reads in any order.
pub fn one_stream_per_subgroup(ends: &StreamEnds) -> Result<()> {
    let mut twice: Vec<_> = ends.iter().filter(|(_, n)| **n > 1).collect();
    twice.sort();
    if !twice.is_empty() {
        bail!("subgroups ended on more than one stream ((group, subgroup), FINs): {twice:?}");
    }
    Ok(())
}

/// What a player shows from `from` on: the largest gap between frames it can decode. A
/// frame decodes if it is a group's first (a key frame) or follows the last decoded frame
/// of its group without a hole (each frame refers to the one before it).
pub fn decoded_freeze(seen: &Arrived, from: Instant) -> Duration {
    let mut decoded_at = Vec::new();
    let mut chain: Option<(u64, u64)> = None;
    for &(g, o, t) in seen {
        if o == 0 || chain == Some((g, o - 1)) {
            chain = Some((g, o));
            decoded_at.push(t);
        }
    }
    let start = decoded_at.iter().rposition(|t| *t <= from).unwrap_or(0);
    decoded_at[start..].windows(2).map(|w| w[1] - w[0]).max().unwrap_or(Duration::ZERO)
}
