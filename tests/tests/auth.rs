//! Guards access control through the real binaries (`tiermesh token`, `relay`, `pub`,
//! `sub`): a subscriber without a token, or with a token for another namespace, is refused
//! with UNAUTHORIZED and told so; a valid token works until it expires, and its expiry
//! closes the session; an expired token is then refused at once.

use std::time::Duration;

use tiermesh_tests::{Proc, Relay, all_output, start_pub, sub_json};

fn token(key: &std::path::Path, scope: &[&str], ttl: &str) -> String {
    let mut args = vec!["token", "issue", "--key", key.to_str().unwrap(), "--ttl", ttl];
    args.extend_from_slice(scope);
    let mut p = Proc::tiermesh("token issue", &args).unwrap();
    assert!(p.wait_exit(Duration::from_secs(30)).unwrap().success(), "{}", p.dump());
    p.stdout().trim().to_owned()
}

#[test]
fn tokens_are_required_scoped_and_expire() {
    let dir = std::env::temp_dir().join(format!("tiermesh-e2e-auth-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut keygen =
        Proc::tiermesh("keygen", ["token", "keygen", "--out", dir.to_str().unwrap()]).unwrap();
    assert!(keygen.wait_exit(Duration::from_secs(30)).unwrap().success(), "{}", keygen.dump());
    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    let relay = Relay::start(&["--auth-key", public.to_str().unwrap()]).unwrap();
    let url = relay.url("moqt", "clinic/room-42");

    let pub_token = token(&private, &["--publish", "clinic/room-42"], "1h");
    let mut pub_args = relay.pin().to_vec();
    pub_args.extend(["--token".to_owned(), pub_token]);
    let _publisher = start_pub("pub", &url, &pub_args).unwrap();

    let sub = |name: &str, token: Option<&str>, duration: &str| {
        let mut args = vec![url.clone(), "--duration".to_owned(), duration.to_owned()];
        args.extend(relay.pin());
        if let Some(t) = token {
            args.extend(["--token".to_owned(), t.to_owned()]);
        }
        sub_json(name, &args, Duration::from_secs(60)).unwrap()
    };

    // No token at all.
    let (_, ok, p) = sub("no token", None, "2s");
    assert!(!ok, "{}", p.dump());
    assert!(all_output(&p).contains("UNAUTHORIZED"), "{}", p.dump());

    // A token for another namespace.
    let other = token(&private, &["--subscribe", "clinic/room-7"], "1h");
    let (_, ok, p) = sub("out of scope", Some(&other), "2s");
    assert!(!ok, "{}", p.dump());
    assert!(all_output(&p).contains("UNAUTHORIZED"), "{}", p.dump());

    // A valid token that expires while the subscriber watches: the relay closes the session.
    let short = token(&private, &["--subscribe", "clinic/room-42"], "4s");
    let (report, ok, p) = sub("expiring", Some(&short), "30s");
    assert!(!ok, "the session must end early\n{}", p.dump());
    let report = report.expect("a report is printed when the session ends early");
    assert!(report.duration_s < 20.0, "closed at expiry: {report:?}");
    assert!(report.tracks.iter().any(|t| t.objects > 0), "worked before expiry: {report:?}");
    let error = report.error.unwrap_or_default();
    assert!(error.contains("EXPIRED_AUTH_TOKEN"), "{error}");

    // The same token, now expired, is refused at once.
    let (_, ok, p) = sub("expired", Some(&short), "2s");
    assert!(!ok, "{}", p.dump());
    let out = all_output(&p);
    // draft-16 §3.4: EXPIRED_AUTH_TOKEN (0x18), not UNAUTHORIZED, for an expired token.
    assert!(out.contains("EXPIRED_AUTH_TOKEN"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
