//! Loading PEM certificate chains and private keys.
//!
//! Errors name the file and say what is wrong with it: missing, not PEM (or binary DER),
//! no certificate, no private key (or an encrypted one), a key that does not belong to the
//! certificate, an expired or not-yet-valid certificate.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use rustls::sign::CertifiedKey;

use crate::{CertHash, Error};

/// Loads every certificate of a PEM file, leaf first, as a server or client presents them.
///
/// Fails if the file holds no certificate, if one is not valid X.509, or if one is expired
/// or not valid yet at this moment.
pub fn load_chain(path: impl AsRef<Path>) -> Result<Vec<CertificateDer<'static>>, Error> {
    let path = path.as_ref();
    let certs = read_certs(path)?;
    let now = unix_now();
    for (i, cert) in certs.iter().enumerate() {
        check_validity(path, i + 1, cert, now)?;
    }
    Ok(certs)
}

/// Loads the first private key of a PEM file: PKCS#8 (`PRIVATE KEY`), SEC1
/// (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`), unencrypted.
///
/// Fails if the file holds no such key, or if the key is not one rustls can sign with.
pub fn load_key(path: impl AsRef<Path>) -> Result<PrivateKeyDer<'static>, Error> {
    let path = path.as_ref();
    let key = read_key(path)?;
    crate::provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| Error::BadKey { path: path.to_owned(), detail: e.to_string() })?;
    Ok(key)
}

/// Loads a certificate chain and its private key and checks that they belong together.
///
/// This is what a server (or a client doing mutual TLS) presents.
pub fn load_certified_key(
    cert_path: impl AsRef<Path>,
    key_path: impl AsRef<Path>,
) -> Result<Arc<CertifiedKey>, Error> {
    let (cert_path, key_path) = (cert_path.as_ref(), key_path.as_ref());
    let chain = load_chain(cert_path)?;
    let key = read_key(key_path)?;
    certified_key(chain, key, cert_path, key_path)
}

/// SHA-256 of the first certificate in a PEM file (expired or not): the value browsers pin
/// in `serverCertificateHashes` and clients take as `--tls-cert-hash`.
pub fn cert_hash(path: impl AsRef<Path>) -> Result<CertHash, Error> {
    let certs = read_certs(path.as_ref())?;
    Ok(CertHash::of(&certs[0]))
}

/// Builds a `CertifiedKey`, mapping failures to errors that name the files.
pub(crate) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<CertifiedKey>, Error> {
    let signing_key = crate::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| Error::BadKey { path: key_path.to_owned(), detail: e.to_string() })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(Arc::new(certified))
        }
        Err(rustls::Error::InconsistentKeys(_)) => {
            Err(Error::KeyMismatch { cert: cert_path.to_owned(), key: key_path.to_owned() })
        }
        Err(e) => Err(Error::BadCertificate {
            path: cert_path.to_owned(),
            index: 1,
            detail: e.to_string(),
        }),
    }
}

/// Every `CERTIFICATE` block of a PEM file, parsed as X.509 but not checked for validity.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let sections = read_sections(path)?;
    let certs: Vec<CertificateDer<'static>> = sections
        .iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der.clone()))
        .collect();
    if certs.is_empty() {
        return Err(Error::NoCertificate { path: path.to_owned(), found: found_labels(path) });
    }
    for (i, cert) in certs.iter().enumerate() {
        if let Err(e) = x509_parser::parse_x509_certificate(cert) {
            return Err(Error::BadCertificate {
                path: path.to_owned(),
                index: i + 1,
                detail: e.to_string(),
            });
        }
    }
    Ok(certs)
}

/// The first private-key block of a PEM file, not yet checked for usability.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let sections = read_sections(path)?;
    let key = sections.into_iter().find_map(|(kind, der)| match kind {
        SectionKind::PrivateKey => Some(PrivateKeyDer::from(PrivatePkcs8KeyDer::from(der))),
        SectionKind::EcPrivateKey => Some(PrivateKeyDer::from(PrivateSec1KeyDer::from(der))),
        SectionKind::RsaPrivateKey => Some(PrivateKeyDer::from(PrivatePkcs1KeyDer::from(der))),
        _ => None,
    });
    key.ok_or_else(|| {
        let found = found_labels(path);
        let found = if found.contains("ENCRYPTED") {
            format!("{found}; encrypted keys are not supported, decrypt it first")
        } else {
            found
        };
        Error::NoPrivateKey { path: path.to_owned(), found }
    })
}

/// Reads a file and decodes all its PEM blocks of known kinds.
fn read_sections(path: &Path) -> Result<Vec<(SectionKind, Vec<u8>)>, Error> {
    let bytes = fs::read(path).map_err(|error| Error::Read { path: path.to_owned(), error })?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        let detail = if bytes.is_empty() {
            "the file is empty".to_owned()
        } else if bytes[0] == 0x30 {
            "it looks like binary DER; convert it to PEM \
             (e.g. `openssl x509 -inform der -in FILE -out FILE.pem`)"
                .to_owned()
        } else {
            "no -----BEGIN …----- block found".to_owned()
        };
        return Err(Error::NotPem { path: path.to_owned(), detail });
    }
    <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::NotPem { path: path.to_owned(), detail: e.to_string() })
}

/// The labels of the PEM blocks in a file, for error messages ("CERTIFICATE, PRIVATE KEY").
fn found_labels(path: &Path) -> String {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let labels: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .collect();
    if labels.is_empty() { "no PEM blocks".to_owned() } else { labels.join(", ") }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Fails if the certificate is not valid at `now` (seconds since the Unix epoch).
fn check_validity(path: &Path, index: usize, der: &[u8], now: i64) -> Result<(), Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| {
        Error::BadCertificate { path: path.to_owned(), index, detail: e.to_string() }
    })?;
    let validity = cert.validity();
    if now > validity.not_after.timestamp() {
        return Err(Error::Expired {
            path: path.to_owned(),
            index,
            not_after: validity.not_after.to_string(),
        });
    }
    if now < validity.not_before.timestamp() {
        return Err(Error::NotYetValid {
            path: path.to_owned(),
            index,
            not_before: validity.not_before.to_string(),
        });
    }
    Ok(())
}

/// Writes a file atomically (a temporary file in the same directory, then a rename), so a
/// process reloading it never reads half a file. Secret files are created readable by the
/// owner only.
pub(crate) fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), Error> {
    let write_err = |error| Error::Write { path: path.to_owned(), error };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp: PathBuf = path.with_file_name(format!(".{}.tmp", name.unwrap_or_default()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let result = options
        .open(&tmp)
        .and_then(|mut f| f.write_all(contents).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(write_err)
}

/// Creates a directory (and its parents) for output files.
pub(crate) fn create_dir(dir: &Path) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(|error| Error::Write { path: dir.to_owned(), error })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn dev_files(dir: &Path) -> (PathBuf, PathBuf) {
        let cert = crate::dev::generate(&[], crate::dev::DEFAULT_VALIDITY).unwrap();
        cert.write_pem(dir).unwrap()
    }

    #[test]
    fn loads_what_dev_writes() {
        let d = dir();
        let (c, k) = dev_files(d.path());
        assert_eq!(load_chain(&c).unwrap().len(), 1);
        load_key(&k).unwrap();
        load_certified_key(&c, &k).unwrap();
    }

    #[test]
    fn missing_file_is_named() {
        let d = dir();
        let path = d.path().join("nope.pem");
        let err = load_chain(&path).unwrap_err();
        assert!(matches!(err, Error::Read { .. }));
        assert!(err.to_string().contains("nope.pem"), "{err}");
    }

    #[test]
    fn not_pem_says_so() {
        let d = dir();
        let text = d.path().join("notes.txt");
        fs::write(&text, "hello").unwrap();
        let err = load_chain(&text).unwrap_err();
        assert!(matches!(err, Error::NotPem { .. }), "{err}");
        assert!(err.to_string().contains("notes.txt"), "{err}");

        let der = d.path().join("cert.der");
        let cert = crate::dev::generate(&[], crate::dev::DEFAULT_VALIDITY).unwrap();
        fs::write(&der, cert.cert.as_ref()).unwrap();
        let err = load_chain(&der).unwrap_err();
        assert!(err.to_string().contains("DER"), "{err}");
        assert!(err.to_string().contains("cert.der"), "{err}");

        let empty = d.path().join("empty.pem");
        fs::write(&empty, "").unwrap();
        let err = load_key(&empty).unwrap_err();
        assert!(err.to_string().contains("empty.pem"), "{err}");
        assert!(err.to_string().contains("empty"), "{err}");

        let truncated = d.path().join("truncated.pem");
        fs::write(&truncated, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
        let err = load_chain(&truncated).unwrap_err();
        assert!(matches!(err, Error::NotPem { .. }), "{err}");
        assert!(err.to_string().contains("truncated.pem"), "{err}");
    }

    #[test]
    fn key_file_given_as_cert_and_cert_given_as_key() {
        let d = dir();
        let (c, k) = dev_files(d.path());
        let err = load_chain(&k).unwrap_err();
        assert!(matches!(err, Error::NoCertificate { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("key.pem") && msg.contains("found: PRIVATE KEY"), "{msg}");

        let err = load_key(&c).unwrap_err();
        assert!(matches!(err, Error::NoPrivateKey { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("cert.pem") && msg.contains("found: CERTIFICATE"), "{msg}");
    }

    #[test]
    fn encrypted_key_is_explained() {
        let d = dir();
        let path = d.path().join("enc.pem");
        fs::write(
            &path,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        let msg = load_key(&path).unwrap_err().to_string();
        assert!(msg.contains("enc.pem") && msg.contains("encrypted"), "{msg}");
    }

    #[test]
    fn garbage_certificate_is_reported_with_its_position() {
        let d = dir();
        let (c, _) = dev_files(d.path());
        let mut text = fs::read_to_string(&c).unwrap();
        text.push_str("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let path = d.path().join("chain.pem");
        fs::write(&path, text).unwrap();
        let err = load_chain(&path).unwrap_err();
        assert!(matches!(err, Error::BadCertificate { index: 2, .. }), "{err}");
        assert!(err.to_string().contains("chain.pem"), "{err}");
    }

    #[test]
    fn mismatched_key_is_refused() {
        let d = dir();
        let a = d.path().join("a");
        let b = d.path().join("b");
        let (ca, _) = dev_files(&a);
        let (_, kb) = dev_files(&b);
        let err = load_certified_key(&ca, &kb).unwrap_err();
        assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("b/key.pem") && msg.contains("a/cert.pem"), "{msg}");
    }

    #[test]
    fn expired_and_future_certificates_are_refused() {
        let d = dir();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 10);
        let old = params.self_signed(&key).unwrap();
        let path = d.path().join("old.pem");
        fs::write(&path, old.pem()).unwrap();
        let err = load_chain(&path).unwrap_err();
        assert!(matches!(err, Error::Expired { index: 1, .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("old.pem") && msg.contains("2020"), "{msg}");
        // The hash of an expired certificate can still be printed.
        assert_eq!(cert_hash(&path).unwrap(), CertHash::of(old.der()));

        params.not_before = rcgen::date_time_ymd(2999, 1, 1);
        params.not_after = rcgen::date_time_ymd(2999, 1, 10);
        let future = params.self_signed(&key).unwrap();
        let path = d.path().join("future.pem");
        fs::write(&path, future.pem()).unwrap();
        let err = load_chain(&path).unwrap_err();
        assert!(matches!(err, Error::NotYetValid { .. }), "{err}");
        assert!(err.to_string().contains("future.pem"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir();
        let (c, k) = dev_files(d.path());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&k), 0o600);
        assert_ne!(mode(&c) & 0o044, 0, "certificates stay readable");
    }
}
