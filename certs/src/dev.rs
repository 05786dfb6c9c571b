//! Development certificates that browsers accept by hash.
//!
//! Headless Chromium accepts a self-signed certificate for WebTransport only through
//! `serverCertificateHashes`, and only if the certificate is ECDSA P-256 and its validity
//! window (`notAfter - notBefore`) is at most 14 days. [`generate`] makes exactly such a
//! certificate and returns its SHA-256, which the relay prints for `--tls-cert-hash` and for
//! the browser.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use crate::{CertHash, Error};

/// Names a development certificate is valid for when none are given.
pub const DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Default validity: 10 days, comfortably inside the browsers' limit.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(10 * 24 * 3600);

/// Browsers refuse hash-pinned certificates valid for 14 days or more (the WebTransport
/// `serverCertificateHashes` rule); validities must stay strictly below this.
pub const MAX_VALIDITY: Duration = Duration::from_secs(14 * 24 * 3600);

/// How far `notBefore` lies in the past, so that a peer whose clock is a little behind
/// still accepts the certificate. It is part of the validity window, not added to it.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// File name of the certificate written by [`DevCert::write_pem`].
pub const CERT_FILE: &str = "cert.pem";
/// File name of the private key written by [`DevCert::write_pem`].
pub const KEY_FILE: &str = "key.pem";

/// A self-signed development certificate and its key.
pub struct DevCert {
    /// The certificate, DER.
    pub cert: CertificateDer<'static>,
    /// The private key (ECDSA P-256), PKCS#8 DER.
    pub key: PrivatePkcs8KeyDer<'static>,
    /// SHA-256 of [`DevCert::cert`]: what clients and browsers pin.
    pub sha256: CertHash,
    /// End of the validity window.
    pub not_after: SystemTime,
    cert_pem: String,
    key_pem: String,
}

/// Generates an ECDSA P-256 self-signed certificate for `names` (DNS names or IP addresses;
/// [`DEFAULT_NAMES`] if empty), valid from a few minutes ago for `validity` in all.
///
/// `validity` must be longer than 5 minutes and shorter than [`MAX_VALIDITY`].
pub fn generate(names: &[String], validity: Duration) -> Result<DevCert, Error> {
    if validity >= MAX_VALIDITY || validity <= BACKDATE {
        return Err(Error::InvalidValidity {
            detail: format!(
                "a development certificate must be valid for more than {} minutes and less \
                 than 14 days (browsers refuse hash-pinned certificates valid longer); got {}",
                BACKDATE.as_secs() / 60,
                describe(validity)
            ),
        });
    }
    let names: Vec<String> = if names.is_empty() {
        DEFAULT_NAMES.iter().map(|n| (*n).to_owned()).collect()
    } else {
        names.to_vec()
    };
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = crate::ca::sans(&names)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, "tiermesh development certificate");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - to_time(BACKDATE);
    params.not_after = params.not_before + to_time(validity);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key)?;
    Ok(DevCert {
        sha256: CertHash::of(cert.der()),
        cert: cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        not_after: SystemTime::from(params.not_after),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

impl DevCert {
    /// The certificate and key, ready to present (e.g. with [`crate::server::fixed`]).
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, Error> {
        let key = PrivateKeyDer::from(self.key.clone_key());
        let here = Path::new("<generated>");
        crate::pem::certified_key(vec![self.cert.clone()], key, here, here)
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key, PEM (PKCS#8).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Writes [`CERT_FILE`] and [`KEY_FILE`] into `dir` (created if needed; existing files
    /// are replaced atomically) and returns their paths. The key file is readable by its
    /// owner only.
    pub fn write_pem(&self, dir: impl AsRef<Path>) -> Result<(PathBuf, PathBuf), Error> {
        let dir = dir.as_ref();
        crate::pem::create_dir(dir)?;
        let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        crate::pem::write_file(&cert, self.cert_pem.as_bytes(), false)?;
        crate::pem::write_file(&key, self.key_pem.as_bytes(), true)?;
        Ok((cert, key))
    }
}

impl fmt::Debug for DevCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCert")
            .field("sha256", &self.sha256)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn to_time(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

fn describe(d: Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(86400) { format!("{} days", secs / 86400) } else { format!("{secs} s") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    #[test]
    fn dev_cert_is_p256_short_lived_and_hash_matches_der() {
        let dev = generate(&[], DEFAULT_VALIDITY).unwrap();
        let (_, x509) = parse_x509_certificate(&dev.cert).unwrap();

        // ECDSA with the P-256 curve, as browsers require for hash pinning.
        let spki = x509.public_key();
        assert_eq!(spki.algorithm.algorithm, oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY);
        let curve = spki.algorithm.parameters.as_ref().unwrap().as_oid().unwrap();
        assert_eq!(curve, oid_registry::OID_EC_P256);

        // Validity window strictly below 14 days, and valid right now.
        let v = x509.validity();
        let window = v.not_after.timestamp() - v.not_before.timestamp();
        assert!(window < 14 * 86400, "window {window} s");
        assert_eq!(window, 10 * 86400);
        assert!(v.is_valid());

        // The hash is the SHA-256 of the DER, 64 hex digits.
        assert_eq!(dev.sha256, CertHash::of(&dev.cert));
        assert_eq!(dev.sha256.hex().len(), 64);

        // Default names: localhost and both loopback addresses.
        let san = x509.subject_alternative_name().unwrap().unwrap();
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(ip) => ips.push(ip.to_vec()),
                other => panic!("unexpected name {other}"),
            }
        }
        assert_eq!(dns, ["localhost"]);
        let v6_loopback = std::net::Ipv6Addr::LOCALHOST.octets().to_vec();
        assert_eq!(ips, [vec![127, 0, 0, 1], v6_loopback]);
    }

    #[test]
    fn validity_of_14_days_or_more_is_refused() {
        let err = generate(&[], MAX_VALIDITY).unwrap_err();
        assert!(err.to_string().contains("14 days"), "{err}");
        assert!(generate(&[], Duration::from_secs(60)).is_err());
        generate(&[], Duration::from_secs(13 * 86400)).unwrap();
    }

    #[test]
    fn bad_names_are_refused() {
        let err = generate(&["not a name".to_owned()], DEFAULT_VALIDITY).unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{err}");
        assert!(err.to_string().contains("not a name"), "{err}");
    }

    #[test]
    fn written_files_round_trip_to_the_same_hash() {
        let dir = tempfile::tempdir().unwrap();
        let dev = generate(&["relay.test".to_owned()], DEFAULT_VALIDITY).unwrap();
        let (cert, _key) = dev.write_pem(dir.path().join("nested")).unwrap();
        assert_eq!(crate::pem::cert_hash(&cert).unwrap(), dev.sha256);
        dev.certified_key().unwrap();
    }
}
