//! The mesh's own messages and their byte encoding.
//!
//! A [`RouteMessage`] is one batch of routing and membership updates from one relay to a
//! mesh peer. The relay carries each message as one object on the internal track
//! [`ROUTES_TRACK`] that mesh peers subscribe to: object payloads are opaque to MoQT, so a
//! relay of another implementation, or a client, never sees a field it does not know. A
//! relay marks itself as a tiermesh mesh peer with the SETUP parameter
//! [`SETUP_PARAM_MESH_PEER`] (draft-16 §3.3 Extension Negotiation: unknown setup parameters
//! are ignored, so offering it to anyone is safe).
//!
//! Every integer is a QUIC varint (tiermesh-proto's `coding`). Relay names are written once
//! per message in a name table and referred to by index, so a path of six relays costs six
//! small integers.
//!
//! ```text
//! RouteMessage {
//!   Name Count (i), Name (Length (i), Bytes) ...,
//!   Node Count (i), NodeAnnouncement ...,
//!   Link Count (i), LinkRecord ...,
//!   Route Count (i), Route ...,
//!   Withdraw Count (i), Origin Name Index (i) ...,
//!   Namespace Count (i), NamespaceRecord ...,
//!   Want Count (i), Origin Name Index (i) ...,
//! }
//! NodeAnnouncement { Name Index (i), Region (Length (i), Bytes), URL (Length (i), Bytes),
//!   Epoch (i), Seq (i), Age Ms (i), Namespace Seq (i), Flags (i),
//!   Sessions (i), Egress Bits Per Second (i), CPU Permille (i),
//!   [Mesh Address (Length (i), Bytes)] }   present when Flags has bit 2 (value 4)
//! LinkRecord { Reporter Name Index (i), Peer Name Index (i), Epoch (i), Seq (i), Up (i) }
//! Route { Cost (i), Path Length (i), Name Index (i) ... }   path[0] = sender, last = origin
//! NamespaceRecord { Origin Name Index (i), Epoch (i), Seq (i), Present (i), Track Namespace }
//! ```

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tiermesh_proto::coding::{get_len_bytes, get_varint, put_len_bytes, put_varint, varint_len};
use tiermesh_proto::types::TrackNamespace;

use crate::MeshError;

/// The track name, under the namespace `.tiermesh`, on which a relay publishes its
/// [`RouteMessage`]s to mesh peers.
pub const ROUTES_TRACK: &str = ".tiermesh/routes";

/// SETUP parameter type by which a tiermesh relay tells a peer it speaks the mesh protocol.
/// Odd, so its value is bytes: a [`PeerHello`]. The draft has no private-use range for setup
/// parameters; this large value is far from the registered ones (0x01 to 0x07).
pub const SETUP_PARAM_MESH_PEER: u64 = 0x746d_0001;

/// The mesh protocol version carried in [`PeerHello`]; a peer with another version is not
/// treated as a mesh peer.
pub const MESH_VERSION: u64 = 1;

/// Longest relay name accepted from the wire (bytes).
pub const MAX_NAME_LEN: usize = 255;
/// Longest region name accepted from the wire (bytes).
pub const MAX_REGION_LEN: usize = 255;
/// Longest URL accepted from the wire (bytes).
pub const MAX_URL_LEN: usize = 2048;
/// Longest path accepted: far above any sane mesh diameter, so only garbage hits it.
pub const MAX_PATH_LEN: usize = 64;
/// Most names one message may carry.
pub const MAX_NAMES: usize = 65_536;

/// A relay's name: unique in the mesh, cheap to clone.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelayName(Arc<str>);

impl RelayName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for RelayName {
    fn from(s: &str) -> Self {
        RelayName(Arc::from(s))
    }
}

impl From<String> for RelayName {
    fn from(s: String) -> Self {
        RelayName(Arc::from(s))
    }
}

impl Borrow<str> for RelayName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RelayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// A relay's load, as the relay measures it and the mesh floods it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadReport {
    /// Open client sessions.
    pub sessions: u64,
    /// Media bits per second sent to clients and peers.
    pub egress_bps: u64,
    /// CPU use in thousandths of the machine (1000 = all cores busy).
    pub cpu_permille: u64,
    /// False while the relay drains or fails its own health checks: it takes no new clients.
    pub healthy: bool,
}

/// One relay's membership record, flooded to every relay of the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAnnouncement {
    /// The relay.
    pub name: RelayName,
    /// Its region.
    pub region: Arc<str>,
    /// The URL clients connect to.
    pub url: Arc<str>,
    /// Incarnation: larger after every restart, so its records replace older ones.
    pub epoch: u64,
    /// Sequence within the epoch: larger for every new announcement.
    pub seq: u64,
    /// Milliseconds since the relay made this announcement (grows as it is forwarded and
    /// stored), so a copy kept somewhere cannot outlive the original.
    pub age_ms: u64,
    /// The newest namespace record sequence of this relay, so a peer can see it misses some.
    pub ns_seq: u64,
    /// False for a relay that does not carry traffic between other relays (a leaf).
    pub transit: bool,
    /// Its load.
    pub load: LoadReport,
    /// Where other relays dial its mesh listener (`moqt://host:port`), if it accepts links
    /// from relays it has not been configured with (seed discovery).
    pub mesh_addr: Option<Arc<str>>,
}

/// A path-vector route: `path[0]` is the sender, the last entry the origin relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAdvert {
    /// The sender's cost to the origin.
    pub cost: u64,
    /// The relays from the sender to the origin, both included.
    pub path: Vec<RelayName>,
}

impl RouteAdvert {
    /// The origin relay (the last entry of the path).
    pub fn origin(&self) -> Option<&RelayName> {
        self.path.last()
    }
}

/// Whether a namespace is published at an origin relay, versioned by the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceRecord {
    /// The relay whose publisher has the namespace.
    pub origin: RelayName,
    /// The origin's epoch.
    pub epoch: u64,
    /// The origin's namespace sequence number of this change.
    pub seq: u64,
    /// True while published; false is a tombstone for an unpublish.
    pub present: bool,
    /// The namespace (shared, because every relay stores every namespace).
    pub namespace: Arc<TrackNamespace>,
}

/// The state of the mesh link between `reporter` and `peer`, as `reporter` saw it: the root
/// cause of the route changes that follow, flooded so that no relay picks a path over a
/// link known to be down (which is what keeps the path exploration short after a failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRecord {
    /// The relay that saw the link change.
    pub reporter: RelayName,
    /// The relay at the other end.
    pub peer: RelayName,
    /// The reporter's epoch.
    pub epoch: u64,
    /// The reporter's link-record sequence number of this change.
    pub seq: u64,
    /// Whether the link is up.
    pub up: bool,
}

/// One batch of mesh updates from a relay to one of its mesh peers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteMessage {
    /// Membership and load records being flooded.
    pub nodes: Vec<NodeAnnouncement>,
    /// Link state records being flooded.
    pub links: Vec<LinkRecord>,
    /// Best routes of the sender.
    pub routes: Vec<RouteAdvert>,
    /// Origins the sender no longer offers a route to.
    pub withdrawn: Vec<RelayName>,
    /// Namespace records being flooded.
    pub namespaces: Vec<NamespaceRecord>,
    /// Origins whose every namespace record the sender asks the receiver to send again.
    pub wants: Vec<RelayName>,
}

impl RouteMessage {
    /// True if the message carries nothing.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
            && self.links.is_empty()
            && self.routes.is_empty()
            && self.withdrawn.is_empty()
            && self.namespaces.is_empty()
            && self.wants.is_empty()
    }

    /// Number of records (announcements, routes, withdrawals, namespaces, wants) carried.
    pub fn items(&self) -> usize {
        self.nodes.len()
            + self.links.len()
            + self.routes.len()
            + self.withdrawn.len()
            + self.namespaces.len()
            + self.wants.len()
    }

    /// The wire form.
    pub fn encode(&self) -> Bytes {
        let mut table = NameTable::default();
        for n in &self.nodes {
            table.index(&n.name);
        }
        for l in &self.links {
            table.index(&l.reporter);
            table.index(&l.peer);
        }
        for r in &self.routes {
            for p in &r.path {
                table.index(p);
            }
        }
        for w in self.withdrawn.iter().chain(&self.wants) {
            table.index(w);
        }
        for ns in &self.namespaces {
            table.index(&ns.origin);
        }
        let mut b = BytesMut::new();
        put_varint(&mut b, table.names.len() as u64);
        for n in &table.names {
            put_len_bytes(&mut b, n.as_str().as_bytes());
        }
        put_varint(&mut b, self.nodes.len() as u64);
        for n in &self.nodes {
            put_varint(&mut b, table.get(&n.name));
            put_len_bytes(&mut b, n.region.as_bytes());
            put_len_bytes(&mut b, n.url.as_bytes());
            put_varint(&mut b, n.epoch);
            put_varint(&mut b, n.seq);
            put_varint(&mut b, n.age_ms);
            put_varint(&mut b, n.ns_seq);
            put_varint(&mut b, announcement_flags(n));
            put_varint(&mut b, n.load.sessions);
            put_varint(&mut b, n.load.egress_bps);
            put_varint(&mut b, n.load.cpu_permille);
            if let Some(a) = &n.mesh_addr {
                put_len_bytes(&mut b, a.as_bytes());
            }
        }
        put_varint(&mut b, self.links.len() as u64);
        for l in &self.links {
            put_varint(&mut b, table.get(&l.reporter));
            put_varint(&mut b, table.get(&l.peer));
            put_varint(&mut b, l.epoch);
            put_varint(&mut b, l.seq);
            put_varint(&mut b, u64::from(l.up));
        }
        put_varint(&mut b, self.routes.len() as u64);
        for r in &self.routes {
            put_varint(&mut b, r.cost);
            put_varint(&mut b, r.path.len() as u64);
            for p in &r.path {
                put_varint(&mut b, table.get(p));
            }
        }
        put_varint(&mut b, self.withdrawn.len() as u64);
        for w in &self.withdrawn {
            put_varint(&mut b, table.get(w));
        }
        put_varint(&mut b, self.namespaces.len() as u64);
        for ns in &self.namespaces {
            put_varint(&mut b, table.get(&ns.origin));
            put_varint(&mut b, ns.epoch);
            put_varint(&mut b, ns.seq);
            put_varint(&mut b, u64::from(ns.present));
            ns.namespace.encode(&mut b);
        }
        put_varint(&mut b, self.wants.len() as u64);
        for w in &self.wants {
            put_varint(&mut b, table.get(w));
        }
        b.freeze()
    }

    /// The length of [`Self::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        // Exact, without building the bytes twice where it matters (the simulation counts
        // every message): names are counted once each, as the encoder writes them.
        let mut table = NameTable::default();
        let mut len = 0usize;
        let mut name = |n: &RelayName, len: &mut usize| {
            let before = table.names.len();
            let i = table.index(n);
            if table.names.len() > before {
                *len += varint_len(n.as_str().len() as u64) + n.as_str().len();
            }
            *len += varint_len(i);
        };
        for n in &self.nodes {
            name(&n.name, &mut len);
            len += varint_len(n.region.len() as u64) + n.region.len();
            len += varint_len(n.url.len() as u64) + n.url.len();
            for v in [
                n.epoch,
                n.seq,
                n.age_ms,
                n.ns_seq,
                announcement_flags(n),
                n.load.sessions,
                n.load.egress_bps,
                n.load.cpu_permille,
            ] {
                len += varint_len(v);
            }
            if let Some(a) = &n.mesh_addr {
                len += varint_len(a.len() as u64) + a.len();
            }
        }
        for l in &self.links {
            name(&l.reporter, &mut len);
            name(&l.peer, &mut len);
            len += varint_len(l.epoch) + varint_len(l.seq) + 1;
        }
        for r in &self.routes {
            len += varint_len(r.cost) + varint_len(r.path.len() as u64);
            for p in &r.path {
                name(p, &mut len);
            }
        }
        for w in self.withdrawn.iter().chain(&self.wants) {
            name(w, &mut len);
        }
        for ns in &self.namespaces {
            name(&ns.origin, &mut len);
            len += varint_len(ns.epoch) + varint_len(ns.seq) + 1;
            len += varint_len(ns.namespace.len() as u64);
            for f in ns.namespace.fields() {
                len += varint_len(f.len() as u64) + f.len();
            }
        }
        len + varint_len(table.names.len() as u64)
            + varint_len(self.nodes.len() as u64)
            + varint_len(self.links.len() as u64)
            + varint_len(self.routes.len() as u64)
            + varint_len(self.withdrawn.len() as u64)
            + varint_len(self.namespaces.len() as u64)
            + varint_len(self.wants.len() as u64)
    }

    /// Reads one message from the whole of `bytes` (one object payload). Never panics:
    /// malformed or truncated input is an error, and nothing is reserved from a count the
    /// peer wrote (memory grows only with what actually decoded).
    pub fn decode(bytes: &[u8]) -> Result<Self, MeshError> {
        let mut buf = bytes;
        let buf = &mut buf;
        let count = bounded_count(buf, MAX_NAMES)?;
        let mut names = Vec::new();
        for _ in 0..count {
            let raw = get_len_bytes(buf, MAX_NAME_LEN, "relay name too long")?;
            names.push(RelayName::from(utf8(raw, "relay name is not UTF-8")?));
        }
        let name = |buf: &mut &[u8]| -> Result<RelayName, MeshError> {
            let i = get_varint(buf)?;
            names.get(i as usize).cloned().ok_or(MeshError::Malformed("name index out of range"))
        };
        let mut m = RouteMessage::default();
        let count = bounded_count(buf, usize::MAX)?;
        for _ in 0..count {
            let n = name(buf)?;
            let region = utf8(get_len_bytes(buf, MAX_REGION_LEN, "region too long")?, "region")?;
            let url = utf8(get_len_bytes(buf, MAX_URL_LEN, "url too long")?, "url")?;
            let epoch = get_varint(buf)?;
            let seq = get_varint(buf)?;
            let age_ms = get_varint(buf)?;
            let ns_seq = get_varint(buf)?;
            let flags = get_varint(buf)?;
            if flags > 7 {
                return Err(MeshError::Malformed("unknown announcement flags"));
            }
            let load = LoadReport {
                sessions: get_varint(buf)?,
                egress_bps: get_varint(buf)?,
                cpu_permille: get_varint(buf)?,
                healthy: flags & 2 != 0,
            };
            let mesh_addr = if flags & 4 != 0 {
                Some(Arc::from(utf8(
                    get_len_bytes(buf, MAX_URL_LEN, "mesh address too long")?,
                    "mesh address",
                )?))
            } else {
                None
            };
            m.nodes.push(NodeAnnouncement {
                name: n,
                region: Arc::from(region),
                url: Arc::from(url),
                epoch,
                seq,
                age_ms,
                ns_seq,
                transit: flags & 1 != 0,
                load,
                mesh_addr,
            });
        }
        let count = bounded_count(buf, usize::MAX)?;
        for _ in 0..count {
            let reporter = name(buf)?;
            let peer = name(buf)?;
            let epoch = get_varint(buf)?;
            let seq = get_varint(buf)?;
            let up = match get_varint(buf)? {
                0 => false,
                1 => true,
                _ => return Err(MeshError::Malformed("link up flag is not 0 or 1")),
            };
            m.links.push(LinkRecord { reporter, peer, epoch, seq, up });
        }
        let count = bounded_count(buf, usize::MAX)?;
        for _ in 0..count {
            let cost = get_varint(buf)?;
            let len = get_varint(buf)?;
            if len == 0 || len > MAX_PATH_LEN as u64 {
                return Err(MeshError::Malformed("route path length out of range"));
            }
            let mut path = Vec::with_capacity(len as usize);
            for _ in 0..len {
                path.push(name(buf)?);
            }
            m.routes.push(RouteAdvert { cost, path });
        }
        let count = bounded_count(buf, usize::MAX)?;
        for _ in 0..count {
            m.withdrawn.push(name(buf)?);
        }
        let count = bounded_count(buf, usize::MAX)?;
        for _ in 0..count {
            let origin = name(buf)?;
            let epoch = get_varint(buf)?;
            let seq = get_varint(buf)?;
            let present = match get_varint(buf)? {
                0 => false,
                1 => true,
                _ => return Err(MeshError::Malformed("namespace present flag is not 0 or 1")),
            };
            let namespace = Arc::new(TrackNamespace::decode(buf)?);
            m.namespaces.push(NamespaceRecord { origin, epoch, seq, present, namespace });
        }
        let count = bounded_count(buf, usize::MAX)?;
        for _ in 0..count {
            m.wants.push(name(buf)?);
        }
        if !buf.is_empty() {
            return Err(MeshError::Malformed("trailing bytes after route message"));
        }
        Ok(m)
    }
}

/// The value of the [`SETUP_PARAM_MESH_PEER`] setup parameter: who the sending relay is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerHello {
    /// The mesh protocol version ([`MESH_VERSION`]).
    pub version: u64,
    /// The sender's relay name (its mTLS certificate must name it too).
    pub name: RelayName,
    /// The sender's region.
    pub region: String,
}

impl PeerHello {
    /// The parameter value bytes.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        put_varint(&mut b, self.version);
        put_len_bytes(&mut b, self.name.as_str().as_bytes());
        put_len_bytes(&mut b, self.region.as_bytes());
        b.freeze()
    }

    /// Reads the parameter value; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, MeshError> {
        let mut buf = bytes;
        let version = get_varint(&mut buf)?;
        let name = utf8(get_len_bytes(&mut buf, MAX_NAME_LEN, "relay name too long")?, "name")?;
        let region = utf8(get_len_bytes(&mut buf, MAX_REGION_LEN, "region too long")?, "region")?;
        if !buf.is_empty() {
            return Err(MeshError::Malformed("trailing bytes after peer hello"));
        }
        Ok(PeerHello { version, name: RelayName::from(name), region: region.to_owned() })
    }
}

/// The flags of an announcement: transit (1), healthy (2), mesh address follows (4).
fn announcement_flags(n: &NodeAnnouncement) -> u64 {
    u64::from(n.transit) | u64::from(n.load.healthy) << 1 | u64::from(n.mesh_addr.is_some()) << 2
}

/// A count that cannot exceed the bytes left (every entry takes at least one byte), so a
/// hostile count never makes a large allocation.
fn bounded_count(buf: &mut &[u8], max: usize) -> Result<usize, MeshError> {
    let n = get_varint(buf)?;
    if n > buf.len() as u64 || n > max as u64 {
        return Err(MeshError::Malformed("count larger than the message"));
    }
    Ok(n as usize)
}

fn utf8<'a>(raw: &'a [u8], what: &'static str) -> Result<&'a str, MeshError> {
    std::str::from_utf8(raw).map_err(|_| MeshError::Malformed(what))
}

#[derive(Default)]
struct NameTable {
    names: Vec<RelayName>,
    index: HashMap<RelayName, u64>,
}

impl NameTable {
    fn index(&mut self, n: &RelayName) -> u64 {
        if let Some(i) = self.index.get(n) {
            return *i;
        }
        let i = self.names.len() as u64;
        self.names.push(n.clone());
        self.index.insert(n.clone(), i);
        i
    }

    fn get(&self, n: &RelayName) -> u64 {
        self.index[n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RouteMessage {
        let ns = |p: &str| Arc::new(TrackNamespace::from_path(p).unwrap());
        RouteMessage {
            nodes: vec![NodeAnnouncement {
                name: "eu-1".into(),
                region: "eu".into(),
                url: "https://eu-1.example:4443".into(),
                epoch: 1_700_000_000_000,
                seq: 7,
                age_ms: 1200,
                ns_seq: 3,
                transit: true,
                load: LoadReport {
                    sessions: 42,
                    egress_bps: 90_000_000,
                    cpu_permille: 350,
                    healthy: true,
                },
                mesh_addr: Some("moqt://eu-1.mesh.example:4444".into()),
            }],
            links: vec![LinkRecord {
                reporter: "eu-1".into(),
                peer: "ap-3".into(),
                epoch: 1_700_000_000_000,
                seq: 4,
                up: false,
            }],
            routes: vec![
                RouteAdvert { cost: 110, path: vec!["eu-1".into(), "us-2".into(), "us-9".into()] },
                RouteAdvert { cost: 0, path: vec!["eu-1".into()] },
            ],
            withdrawn: vec!["ap-3".into()],
            namespaces: vec![
                NamespaceRecord {
                    origin: "us-9".into(),
                    epoch: 5,
                    seq: 2,
                    present: true,
                    namespace: ns("clinic/room-42/dr-lee"),
                },
                NamespaceRecord {
                    origin: "us-9".into(),
                    epoch: 5,
                    seq: 3,
                    present: false,
                    namespace: ns("clinic/room-7"),
                },
            ],
            wants: vec!["ap-3".into()],
        }
    }

    #[test]
    fn round_trip_and_length() {
        let m = sample();
        let b = m.encode();
        assert_eq!(b.len(), m.encoded_len());
        assert_eq!(RouteMessage::decode(&b).unwrap(), m);
        let empty = RouteMessage::default();
        assert_eq!(empty.encode().len(), empty.encoded_len());
        assert_eq!(RouteMessage::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn names_written_once() {
        let m = sample();
        let b = m.encode();
        let hits = b.windows(5).filter(|w| *w == b"us-9\x01" || w.starts_with(b"us-9")).count();
        assert_eq!(hits, 1, "relay name appears once in the name table");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let b = sample().encode();
        for cut in 0..b.len() {
            assert!(RouteMessage::decode(&b[..cut]).is_err(), "prefix of {cut} bytes decoded");
        }
        let mut long = b.to_vec();
        long.push(0);
        assert!(RouteMessage::decode(&long).is_err());
    }

    #[test]
    fn bad_index_and_flags_are_errors() {
        // One name, one route whose path points at name 5.
        let mut b = Vec::new();
        put_varint(&mut b, 1);
        put_len_bytes(&mut b, b"a");
        put_varint(&mut b, 0); // no announcements
        put_varint(&mut b, 0); // no link records
        put_varint(&mut b, 1); // one route
        put_varint(&mut b, 10);
        put_varint(&mut b, 1);
        put_varint(&mut b, 5);
        for _ in 0..3 {
            put_varint(&mut b, 0);
        }
        assert_eq!(RouteMessage::decode(&b), Err(MeshError::Malformed("name index out of range")));
        // A count far beyond the bytes left.
        let mut b = Vec::new();
        put_varint(&mut b, 1 << 40);
        assert!(matches!(RouteMessage::decode(&b), Err(MeshError::Malformed(_))));
    }

    /// Seeded random and mutated inputs: decoding returns, never panics.
    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let valid = sample().encode().to_vec();
        let mut ok = 0;
        for i in 0..20_000 {
            let bytes: Vec<u8> = if i % 2 == 0 {
                let len = (next() % 200) as usize;
                (0..len).map(|_| next() as u8).collect()
            } else {
                let mut v = valid.clone();
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % v.len();
                    v[at] = next() as u8;
                }
                v
            };
            if RouteMessage::decode(&bytes).is_ok() {
                ok += 1;
            }
            let _ = PeerHello::decode(&bytes);
        }
        // Some mutations (a changed cost, a changed letter) still decode: the sweep reached
        // past the first bytes.
        assert!(ok > 0);
    }

    #[test]
    fn peer_hello_round_trip() {
        let h = PeerHello { version: MESH_VERSION, name: "eu-1".into(), region: "eu".into() };
        assert_eq!(PeerHello::decode(&h.encode()).unwrap(), h);
        assert!(PeerHello::decode(&h.encode()[..3]).is_err());
    }
}
