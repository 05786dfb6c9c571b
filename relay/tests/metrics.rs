//! Guards `/metrics` output: every line is valid Prometheus text exposition format (so a
//! scraper accepts it), every family is declared once, histograms are cumulative with a
//! `+Inf` bucket equal to `_count`, and updates from many threads are all counted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tiermesh_relay::metrics::{DropReason, Metrics, TrackClass};

/// Checks the text format line by line; returns every sample as (name with labels, value).
fn parse(text: &str) -> HashMap<String, f64> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped = HashSet::new();
    let mut samples = HashMap::new();
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            assert!(valid_name(name) && !help.is_empty(), "{line}");
            assert!(helped.insert(name.to_owned()), "HELP twice for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(valid_name(name), "{line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE twice for {name}"
            );
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name} should end in _total");
            }
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "unexpected line {line:?}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = if value == "+Inf" {
            f64::INFINITY
        } else {
            value.parse().unwrap_or_else(|_| panic!("{line}"))
        };
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                for pair in labels.split(',') {
                    let (k, v) = pair.split_once('=').unwrap();
                    assert!(valid_name(k), "{line}");
                    assert!(v.len() >= 2 && v.starts_with('"') && v.ends_with('"'), "{line}");
                    assert!(!v[1..v.len() - 1].contains(['"', '\\', '\n']), "{line}");
                }
                name
            }
            None => series,
        };
        assert!(valid_name(name), "{line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s).filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "sample {name} before its # TYPE");
        assert!(samples.insert(series.to_owned(), value).is_none(), "duplicate series {series}");
    }
    assert_eq!(
        helped,
        types.keys().cloned().collect::<HashSet<_>>(),
        "every family has HELP and TYPE"
    );
    samples
}

fn check_histogram(samples: &HashMap<String, f64>, text: &str, name: &str) {
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{name} buckets not cumulative: {buckets:?}");
    assert!(
        samples.contains_key(&format!("{name}_bucket{{le=\"+Inf\"}}")),
        "{name} has no +Inf bucket"
    );
    assert_eq!(buckets.last(), samples.get(&format!("{name}_count")));
}

#[test]
fn render_is_valid_exposition_format_with_every_counter() {
    let m = Metrics::new();
    let empty = m.render();
    let samples = parse(&empty);
    assert_eq!(samples["tiermesh_sessions"], 0.0);
    check_histogram(&samples, &empty, "tiermesh_forward_delay_seconds");

    m.sessions.inc();
    m.sessions.inc();
    m.sessions.dec();
    m.subscriptions.set(7);
    m.tracks.inc();
    m.sessions_accepted.add(2);
    m.object_in(TrackClass::Catalog, 300);
    m.object_in(TrackClass::Video(0), 1000);
    m.object_in(TrackClass::Video(0), 500);
    m.object_out(TrackClass::Video(0), 1500);
    m.dropped(TrackClass::Video(2), DropReason::StaleGroup);
    m.dropped(TrackClass::Video(2), DropReason::StaleGroup);
    m.dropped(TrackClass::Audio, DropReason::CaptureAge);
    m.observe_forward_delay(Duration::from_micros(50));
    m.observe_forward_delay(Duration::from_millis(3));
    m.observe_forward_delay(Duration::from_secs(5));
    m.observe_capture_age(1_000_000, 1_120_000); // 120 ms old
    m.observe_capture_age(2_000_000, 1_000_000); // from the future: publisher clock ahead

    let text = m.render();
    let s = parse(&text);
    assert_eq!(s["tiermesh_sessions"], 1.0);
    assert_eq!(s["tiermesh_subscriptions"], 7.0);
    assert_eq!(s["tiermesh_tracks"], 1.0);
    assert_eq!(s["tiermesh_sessions_accepted_total"], 2.0);
    assert_eq!(s["tiermesh_objects_received_total{class=\"video0\"}"], 2.0);
    assert_eq!(s["tiermesh_bytes_received_total{class=\"video0\"}"], 1500.0);
    assert_eq!(s["tiermesh_bytes_received_total{class=\"catalog\"}"], 300.0);
    assert_eq!(s["tiermesh_bytes_sent_total{class=\"video0\"}"], 1500.0);
    assert_eq!(s["tiermesh_objects_dropped_total{class=\"video2\",reason=\"stale_group\"}"], 2.0);
    assert_eq!(s["tiermesh_objects_dropped_total{class=\"audio\",reason=\"capture_age\"}"], 1.0);
    assert_eq!(s["tiermesh_objects_dropped_total{class=\"audio\",reason=\"congestion\"}"], 0.0);
    assert_eq!(s["tiermesh_forward_delay_seconds_bucket{le=\"0.0001\"}"], 1.0);
    assert_eq!(s["tiermesh_forward_delay_seconds_bucket{le=\"0.005\"}"], 2.0);
    assert_eq!(s["tiermesh_forward_delay_seconds_bucket{le=\"2\"}"], 2.0);
    assert_eq!(s["tiermesh_forward_delay_seconds_bucket{le=\"+Inf\"}"], 3.0);
    assert!((s["tiermesh_forward_delay_seconds_sum"] - 5.00305).abs() < 1e-9);
    assert_eq!(s["tiermesh_capture_age_seconds_bucket{le=\"0.25\"}"], 1.0);
    assert_eq!(s["tiermesh_capture_age_seconds_bucket{le=\"0.1\"}"], 0.0);
    assert_eq!(s["tiermesh_capture_age_seconds_count"], 1.0);
    assert_eq!(s["tiermesh_capture_age_negative_total"], 1.0);
    check_histogram(&s, &text, "tiermesh_forward_delay_seconds");
    check_histogram(&s, &text, "tiermesh_capture_age_seconds");
}

#[test]
fn concurrent_updates_are_all_counted() {
    let m = Arc::new(Metrics::new());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                for i in 0..10_000u64 {
                    m.object_out(TrackClass::Audio, 100);
                    m.observe_forward_delay(Duration::from_micros(i % 3000));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(m.objects_out(TrackClass::Audio), 40_000);
    assert_eq!(m.forward_delay.count(), 40_000);
    let s = parse(&m.render());
    assert_eq!(s["tiermesh_bytes_sent_total{class=\"audio\"}"], 4_000_000.0);
}

#[test]
fn readme_lists_every_metric() {
    let readme = include_str!("../README.md");
    let text = Metrics::new().render();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap();
        assert!(
            readme.contains(&format!("`{name}`")),
            "relay/README.md does not document `{name}`"
        );
    }
}
