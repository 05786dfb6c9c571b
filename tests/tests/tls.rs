//! Guards the TLS checks of the client: a relay whose certificate is neither in the system
//! roots nor pinned is refused with an error that says the certificate is not trusted, and
//! so is a pin of another certificate's hash; `--tls-insecure` connects but warns loudly.

use std::time::Duration;

use tiermesh_tests::{Relay, all_output, start_pub, sub_json};

#[test]
fn untrusted_or_wrongly_pinned_certificates_are_refused_clearly() {
    let relay = Relay::start(&["--public", "e2e", "--public-publish", "e2e"]).unwrap();
    let url = relay.url("moqt", "e2e/tls");
    let _publisher = start_pub("pub", &url, &relay.pin()).unwrap();

    let (report, ok, p) = sub_json(
        "system roots",
        &[url.clone(), "--duration".into(), "1s".into()],
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(!ok && report.is_none(), "{}", p.dump());
    let out = all_output(&p).to_lowercase();
    assert!(out.contains("certificate"), "{out}");
    assert!(out.contains("cannot connect"), "{out}");

    let wrong = "ab".repeat(32);
    let args = [url.clone(), "--duration".into(), "1s".into(), "--tls-cert-hash".into(), wrong];
    let (report, ok, p) = sub_json("wrong pin", &args, Duration::from_secs(60)).unwrap();
    assert!(!ok && report.is_none(), "{}", p.dump());
    assert!(all_output(&p).to_lowercase().contains("certificate"), "{}", p.dump());

    let args = [
        url,
        "--track".into(),
        "catalog".into(),
        "--duration".into(),
        "2s".into(),
        "--tls-insecure".into(),
    ];
    let (report, ok, p) = sub_json("insecure", &args, Duration::from_secs(60)).unwrap();
    assert!(ok && report.is_some(), "{}", p.dump());
    assert!(p.stderr().contains("WARNING: --tls-insecure"), "{}", p.dump());
}
