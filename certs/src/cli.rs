//! `tiermesh cert …`: make and inspect TLS material.
//!
//! Each subcommand prints one machine-readable line on standard output (a SHA-256 as 64 hex
//! digits) and says what it wrote on standard error, so scripts can do
//! `HASH=$(tiermesh cert dev --out dev-cert)`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

use crate::{CertHash, Error, ca, dev};

/// Arguments of `tiermesh cert`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make a self-signed development certificate that browsers accept by hash
    /// (ECDSA P-256, valid for less than 14 days). Prints its SHA-256.
    Dev {
        /// Directory to write cert.pem and key.pem into (created if needed).
        #[arg(long)]
        out: PathBuf,
        /// DNS name or IP address to certify; repeat for several
        /// [default: localhost, 127.0.0.1, ::1].
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
        /// Days of validity, 1 to 13 (browsers refuse 14 or more).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=13))]
        days: u64,
    },
    /// Make a private CA for the mesh (ca.pem, ca.key). Prints the CA certificate's SHA-256.
    Ca {
        /// Directory to write ca.pem and ca.key into; an existing ca.key is never overwritten.
        #[arg(long)]
        out: PathBuf,
        /// Name of the CA (its certificate's common name).
        #[arg(long)]
        name: String,
    },
    /// Issue a node certificate signed by the mesh CA, for mutual TLS between relays
    /// (node.pem, node.key, and a copy of ca.pem). Prints the node certificate's SHA-256.
    Node {
        /// Directory holding the CA (ca.pem, ca.key).
        #[arg(long)]
        ca: PathBuf,
        /// Node name: the certificate's common name and first DNS name; peers dial this
        /// relay under this name.
        #[arg(long)]
        name: String,
        /// Directory to write node.pem, node.key and ca.pem into (created if needed;
        /// existing files are replaced, and a running relay reloads them).
        #[arg(long)]
        out: PathBuf,
        /// Extra DNS name or IP address for the certificate; repeat for several.
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
    },
    /// Print the SHA-256 of the first certificate in a PEM file (for --tls-cert-hash and
    /// the browser's serverCertificateHashes).
    Hash {
        /// The PEM file.
        file: PathBuf,
    },
}

/// Runs `tiermesh cert …`.
pub fn run(args: Args) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    let mut log = std::io::stderr().lock();
    let hash = execute(args, &mut log)?;
    // A closed stdout (e.g. `| head -0`) is not worth an error once the files are written.
    let _ = writeln!(out, "{hash}");
    Ok(())
}

/// Does the work of a subcommand, reporting to `log`, and returns the hash to print.
fn execute(args: Args, log: &mut dyn Write) -> Result<CertHash, Error> {
    match args.command {
        Command::Dev { out, names, days } => {
            let cert = dev::generate(&names, Duration::from_secs(days * 24 * 3600))?;
            let (c, k) = cert.write_pem(&out)?;
            let names =
                if names.is_empty() { dev::DEFAULT_NAMES.join(", ") } else { names.join(", ") };
            let _ = writeln!(
                log,
                "wrote {} and {}: self-signed for {names}, valid {days} days",
                c.display(),
                k.display()
            );
            Ok(cert.sha256)
        }
        Command::Ca { out, name } => {
            let ca = ca::generate(&name)?;
            let (c, k) = ca.save(&out)?;
            let _ = writeln!(
                log,
                "wrote {} and {}: mesh CA {name:?}; keep {} secret, give relays node \
                 certificates (tiermesh cert node)",
                c.display(),
                k.display(),
                k.display()
            );
            Ok(CertHash::of(ca.cert()))
        }
        Command::Node { ca, name, out, sans } => {
            let ca = ca::Ca::load(&ca)?;
            let node = ca.issue_node(&name, &sans)?;
            node.save(&out)?;
            let _ = writeln!(
                log,
                "wrote {}/{{{},{},{}}}: node {name:?} signed by the mesh CA",
                out.display(),
                ca::NODE_CERT_FILE,
                ca::NODE_KEY_FILE,
                ca::CA_CERT_FILE
            );
            Ok(CertHash::of(&node.cert))
        }
        Command::Hash { file } => crate::pem::cert_hash(&file),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Top,
    }

    #[derive(Subcommand)]
    enum Top {
        Cert(Args),
    }

    fn exec(line: &[&str]) -> Result<(CertHash, String), Error> {
        let mut argv = vec!["tiermesh", "cert"];
        argv.extend_from_slice(line);
        let Top::Cert(args) = Cli::try_parse_from(argv).unwrap().cmd;
        let mut log = Vec::new();
        let hash = execute(args, &mut log)?;
        Ok((hash, String::from_utf8(log).unwrap()))
    }

    #[test]
    fn dev_then_hash_print_the_same_hash() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().to_str().unwrap();
        let (h1, log) = exec(&["dev", "--out", out, "--days", "3"]).unwrap();
        assert!(log.contains("valid 3 days"), "{log}");
        let cert = dir.path().join("cert.pem");
        let (h2, _) = exec(&["hash", cert.to_str().unwrap()]).unwrap();
        assert_eq!(h1, h2);
    }

    #[test]
    fn dev_refuses_14_days() {
        let dir = tempfile::tempdir().unwrap();
        let argv = ["tiermesh", "cert", "dev", "--out", dir.path().to_str().unwrap()];
        let mut argv = argv.to_vec();
        argv.extend(["--days", "14"]);
        let err = Cli::try_parse_from(argv).err().unwrap();
        assert!(err.to_string().contains("14"), "{err}");
    }

    #[test]
    fn ca_then_node() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let node_dir = dir.path().join("relay-a");
        exec(&["ca", "--out", ca_dir.to_str().unwrap(), "--name", "mesh"]).unwrap();
        let (h, _) = exec(&[
            "node",
            "--ca",
            ca_dir.to_str().unwrap(),
            "--name",
            "relay-a",
            "--out",
            node_dir.to_str().unwrap(),
            "--san",
            "127.0.0.1",
        ])
        .unwrap();
        let id = crate::mesh::Identity::load(&node_dir).unwrap();
        assert_eq!(id.certs().sha256(), h);
        // A second `cert ca` into the same directory must not destroy the CA.
        let err = exec(&["ca", "--out", ca_dir.to_str().unwrap(), "--name", "x"]).unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    }

    #[test]
    fn hash_of_a_missing_file_names_it() {
        let err = exec(&["hash", "/nonexistent/relay.pem"]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/relay.pem"), "{err}");
    }
}
