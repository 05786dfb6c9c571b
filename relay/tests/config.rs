//! Guards `tiermesh relay`'s configuration: the file and the flags combine as documented
//! (a flag that is not given never clobbers the file), unknown keys are errors that name the
//! key and the file, and bad values say which key is wrong.

use std::path::Path;
use std::time::Duration;

use clap::Parser as _;
use tiermesh_relay::config::{ConfigError, Flags, RelayConfig, SchedulerMode};

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    flags: Flags,
}

fn flags(args: &[&str]) -> Flags {
    Cli::try_parse_from(std::iter::once("relay").chain(args.iter().copied())).unwrap().flags
}

fn write(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("relay.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const FILE: &str = r#"
listen = "127.0.0.1:5000"
ops = "127.0.0.1:9100"
linger = "250ms"
goaway_grace = "1m"

[tls]
cert = "certs/relay.pem"
key = "/etc/tiermesh/relay.key"

[auth]
keys = ["keys/public.pem"]
public = ["demo"]

[cache]
groups = 3

[limits]
max_sessions = 50
idle_timeout = "45s"

[scheduler]
mode = "fifo"
"#;

#[test]
fn file_values_are_read_and_relative_paths_follow_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), FILE);
    let config = RelayConfig::load(Some(&path), &Flags::default()).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:5000");
    assert_eq!(config.ops.to_string(), "127.0.0.1:9100");
    assert_eq!(config.linger, Duration::from_millis(250));
    assert_eq!(config.goaway_grace, Duration::from_secs(60));
    assert_eq!(config.tls.cert.as_deref(), Some(dir.path().join("certs/relay.pem").as_path()));
    assert_eq!(config.tls.key.as_deref(), Some(Path::new("/etc/tiermesh/relay.key")));
    assert_eq!(config.auth.keys, vec![dir.path().join("keys/public.pem")]);
    assert_eq!(config.auth.public, vec!["demo".parse().unwrap()]);
    assert_eq!(config.cache.groups, 3);
    assert_eq!(config.limits.max_sessions, 50);
    assert_eq!(config.limits.idle_timeout, Duration::from_secs(45));
    // Keys the file leaves out keep their defaults.
    assert_eq!(config.limits.max_namespace_depth, 32);
    assert_eq!(config.limits.max_requests_per_session, 100);
    assert_eq!(config.scheduler.mode, SchedulerMode::Fifo);
}

#[test]
fn flags_not_given_do_not_clobber_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), FILE);
    let from_file = RelayConfig::load(Some(&path), &Flags::default()).unwrap();
    // Parsing an empty command line gives the same as no flags at all.
    assert_eq!(RelayConfig::load(Some(&path), &flags(&[])).unwrap(), from_file);

    // A flag replaces exactly its own key.
    let config =
        RelayConfig::load(Some(&path), &flags(&["--listen", "127.0.0.1:6000", "--linger", "2s"]))
            .unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:6000");
    assert_eq!(config.linger, Duration::from_secs(2));
    let mut expected = from_file.clone();
    expected.listen = config.listen;
    expected.linger = config.linger;
    assert_eq!(config, expected);

    // Lists given as flags replace the file's list; relative flag paths stay as given.
    let config = RelayConfig::load(
        Some(&path),
        &flags(&[
            "--auth-key",
            "a.pem",
            "--auth-key",
            "b.jwk",
            "--public",
            "open/house",
            "--scheduler",
            "priority",
        ]),
    )
    .unwrap();
    assert_eq!(
        config.auth.keys,
        vec![Path::new("a.pem").to_owned(), Path::new("b.jwk").to_owned()]
    );
    assert_eq!(config.auth.public, vec!["open/house".parse().unwrap()]);
    assert_eq!(config.scheduler.mode, SchedulerMode::Priority);
    assert_eq!(config.cache, from_file.cache);
}

#[test]
fn config_flag_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), FILE);
    let f = flags(&["--config", path.to_str().unwrap(), "--max-sessions", "7"]);
    let config = RelayConfig::from_flags(&f).unwrap();
    assert_eq!(config.limits.max_sessions, 7);
    assert_eq!(config.cache.groups, 3, "the file's value survives");
}

#[test]
fn flags_alone_make_a_config() {
    let config = RelayConfig::load(
        None,
        &flags(&["--tls-generate", "--listen", "127.0.0.1:0", "--ops", "127.0.0.1:0"]),
    )
    .unwrap();
    assert!(config.tls.generate);
    assert_eq!(config.linger, Duration::from_secs(5));
    assert_eq!(config.cache.groups, 2);
}

#[test]
fn unknown_keys_are_errors_naming_the_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("lisen = \"127.0.0.1:1\"\n", "lisen"),
        ("[tls]\ngenerate = true\ncertificate = \"x\"\n", "certificate"),
        ("[limits]\nmax_session = 3\n", "max_session"),
        ("[cach]\ngroups = 1\n", "cach"),
    ] {
        let path = write(dir.path(), text);
        let err = RelayConfig::load(Some(&path), &Flags::default()).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&format!("unknown field `{key}`")), "{message}");
        assert!(message.contains("relay.toml"), "{message}");
    }
}

#[test]
fn bad_values_say_which_key_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("linger = \"5 parsecs\"\n[tls]\ngenerate = true\n", "linger"),
        ("listen = \"not an address\"\n[tls]\ngenerate = true\n", "listen"),
        ("[tls]\ngenerate = true\n[auth]\npublic = [\"a//b\"]\n", "empty namespace field"),
        ("[tls]\ngenerate = true\n[cache]\ngroups = -1\n", "groups"),
    ];
    for (text, expect) in cases {
        let path = write(dir.path(), text);
        let message = RelayConfig::load(Some(&path), &Flags::default()).unwrap_err().to_string();
        assert!(message.contains(expect), "{expect:?} not in {message}");
    }
    let invalid = [
        ("[tls]\ncert = \"c.pem\"\n", "tls.key"),
        ("[tls]\ngenerate = true\n[cache]\ngroups = 0\n", "cache.groups"),
        (
            "[tls]\ngenerate = true\n[limits]\nmax_namespace_depth = 33\n",
            "limits.max_namespace_depth",
        ),
        (
            "[tls]\ngenerate = true\n[limits]\nmax_namespace_len = 5000\n",
            "limits.max_namespace_len",
        ),
        ("[tls]\ngenerate = true\n[limits]\nidle_timeout = \"0s\"\n", "limits.idle_timeout"),
        ("", "tls"),
    ];
    for (text, key) in invalid {
        let path = write(dir.path(), text);
        match RelayConfig::load(Some(&path), &Flags::default()) {
            Err(ConfigError::Invalid { key: got, .. }) => assert_eq!(got, key),
            other => panic!("{text:?}: {other:?}"),
        }
    }
    let missing =
        RelayConfig::load(Some(&dir.path().join("nope.toml")), &Flags::default()).unwrap_err();
    assert!(missing.to_string().contains("nope.toml"), "{missing}");
}

#[test]
fn bad_flags_are_refused_by_the_parser() {
    for args in [
        &["--linger", "soon"][..],
        &["--public", "a//b"],
        &["--scheduler", "random"],
        &["--listen", "x"],
    ] {
        let parsed = Cli::try_parse_from(std::iter::once("relay").chain(args.iter().copied()));
        assert!(parsed.is_err(), "{args:?} was accepted");
    }
}

#[test]
fn readme_example_has_every_key_and_loads() {
    let readme = include_str!("../README.md");
    let start = readme.find("```toml\n").expect("relay/README.md has a ```toml example") + 8;
    let example = &readme[start..start + readme[start..].find("```").unwrap()];
    let config = RelayConfig::parse(example, Path::new("README.md")).unwrap();
    config.validate().unwrap();

    fn keys(value: &toml::Value, prefix: &str, out: &mut Vec<String>) {
        if let toml::Value::Table(table) = value {
            for (k, v) in table {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                keys(v, &key, out);
                out.push(key);
            }
        }
    }
    let (mut documented, mut all) = (Vec::new(), Vec::new());
    keys(&toml::from_str(example).unwrap(), "", &mut documented);
    keys(&toml::from_str(&config.to_toml()).unwrap(), "", &mut all);
    for key in all {
        assert!(documented.contains(&key), "README example lacks `{key}`");
    }
}
