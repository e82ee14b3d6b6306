//! `[tls]`: TLS on the Beats port, checked for shape into [`TlsSettings`] (the files
//! themselves are read and checked by `tls`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::problems::Problems;
use super::raw::{duration, Strings};
use crate::tls::settings::{ClientAuth, Passphrase, TlsSettings, TlsVersion};

/// TLS is opt-in: Filebeat's `output.logstash` speaks plain TCP unless `ssl.*` is set.
pub const DEFAULT_TLS_ENABLED: bool = false;
/// Filebeat's default `ssl.supported_protocols` is TLS 1.2 and 1.3; 1.0/1.1 are not offered
/// by rustls at all.
pub const DEFAULT_TLS_MIN_VERSION: TlsVersion = TlsVersion::Tls12;
/// A handshake takes milliseconds (a few round trips); a client silent this long holds a
/// connection slot for nothing. Well under Filebeat's 30 s `timeout`, which covers it.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Kubernetes propagates a rewritten secret to the pod within about a minute; checking
/// the few small files twice as often costs nothing and picks a rotation up soon after.
pub const DEFAULT_TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(30);
/// Clients are not asked for a certificate unless configured: Filebeat sends one only
/// when `ssl.certificate` is set.
pub const DEFAULT_TLS_CLIENT_AUTH: ClientAuth = ClientAuth::None;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTls {
    enabled: bool,
    certificate: Option<PathBuf>,
    key: Option<PathBuf>,
    key_passphrase_file: Option<PathBuf>,
    key_passphrase_env: Option<String>,
    client_auth: Option<String>,
    client_ca: Strings,
    allowed_clients: Strings,
    /// A string, or the number an environment variable's `1.3` parses to.
    min_version: Option<toml::Value>,
    #[serde(deserialize_with = "duration")]
    handshake_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    reload_interval: Duration,
}

impl Default for RawTls {
    fn default() -> Self {
        RawTls {
            enabled: DEFAULT_TLS_ENABLED,
            certificate: None,
            key: None,
            key_passphrase_file: None,
            key_passphrase_env: None,
            client_auth: None,
            client_ca: Strings::None,
            allowed_clients: Strings::None,
            min_version: None,
            handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            reload_interval: DEFAULT_TLS_RELOAD_INTERVAL,
        }
    }
}

/// `None` when TLS is off: the other keys are then not checked.
pub(super) fn validate(t: RawTls, p: &mut Problems) -> Option<TlsSettings> {
    if !t.enabled {
        return None;
    }
    p.nonzero(&[
        ("tls.handshake_timeout", t.handshake_timeout),
        ("tls.reload_interval", t.reload_interval),
    ]);
    let client_auth = match t.client_auth.as_deref() {
        None => DEFAULT_TLS_CLIENT_AUTH,
        Some("none") => ClientAuth::None,
        Some("optional") => ClientAuth::Optional,
        Some("required") => ClientAuth::Required,
        Some(other) => {
            p.key(
                "tls.client_auth",
                format!("`{other}` is not one of none, optional, required"),
            );
            DEFAULT_TLS_CLIENT_AUTH
        }
    };
    let min_version = match &t.min_version {
        None => DEFAULT_TLS_MIN_VERSION,
        Some(v) => {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match text.as_str() {
                "1.2" | "TLSv1.2" => TlsVersion::Tls12,
                "1.3" | "TLSv1.3" => TlsVersion::Tls13,
                other => {
                    p.key(
                        "tls.min_version",
                        format!("`{other}` is not 1.2 or 1.3 (older versions are not offered)"),
                    );
                    DEFAULT_TLS_MIN_VERSION
                }
            }
        }
    };
    let key_passphrase = match (t.key_passphrase_file, t.key_passphrase_env) {
        (Some(_), Some(_)) => {
            p.push("tls.key_passphrase_file and tls.key_passphrase_env: set at most one");
            Passphrase::None
        }
        (Some(path), None) => Passphrase::File(path),
        (None, Some(var)) if var.is_empty() => {
            p.key("tls.key_passphrase_env", "the variable name is empty");
            Passphrase::None
        }
        (None, Some(var)) => Passphrase::Env(var),
        (None, None) => Passphrase::None,
    };
    let client_ca: Vec<PathBuf> = t
        .client_ca
        .into_vec()
        .into_iter()
        .map(PathBuf::from)
        .collect();
    let allowed_clients = t.allowed_clients.into_vec();
    if client_auth == ClientAuth::None && !client_ca.is_empty() {
        p.key(
            "tls.client_ca",
            "set, but client_auth = \"none\" never asks for a client certificate \
             (set client_auth to optional or required)",
        );
    }
    if client_auth != ClientAuth::None && client_ca.is_empty() {
        p.key(
            "tls.client_ca",
            format!(
                "client_auth = \"{}\" needs at least one CA file to verify clients against",
                t.client_auth.as_deref().unwrap_or_default()
            ),
        );
    }
    if !allowed_clients.is_empty() && client_auth != ClientAuth::Required {
        p.key(
            "tls.allowed_clients",
            "needs client_auth = \"required\" (a client without a certificate could not be \
             checked against the list)",
        );
    }
    if allowed_clients.iter().any(|a| a.trim().is_empty()) {
        p.key("tls.allowed_clients", "an entry is empty");
    }
    let certificate = t.certificate.unwrap_or_else(|| {
        p.key("tls.certificate", "required when tls.enabled = true");
        PathBuf::new()
    });
    let key = t.key.unwrap_or_else(|| {
        p.key("tls.key", "required when tls.enabled = true");
        PathBuf::new()
    });
    Some(TlsSettings {
        certificate,
        key,
        key_passphrase,
        client_auth,
        client_ca,
        allowed_clients,
        min_version,
        handshake_timeout: t.handshake_timeout,
        reload_interval: t.reload_interval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::env;
    use crate::config::Settings;

    #[test]
    fn tls_section_from_environment_with_a_ca_list_and_required_client_auth() {
        let s = Settings::load(
            None,
            env(&[
                ("LUMBERD_TLS_ENABLED", "true"),
                ("LUMBERD_TLS_CERTIFICATE", "/etc/lumberd/tls.crt"),
                ("LUMBERD_TLS_KEY", "/etc/lumberd/tls.key"),
                ("LUMBERD_TLS_KEY_PASSPHRASE_ENV", "LUMBERD_KEY_PASS"),
                ("LUMBERD_TLS_CLIENT_AUTH", "required"),
                ("LUMBERD_TLS_CLIENT_CA", r#"["/etc/a.pem", "/etc/b.pem"]"#),
                (
                    "LUMBERD_TLS_ALLOWED_CLIENTS",
                    r#"["CN=fb,O=Acme", "fb.example"]"#,
                ),
                ("LUMBERD_TLS_MIN_VERSION", "1.3"),
            ]),
        )
        .unwrap();
        let tls = s.tls.expect("tls enabled");
        assert_eq!(tls.certificate, PathBuf::from("/etc/lumberd/tls.crt"));
        assert_eq!(
            tls.key_passphrase,
            Passphrase::Env("LUMBERD_KEY_PASS".into())
        );
        assert_eq!(tls.client_auth, ClientAuth::Required);
        assert_eq!(tls.client_ca.len(), 2);
        assert_eq!(tls.allowed_clients, vec!["CN=fb,O=Acme", "fb.example"]);
        assert_eq!(tls.min_version, TlsVersion::Tls13);
    }

    #[test]
    fn tls_disabled_ignores_the_other_tls_keys() {
        let s = Settings::load(None, env(&[("LUMBERD_TLS_CLIENT_AUTH", "bogus")])).unwrap();
        assert!(s.tls.is_none());
    }

    #[test]
    fn tls_shape_problems_are_each_listed() {
        let err = Settings::load(
            None,
            env(&[
                ("LUMBERD_TLS_ENABLED", "true"),
                ("LUMBERD_TLS_CLIENT_AUTH", "optional"),
                ("LUMBERD_TLS_ALLOWED_CLIENTS", "fb.example"),
                ("LUMBERD_TLS_MIN_VERSION", "1.1"),
                ("LUMBERD_TLS_KEY_PASSPHRASE_FILE", "/p"),
                ("LUMBERD_TLS_KEY_PASSPHRASE_ENV", "P"),
            ]),
        )
        .unwrap_err();
        let all = err.problems.join("\n");
        for needle in [
            "tls.certificate: required",
            "tls.key: required",
            "tls.client_ca",
            "tls.allowed_clients: needs client_auth",
            "tls.min_version",
            "set at most one",
        ] {
            assert!(all.contains(needle), "expected {needle:?} in:\n{all}");
        }
    }
}
