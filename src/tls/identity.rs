//! Who a client is: its certificate's subject (RFC 4514) and SANs, and the
//! `tls.allowed_clients` check made during the handshake.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The subject (RFC 4514) and SANs of a certificate; unparseable gives an empty identity.
pub(super) fn identity(der: &CertificateDer<'_>) -> (String, Vec<String>) {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return (String::new(), Vec::new());
    };
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                    sans.push(s.to_string())
                }
                GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        sans.push(std::net::Ipv4Addr::from(a).to_string());
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        sans.push(std::net::Ipv6Addr::from(a).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    (rfc4514(cert.subject()), sans)
}

/// A distinguished name as RFC 4514 writes it (what Java's `getName()` gives Logstash):
/// RDNs last-to-first, `,` between them, `+` inside one, short names for the usual
/// attributes, special characters escaped, other attribute types as `OID=#hex`.
pub(super) fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    let mut rdns = Vec::new();
    for rdn in name.iter_rdn() {
        let parts: Vec<String> = rdn
            .iter()
            .map(|atv| {
                let oid = atv.attr_type().to_id_string();
                let short = match oid.as_str() {
                    "2.5.4.3" => Some("CN"),
                    "2.5.4.6" => Some("C"),
                    "2.5.4.7" => Some("L"),
                    "2.5.4.8" => Some("ST"),
                    "2.5.4.9" => Some("STREET"),
                    "2.5.4.10" => Some("O"),
                    "2.5.4.11" => Some("OU"),
                    "0.9.2342.19200300.100.1.25" => Some("DC"),
                    "0.9.2342.19200300.100.1.1" => Some("UID"),
                    _ => None,
                };
                match (short, atv.as_str()) {
                    (Some(short), Ok(value)) => format!("{short}={}", escape_rfc4514(value)),
                    _ => {
                        let value = atv.attr_value();
                        let mut der = Vec::new();
                        der.push(value.header.tag().0 as u8);
                        push_der_len(&mut der, value.data.len());
                        der.extend_from_slice(value.data);
                        let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
                        format!("{oid}=#{hex}")
                    }
                }
            })
            .collect();
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    rdns.join(",")
}

pub(super) fn push_der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
}

pub(super) fn escape_rfc4514(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && (c == ' ' || c == '#'))
            || (i == last && c == ' ');
        if c == '\0' {
            out.push_str("\\00");
            continue;
        }
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Client verification plus `tls.allowed_clients`: a verified certificate is accepted
/// only when its subject (RFC 4514) or one of its SANs is listed (DNS names compared
/// case-insensitively). A refusal is a handshake failure the client sees as an alert.
#[derive(Debug)]
pub(super) struct AllowList {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl AllowList {
    pub(super) fn new(inner: Arc<dyn ClientCertVerifier>, allowed: Vec<String>) -> AllowList {
        AllowList { inner, allowed }
    }

    fn permits(&self, subject: &str, sans: &[String]) -> bool {
        self.allowed
            .iter()
            .any(|a| a == subject || sans.iter().any(|s| s == a || s.eq_ignore_ascii_case(a)))
    }
}

impl ClientCertVerifier for AllowList {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let (subject, sans) = identity(end_entity);
        if self.permits(&subject, &sans) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn cert_with(dn: &[(rcgen::DnType, &str)], sans: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        for (t, v) in dn {
            params.distinguished_name.push(t.clone(), *v);
        }
        params.self_signed(&key).unwrap().der().clone()
    }
    #[test]
    fn subject_is_rfc_4514_with_special_characters_escaped_and_sans_of_every_kind_listed() {
        let der = cert_with(
            &[
                (rcgen::DnType::CommonName, " lead, \"quoted\"+plus "),
                (rcgen::DnType::OrganizationName, "#Acme;Logs"),
            ],
            &["fb.example", "10.0.0.7", "::1"],
        );
        let (subject, sans) = identity(&der);
        assert_eq!(
            subject, r#"O=\#Acme\;Logs,CN=\ lead\, \"quoted\"\+plus\ "#,
            "last RDN first, RFC 4514 escapes"
        );
        assert_eq!(sans, vec!["fb.example", "10.0.0.7", "::1"]);
    }
}
