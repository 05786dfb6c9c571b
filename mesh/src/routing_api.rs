//! The routing API of the stream manager: which relay a client should use.
//!
//! Input is the membership view of any relay ([`crate::Node::members`]): every live relay
//! with its region, URL and the load it flooded. [`choose`] keeps the healthy, reachable
//! relays, takes those of the region nearest the client (by configured region costs), and
//! of those the least loaded by a weighted score.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::MeshError;
use crate::wire::{LoadReport, RelayName};

/// A relay as the routing API sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// The relay's name.
    pub name: RelayName,
    /// Its region.
    pub region: Arc<str>,
    /// The URL a client connects to.
    pub url: Arc<str>,
    /// Its last reported load.
    pub load: LoadReport,
    /// Whether the relay asking has a mesh route to it.
    pub reachable: bool,
    /// Where relays dial its mesh listener, if it announced it (seed discovery).
    pub mesh_addr: Option<Arc<str>>,
}

/// Distances between regions: 0 within a region, a configured cost for a pair, and a
/// default for pairs not configured.
#[derive(Debug, Clone)]
pub struct RegionCosts {
    /// Cost of a region pair that is not configured.
    pub default_cost: u64,
    pairs: HashMap<(String, String), u64>,
}

impl Default for RegionCosts {
    fn default() -> Self {
        // Any configured pair should be cheaper than an unknown one.
        RegionCosts { default_cost: 1000, pairs: HashMap::new() }
    }
}

impl RegionCosts {
    /// Sets the cost between regions `a` and `b` (both directions).
    pub fn set(mut self, a: &str, b: &str, cost: u64) -> Self {
        self.pairs.insert((a.to_owned(), b.to_owned()), cost);
        self.pairs.insert((b.to_owned(), a.to_owned()), cost);
        self
    }

    /// The cost from region `a` to region `b`.
    pub fn cost(&self, a: &str, b: &str) -> u64 {
        if a == b {
            return 0;
        }
        self.pairs.get(&(a.to_owned(), b.to_owned())).copied().unwrap_or(self.default_cost)
    }
}

/// How load figures combine into one score (lower is better). Each figure is divided by its
/// capacity, then weighted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadWeights {
    /// Weight of the session count.
    pub sessions: f64,
    /// Sessions a relay is sized for.
    pub session_capacity: f64,
    /// Weight of the egress bit rate.
    pub egress: f64,
    /// Egress bits per second a relay is sized for.
    pub egress_capacity_bps: f64,
    /// Weight of CPU use.
    pub cpu: f64,
}

impl Default for LoadWeights {
    fn default() -> Self {
        // Egress is what saturates a media relay first, CPU next (TLS, transcoding), and
        // sessions only stand in for the two; 1,000 sessions and 10 Gbit/s are a typical
        // relay's size.
        LoadWeights {
            sessions: 0.2,
            session_capacity: 1000.0,
            egress: 0.5,
            egress_capacity_bps: 10e9,
            cpu: 0.3,
        }
    }
}

/// The load score of `load` under `w` (lower is better).
pub fn load_score(load: &LoadReport, w: &LoadWeights) -> f64 {
    let ratio = |v: u64, cap: f64| if cap > 0.0 { v as f64 / cap } else { 0.0 };
    w.sessions * ratio(load.sessions, w.session_capacity)
        + w.egress * ratio(load.egress_bps, w.egress_capacity_bps)
        + w.cpu * load.cpu_permille as f64 / 1000.0
}

/// The relay a client of `client_region` should use: healthy and reachable, in the nearest
/// region that has one, least loaded there (ties by name, so every relay answers alike).
pub fn choose<'a>(
    nodes: &'a [NodeState],
    client_region: &str,
    regions: &RegionCosts,
    weights: &LoadWeights,
) -> Option<&'a NodeState> {
    nodes.iter().filter(|n| n.load.healthy && n.reachable).min_by(|a, b| {
        let ra = regions.cost(client_region, &a.region);
        let rb = regions.cost(client_region, &b.region);
        ra.cmp(&rb)
            .then(load_score(&a.load, weights).total_cmp(&load_score(&b.load, weights)))
            .then(a.name.cmp(&b.name))
    })
}

/// Maps client addresses to regions by configured prefixes (longest prefix wins).
#[derive(Debug, Clone, Default)]
pub struct RegionMap {
    entries: Vec<(IpAddr, u8, String)>,
}

impl RegionMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a prefix such as `10.1.0.0/16` or `2001:db8::/32` for `region`.
    pub fn add(&mut self, cidr: &str, region: &str) -> Result<(), MeshError> {
        let bad = || MeshError::Config(format!("not an address prefix: {cidr:?}"));
        let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(bad());
        }
        self.entries.push((addr, len, region.to_owned()));
        Ok(())
    }

    /// The region of `addr`, if a prefix covers it.
    pub fn region_of(&self, addr: IpAddr) -> Option<&str> {
        self.entries
            .iter()
            .filter(|(net, len, _)| covers(*net, *len, addr))
            .max_by_key(|(_, len, _)| *len)
            .map(|(_, _, r)| r.as_str())
    }
}

fn covers(net: IpAddr, len: u8, addr: IpAddr) -> bool {
    let (n, a, bits) = match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => (u128::from(u32::from(n)), u128::from(u32::from(a)), 32),
        (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
        _ => return false,
    };
    if len == 0 {
        return true;
    }
    let shift = bits - u32::from(len);
    (n >> shift) == (a >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, region: &str, sessions: u64, healthy: bool) -> NodeState {
        NodeState {
            name: name.into(),
            region: region.into(),
            url: format!("https://{name}.example").into(),
            load: LoadReport {
                sessions,
                egress_bps: sessions * 2_000_000,
                cpu_permille: 100,
                healthy,
            },
            reachable: true,
            mesh_addr: None,
        }
    }

    #[test]
    fn nearest_region_then_least_loaded() {
        let regions = RegionCosts::default().set("eu", "us", 100).set("eu", "ap", 300);
        let w = LoadWeights::default();
        let nodes = vec![
            node("us-1", "us", 1, true),
            node("eu-1", "eu", 500, true),
            node("eu-2", "eu", 100, true),
            node("eu-3", "eu", 10, false),
        ];
        assert_eq!(choose(&nodes, "eu", &regions, &w).unwrap().name.as_str(), "eu-2");
        assert_eq!(choose(&nodes, "us", &regions, &w).unwrap().name.as_str(), "us-1");
        // No relay in ap: the nearest region to ap with a relay is eu (300) over us (1000).
        assert_eq!(choose(&nodes, "ap", &regions, &w).unwrap().region.as_ref(), "eu");
        // The whole region unhealthy: the next region serves.
        let only_bad = vec![node("eu-3", "eu", 0, false), node("us-1", "us", 900, true)];
        assert_eq!(choose(&only_bad, "eu", &regions, &w).unwrap().name.as_str(), "us-1");
        let mut unreachable = node("eu-9", "eu", 0, true);
        unreachable.reachable = false;
        assert!(choose(&[unreachable], "eu", &regions, &w).is_none());
    }

    #[test]
    fn region_map_longest_prefix() {
        let mut m = RegionMap::new();
        m.add("10.0.0.0/8", "eu").unwrap();
        m.add("10.2.0.0/16", "us").unwrap();
        m.add("2001:db8::/32", "ap").unwrap();
        assert_eq!(m.region_of("10.1.2.3".parse().unwrap()), Some("eu"));
        assert_eq!(m.region_of("10.2.2.3".parse().unwrap()), Some("us"));
        assert_eq!(m.region_of("2001:db8::1".parse().unwrap()), Some("ap"));
        assert_eq!(m.region_of("192.168.1.1".parse().unwrap()), None);
        assert!(m.add("10.0.0.0/33", "x").is_err());
        assert!(m.add("nonsense", "x").is_err());
    }
}
