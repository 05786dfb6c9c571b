//! The SHA-256 of a certificate: what browsers pin in `serverCertificateHashes` and what
//! `--tls-cert-hash` takes.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::Error;

/// SHA-256 of a certificate's DER encoding.
///
/// Displayed (and parsed) as 64 lowercase hex digits; parsing also accepts uppercase and
/// colon-separated pairs (`AB:CD:…`, as `openssl x509 -fingerprint -sha256` prints).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertHash(pub [u8; 32]);

impl CertHash {
    /// Hashes the DER encoding of a certificate.
    pub fn of(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    /// The 64-hex-digit lowercase form.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits, optionally separated by colons.
    pub fn from_hex(text: &str) -> Result<Self, Error> {
        let digits: String = text.trim().chars().filter(|c| *c != ':').collect();
        let mut out = [0u8; 32];
        hex::decode_to_slice(&digits, &mut out)
            .map_err(|_| Error::InvalidHash { input: text.to_owned() })?;
        Ok(Self(out))
    }
}

impl FromStr for CertHash {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::from_hex(s)
    }
}

impl fmt::Display for CertHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for CertHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertHash({})", self.hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_accepts_fingerprint_form() {
        let h = CertHash::of(b"abc");
        // The SHA-256 test vector for "abc" (FIPS 180-2).
        assert_eq!(h.hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(CertHash::from_hex(&h.hex()).unwrap(), h);
        let colons = h.0.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
        assert_eq!(colons.parse::<CertHash>().unwrap(), h);
    }

    #[test]
    fn bad_hex_is_an_error_that_quotes_the_input() {
        let err = CertHash::from_hex("abcd").unwrap_err();
        assert!(err.to_string().contains("abcd"), "{err}");
        assert!(CertHash::from_hex(&"zz".repeat(32)).is_err());
    }
}
