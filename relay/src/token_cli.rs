//! `tiermesh token`: create signing keys, issue tokens, check tokens.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};

use crate::auth::{Algorithm, Authorizer, Claims, Prefix, Secret, SigningKey};

/// Arguments of `tiermesh token`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create a key pair: DIR/private.pem (for issuing), DIR/public.pem and DIR/public.jwk
    /// (for the relay's auth.keys)
    Keygen {
        /// Signature algorithm
        #[arg(long, value_enum, default_value_t = Algorithm::Es256)]
        alg: Algorithm,
        /// Folder to write the keys into (created if missing; existing keys are not replaced)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Print a token signed with a private key
    Issue {
        /// Private key (PEM, PKCS#8) from `tiermesh token keygen`
        #[arg(long, value_name = "PRIVATE.pem")]
        key: PathBuf,
        /// Namespace prefix the holder may publish under, fields joined by '/' (repeatable)
        #[arg(long, value_name = "PREFIX")]
        publish: Vec<Prefix>,
        /// Namespace prefix the holder may subscribe under, fields joined by '/' (repeatable)
        #[arg(long, value_name = "PREFIX")]
        subscribe: Vec<Prefix>,
        /// How long the token is valid ("90s", "1h", "7d")
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
        ttl: Duration,
        /// Who the token is for (the `sub` claim)
        #[arg(long)]
        subject: Option<String>,
    },
    /// Check a token (read from standard input) against public keys and print what it grants
    Verify {
        /// Public key file (PEM, JWK or JWK Set; repeatable)
        #[arg(long, value_name = "FILE", required = true)]
        key: Vec<PathBuf>,
    },
}

/// Runs `tiermesh token`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Keygen { alg, out } => keygen(alg, &out),
        Command::Issue { key, publish, subscribe, ttl, subject } => {
            let token = issue(&key, &publish, &subscribe, ttl, subject)?;
            println!("{}", token.expose());
            Ok(())
        }
        Command::Verify { key } => {
            let mut token = String::new();
            std::io::stdin()
                .read_to_string(&mut token)
                .context("reading the token from standard input")?;
            let authorizer = Authorizer::load(&key)?;
            let grant = authorizer.verify(token.trim(), SystemTime::now())?;
            let list =
                |p: &[Prefix]| p.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>().join(", ");
            println!("valid");
            println!("publish:   {}", list(&grant.publish));
            println!("subscribe: {}", list(&grant.subscribe));
            let left = grant.expires_at.duration_since(SystemTime::now()).unwrap_or_default();
            println!(
                "expires in {}",
                humantime::format_duration(Duration::from_secs(left.as_secs()))
            );
            Ok(())
        }
    }
}

/// Writes a new key pair into `dir`: `private.pem` (mode 0600), `public.pem`, `public.jwk`.
/// Refuses to replace existing files.
pub fn keygen(alg: Algorithm, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = SigningKey::generate(alg)?;
    let public = key.verifying_key();
    let private_path = dir.join("private.pem");
    write_new(&private_path, key.to_pem().expose().as_bytes(), 0o600)?;
    write_new(&dir.join("public.pem"), public.to_pem().as_bytes(), 0o644)?;
    let jwk = serde_json::to_string_pretty(&public.to_jwk())? + "\n";
    write_new(&dir.join("public.jwk"), jwk.as_bytes(), 0o644)?;
    println!("{} key {} written to {}", alg, public.thumbprint(), dir.display());
    Ok(())
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| {
        format!("creating {} (an existing key is never replaced)", path.display())
    })?;
    file.write_all(contents).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Signs a token with the private key at `key`.
pub fn issue(
    key: &Path,
    publish: &[Prefix],
    subscribe: &[Prefix],
    ttl: Duration,
    subject: Option<String>,
) -> anyhow::Result<Secret<String>> {
    if publish.is_empty() && subscribe.is_empty() {
        bail!("a token must grant something: give --publish and/or --subscribe");
    }
    if ttl < Duration::from_secs(1) {
        bail!("--ttl must be at least 1s");
    }
    let key = SigningKey::load(key)?;
    let strings = |p: &[Prefix]| p.iter().map(Prefix::to_string).collect();
    let mut claims = Claims::new(SystemTime::now(), ttl, strings(publish), strings(subscribe));
    claims.sub = subject;
    Ok(key.sign(&claims)?)
}
