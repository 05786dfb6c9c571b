//! Reloading certificates from disk without a restart.
//!
//! [`ReloadingResolver`] presents a certificate and key read from two PEM files, as a
//! server ([`rustls::server::ResolvesServerCert`]) or as a mutual-TLS client
//! ([`rustls::client::ResolvesClientCert`]). New handshakes use whatever was loaded last;
//! connections already open keep their certificate. If the new files are broken, the old
//! certificate stays in service and the error is returned to whoever asked for the reload.
//!
//! This crate spawns nothing: the caller decides when to look. A relay calls
//! [`ReloadingResolver::reload_if_changed`] on an interval (and [`ReloadingResolver::reload`]
//! on SIGHUP, say):
//!
//! ```text
//! let mut tick = tokio::time::interval(Duration::from_secs(10));
//! loop {
//!     tick.tick().await;
//!     match resolver.reload_if_changed() {
//!         Ok(true) => info!(sha256 = %resolver.sha256(), "certificate reloaded"),
//!         Ok(false) => {}
//!         Err(e) => warn!("certificate not reloaded, keeping the old one: {e}"),
//!     }
//! }
//! ```

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::{CertHash, Error};

/// A certificate and key loaded from files, reloadable at run time.
pub struct ReloadingResolver {
    cert_path: PathBuf,
    key_path: PathBuf,
    state: RwLock<State>,
}

struct State {
    current: Arc<CertifiedKey>,
    /// The files as they were when last read (successfully or not), so that a broken file
    /// is reported once, not on every poll, and retried as soon as it changes again.
    seen: [Option<Stamp>; 2],
}

/// What tells that a file changed: modification time, size and, on Unix, the inode (an
/// atomic replace by rename, as Kubernetes secret mounts and `tiermesh cert` do, gives a
/// new inode even within one timestamp tick).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp { modified: meta.modified().ok(), len: meta.len(), inode })
}

impl ReloadingResolver {
    /// Loads the certificate chain and key (see [`crate::pem::load_certified_key`]).
    /// Fails if they cannot be loaded now: a server must start with a working certificate.
    pub fn load(
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
    ) -> Result<Self, Error> {
        let (cert_path, key_path) = (cert_path.into(), key_path.into());
        let seen = [stamp(&cert_path), stamp(&key_path)];
        let current = crate::pem::load_certified_key(&cert_path, &key_path)?;
        Ok(Self { cert_path, key_path, state: RwLock::new(State { current, seen }) })
    }

    /// Re-reads both files. On success new handshakes present the new certificate; on error
    /// the previous certificate stays in service and the error says what is wrong.
    pub fn reload(&self) -> Result<(), Error> {
        // Stamps are taken before reading: a change made while reading shows up as a change
        // at the next `reload_if_changed`.
        let seen = [stamp(&self.cert_path), stamp(&self.key_path)];
        let loaded = crate::pem::load_certified_key(&self.cert_path, &self.key_path);
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.seen = seen;
        state.current = loaded?;
        Ok(())
    }

    /// Reloads if either file changed (or appeared, or vanished) since it was last read.
    /// Returns whether a new certificate is now in service.
    ///
    /// A file that stays broken is reported once; the next change to either file is tried
    /// again (so a certificate written before its key is picked up once the key arrives).
    pub fn reload_if_changed(&self) -> Result<bool, Error> {
        let now = [stamp(&self.cert_path), stamp(&self.key_path)];
        let changed = self.state.read().unwrap_or_else(|e| e.into_inner()).seen != now;
        if !changed {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    /// The certificate and key now in service.
    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.state.read().unwrap_or_else(|e| e.into_inner()).current)
    }

    /// SHA-256 of the leaf certificate now in service.
    pub fn sha256(&self) -> CertHash {
        let current = self.current();
        current.cert.first().map_or(CertHash([0; 32]), |c| CertHash::of(c))
    }

    /// The certificate file this resolver reads.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The key file this resolver reads.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }
}

impl fmt::Debug for ReloadingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingResolver")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("sha256", &self.sha256())
            .finish()
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for ReloadingResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
