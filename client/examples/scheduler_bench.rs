//! CPU cost of the send scheduler: nanoseconds per object pushed and sent, priority mode
//! beside the FIFO baseline, measured in one run.
//!
//! `cargo run --release -p tiermesh-client --example scheduler_bench`
//!
//! Two workloads, both on virtual time (no sockets, no sleeping):
//! - **live**: the link keeps up (100 s of media). Every millisecond, the objects that
//!   arrived (audio every 20 ms, three 30 fps video tiers and 12 more equal-priority
//!   tracks, groups of 30 objects, each group its own stream) are pushed and the scheduler
//!   is drained with an ample budget, as a relay does in steady state.
//! - **backlog**: the link is congested. 64 equal-priority tracks and 4 priority levels
//!   queue 50 000 objects first; then the scheduler is drained 64 KiB per wake-up.
//!
//! Each figure is the median of 11 runs, the two modes taking turns so that both see the
//! same machine load. Time is the thread's CPU time (`/proc/thread-self/schedstat`, so
//! other processes on a busy machine do not inflate it), or wall time where that file is
//! missing.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tiermesh_client::scheduler::{
    Action, Mode, Object, Scheduler, SchedulerConfig, SendBudget, StreamKey, StreamSpec,
    TrackClass, TrackKey,
};
use tiermesh_proto::types::GroupOrder;

const RUNS: usize = 11;

struct Figures {
    objects: u64,
    bytes: u64,
    elapsed: Duration,
}

/// A clock of this thread's CPU time, or of wall time if the kernel does not say.
struct Clock {
    cpu: Option<u64>,
    wall: Instant,
}

fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok().filter(|&ns| ns > 0)
}

impl Clock {
    fn start() -> Self {
        Clock { cpu: thread_cpu_ns(), wall: Instant::now() }
    }

    fn elapsed(&self) -> Duration {
        match (self.cpu, thread_cpu_ns()) {
            (Some(a), Some(b)) => Duration::from_nanos(b.saturating_sub(a)),
            _ => self.wall.elapsed(),
        }
    }
}

fn drain(s: &mut Scheduler, now: Instant, budget: &mut SendBudget) -> u64 {
    let mut bytes = 0;
    while let Some(a) = s.poll_send(now, budget) {
        if let Action::Write { chunk, .. } = &a {
            bytes += chunk.len() as u64;
        }
        black_box(a);
    }
    bytes
}

fn spec(track: u64, class: TrackClass, prio: u8, group: u64) -> StreamSpec {
    StreamSpec::new(TrackKey(track), class, group, 0)
        .priority(128, prio)
        .group_order(GroupOrder::Descending)
        .delivery_timeout(Some(Duration::from_millis(1000)))
        .header(Bytes::from_static(&[0x10, 1, 2, 3]))
}

/// Tracks of the live workload: (class, publisher priority, period ms, object bytes).
fn live_tracks() -> Vec<(TrackClass, u8, u64, usize)> {
    let mut t = vec![
        (TrackClass::Audio, 16, 20, 80),
        (TrackClass::Video { tier: 0 }, 32, 33, 1000),
        (TrackClass::Video { tier: 1 }, 48, 33, 2700),
        (TrackClass::Video { tier: 2 }, 64, 33, 6700),
    ];
    for _ in 0..12 {
        t.push((TrackClass::Other, 80, 33, 1500));
    }
    t
}

fn live(mode: Mode) -> Figures {
    let t0 = Instant::now();
    let tracks = live_tracks();
    let payloads: Vec<Bytes> = tracks.iter().map(|t| Bytes::from(vec![0u8; t.3])).collect();
    let object_header = Bytes::from_static(&[0, 0, 0x40, 0]);
    let mut s = Scheduler::new(SchedulerConfig::default().mode(mode));
    let mut open: Vec<Option<(StreamKey, u64)>> = vec![None; tracks.len()];
    let mut next_key = 0;
    let mut counts = vec![0u64; tracks.len()];
    let (mut objects, mut bytes) = (0, 0);
    let start = Clock::start();
    for ms in 0..100_000u64 {
        let now = t0 + Duration::from_millis(ms);
        for (i, &(class, prio, period, _)) in tracks.iter().enumerate() {
            if ms % period != 0 {
                continue;
            }
            let n = counts[i];
            counts[i] += 1;
            if n.is_multiple_of(30) {
                if let Some((old, _)) = open[i].take() {
                    s.finish_stream(old).expect("open");
                }
                next_key += 1;
                let key = StreamKey(next_key);
                s.open_stream(key, spec(i as u64, class, prio, n / 30)).expect("new key");
                open[i] = Some((key, n / 30));
            }
            let (key, _) = open[i].expect("opened above");
            let object = Object::new(now, object_header.clone(), payloads[i].clone());
            s.push_object(key, object).expect("open stream");
            objects += 1;
        }
        let mut budget =
            SendBudget { cwnd: 1 << 30, cwnd_available: 1 << 30, buffered: 0, send_rate_bps: 0 };
        bytes += drain(&mut s, now, &mut budget);
    }
    Figures { objects, bytes, elapsed: start.elapsed() }
}

fn backlog(mode: Mode) -> Figures {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default().mode(mode));
    let sizes = [80usize, 1000, 2700, 6700];
    let payloads: Vec<Bytes> = sizes.iter().map(|&n| Bytes::from(vec![0u8; n])).collect();
    let object_header = Bytes::from_static(&[0, 0, 0x40, 0]);
    let start = Clock::start();
    let mut objects = 0;
    let mut key = 0;
    // 4 levels x 16 tracks, groups of 30 objects: 50 000 objects.
    'fill: for group in 0.. {
        for track in 0..64u64 {
            let level = (track % 4) as usize;
            key += 1;
            let k = StreamKey(key);
            let class = TrackClass::Video { tier: level as u8 };
            s.open_stream(k, spec(track, class, 32 + 16 * level as u8, group).drop_stale(false))
                .expect("new key");
            for _ in 0..30 {
                let object = Object::new(t0, object_header.clone(), payloads[level].clone());
                s.push_object(k, object).expect("open stream");
                objects += 1;
            }
            s.finish_stream(k).expect("open stream");
            if objects >= 50_000 {
                break 'fill;
            }
        }
    }
    let mut bytes = 0;
    let mut ms = 0;
    while s.open_streams() > 0 {
        let mut budget =
            SendBudget { cwnd: 0, cwnd_available: 60 * 1024, buffered: 0, send_rate_bps: 0 };
        bytes += drain(&mut s, t0 + Duration::from_micros(ms), &mut budget);
        ms += 1;
    }
    Figures { objects, bytes, elapsed: start.elapsed() }
}

fn median(mut f: Vec<Figures>) -> Figures {
    f.sort_by_key(|x| x.elapsed);
    f.swap_remove(f.len() / 2)
}

fn main() {
    let clock = if thread_cpu_ns().is_some() { "thread CPU time" } else { "wall time" };
    println!("send scheduler, ns per object pushed + sent ({clock}, median of {RUNS} runs)");
    println!(
        "{:<9} {:>9} {:>12} | {:>12} {:>12} | {:>12} {:>12} | {:>7}",
        "workload", "objects", "MiB", "priority ns", "ns/KiB", "fifo ns", "ns/KiB", "p/fifo"
    );
    type Workload = fn(Mode) -> Figures;
    for (name, run) in [("live", live as Workload), ("backlog", backlog as Workload)] {
        let (mut p, mut f) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            p.push(run(Mode::Priority));
            f.push(run(Mode::Fifo));
        }
        let (p, f) = (median(p), median(f));
        let per_obj = |x: &Figures| x.elapsed.as_nanos() as f64 / x.objects as f64;
        let per_kib = |x: &Figures| x.elapsed.as_nanos() as f64 / (x.bytes as f64 / 1024.0);
        println!(
            "{:<9} {:>9} {:>12.1} | {:>12.0} {:>12.1} | {:>12.0} {:>12.1} | {:>7.2}",
            name,
            p.objects,
            p.bytes as f64 / (1024.0 * 1024.0),
            per_obj(&p),
            per_kib(&p),
            per_obj(&f),
            per_kib(&f),
            per_obj(&p) / per_obj(&f)
        );
        assert_eq!(p.bytes, f.bytes, "both modes deliver the same bytes");
    }
}
