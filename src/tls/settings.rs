//! The Beats port's TLS settings (`[tls]`), typed and checked for shape by `config`;
//! reading and checking the files they name (PEM, key match, expiry) is this module's
//! job, also before anything is bound.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub key_passphrase: Passphrase,
    pub client_auth: ClientAuth,
    pub client_ca: Vec<PathBuf>,
    /// Client certificate subjects (RFC 4514) or SANs allowed to connect; empty: any
    /// certificate the CAs verify.
    pub allowed_clients: Vec<String>,
    pub min_version: TlsVersion,
    pub handshake_timeout: Duration,
    pub reload_interval: Duration,
}

/// Where the passphrase of an encrypted PKCS#8 key comes from (never the config itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Passphrase {
    None,
    File(PathBuf),
    /// The name of an environment variable.
    Env(String),
}

/// Whether clients must present a certificate (Logstash's `ssl_client_authentication`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Optional,
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}
