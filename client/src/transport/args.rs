//! Command-line flags for how a client trusts servers, shared by every `tiermesh`
//! subcommand that dials one.

use std::path::PathBuf;

use super::{ClientTls, Error};

/// `--tls-ca FILE`, `--tls-cert-hash HEX` or `--tls-insecure`; none of them means the
/// system (web PKI) roots. At most one may be given.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// Trust only the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE", group = "tls_trust")]
    pub tls_ca: Option<PathBuf>,
    /// Trust only the server certificate with this SHA-256 (64 hex digits, as `tiermesh
    /// cert dev` prints it): for self-signed development certificates.
    #[arg(long, value_name = "HEX", group = "tls_trust")]
    pub tls_cert_hash: Option<String>,
    /// DANGEROUS: trust any server certificate. The session is encrypted but anyone on the
    /// path can impersonate the server.
    #[arg(long, group = "tls_trust")]
    pub tls_insecure: bool,
}

impl TlsArgs {
    /// The trust these flags ask for. `--tls-insecure` prints a warning to stderr as well as
    /// to the log, so it is never silent.
    pub fn client_tls(&self) -> Result<ClientTls, Error> {
        if self.tls_insecure {
            eprintln!(
                "WARNING: --tls-insecure: server certificates are NOT verified; anyone on the \
                 network path can impersonate the server and read or alter this session"
            );
            return Ok(ClientTls::insecure());
        }
        if let Some(hash) = &self.tls_cert_hash {
            return ClientTls::pinned_hex(hash);
        }
        if let Some(path) = &self.tls_ca {
            return ClientTls::ca_file(path);
        }
        Ok(ClientTls::system_roots())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        tls: TlsArgs,
    }

    #[test]
    fn no_flag_means_system_roots() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        let tls = cli.tls.client_tls().unwrap();
        assert!(!tls.is_insecure());
        assert!(format!("{tls:?}").contains("trusted roots"));
    }

    #[test]
    fn cert_hash_flag_pins() {
        let hash = "ab".repeat(32);
        let cli = Cli::try_parse_from(["x", "--tls-cert-hash", &hash]).unwrap();
        assert!(format!("{:?}", cli.tls.client_tls().unwrap()).contains(&hash));
        let cli = Cli::try_parse_from(["x", "--tls-cert-hash", "nope"]).unwrap();
        assert!(cli.tls.client_tls().unwrap_err().to_string().contains("64 hex digits"));
    }

    #[test]
    fn trust_flags_exclude_each_other() {
        let hash = "ab".repeat(32);
        let err = Cli::try_parse_from(["x", "--tls-insecure", "--tls-cert-hash", &hash])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cannot be used with"), "{err}");
    }

    #[test]
    fn insecure_flag_is_insecure() {
        let cli = Cli::try_parse_from(["x", "--tls-insecure"]).unwrap();
        assert!(cli.tls.client_tls().unwrap().is_insecure());
    }
}
