//! Guards what the relay's tests rely on: a real QUIC connection (quinn) handshakes and
//! moves data both ways through the emulator's per-client sockets on a lossy, jittery link,
//! and sees the link's round-trip time.

use std::{sync::Arc, time::Duration};

use quinn::rustls::{
    RootCertStore,
    pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer},
};
use tiermesh_link::{Emulator, EmulatorConfig, Profile};
use tokio::time::timeout;

#[tokio::test]
async fn quic_echo_through_the_congested_profile() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
    let server_config = quinn::ServerConfig::with_single_cert(vec![cert.clone()], key).unwrap();
    let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let server_addr = server.local_addr().unwrap();
    let echo = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let data = recv.read_to_end(1 << 20).await.unwrap();
        send.write_all(&data).await.unwrap();
        send.finish().unwrap();
        // Keep the connection until the client has read everything and closed it.
        conn.closed().await;
    });

    // 600 kbit/s, 100 ms ± 30 ms each way, 3% loss.
    let config = EmulatorConfig::default().both(Profile::Congested.schedule(None)).seed(3);
    let emulator =
        Emulator::bind_with("127.0.0.1:0".parse().unwrap(), server_addr, config).await.unwrap();

    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(
        quinn::ClientConfig::with_root_certificates(Arc::new(roots)).unwrap(),
    );

    let payload: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let transfer = async {
        let conn = client.connect(emulator.local_addr(), "localhost").unwrap().await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&payload).await.unwrap();
        send.finish().unwrap();
        let echoed = recv.read_to_end(1 << 20).await.unwrap();
        let rtt = conn.rtt();
        conn.close(0u32.into(), b"done");
        (echoed, rtt)
    };
    let started = std::time::Instant::now();
    let (echoed, rtt) = timeout(Duration::from_secs(30), transfer).await.expect("within 30 s");
    let took = started.elapsed();
    assert_eq!(echoed, payload, "every byte back, in order");
    timeout(Duration::from_secs(5), echo).await.unwrap().unwrap();

    let stats = emulator.shutdown().await.unwrap();
    println!(
        "QUIC echo of 50 kB over congested: {took:?}, smoothed RTT {rtt:?}, up {} pkts \
         ({} lost, {} queue drops), down {} pkts ({} lost, {} queue drops)",
        stats.up.packets_in,
        stats.up.dropped_loss,
        stats.up.dropped_queue_full,
        stats.down.packets_in,
        stats.down.dropped_loss,
        stats.down.dropped_queue_full
    );
    assert!(rtt >= Duration::from_millis(170), "QUIC sees the link's delay: {rtt:?}");
    assert_eq!(stats.clients, 1);
}
