//! Guards access control as draft-16 words it: a missing or out-of-scope token gets
//! REQUEST_ERROR UNAUTHORIZED, an expired one EXPIRED_AUTH_TOKEN and an unparsable one
//! MALFORMED_AUTH_TOKEN (§9.8); a valid one passes; a session is closed with the session
//! error EXPIRED_AUTH_TOKEN (0x18, §3.4) when its token expires.

mod common;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::*;
use tiermesh_client::moq::{Error, SubscribeOptions};
use tiermesh_proto::TerminationCode;
use tiermesh_proto::message::RequestErrorCode;
use tiermesh_relay::auth::{Algorithm, Claims, SigningKey};
use tiermesh_relay::config::RelayConfig;

struct Keys {
    key: SigningKey,
    _dir: tempfile::TempDir,
    config: RelayConfig,
}

fn keys() -> Keys {
    let key = SigningKey::generate(Algorithm::EdDsa).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.pub.pem");
    std::fs::write(&path, key.verifying_key().to_pem()).unwrap();
    let mut config = config();
    config.auth.public.clear();
    config.auth.public_publish.clear();
    config.auth.keys = vec![path];
    Keys { key, _dir: dir, config }
}

fn token(
    key: &SigningKey,
    issued: SystemTime,
    ttl: Duration,
    publish: &[&str],
    subscribe: &[&str],
) -> Bytes {
    let claims = Claims::new(
        issued,
        ttl,
        publish.iter().map(|s| s.to_string()).collect(),
        subscribe.iter().map(|s| s.to_string()).collect(),
    );
    Bytes::from(key.sign(&claims).unwrap().expose().clone())
}

fn unauthorized(r: Result<impl std::fmt::Debug, Error>) {
    refused(r, RequestErrorCode::Unauthorized);
}

fn refused(r: Result<impl std::fmt::Debug, Error>, code: RequestErrorCode) {
    match r {
        Err(Error::Rejected { code: got, .. }) if got == code => {}
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn requests_need_a_valid_token_in_scope() {
    let k = keys();
    let relay = relay(k.config.clone()).await;
    let hour = Duration::from_secs(3600);
    let now = SystemTime::now();
    let pub_token = token(&k.key, now, hour, &["clinic/room-42"], &[]);
    let mut publisher =
        publisher_with(&relay, "moqt", options(&relay).token(pub_token), None).await;

    // No token at all.
    let anon = connect(&relay, "moqt").await;
    unauthorized(
        within("subscribe", anon.subscribe(track("video"), SubscribeOptions::default())).await,
    );
    unauthorized(within("publish_namespace", anon.publish_namespace(ns(), None)).await);

    // A valid token for another room (in SETUP over WebTransport).
    let other = token(&k.key, now, hour, &[], &["clinic/room-7"]);
    let wrong = connect_with(&relay, "https", options(&relay).token(other)).await;
    unauthorized(
        within("subscribe", wrong.subscribe(track("video"), SubscribeOptions::default())).await,
    );

    // An expired token given in the request itself.
    let expired =
        token(&k.key, now - Duration::from_secs(600), Duration::from_secs(60), &[], &["clinic"]);
    let opts = SubscribeOptions { token: Some(expired), ..Default::default() };
    refused(
        within("subscribe", anon.subscribe(track("video"), opts)).await,
        RequestErrorCode::ExpiredAuthToken,
    );
    // A token value that is not a JWT at all.
    let opts =
        SubscribeOptions { token: Some(Bytes::from_static(b"not a jwt")), ..Default::default() };
    refused(
        within("subscribe", anon.subscribe(track("video"), opts)).await,
        RequestErrorCode::MalformedAuthToken,
    );

    // A valid token in the request passes, and so does one in the URL (`?jwt=`).
    let good = token(&k.key, now, hour, &[], &["clinic/room-42"]);
    let opts = SubscribeOptions { token: Some(good.clone()), ..Default::default() };
    let mut r = within("subscribe", anon.subscribe(track("video"), opts)).await.unwrap();
    let w = within("upstream", publisher.writers.recv()).await.unwrap();
    write_group(&w, 0, 0..3, false);
    expect_objects(&mut r, 3).await;
    let jwt = std::str::from_utf8(&good).unwrap();
    let url: tiermesh_client::transport::Url =
        format!("https://127.0.0.1:{}/?jwt={jwt}", relay.local_addr().port()).parse().unwrap();
    let (via_url, driver) =
        within("connect", tiermesh_client::moq::connect(&url, options(&relay))).await.unwrap();
    tokio::spawn(driver.run());
    within("subscribe via ?jwt=", via_url.subscribe(track("video"), SubscribeOptions::default()))
        .await
        .unwrap();
    let rendered = relay.metrics().render();
    assert!(rendered.contains("tiermesh_auth_refused_total{action=\"subscribe\"} 4"), "{rendered}");
    assert!(rendered.contains("tiermesh_auth_refused_total{action=\"publish\"} 1"), "{rendered}");
    relay.shutdown().await;
}

#[tokio::test]
async fn session_closes_when_its_token_expires() {
    let k = keys();
    let relay = relay(k.config.clone()).await;
    let now = SystemTime::now();
    // `exp` has one-second resolution: this token expires one to two seconds from now.
    let short = token(&k.key, now, Duration::from_secs(2), &[], &["clinic"]);
    let conn = connect_with(&relay, "moqt", options(&relay).token(short)).await;
    let reason = within("expiry", conn.closed()).await;
    assert!(reason.by_peer(), "{reason}");
    assert_eq!(reason.code(), Some(TerminationCode::ExpiredAuthToken.code()), "{reason}");
    relay.shutdown().await;
}
