//! Guards that a real browser reaches our server over WebTransport the way the web client
//! will: headless Chromium with `serverCertificateHashes` pinning a fresh ECDSA P-256
//! development certificate (valid < 14 days) and `protocols: ['moqt-16']`. The server must
//! see a WebTransport session on the CONNECT path with moqt-16 negotiated, bytes must flow
//! both ways on a bidirectional stream and as a datagram, and the browser must receive our
//! close code and reason.
//!
//! Needs Debian's `/usr/bin/chromium`, so it is ignored by default:
//! `cargo test -p tiermesh-client --test transport_browser -- --ignored --nocapture`.

mod transport_common;

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use tiermesh_client::transport::Kind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use transport_common::server;

const CHROMIUM: &str = "/usr/bin/chromium";

/// The page: connects, says hello on a bidirectional stream, reads the answer, sends a
/// datagram, waits for the server's close, and reports every step to `/report`.
fn page(port: u16, hash: &[u8; 32]) -> String {
    let bytes = hash.iter().map(u8::to_string).collect::<Vec<_>>().join(",");
    format!(
        r#"<!doctype html><meta charset="utf-8"><title>wt</title><script>
const report = (m) => fetch('/report?m=' + encodeURIComponent(m));
(async () => {{
  const wt = new WebTransport('https://127.0.0.1:{port}/clinic/room-42?jwt=browser', {{
    protocols: ['moqt-16'],
    serverCertificateHashes: [{{ algorithm: 'sha-256', value: new Uint8Array([{bytes}]) }}],
  }});
  await wt.ready;
  await report('ready protocol=' + wt.protocol);
  const s = await wt.createBidirectionalStream();
  const w = s.writable.getWriter();
  await w.write(new TextEncoder().encode('hello from chromium'));
  await w.close();
  const r = s.readable.getReader();
  let text = '';
  for (;;) {{ const {{ value, done }} = await r.read(); if (done) break; text += new TextDecoder().decode(value); }}
  await report('answer=' + text);
  const dw = wt.datagrams.writable.getWriter();
  await dw.write(new TextEncoder().encode('datagram from chromium'));
  const closed = await wt.closed;
  await report('closed code=' + closed.closeCode + ' reason=' + closed.reason);
}})().catch((e) => report('error=' + e));
</script>"#
    )
}

/// A minimal HTTP/1.1 server on 127.0.0.1: `/` is the page, `/report?m=…` forwards `m`.
async fn http(page: String) -> (u16, mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        // Bounded: the page makes a handful of requests (page, reports, favicon).
        for _ in 0..64 {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let mut buf = vec![0u8; 8192];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let body = if path == "/" {
                page.clone()
            } else {
                if let Ok(u) = url::Url::parse(&format!("http://x{path}")) {
                    for (k, v) in u.query_pairs() {
                        if k == "m" {
                            let _ = tx.send(v.into_owned());
                        }
                    }
                }
                String::new()
            };
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(response.as_bytes()).await;
        }
    });
    (port, rx)
}

async fn next_report(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the browser did not report in time")
        .expect("report channel closed")
}

#[tokio::test]
#[ignore = "needs /usr/bin/chromium; run with --ignored"]
async fn chromium_connects_with_pinned_hash_and_negotiates_moqt_16() {
    assert!(std::path::Path::new(CHROMIUM).exists(), "{CHROMIUM} is not installed");
    let (mut server, cert) = server();
    let (http_port, mut reports) = http(page(server.local_addr().port(), &cert.sha256.0)).await;
    let profile = tempfile::tempdir().unwrap();
    let mut browser = tokio::process::Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("http://127.0.0.1:{http_port}/"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let request = tokio::time::timeout(Duration::from_secs(30), server.accept())
        .await
        .expect("the browser did not connect")
        .unwrap();
    assert_eq!(request.kind(), Kind::WebTransport);
    assert_eq!(request.path(), Some("/clinic/room-42"));
    assert_eq!(request.query(), Some("jwt=browser"));
    println!("browser offered: {:?}", request.offered_protocols());
    assert_eq!(request.offered_protocols(), ["moqt-16"]);
    let session = request.accept().await.unwrap();
    assert_eq!(session.protocol(), Some("moqt-16"));

    let ready = next_report(&mut reports).await;
    println!("browser: {ready}");
    assert_eq!(ready, "ready protocol=moqt-16");

    let (mut send, mut recv) = session.accept_bi().await.unwrap();
    let hello = recv.read_to_end(1024).await.unwrap();
    assert_eq!(&hello[..], b"hello from chromium");
    send.write_chunk(Bytes::from_static(b"hello from tiermesh")).await.unwrap();
    send.finish().unwrap();
    let answer = next_report(&mut reports).await;
    println!("browser: {answer}");
    assert_eq!(answer, "answer=hello from tiermesh");

    let datagram = tokio::time::timeout(Duration::from_secs(10), session.read_datagram())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&datagram[..], b"datagram from chromium");

    session.close(0x10, "goaway timeout");
    let closed = next_report(&mut reports).await;
    println!("browser: {closed}");
    assert_eq!(closed, "closed code=16 reason=goaway timeout");
    let stats = session.stats();
    println!("server stats: {stats:?}");
    browser.kill().await.ok();
}
