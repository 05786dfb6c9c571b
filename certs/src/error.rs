use std::io;
use std::path::PathBuf;

/// What went wrong with TLS material. Every variant about a file names the file.
///
/// Messages are complete on their own (they include the underlying error's message), so the
/// underlying errors are fields, not `source()`s: printing an error chain repeats nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read (missing, unreadable, a directory…).
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// A file or directory could not be written.
    #[error("cannot write {}: {error}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// Writing would overwrite a file that must not be lost (a CA key).
    #[error("{} already exists; refusing to overwrite it", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The file is not PEM text, or a PEM block in it is malformed.
    #[error("{} is not a valid PEM file: {detail}", path.display())]
    NotPem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The file is PEM but holds no `CERTIFICATE` block.
    #[error("{} contains no certificate (found: {found})", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// The PEM blocks that were there instead.
        found: String,
    },
    /// The file is PEM but holds no usable private key block.
    #[error("{} contains no private key (found: {found})", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
        /// The PEM blocks that were there instead.
        found: String,
    },
    /// A certificate in the file is not a valid X.509 certificate.
    #[error("certificate #{index} in {} is not a valid X.509 certificate: {detail}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// Position of the certificate in the file, counting from 1.
        index: usize,
        /// What is wrong with it.
        detail: String,
    },
    /// The private key in the file cannot be used (unsupported algorithm, corrupt).
    #[error("private key in {} cannot be used: {detail}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The private key does not belong to the certificate.
    #[error("private key {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A certificate in the file has expired.
    #[error("certificate #{index} in {} expired at {not_after}", path.display())]
    Expired {
        /// The file.
        path: PathBuf,
        /// Position of the certificate in the file, counting from 1.
        index: usize,
        /// When it stopped being valid, as the certificate states it.
        not_after: String,
    },
    /// A certificate in the file is not valid yet (wrong clock, or issued for the future).
    #[error("certificate #{index} in {} is not valid before {not_before}", path.display())]
    NotYetValid {
        /// The file.
        path: PathBuf,
        /// Position of the certificate in the file, counting from 1.
        index: usize,
        /// When it starts being valid, as the certificate states it.
        not_before: String,
    },
    /// A name given for a certificate is neither an IP address nor a valid DNS name.
    #[error("{name:?} is neither an IP address nor a valid DNS name")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// A requested validity period is not allowed.
    #[error("invalid validity: {detail}")]
    InvalidValidity {
        /// Why.
        detail: String,
    },
    /// A certificate hash is not 64 hex digits.
    #[error("{input:?} is not a SHA-256 hash (64 hex digits)")]
    InvalidHash {
        /// The text that was given.
        input: String,
    },
    /// Generating or signing a certificate failed.
    #[error("certificate generation failed: {0}")]
    Generate(rcgen::Error),
    /// rustls refused the configuration (e.g. no usable trust anchor).
    #[error("TLS configuration: {0}")]
    Tls(rustls::Error),
    /// A certificate verifier could not be built (e.g. an empty trust store).
    #[error("certificate verifier: {0}")]
    Verifier(rustls::server::VerifierBuilderError),
}

impl From<rcgen::Error> for Error {
    fn from(e: rcgen::Error) -> Self {
        Self::Generate(e)
    }
}

impl From<rustls::Error> for Error {
    fn from(e: rustls::Error) -> Self {
        Self::Tls(e)
    }
}

impl From<rustls::server::VerifierBuilderError> for Error {
    fn from(e: rustls::server::VerifierBuilderError) -> Self {
        Self::Verifier(e)
    }
}
