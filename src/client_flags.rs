//! Client-facing flags `ebb local` and `ebb proxy` share: how clients
//! authenticate and the TLS certificate they are offered.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use ebb_proxy::tls::TlsAcceptor;

/// How the proxy authenticates clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Auth {
    /// Every client is let in (loopback only).
    Trust,
    /// SCRAM-SHA-256 against roles in the cluster catalog.
    Scram,
}

impl Auth {
    /// Refuses `trust` on an address other machines can reach.
    pub fn check(self, listen: SocketAddr) -> anyhow::Result<()> {
        if self == Auth::Trust && !listen.ip().is_loopback() {
            anyhow::bail!("--auth trust lets every client in; it is only allowed on a loopback --listen address, not {listen} (use --auth scram)");
        }
        Ok(())
    }
}

/// TLS for clients that ask for it (`sslmode=require`).
#[derive(Args, Debug)]
pub struct TlsArgs {
    /// PEM certificate chain for TLS (clients with sslmode=require); needs --tls-key.
    #[arg(long, env = "EBB_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS; needs --tls-cert.
    #[arg(long, env = "EBB_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The acceptor, when a certificate was given.
    pub fn acceptor(&self) -> anyhow::Result<Option<TlsAcceptor>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(ebb_proxy::tls::acceptor(cert, key)?)),
            _ => Ok(None),
        }
    }
}
