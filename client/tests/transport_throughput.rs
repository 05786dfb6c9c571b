//! Measures what WebTransport costs over raw QUIC on one machine: the same 256 MiB pushed
//! through one unidirectional stream on loopback over each, reported as the WebTransport /
//! raw ratio of throughput and of CPU time per delivered byte (both sides are in this
//! process). A measurement, not a pass/fail bound: it only asserts that every byte arrived.
//! Run with `cargo test -p tiermesh-client --test transport_throughput -- --ignored --nocapture`.

mod transport_common;

use std::time::Instant;

use bytes::Bytes;
use transport_common::{pair, server, url, within};

const TOTAL: usize = 256 << 20;
const CHUNK: usize = 64 << 10;

/// CPU time (user + system) this process has used, from /proc, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// (MiB/s, CPU seconds per MiB) for one transfer over `scheme`.
async fn measure(scheme: &str) -> (f64, f64) {
    let (mut server, cert) = server();
    let (client, srv, _) = pair(&url(&server, scheme, "/"), &mut server, &cert.pinned()).await;
    let chunk = Bytes::from(vec![0xa5u8; CHUNK]);
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let (sent, received) = within("transfer", async {
        tokio::join!(
            async {
                let mut s = client.open_uni().await.unwrap();
                for _ in 0..TOTAL / CHUNK {
                    s.write_chunk(chunk.clone()).await.unwrap();
                }
                s.finish().unwrap();
                TOTAL
            },
            async {
                let mut r = srv.accept_uni().await.unwrap();
                let mut n = 0;
                while let Some(c) = r.read_chunk(1 << 20).await.unwrap() {
                    n += c.len();
                }
                n
            }
        )
    })
    .await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    assert_eq!(sent, received);
    let mib = TOTAL as f64 / (1 << 20) as f64;
    (mib / secs, cpu / mib)
}

#[tokio::test]
#[ignore = "a measurement; run with --ignored --nocapture"]
async fn webtransport_costs_little_over_raw_quic() {
    // Warm up once so both runs start from the same allocator and page-cache state.
    measure("moqt").await;
    let (raw_rate, raw_cpu) = measure("moqt").await;
    let (wt_rate, wt_cpu) = measure("https").await;
    println!("raw QUIC:     {raw_rate:.0} MiB/s, {:.2} ms CPU per MiB", raw_cpu * 1e3);
    println!("WebTransport: {wt_rate:.0} MiB/s, {:.2} ms CPU per MiB", wt_cpu * 1e3);
    println!(
        "WebTransport / raw: throughput {:.2}, CPU per byte {:.2}",
        wt_rate / raw_rate,
        wt_cpu / raw_cpu
    );
}
