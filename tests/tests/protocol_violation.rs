//! Guards isolation between sessions: bytes on one session's control stream that are not a
//! MoQT message close that session, with PROTOCOL_VIOLATION, and only that one — a
//! subscriber watching at the same time keeps receiving everything.

use std::time::Duration;

use tiermesh_client::transport::{self, ClientTls};
use tiermesh_tests::{Relay, start_pub, sub_json};

#[test]
fn garbage_on_a_control_stream_closes_only_that_session() {
    let relay = Relay::start(&["--public", "e2e", "--public-publish", "e2e"]).unwrap();
    let url = relay.url("moqt", "e2e/garbage");
    let _publisher = start_pub("pub", &url, &relay.pin()).unwrap();
    let mut args =
        vec![url.clone(), "--track".into(), "audio".into(), "--duration".into(), "4s".into()];
    args.extend(relay.pin());
    let watcher =
        std::thread::spawn(move || sub_json("watcher", &args, Duration::from_secs(60)).unwrap());

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let reason = runtime.block_on(async {
        let tls = ClientTls::pinned_hex(&relay.cert_hash).unwrap();
        let session = transport::connect(&url.parse().unwrap(), &tls).await.unwrap();
        let (mut send, _recv) = session.open_bi().await.unwrap();
        // A CLIENT_SETUP type (0x20) with a length far beyond what follows, then junk that
        // is no message: whichever the relay notices, it is a protocol violation.
        send.write_all(&[0x3f, 0xff, 0xff, 0xff, 0xde, 0xad, 0xbe, 0xef]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(20), session.closed()).await.unwrap()
    });
    assert_eq!(reason.code(), Some(0x3), "PROTOCOL_VIOLATION expected: {reason}");

    let (report, ok, p) = watcher.join().unwrap();
    assert!(ok, "{}", p.dump());
    let audio = &report.unwrap().tracks[0];
    assert!(audio.objects >= 150, "{audio:?}");
    assert_eq!((audio.missing_objects, audio.missing_groups), (0, 0), "{audio:?}");
}
