//! Access control: every publish and subscribe request passes [`Authorizer::authorize`].
//!
//! A client proves what it may do with a token: a JWS in compact form (a JWT) signed with
//! ES256 (ECDSA P-256, SHA-256) or EdDSA (Ed25519). The relay knows only public keys; the
//! operator's backend (or `tiermesh token issue`) holds the private key.
//!
//! # Claims
//!
//! ```json
//! {
//!   "sub": "dr-lee",                          // optional: who the token was issued to
//!   "iat": 1767000000,                        // optional: issued at (Unix seconds)
//!   "nbf": 1767000000,                        // optional: not valid before (Unix seconds)
//!   "exp": 1767003600,                        // required: expires at (Unix seconds)
//!   "publish":   ["clinic/room-42/dr-lee"],   // prefixes the holder may publish under
//!   "subscribe": ["clinic/room-42"]           // prefixes the holder may subscribe under
//! }
//! ```
//!
//! A prefix names MoQT namespace *fields* joined by `/`: `clinic/room-42` is the tuple
//! (`clinic`, `room-42`). It matches every namespace whose first fields are equal to its
//! fields, so `clinic` allows (`clinic`, `room-42`) but not (`clinic2`). The empty string is
//! the empty tuple and matches every namespace. A field cannot itself contain `/`. Unknown
//! claims are ignored; `publish` and `subscribe` default to empty.
//!
//! The header must name `alg` `ES256` or `EdDSA` and the algorithm of the key that verifies
//! it; anything else (`none`, `HS256`, RSA, a `crit` header) is refused, so a public key can
//! never be used as an HMAC secret. `kid`, when present, selects the key: it is the key's
//! RFC 7638 JWK thumbprint (what `tiermesh token` writes), or the `kid` of a JWK file.
//!
//! Tokens are held in [`Secret`], whose `Debug` and `Display` print `[redacted]`, so a token
//! never reaches a log.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};

/// The Token Type tiermesh uses in the AUTHORIZATION TOKEN parameter: 0, "negotiated out of
/// band" in the draft's registry (no JWT type is registered), with the JWT's ASCII bytes as
/// the Token Value.
pub const TOKEN_TYPE: u64 = 0;

/// The most namespace fields a prefix may have: the draft's limit for a Track Namespace.
pub const MAX_PREFIX_FIELDS: usize = 32;

/// The most bytes a prefix's fields may add up to: the draft's limit for a Full Track Name.
pub const MAX_PREFIX_LEN: usize = 4096;

/// The longest token accepted. A token with a handful of prefixes is a few hundred bytes;
/// 8 KiB leaves room for long prefix lists while bounding the work one request can cause.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// How far `nbf` may lie in the relay's future and still be accepted. The backend that
/// issues tokens runs on another machine whose clock may be a few seconds ahead; a token used
/// the moment it is issued must not be refused for that. Expiry gets no such leeway, because
/// the relay closes a session exactly when its token expires.
pub const NOT_BEFORE_LEEWAY: Duration = Duration::from_secs(30);

/// A value that must never be printed: `Debug` and `Display` show `[redacted]`.
///
/// Every token the relay holds is a `Secret<String>`; read it with [`Secret::expose`] only
/// where the bytes are needed (verification, sending).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The wrapped value. Never pass it to a log.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What a request wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Send media: PUBLISH, PUBLISH_NAMESPACE.
    Publish,
    /// Receive media or learn about it: SUBSCRIBE, FETCH, SUBSCRIBE_NAMESPACE, TRACK_STATUS.
    Subscribe,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
        })
    }
}

/// A signature algorithm tokens may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256 (JOSE `ES256`).
    Es256,
    /// Ed25519 (JOSE `EdDSA`).
    #[value(name = "eddsa")]
    EdDsa,
}

impl Algorithm {
    /// The JOSE `alg` name.
    pub fn jose_name(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::EdDsa => "EdDSA",
        }
    }

    fn from_jose(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(Algorithm::Es256),
            "EdDSA" => Some(Algorithm::EdDsa),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.jose_name())
    }
}

/// Why a token or a request was refused. Every variant is answered with the draft's
/// UNAUTHORIZED request error; [`AuthError::Expired`] during a session also closes it.
/// No variant carries the token or a namespace, so the error can be logged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// The request needs a token and none was given.
    #[error("no authorization token")]
    MissingToken,
    /// The token is not a well-formed JWS compact serialization (parts, base64, JSON).
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The token's header names an algorithm the relay does not accept (`none`, HMAC, RSA…).
    #[error("token algorithm {0:?} is not accepted (ES256 or EdDSA only)")]
    UnsupportedAlgorithm(String),
    /// The header's `kid` names a key whose algorithm differs from the header's `alg`.
    #[error("token algorithm {token} does not match its key's algorithm {key}")]
    AlgorithmMismatch {
        /// The algorithm the token's header names.
        token: Algorithm,
        /// The algorithm of the key its `kid` selects.
        key: Algorithm,
    },
    /// No configured key matches the token's `kid` (or, without `kid`, its algorithm).
    #[error("token was signed by a key this relay does not know")]
    UnknownKey,
    /// The signature does not verify with the selected key(s).
    #[error("token signature is invalid")]
    BadSignature,
    /// The token's claims are missing `exp` or hold a malformed prefix.
    #[error("token claims are invalid: {0}")]
    InvalidClaims(String),
    /// The token's `exp` has passed.
    #[error("token expired {} s ago", .ago.as_secs())]
    Expired {
        /// How long ago it expired, by the relay's clock.
        ago: Duration,
    },
    /// The token's `nbf` lies in the future (beyond [`NOT_BEFORE_LEEWAY`]).
    #[error("token is not valid for another {} s", .wait.as_secs())]
    NotYetValid {
        /// How long until it becomes valid: a client may retry after this.
        wait: Duration,
    },
    /// The token is valid but does not grant this action on the requested namespace.
    #[error("token does not grant {0} on this namespace")]
    OutOfScope(Action),
}

impl AuthError {
    /// When the same request could succeed later: a token not yet valid becomes valid after
    /// this long (the REQUEST_ERROR Retry Interval). `None` for every other error.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AuthError::NotYetValid { wait } => Some(*wait),
            _ => None,
        }
    }
}

/// Why a key could not be read, parsed or generated.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The key text is not a supported key; the message says what was wrong.
    #[error("{origin}: {reason}")]
    Invalid {
        /// Where the key came from (a path, or `<memory>`).
        origin: String,
        /// What was wrong.
        reason: String,
    },
    /// The system random generator failed.
    #[error("random generator failed")]
    Random,
}

fn invalid(origin: &str, reason: impl Into<String>) -> KeyError {
    KeyError::Invalid { origin: origin.to_owned(), reason: reason.into() }
}

/// A namespace prefix: zero or more namespace fields. See the module docs for the `a/b`
/// text form.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Prefix(Vec<Vec<u8>>);

/// Why a prefix's text form was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PrefixError {
    /// A field between two `/` (or at either end) is empty; the draft forbids empty fields.
    #[error("empty namespace field in prefix {0:?}")]
    EmptyField(String),
    /// More fields than the draft's 32.
    #[error("prefix has {0} fields; at most 32 are allowed")]
    TooManyFields(usize),
    /// Longer than the draft's 4096 bytes.
    #[error("prefix is {0} bytes; at most 4096 are allowed")]
    TooLong(usize),
}

impl Prefix {
    /// The prefix that matches every namespace.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// A prefix of the given fields.
    pub fn from_fields<F: AsRef<[u8]>>(fields: &[F]) -> Result<Self, PrefixError> {
        let fields: Vec<Vec<u8>> = fields.iter().map(|f| f.as_ref().to_vec()).collect();
        let text =
            || fields.iter().map(|f| String::from_utf8_lossy(f)).collect::<Vec<_>>().join("/");
        if fields.iter().any(Vec::is_empty) {
            return Err(PrefixError::EmptyField(text()));
        }
        if fields.len() > MAX_PREFIX_FIELDS {
            return Err(PrefixError::TooManyFields(fields.len()));
        }
        let len: usize = fields.iter().map(Vec::len).sum();
        if len > MAX_PREFIX_LEN {
            return Err(PrefixError::TooLong(len));
        }
        Ok(Self(fields))
    }

    /// The prefix's fields.
    pub fn fields(&self) -> &[Vec<u8>] {
        &self.0
    }

    /// Whether `namespace` starts with this prefix, field by field.
    pub fn matches<F: AsRef<[u8]>>(&self, namespace: &[F]) -> bool {
        self.0.len() <= namespace.len()
            && self.0.iter().zip(namespace).all(|(p, n)| p.as_slice() == n.as_ref())
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Ok(Self::root());
        }
        if s.len() > MAX_PREFIX_LEN + MAX_PREFIX_FIELDS {
            return Err(PrefixError::TooLong(s.len()));
        }
        let fields: Vec<&str> = s.split('/').collect();
        if fields.iter().any(|f| f.is_empty()) {
            return Err(PrefixError::EmptyField(s.to_owned()));
        }
        Self::from_fields(&fields)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, field) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            f.write_str(&String::from_utf8_lossy(field))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Prefix({:?})", self.to_string())
    }
}

impl Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a verified token allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The token's `sub` claim, if any (it may name a person, so it is kept secret too).
    pub subject: Option<Secret<String>>,
    /// Prefixes the holder may publish under.
    pub publish: Vec<Prefix>,
    /// Prefixes the holder may subscribe under.
    pub subscribe: Vec<Prefix>,
    /// When the token expires: a session authorized by it must be closed then.
    pub expires_at: SystemTime,
}

impl Grant {
    /// Whether this grant allows `action` on `namespace` (a tuple of fields). Expiry is not
    /// checked here; [`Authorizer::authorize`] checks both.
    pub fn allows<F: AsRef<[u8]>>(&self, action: Action, namespace: &[F]) -> bool {
        let prefixes = match action {
            Action::Publish => &self.publish,
            Action::Subscribe => &self.subscribe,
        };
        prefixes.iter().any(|p| p.matches(namespace))
    }

    /// Whether the grant's token has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.expires_at
    }

    /// Time left until the token expires (zero once it has): arm the session's close timer
    /// with it.
    pub fn expires_in(&self, now: SystemTime) -> Duration {
        self.expires_at.duration_since(now).unwrap_or_default()
    }
}

/// The claims a token carries (see the module docs for the schema).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who the token was issued to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Issued at, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not valid before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Expires at, Unix seconds.
    pub exp: u64,
    /// Prefixes the holder may publish under, fields joined by `/`.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Prefixes the holder may subscribe under, fields joined by `/`.
    #[serde(default)]
    pub subscribe: Vec<String>,
}

impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `sub` may name a person.
        f.debug_struct("Claims")
            .field("sub", &self.sub.as_ref().map(|_| "[redacted]"))
            .field("iat", &self.iat)
            .field("nbf", &self.nbf)
            .field("exp", &self.exp)
            .field("publish", &self.publish)
            .field("subscribe", &self.subscribe)
            .finish()
    }
}

impl Claims {
    /// Claims issued at `now`, valid for `ttl`, granting the given prefixes.
    pub fn new(
        now: SystemTime,
        ttl: Duration,
        publish: Vec<String>,
        subscribe: Vec<String>,
    ) -> Self {
        let iat = unix_secs(now);
        Self {
            sub: None,
            iat: Some(iat),
            nbf: None,
            exp: iat.saturating_add(ttl.as_secs().max(1)),
            publish,
            subscribe,
        }
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    // RFC 7515 4.1.11: extensions the recipient does not understand must be refused.
    #[serde(default, skip_serializing)]
    crit: Option<serde_json::Value>,
}

/// DER SubjectPublicKeyInfo prefix of an uncompressed P-256 key (id-ecPublicKey, prime256v1,
/// BIT STRING of 66 bytes). DER is canonical, so every such key starts with these bytes.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// DER SubjectPublicKeyInfo prefix of an Ed25519 key (id-Ed25519, BIT STRING of 33 bytes).
const ED25519_SPKI_PREFIX: [u8; 12] =
    [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// A public key that verifies tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    alg: Algorithm,
    /// Uncompressed point (65 bytes) for P-256, the 32-byte key for Ed25519.
    public: Vec<u8>,
    /// RFC 7638 thumbprint.
    thumbprint: String,
    /// `kid` from a JWK file, if it had one.
    kid: Option<String>,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("alg", &self.alg)
            .field("thumbprint", &self.thumbprint)
            .field("kid", &self.kid)
            .finish()
    }
}

impl VerifyingKey {
    fn from_raw(alg: Algorithm, public: Vec<u8>, kid: Option<String>) -> Self {
        let thumbprint = thumbprint(alg, &public);
        Self { alg, public, thumbprint, kid }
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The key's id: its RFC 7638 JWK thumbprint (base64url SHA-256).
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    fn has_kid(&self, kid: &str) -> bool {
        self.thumbprint == kid || self.kid.as_deref() == Some(kid)
    }

    /// Reads every public key in a file: PEM (`PUBLIC KEY` blocks, SubjectPublicKeyInfo), a
    /// JWK, or a JWK Set (`{"keys": [...]}`).
    pub fn load(path: &Path) -> Result<Vec<Self>, KeyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| KeyError::Io { path: path.to_owned(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses every public key in `text` (PEM, JWK or JWK Set); `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Vec<Self>, KeyError> {
        let trimmed = text.trim_start();
        let keys = if trimmed.starts_with('{') {
            Self::parse_jwk_text(trimmed, origin)?
        } else if trimmed.starts_with("-----BEGIN") {
            let blocks =
                pem::parse_many(trimmed).map_err(|e| invalid(origin, format!("bad PEM: {e}")))?;
            let mut keys = Vec::new();
            for block in blocks {
                match block.tag() {
                    "PUBLIC KEY" => keys.push(Self::from_spki_der(block.contents(), origin)?),
                    "PRIVATE KEY" | "EC PRIVATE KEY" | "OPENSSH PRIVATE KEY" => {
                        return Err(invalid(
                            origin,
                            "holds a private key; the relay needs only the public key (public.pem)",
                        ));
                    }
                    tag => return Err(invalid(origin, format!("unexpected PEM block {tag:?}"))),
                }
            }
            keys
        } else {
            return Err(invalid(origin, "neither PEM nor JWK"));
        };
        if keys.is_empty() {
            return Err(invalid(origin, "no public key found"));
        }
        Ok(keys)
    }

    /// Parses a DER SubjectPublicKeyInfo holding an uncompressed P-256 or an Ed25519 key.
    pub fn from_spki_der(der: &[u8], origin: &str) -> Result<Self, KeyError> {
        if let Some(point) = der.strip_prefix(&P256_SPKI_PREFIX[..])
            && point.len() == 65
            && point[0] == 0x04
        {
            check_p256_point(point, origin)?;
            return Ok(Self::from_raw(Algorithm::Es256, point.to_vec(), None));
        }
        if let Some(key) = der.strip_prefix(&ED25519_SPKI_PREFIX[..])
            && key.len() == 32
        {
            return Ok(Self::from_raw(Algorithm::EdDsa, key.to_vec(), None));
        }
        Err(invalid(origin, "not an uncompressed P-256 or an Ed25519 public key"))
    }

    fn parse_jwk_text(text: &str, origin: &str) -> Result<Vec<Self>, KeyError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| invalid(origin, format!("bad JSON: {e}")))?;
        match value.get("keys") {
            Some(serde_json::Value::Array(keys)) => {
                keys.iter().map(|k| Self::from_jwk(k, origin)).collect()
            }
            Some(_) => Err(invalid(origin, "\"keys\" is not an array")),
            None => Ok(vec![Self::from_jwk(&value, origin)?]),
        }
    }

    /// Parses one public JWK (`kty` `EC` with `crv` `P-256`, or `OKP` with `crv` `Ed25519`).
    pub fn from_jwk(jwk: &serde_json::Value, origin: &str) -> Result<Self, KeyError> {
        let field = |name: &str| jwk.get(name).and_then(|v| v.as_str());
        let b64 = |name: &str, len: usize| -> Result<Vec<u8>, KeyError> {
            let text =
                field(name).ok_or_else(|| invalid(origin, format!("JWK has no \"{name}\"")))?;
            let bytes = URL_SAFE_NO_PAD
                .decode(text)
                .map_err(|_| invalid(origin, format!("JWK \"{name}\" is not base64url")))?;
            if bytes.len() != len {
                return Err(invalid(
                    origin,
                    format!("JWK \"{name}\" is {} bytes, expected {len}", bytes.len()),
                ));
            }
            Ok(bytes)
        };
        if jwk.get("d").is_some() {
            return Err(invalid(
                origin,
                "holds a private JWK; the relay needs only the public key",
            ));
        }
        let alg = match (field("kty"), field("crv")) {
            (Some("EC"), Some("P-256")) => Algorithm::Es256,
            (Some("OKP"), Some("Ed25519")) => Algorithm::EdDsa,
            (kty, crv) => {
                return Err(invalid(
                    origin,
                    format!(
                        "unsupported JWK kty {kty:?} crv {crv:?} (EC P-256 or OKP Ed25519 only)"
                    ),
                ));
            }
        };
        if let Some(declared) = field("alg")
            && declared != alg.jose_name()
        {
            return Err(invalid(origin, format!("JWK alg {declared:?} does not fit its key type")));
        }
        let public = match alg {
            Algorithm::Es256 => {
                let mut point = vec![0x04];
                point.extend(b64("x", 32)?);
                point.extend(b64("y", 32)?);
                check_p256_point(&point, origin)?;
                point
            }
            Algorithm::EdDsa => b64("x", 32)?,
        };
        Ok(Self::from_raw(alg, public, field("kid").map(str::to_owned)))
    }

    /// The key as PEM (`PUBLIC KEY`, SubjectPublicKeyInfo).
    pub fn to_pem(&self) -> String {
        let mut der = Vec::new();
        match self.alg {
            Algorithm::Es256 => der.extend_from_slice(&P256_SPKI_PREFIX),
            Algorithm::EdDsa => der.extend_from_slice(&ED25519_SPKI_PREFIX),
        }
        der.extend_from_slice(&self.public);
        pem::encode(&pem::Pem::new("PUBLIC KEY", der))
    }

    /// The key as a public JWK with `kid` and `alg`.
    pub fn to_jwk(&self) -> serde_json::Value {
        let mut jwk = jwk_members(self.alg, &self.public);
        jwk.insert("alg".into(), self.alg.jose_name().into());
        jwk.insert(
            "kid".into(),
            self.kid.clone().unwrap_or_else(|| self.thumbprint.clone()).into(),
        );
        serde_json::Value::Object(jwk)
    }

    fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        let alg: &dyn signature::VerificationAlgorithm = match self.alg {
            Algorithm::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
            Algorithm::EdDsa => &signature::ED25519,
        };
        signature::UnparsedPublicKey::new(alg, &self.public).verify(message, sig).is_ok()
    }
}

/// Refuses a P-256 point that is not on the curve when the key is loaded, rather than at
/// every verification: ring has no direct check, but an ECDH agreement with a throwaway key
/// validates the peer point fully.
fn check_p256_point(point: &[u8], origin: &str) -> Result<(), KeyError> {
    use ring::agreement;
    let rng = SystemRandom::new();
    let mine = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng)
        .map_err(|_| KeyError::Random)?;
    let theirs = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, point);
    agreement::agree_ephemeral(mine, &theirs, |_| ())
        .map_err(|_| invalid(origin, "point is not on P-256"))
}

fn jwk_members(alg: Algorithm, public: &[u8]) -> serde_json::Map<String, serde_json::Value> {
    let mut jwk = serde_json::Map::new();
    match alg {
        Algorithm::Es256 => {
            jwk.insert("kty".into(), "EC".into());
            jwk.insert("crv".into(), "P-256".into());
            jwk.insert("x".into(), URL_SAFE_NO_PAD.encode(&public[1..33]).into());
            jwk.insert("y".into(), URL_SAFE_NO_PAD.encode(&public[33..65]).into());
        }
        Algorithm::EdDsa => {
            jwk.insert("kty".into(), "OKP".into());
            jwk.insert("crv".into(), "Ed25519".into());
            jwk.insert("x".into(), URL_SAFE_NO_PAD.encode(public).into());
        }
    }
    jwk
}

/// RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace.
fn thumbprint(alg: Algorithm, public: &[u8]) -> String {
    // Written out rather than serialized from a map: serde_json keeps insertion order when
    // any crate in the build enables its `preserve_order` feature. Base64url needs no escaping.
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let canonical = match alg {
        Algorithm::Es256 => format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            b64(&public[1..33]),
            b64(&public[33..65])
        ),
        Algorithm::EdDsa => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64(public)),
    };
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()))
}

enum Signer {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

/// A private key that issues tokens (used by `tiermesh token` and tests; a relay never
/// needs one).
pub struct SigningKey {
    signer: Signer,
    pkcs8: Secret<Vec<u8>>,
    public: VerifyingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("public", &self.public).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a new key.
    pub fn generate(alg: Algorithm) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let doc = match alg {
            Algorithm::Es256 => {
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            }
            Algorithm::EdDsa => Ed25519KeyPair::generate_pkcs8(&rng),
        }
        .map_err(|_| KeyError::Random)?;
        Self::from_pkcs8(doc.as_ref(), "<generated>")
    }

    /// Parses an unencrypted PKCS#8 private key (P-256 or Ed25519).
    pub fn from_pkcs8(der: &[u8], origin: &str) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let (signer, alg, public) = if let Ok(k) =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
        {
            let public = k.public_key().as_ref().to_vec();
            (Signer::Es256(k), Algorithm::Es256, public)
        } else if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            let public = k.public_key().as_ref().to_vec();
            (Signer::EdDsa(k), Algorithm::EdDsa, public)
        } else {
            return Err(invalid(origin, "not a PKCS#8 P-256 or Ed25519 private key"));
        };
        Ok(Self {
            signer,
            pkcs8: Secret::new(der.to_vec()),
            public: VerifyingKey::from_raw(alg, public, None),
        })
    }

    /// Parses a PEM `PRIVATE KEY` (PKCS#8) block.
    pub fn from_pem(text: &str, origin: &str) -> Result<Self, KeyError> {
        let block = pem::parse(text).map_err(|e| invalid(origin, format!("bad PEM: {e}")))?;
        match block.tag() {
            "PRIVATE KEY" => Self::from_pkcs8(block.contents(), origin),
            "EC PRIVATE KEY" => Err(invalid(
                origin,
                "SEC1 key; convert it with `openssl pkcs8 -topk8 -nocrypt` to PKCS#8",
            )),
            tag => Err(invalid(origin, format!("expected a PRIVATE KEY block, found {tag:?}"))),
        }
    }

    /// Reads a PEM private key file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| KeyError::Io { path: path.to_owned(), source })?;
        Self::from_pem(&text, &path.display().to_string())
    }

    /// The private key as PEM (`PRIVATE KEY`, PKCS#8).
    pub fn to_pem(&self) -> Secret<String> {
        Secret::new(pem::encode(&pem::Pem::new("PRIVATE KEY", self.pkcs8.expose().clone())))
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// Signs `claims` into a compact JWS whose header carries this key's thumbprint as `kid`.
    pub fn sign(&self, claims: &Claims) -> Result<Secret<String>, KeyError> {
        let header = Header {
            alg: self.public.alg.jose_name().to_owned(),
            kid: Some(self.public.thumbprint.clone()),
            typ: Some("JWT".to_owned()),
            crit: None,
        };
        let mut token = format!("{}.{}", b64_json(&header), b64_json(claims));
        let sig = match &self.signer {
            Signer::Es256(k) => k
                .sign(&SystemRandom::new(), token.as_bytes())
                .map_err(|_| KeyError::Random)?
                .as_ref()
                .to_vec(),
            Signer::EdDsa(k) => k.sign(token.as_bytes()).as_ref().to_vec(),
        };
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(sig));
        Ok(Secret::new(token))
    }
}

fn b64_json<T: Serialize>(value: &T) -> String {
    // Serializing plain structs of strings and integers cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default())
}

/// The relay's one authorization check: verifies tokens with the configured public keys and
/// decides requests, honouring public prefixes.
#[derive(Clone, Debug, Default)]
pub struct Authorizer {
    keys: Vec<VerifyingKey>,
    public_subscribe: Vec<Prefix>,
    public_publish: Vec<Prefix>,
}

impl Authorizer {
    /// An authorizer that trusts `keys` and has no public prefixes.
    pub fn new(keys: Vec<VerifyingKey>) -> Self {
        Self { keys, ..Self::default() }
    }

    /// Reads every key file (see [`VerifyingKey::load`]).
    pub fn load(paths: &[PathBuf]) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        for path in paths {
            keys.extend(VerifyingKey::load(path)?);
        }
        Ok(Self::new(keys))
    }

    /// Lets anyone do `action` under `prefix` without a token.
    pub fn with_public(mut self, action: Action, prefix: Prefix) -> Self {
        match action {
            Action::Publish => self.public_publish.push(prefix),
            Action::Subscribe => self.public_subscribe.push(prefix),
        }
        self
    }

    /// The trusted keys.
    pub fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }

    /// Whether `namespace` is open to `action` without a token.
    pub fn is_public<F: AsRef<[u8]>>(&self, action: Action, namespace: &[F]) -> bool {
        let public = match action {
            Action::Publish => &self.public_publish,
            Action::Subscribe => &self.public_subscribe,
        };
        public.iter().any(|p| p.matches(namespace))
    }

    /// Verifies a token given as bytes (the AUTHORIZATION TOKEN parameter's Token Value).
    pub fn verify_bytes(&self, token: &[u8], now: SystemTime) -> Result<Grant, AuthError> {
        let token = std::str::from_utf8(token).map_err(|_| AuthError::Malformed("not UTF-8"))?;
        self.verify(token, now)
    }

    /// Verifies a compact JWS: structure, algorithm, key, signature, then `nbf` and `exp`.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Grant, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed("too long"));
        }
        let mut parts = token.trim().split('.');
        let (Some(header_b64), Some(claims_b64), Some(sig_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("not three dot-separated parts"));
        };
        let header_json = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| AuthError::Malformed("header is not base64url"))?;
        let header: Header = serde_json::from_slice(&header_json)
            .map_err(|_| AuthError::Malformed("header is not a JWS header"))?;
        let Some(alg) = Algorithm::from_jose(&header.alg) else {
            return Err(AuthError::UnsupportedAlgorithm(printable(&header.alg)));
        };
        if header.crit.is_some() {
            return Err(AuthError::Malformed("header has critical extensions"));
        }
        let candidates: Vec<&VerifyingKey> = match &header.kid {
            Some(kid) => {
                let key = self.keys.iter().find(|k| k.has_kid(kid)).ok_or(AuthError::UnknownKey)?;
                if key.alg != alg {
                    return Err(AuthError::AlgorithmMismatch { token: alg, key: key.alg });
                }
                vec![key]
            }
            None => self.keys.iter().filter(|k| k.alg == alg).collect(),
        };
        if candidates.is_empty() {
            return Err(AuthError::UnknownKey);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(sig_b64)
            .map_err(|_| AuthError::Malformed("signature is not base64url"))?;
        let signed = &token.trim().as_bytes()[..header_b64.len() + 1 + claims_b64.len()];
        if !candidates.iter().any(|k| k.verify(signed, &sig)) {
            return Err(AuthError::BadSignature);
        }
        // Only now, with the signature verified, are the claims looked at.
        let claims_json = URL_SAFE_NO_PAD
            .decode(claims_b64)
            .map_err(|_| AuthError::Malformed("claims are not base64url"))?;
        let claims: Claims = serde_json::from_slice(&claims_json).map_err(|e| {
            AuthError::InvalidClaims(format!(
                "not a claims object with \"exp\" ({})",
                e.classify_name()
            ))
        })?;
        let now_secs = unix_secs(now);
        if let Some(nbf) = claims.nbf {
            let leeway = NOT_BEFORE_LEEWAY.as_secs();
            if nbf > now_secs.saturating_add(leeway) {
                return Err(AuthError::NotYetValid { wait: Duration::from_secs(nbf - now_secs) });
            }
        }
        let expires_at = UNIX_EPOCH
            .checked_add(Duration::from_secs(claims.exp))
            .ok_or_else(|| AuthError::InvalidClaims("\"exp\" is out of range".into()))?;
        if now >= expires_at {
            let ago = now.duration_since(expires_at).unwrap_or_default();
            return Err(AuthError::Expired { ago });
        }
        let prefixes = |list: &[String], name: &str| -> Result<Vec<Prefix>, AuthError> {
            list.iter()
                .map(|p| {
                    p.parse().map_err(|e: PrefixError| {
                        // Describe the fault without echoing the prefix: it may name a person.
                        let fault = match e {
                            PrefixError::EmptyField(_) => "an empty namespace field".to_owned(),
                            other => other.to_string(),
                        };
                        AuthError::InvalidClaims(format!("\"{name}\" holds a prefix with {fault}"))
                    })
                })
                .collect()
        };
        Ok(Grant {
            publish: prefixes(&claims.publish, "publish")?,
            subscribe: prefixes(&claims.subscribe, "subscribe")?,
            subject: claims.sub.map(Secret::new),
            expires_at,
        })
    }

    /// The check every publish and subscribe request passes: allowed if `namespace` is public
    /// for `action`, or if `grant` is unexpired at `now` and allows it.
    pub fn authorize<F: AsRef<[u8]>>(
        &self,
        grant: Option<&Grant>,
        action: Action,
        namespace: &[F],
        now: SystemTime,
    ) -> Result<(), AuthError> {
        if self.is_public(action, namespace) {
            return Ok(());
        }
        let grant = grant.ok_or(AuthError::MissingToken)?;
        if grant.is_expired(now) {
            let ago = now.duration_since(grant.expires_at).unwrap_or_default();
            return Err(AuthError::Expired { ago });
        }
        if grant.allows(action, namespace) { Ok(()) } else { Err(AuthError::OutOfScope(action)) }
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O",
            serde_json::error::Category::Syntax => "bad JSON",
            serde_json::error::Category::Data => "wrong types or missing field",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

/// An attacker-chosen header value made safe to show: ASCII alphanumerics only, 16 at most.
fn printable(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_alphanumeric()).take(16).collect()
}

/// The token in a URL query (`?jwt=…`, for browsers that cannot set the MoQT parameter).
/// `query` is the part after `?`. Percent-escapes are decoded.
pub fn token_from_query(query: &str) -> Option<Secret<String>> {
    query.split('&').find_map(|pair| {
        let value = pair.strip_prefix("jwt=")?;
        percent_decode(value).map(Secret::new)
    })
}

/// `query` with the value of every `jwt` parameter replaced by `[redacted]`, for logging a URL.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(
            |pair| {
                if pair.starts_with("jwt=") { "jwt=[redacted]".to_owned() } else { pair.to_owned() }
            },
        )
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(s: &str) -> Vec<&[u8]> {
        s.split('/').map(str::as_bytes).collect()
    }

    #[test]
    fn prefix_matches_whole_fields_only() {
        let p: Prefix = "clinic".parse().unwrap();
        assert!(p.matches(&ns("clinic/room-42")));
        assert!(p.matches(&ns("clinic")));
        assert!(!p.matches(&ns("clinic2")));
        assert!(!p.matches(&ns("clinic2/room-42")));
        let p: Prefix = "clinic/room-42".parse().unwrap();
        assert!(!p.matches(&ns("clinic")));
        assert!(p.matches(&ns("clinic/room-42/dr-lee")));
        assert!(!p.matches(&ns("clinic/room-4")));
        assert!(Prefix::root().matches(&ns("anything/at/all")));
    }

    #[test]
    fn prefix_text_form_is_checked() {
        assert_eq!("".parse::<Prefix>().unwrap(), Prefix::root());
        assert!(matches!("a//b".parse::<Prefix>(), Err(PrefixError::EmptyField(_))));
        assert!(matches!("/a".parse::<Prefix>(), Err(PrefixError::EmptyField(_))));
        assert!(matches!("a/".parse::<Prefix>(), Err(PrefixError::EmptyField(_))));
        let deep = vec!["x"; 33].join("/");
        assert_eq!(deep.parse::<Prefix>(), Err(PrefixError::TooManyFields(33)));
        assert_eq!("clinic/room-42".parse::<Prefix>().unwrap().to_string(), "clinic/room-42");
    }

    #[test]
    fn thumbprint_matches_rfc8037_example() {
        // RFC 8037 appendix A.3: the Ed25519 example key and its RFC 7638 thumbprint.
        let jwk =
            r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
        let key = VerifyingKey::parse(jwk, "rfc8037").unwrap();
        assert_eq!(key[0].thumbprint(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn pem_and_jwk_forms_give_the_same_key_id() {
        // Same key, PEM and JWK forms, same thumbprint.
        let key = SigningKey::generate(Algorithm::Es256).unwrap();
        let public = key.verifying_key();
        let from_pem = VerifyingKey::parse(&public.to_pem(), "t").unwrap();
        let from_jwk = VerifyingKey::parse(&public.to_jwk().to_string(), "t").unwrap();
        assert_eq!(from_pem[0].thumbprint(), public.thumbprint());
        assert_eq!(from_jwk[0].thumbprint(), public.thumbprint());
        assert_eq!(public.thumbprint().len(), 43);
    }

    #[test]
    fn query_token_is_found_and_redacted() {
        assert_eq!(token_from_query("a=1&jwt=x.y.z&b=2").unwrap().expose(), "x.y.z");
        assert_eq!(token_from_query("jwt=a%2Eb").unwrap().expose(), "a.b");
        assert!(token_from_query("a=1").is_none());
        assert_eq!(redact_query("a=1&jwt=x.y.z"), "a=1&jwt=[redacted]");
    }
}
