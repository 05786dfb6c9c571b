//! Guards certificates: a relay started from PEM files serves them, and after the files are
//! replaced new sessions get the new certificate without a restart (clients pin by hash).

mod common;

use std::time::Duration;

use common::*;
use tiermesh_client::moq::{self, ClientOptions};
use tiermesh_client::transport::ClientTls;

#[tokio::test]
async fn replaced_certificate_files_are_served_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = tiermesh_certs::dev::generate(&[], Duration::from_secs(24 * 3600)).unwrap();
    let (cert, key) = first.write_pem(dir.path()).unwrap();
    let mut c = config();
    c.tls.generate = false;
    c.tls.cert = Some(cert);
    c.tls.key = Some(key);
    let relay = relay(c).await;
    assert_eq!(relay.cert_hash(), first.sha256);
    connect(&relay, "moqt").await;

    let second = tiermesh_certs::dev::generate(&[], Duration::from_secs(24 * 3600)).unwrap();
    second.write_pem(dir.path()).unwrap();
    assert!(relay.reload_tls().unwrap(), "the new files are picked up");
    assert_eq!(relay.current_cert_hash(), second.sha256);
    let opts = ClientOptions::new(ClientTls::pinned(second.sha256));
    connect_with(&relay, "https", opts).await;
    // The old pin no longer matches.
    let old = ClientOptions::new(ClientTls::pinned(first.sha256));
    assert!(within("refused", moq::connect(&url(&relay, "moqt"), old)).await.is_err());
    relay.shutdown().await;
}
