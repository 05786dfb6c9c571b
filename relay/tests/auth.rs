//! Guards the relay's one authorization check: a valid token allows what it grants and
//! nothing else; every kind of bad token is refused with its own error; public prefixes need
//! no token; tokens never show up in Debug or Display output.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tiermesh_relay::auth::{
    Action, Algorithm, AuthError, Authorizer, Claims, Grant, Prefix, Secret, SigningKey,
    VerifyingKey,
};

fn now() -> SystemTime {
    // A fixed instant keeps the expiry arithmetic exact.
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn ns(s: &str) -> Vec<&[u8]> {
    s.split('/').map(str::as_bytes).collect()
}

fn claims(publish: &[&str], subscribe: &[&str]) -> Claims {
    let strings = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
    Claims::new(now(), Duration::from_secs(3600), strings(publish), strings(subscribe))
}

fn setup(alg: Algorithm) -> (SigningKey, Authorizer) {
    let key = SigningKey::generate(alg).unwrap();
    let authorizer = Authorizer::new(vec![key.verifying_key().clone()]);
    (key, authorizer)
}

/// A token with the given header and claims JSON, signed by `key` over exactly those bytes.
fn hand_made(key: &SigningKey, header: &str, claims: &str) -> String {
    // SigningKey::sign writes its own header; tests that need a different one sign with ring.
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let pkcs8 = pem::parse(key.to_pem().expose()).unwrap();
    let sig = match key.verifying_key().algorithm() {
        Algorithm::Es256 => {
            let rng = ring::rand::SystemRandom::new();
            let k = ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                pkcs8.contents(),
                &rng,
            )
            .unwrap();
            k.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec()
        }
        Algorithm::EdDsa => {
            let k = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.contents()).unwrap();
            k.sign(input.as_bytes()).as_ref().to_vec()
        }
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[test]
fn valid_token_allows_in_scope_and_refuses_out_of_scope() {
    for alg in [Algorithm::Es256, Algorithm::EdDsa] {
        let (key, auth) = setup(alg);
        let token = key.sign(&claims(&["clinic/room-42/dr-lee"], &["clinic"])).unwrap();
        let grant = auth.verify(token.expose(), now()).unwrap();
        assert_eq!(grant.expires_at, now() + Duration::from_secs(3600));

        let ok = |action, n: &str| auth.authorize(Some(&grant), action, &ns(n), now());
        assert_eq!(ok(Action::Publish, "clinic/room-42/dr-lee"), Ok(()));
        assert_eq!(ok(Action::Publish, "clinic/room-42/dr-lee/extra"), Ok(()));
        assert_eq!(ok(Action::Subscribe, "clinic/room-42"), Ok(()));
        assert_eq!(ok(Action::Subscribe, "clinic"), Ok(()));
        // Prefixes match whole fields, never string prefixes.
        assert_eq!(ok(Action::Subscribe, "clinic2"), Err(AuthError::OutOfScope(Action::Subscribe)));
        assert_eq!(
            ok(Action::Publish, "clinic/room-42"),
            Err(AuthError::OutOfScope(Action::Publish))
        );
        assert_eq!(
            ok(Action::Publish, "clinic/room-42/dr-le"),
            Err(AuthError::OutOfScope(Action::Publish))
        );
        assert_eq!(
            ok(Action::Publish, "other/room-42/dr-lee"),
            Err(AuthError::OutOfScope(Action::Publish))
        );
        assert!(grant.allows(Action::Subscribe, &ns("clinic/room-7")));
        assert!(!grant.allows(Action::Publish, &ns("clinic/room-7")));
    }
}

#[test]
fn each_kind_of_bad_token_has_its_own_error() {
    let (key, auth) = setup(Algorithm::Es256);
    let good = key.sign(&claims(&["a"], &[])).unwrap().into_inner();

    // Expired: exp has passed (exactly at exp counts as expired).
    let mut c = claims(&["a"], &[]);
    c.exp = 1_800_000_000 - 10;
    let expired = key.sign(&c).unwrap();
    assert_eq!(
        auth.verify(expired.expose(), now()),
        Err(AuthError::Expired { ago: Duration::from_secs(10) })
    );
    c.exp = 1_800_000_000;
    assert!(matches!(
        auth.verify(key.sign(&c).unwrap().expose(), now()),
        Err(AuthError::Expired { .. })
    ));

    // Not yet valid: nbf an hour ahead (beyond the clock-skew leeway)...
    let mut c = claims(&["a"], &[]);
    c.nbf = Some(1_800_000_000 + 3600);
    c.exp = 1_800_000_000 + 7200;
    assert_eq!(
        auth.verify(key.sign(&c).unwrap().expose(), now()),
        Err(AuthError::NotYetValid { wait: Duration::from_secs(3600) })
    );
    let not_yet = auth.verify(key.sign(&c).unwrap().expose(), now()).unwrap_err();
    assert_eq!(not_yet.retry_after(), Some(Duration::from_secs(3600)));
    // ...while a few seconds ahead is clock skew and accepted.
    c.nbf = Some(1_800_000_000 + 5);
    assert!(auth.verify(key.sign(&c).unwrap().expose(), now()).is_ok());

    // Bad signature: the claims were changed after signing.
    let parts: Vec<&str> = good.split('.').collect();
    let forged_claims = URL_SAFE_NO_PAD.encode(br#"{"exp":1900000000,"publish":[""]}"#);
    let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
    assert_eq!(auth.verify(&forged, now()), Err(AuthError::BadSignature));
    // A flipped signature byte.
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[10] ^= 1;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
    assert_eq!(auth.verify(&flipped, now()), Err(AuthError::BadSignature));

    // Wrong key: signed by a key the relay does not trust. Its kid names that key.
    let stranger = SigningKey::generate(Algorithm::Es256).unwrap();
    let foreign = stranger.sign(&claims(&["a"], &[])).unwrap();
    assert_eq!(auth.verify(foreign.expose(), now()), Err(AuthError::UnknownKey));
    // Without a kid the relay can only try its keys, and the signature fails.
    let no_kid = hand_made(&stranger, r#"{"alg":"ES256"}"#, r#"{"exp":1900000000}"#);
    assert_eq!(auth.verify(&no_kid, now()), Err(AuthError::BadSignature));
    // A token of an algorithm no configured key has.
    let ed = SigningKey::generate(Algorithm::EdDsa).unwrap();
    let ed_no_kid = hand_made(&ed, r#"{"alg":"EdDSA"}"#, r#"{"exp":1900000000}"#);
    assert_eq!(auth.verify(&ed_no_kid, now()), Err(AuthError::UnknownKey));

    // alg none, with and without a signature part.
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(r#"{"exp":1900000000,"publish":[""]}"#);
    assert_eq!(
        auth.verify(&format!("{header}.{body}."), now()),
        Err(AuthError::UnsupportedAlgorithm("none".into()))
    );
    assert_eq!(
        auth.verify(&format!("{header}.{body}.{}", parts[2]), now()),
        Err(AuthError::UnsupportedAlgorithm("none".into()))
    );

    // Garbage.
    for garbage in ["", "hello", "a.b", "a.b.c.d", "!!!.???.***", "e30.e30.e30"] {
        assert!(
            matches!(auth.verify(garbage, now()), Err(AuthError::Malformed(_))),
            "{garbage:?} gave {:?}",
            auth.verify(garbage, now())
        );
    }
    assert!(matches!(
        auth.verify_bytes(&[0xff, 0xfe, b'.', b'.'], now()),
        Err(AuthError::Malformed(_))
    ));
    assert!(matches!(auth.verify(&"a".repeat(10_000), now()), Err(AuthError::Malformed(_))));

    // A signed token whose claims lack exp or hold a bad prefix.
    let no_exp = hand_made(&key, r#"{"alg":"ES256"}"#, r#"{"publish":["a"]}"#);
    assert!(matches!(auth.verify(&no_exp, now()), Err(AuthError::InvalidClaims(_))));
    let bad_prefix =
        hand_made(&key, r#"{"alg":"ES256"}"#, r#"{"exp":1900000000,"publish":["a//b"]}"#);
    match auth.verify(&bad_prefix, now()) {
        Err(AuthError::InvalidClaims(why)) => assert!(!why.contains("a//b"), "{why}"),
        other => panic!("{other:?}"),
    }
    let huge_exp = hand_made(&key, r#"{"alg":"ES256"}"#, r#"{"exp":18446744073709551615}"#);
    assert!(matches!(auth.verify(&huge_exp, now()), Err(AuthError::InvalidClaims(_))));

    // The good token still verifies: none of the above was an accident of the setup.
    assert!(auth.verify(&good, now()).is_ok());
}

#[test]
fn algorithm_confusion_is_refused() {
    let (key, auth) = setup(Algorithm::Es256);
    let thumb = key.verifying_key().thumbprint().to_owned();

    // HS256 "signed" with the public key as the HMAC secret: the classic confusion attack.
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"HS256","kid":"{thumb}"}}"#));
    let body = URL_SAFE_NO_PAD.encode(r#"{"exp":1900000000,"publish":[""]}"#);
    let input = format!("{header}.{body}");
    let secret =
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.verifying_key().to_pem().as_bytes());
    let tag = ring::hmac::sign(&secret, input.as_bytes());
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
    assert_eq!(auth.verify(&token, now()), Err(AuthError::UnsupportedAlgorithm("HS256".into())));

    // An EdDSA header pointing at the ES256 key by kid.
    let ed = SigningKey::generate(Algorithm::EdDsa).unwrap();
    let mismatched =
        hand_made(&ed, &format!(r#"{{"alg":"EdDSA","kid":"{thumb}"}}"#), r#"{"exp":1900000000}"#);
    assert_eq!(
        auth.verify(&mismatched, now()),
        Err(AuthError::AlgorithmMismatch { token: Algorithm::EdDsa, key: Algorithm::Es256 })
    );

    // Critical header extensions the relay does not understand.
    let crit = hand_made(&key, r#"{"alg":"ES256","crit":["exp"]}"#, r#"{"exp":1900000000}"#);
    assert!(matches!(auth.verify(&crit, now()), Err(AuthError::Malformed(_))));

    // An attacker-chosen alg is shown only as a short alphanumeric string.
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"x\n<script>AAAAAAAAAAAAAAAAAAAAAAAAAA"}"#);
    match auth.verify(&format!("{header}.e30.e30"), now()) {
        Err(AuthError::UnsupportedAlgorithm(alg)) => assert_eq!(alg, "xscriptAAAAAAAAA"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn public_prefixes_need_no_token() {
    let (key, auth) = setup(Algorithm::EdDsa);
    let auth = auth
        .with_public(Action::Subscribe, "demo".parse().unwrap())
        .with_public(Action::Publish, "dev/sandbox".parse().unwrap());

    assert_eq!(auth.authorize(None, Action::Subscribe, &ns("demo/bunny"), now()), Ok(()));
    assert_eq!(auth.authorize(None, Action::Subscribe, &ns("demo"), now()), Ok(()));
    // Public for subscribers does not mean anyone may publish there.
    assert_eq!(
        auth.authorize(None, Action::Publish, &ns("demo/bunny"), now()),
        Err(AuthError::MissingToken)
    );
    assert_eq!(
        auth.authorize(None, Action::Subscribe, &ns("demo2"), now()),
        Err(AuthError::MissingToken)
    );
    assert_eq!(auth.authorize(None, Action::Publish, &ns("dev/sandbox/x"), now()), Ok(()));
    assert_eq!(
        auth.authorize(None, Action::Publish, &ns("dev"), now()),
        Err(AuthError::MissingToken)
    );

    // A token adds to the public prefixes.
    let grant = auth.verify(key.sign(&claims(&["clinic"], &[])).unwrap().expose(), now()).unwrap();
    assert_eq!(auth.authorize(Some(&grant), Action::Publish, &ns("clinic/x"), now()), Ok(()));
    assert_eq!(auth.authorize(Some(&grant), Action::Subscribe, &ns("demo/x"), now()), Ok(()));
}

#[test]
fn a_grant_stops_working_when_its_token_expires() {
    let (key, auth) = setup(Algorithm::Es256);
    let grant = auth.verify(key.sign(&claims(&["a"], &[])).unwrap().expose(), now()).unwrap();
    let later = now() + Duration::from_secs(3600);
    assert!(grant.is_expired(later));
    assert_eq!(grant.expires_in(now()), Duration::from_secs(3600));
    assert_eq!(grant.expires_in(later + Duration::from_secs(5)), Duration::ZERO);
    assert_eq!(
        auth.authorize(Some(&grant), Action::Publish, &ns("a"), later + Duration::from_secs(2)),
        Err(AuthError::Expired { ago: Duration::from_secs(2) })
    );
    assert_eq!(
        auth.authorize(Some(&grant), Action::Publish, &ns("a"), later - Duration::from_secs(1)),
        Ok(())
    );
}

#[test]
fn root_prefix_grants_everything() {
    let (key, auth) = setup(Algorithm::Es256);
    let grant = auth.verify(key.sign(&claims(&[], &[""])).unwrap().expose(), now()).unwrap();
    assert_eq!(grant.subscribe, vec![Prefix::root()]);
    assert!(grant.allows(Action::Subscribe, &ns("any/thing")));
    assert!(!grant.allows(Action::Publish, &ns("any/thing")));
}

#[test]
fn tokens_and_subjects_never_appear_in_debug_or_display() {
    let (key, auth) = setup(Algorithm::Es256);
    let mut c = claims(&["clinic/room-42"], &[]);
    c.sub = Some("patient-jane-doe".into());
    let token = key.sign(&c).unwrap();
    let raw = token.expose().clone();
    assert_eq!(format!("{token:?}"), "[redacted]");
    assert_eq!(format!("{token}"), "[redacted]");
    assert_eq!(format!("{:?}", Some(&token)), "Some([redacted])");

    let grant: Grant = auth.verify(&raw, now()).unwrap();
    assert_eq!(grant.subject.as_ref().unwrap().expose(), "patient-jane-doe");
    let shown = format!("{grant:?} {c:?} {key:?} {:?}", key.to_pem());
    assert!(!shown.contains("patient-jane-doe"), "{shown}");
    assert!(!shown.contains(&raw[..20]), "{shown}");
    assert!(!shown.contains("PRIVATE"), "{shown}");

    // Errors carry neither the token nor the namespace.
    let errors = [
        auth.verify(&raw[..raw.len() - 4], now()).unwrap_err(),
        auth.authorize(Some(&grant), Action::Subscribe, &ns("clinic/room-42"), now()).unwrap_err(),
    ];
    for e in errors {
        let text = e.to_string();
        assert!(!text.contains(&raw[..20]) && !text.contains("room-42"), "{text}");
    }
    let secret = Secret::new(String::from("x.y.z"));
    assert_eq!(format!("{secret:?}/{secret}"), "[redacted]/[redacted]");
}

#[test]
fn keys_load_from_pem_jwk_and_jwk_sets() {
    let dir = tempfile::tempdir().unwrap();
    let es = SigningKey::generate(Algorithm::Es256).unwrap();
    let ed = SigningKey::generate(Algorithm::EdDsa).unwrap();

    // Two PEM blocks in one file.
    let pem_path = dir.path().join("keys.pem");
    std::fs::write(&pem_path, es.verifying_key().to_pem() + &ed.verifying_key().to_pem()).unwrap();
    let keys = VerifyingKey::load(&pem_path).unwrap();
    assert_eq!(keys.len(), 2);

    // A JWK Set, one key with its own kid.
    let mut ed_jwk = ed.verifying_key().to_jwk();
    ed_jwk["kid"] = "ops-2026".into();
    let set = serde_json::json!({ "keys": [es.verifying_key().to_jwk(), ed_jwk] });
    let jwks_path = dir.path().join("keys.jwks");
    std::fs::write(&jwks_path, set.to_string()).unwrap();
    let auth = Authorizer::load(&[jwks_path]).unwrap();
    assert_eq!(auth.keys().len(), 2);
    // Tokens from both keys verify; the kid may be the thumbprint or the JWK's own kid.
    assert!(auth.verify(es.sign(&claims(&["a"], &[])).unwrap().expose(), now()).is_ok());
    assert!(auth.verify(ed.sign(&claims(&["a"], &[])).unwrap().expose(), now()).is_ok());
    let by_kid = hand_made(&ed, r#"{"alg":"EdDSA","kid":"ops-2026"}"#, r#"{"exp":1900000000}"#);
    assert!(auth.verify(&by_kid, now()).is_ok());

    // A private key where a public one belongs is refused with a reason.
    let private_path = dir.path().join("private.pem");
    std::fs::write(&private_path, es.to_pem().expose()).unwrap();
    let err = VerifyingKey::load(&private_path).unwrap_err().to_string();
    assert!(err.contains("private.pem") && err.contains("private key"), "{err}");
    // Nonsense is refused with the file name.
    std::fs::write(&private_path, "hello").unwrap();
    let err = Authorizer::load(&[private_path]).unwrap_err().to_string();
    assert!(err.contains("private.pem") && err.contains("neither PEM nor JWK"), "{err}");
    // A JWK whose point is not on P-256.
    let mut bad = es.verifying_key().to_jwk();
    bad["y"] = URL_SAFE_NO_PAD.encode([7u8; 32]).into();
    assert!(
        VerifyingKey::from_jwk(&bad, "bad.jwk").unwrap_err().to_string().contains("not on P-256")
    );
    // A private key survives a PEM round trip.
    let again = SigningKey::from_pem(es.to_pem().expose(), "again").unwrap();
    assert_eq!(again.verifying_key(), es.verifying_key());
}

/// openssl is an independent implementation of the key formats and both signature schemes:
/// tokens it signs must verify, and keys it writes must load.
#[test]
fn interoperates_with_openssl_keys_and_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("openssl must be installed (Debian package openssl)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let claims_json = r#"{"exp":1900000000,"subscribe":["clinic/room-42"]}"#;
    for (alg, genpkey) in [
        ("ES256", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"][..]),
        ("EdDSA", &["-algorithm", "ed25519"][..]),
    ] {
        let mut args = vec!["genpkey"];
        args.extend_from_slice(genpkey);
        args.extend_from_slice(&["-out", "k.pem"]);
        run(&args);
        run(&["pkey", "-in", "k.pem", "-pubout", "-out", "pub.pem"]);
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#)),
            URL_SAFE_NO_PAD.encode(claims_json)
        );
        std::fs::write(dir.path().join("input"), &input).unwrap();
        let sig = if alg == "ES256" {
            let der = run(&["dgst", "-sha256", "-sign", "k.pem", "input"]);
            ecdsa_der_to_fixed(&der)
        } else {
            run(&["pkeyutl", "-sign", "-rawin", "-inkey", "k.pem", "-in", "input"])
        };
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig));
        let auth = Authorizer::load(&[dir.path().join("pub.pem")]).unwrap();
        let grant = auth.verify(&token, now()).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert!(grant.allows(Action::Subscribe, &ns("clinic/room-42/dr-lee")));

        // The private key openssl wrote signs tokens that verify with its public key.
        let ours = SigningKey::load(&dir.path().join("k.pem")).unwrap();
        assert!(auth.verify(ours.sign(&claims(&[], &["x"])).unwrap().expose(), now()).is_ok());
        std::fs::remove_file(dir.path().join("k.pem")).unwrap();
        std::fs::remove_file(dir.path().join("pub.pem")).unwrap();
    }
}

/// DER `SEQUENCE { INTEGER r, INTEGER s }` to JOSE's fixed 64-byte r || s.
fn ecdsa_der_to_fixed(der: &[u8]) -> Vec<u8> {
    assert_eq!(der[0], 0x30);
    let mut i = 2;
    let mut out = Vec::new();
    for _ in 0..2 {
        assert_eq!(der[i], 0x02);
        let len = der[i + 1] as usize;
        let int = &der[i + 2..i + 2 + len];
        let int = &int[int.len().saturating_sub(32)..];
        out.extend(std::iter::repeat_n(0, 32 - int.len()));
        out.extend_from_slice(int);
        i += 2 + len;
    }
    out
}

/// `tiermesh token keygen` then `issue`: the files it writes are what the relay and the
/// issuer need, the private key is private, and the token grants what was asked.
#[test]
fn token_command_keygen_and_issue() {
    use clap::Parser as _;
    use tiermesh_relay::token_cli;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: token_cli::Args,
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keys");
    let args =
        Cli::try_parse_from(["token", "keygen", "--alg", "eddsa", "--out", out.to_str().unwrap()])
            .unwrap()
            .args;
    token_cli::run(args).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(out.join("private.pem")).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "private key readable by others: {mode:o}");
    // Running it again never replaces a key.
    let args =
        Cli::try_parse_from(["token", "keygen", "--out", out.to_str().unwrap()]).unwrap().args;
    let err = token_cli::run(args).unwrap_err();
    assert!(format!("{err:#}").contains("never replaced"), "{err:#}");

    let publish = vec!["clinic/room-42/dr-lee".parse().unwrap()];
    let subscribe = vec!["clinic/room-42".parse().unwrap()];
    let token = token_cli::issue(
        &out.join("private.pem"),
        &publish,
        &subscribe,
        Duration::from_secs(90),
        Some("dr-lee".into()),
    )
    .unwrap();
    let real_now = SystemTime::now();
    for public in ["public.pem", "public.jwk"] {
        let auth = Authorizer::load(&[out.join(public)]).unwrap();
        let grant = auth.verify(token.expose(), real_now).unwrap();
        assert!(grant.allows(Action::Publish, &ns("clinic/room-42/dr-lee")));
        assert!(grant.allows(Action::Subscribe, &ns("clinic/room-42/patient")));
        assert!(!grant.allows(Action::Publish, &ns("clinic/room-42/patient")));
        let left = grant.expires_at.duration_since(real_now).unwrap();
        assert!(left <= Duration::from_secs(91) && left >= Duration::from_secs(85), "{left:?}");
    }
    let err = token_cli::issue(&out.join("private.pem"), &[], &[], Duration::from_secs(60), None)
        .unwrap_err();
    assert!(err.to_string().contains("--publish"), "{err}");
    let err =
        token_cli::issue(&out.join("public.pem"), &publish, &[], Duration::from_secs(60), None)
            .unwrap_err();
    assert!(format!("{err:#}").contains("PRIVATE KEY"), "{err:#}");
    assert!(Cli::try_parse_from(["token", "issue", "--key", "k", "--publish", "a//b"]).is_err());
}

/// Bad bytes from a client are never a panic and never a pass: thousands of mutated tokens
/// (flipped, dropped, inserted and duplicated bytes) are all refused with an error.
#[test]
fn mutated_tokens_never_panic_or_pass() {
    let (key, auth) = setup(Algorithm::Es256);
    let good = key.sign(&claims(&["clinic"], &["clinic"])).unwrap().into_inner().into_bytes();
    // xorshift64*: deterministic, so a failure repeats.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \xff";
    for round in 0..5_000 {
        let mut t = good.clone();
        for _ in 0..1 + next() % 3 {
            let i = (next() % t.len() as u64) as usize;
            match next() % 4 {
                0 => t[i] = alphabet[(next() % alphabet.len() as u64) as usize],
                1 => {
                    t.remove(i);
                }
                2 => t.insert(i, alphabet[(next() % alphabet.len() as u64) as usize]),
                _ => t.truncate(i),
            }
            if t.is_empty() {
                break;
            }
        }
        let result = auth.verify_bytes(&t, now());
        if t != good {
            assert!(result.is_err(), "round {round}: mutated token accepted");
        }
    }
    assert!(auth.verify_bytes(&good, now()).is_ok());
}
