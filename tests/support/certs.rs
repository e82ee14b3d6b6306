//! Certificates for the TLS tests, made fresh in a temp dir by each test (rcgen, and
//! `openssl` for the key forms rcgen does not write): nothing with a private key is
//! committed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate authority that signs server and client certificates.
pub struct Ca {
    pub name: String,
    cert: Certificate,
    key: KeyPair,
}

/// A certificate and its key, written as PEM files.
pub struct Issued {
    pub cert: PathBuf,
    /// PKCS#8 (`PRIVATE KEY`) unless made otherwise.
    pub key: PathBuf,
    /// The DER of the certificate, to compare with what a server presents.
    pub der: Vec<u8>,
}

/// How long a leaf is valid.
#[derive(Clone, Copy)]
pub enum Validity {
    /// rcgen's default: 1975 to 4096.
    Current,
    /// 2020-01-01 to 2021-01-01.
    Expired,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        Ca {
            name: name.to_string(),
            cert,
            key,
        }
    }

    /// Writes the CA certificate to `dir/<file>` and returns its path.
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        fs::write(&path, self.cert.pem()).unwrap();
        path
    }

    /// A server certificate for `localhost` and 127.0.0.1 (what the tests connect to),
    /// with a fresh ECDSA P-256 key.
    pub fn server(&self, dir: &Path, stem: &str, validity: Validity) -> Issued {
        self.server_named(dir, stem, &["localhost", "127.0.0.1"], validity)
    }

    /// A server certificate for the given DNS names / IP addresses.
    pub fn server_named(
        &self,
        dir: &Path,
        stem: &str,
        names: &[&str],
        validity: Validity,
    ) -> Issued {
        let key = KeyPair::generate().unwrap();
        self.issue(
            dir,
            stem,
            &key,
            names,
            &[
                (DnType::CommonName, "lumberd.test"),
                (DnType::OrganizationName, "Acme Logs"),
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
            validity,
        )
    }

    /// A client certificate with CN `<cn>`, O `Acme Fleet` (see [`subject_rfc4514`] for
    /// its RFC 4514 form) and the DNS SAN `<cn>.fleet.test`.
    pub fn client(&self, dir: &Path, cn: &str, validity: Validity) -> Issued {
        let key = KeyPair::generate().unwrap();
        let san = format!("{cn}.fleet.test");
        self.issue(
            dir,
            cn,
            &key,
            &[san.as_str()],
            &[
                (DnType::OrganizationName, "Acme Fleet"),
                (DnType::CommonName, cn),
            ],
            ExtendedKeyUsagePurpose::ClientAuth,
            validity,
        )
    }

    /// A server certificate for the key in `key_pem` (PKCS#8 PEM, any algorithm rcgen and
    /// ring can sign with, RSA included).
    pub fn server_for_key(&self, dir: &Path, stem: &str, key_pem: &str) -> Issued {
        let key = KeyPair::from_pem(key_pem).expect("rcgen reads the PKCS#8 key");
        self.issue(
            dir,
            stem,
            &key,
            &["localhost", "127.0.0.1"],
            &[(DnType::CommonName, "lumberd.test")],
            ExtendedKeyUsagePurpose::ServerAuth,
            Validity::Current,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn issue(
        &self,
        dir: &Path,
        stem: &str,
        key: &KeyPair,
        sans: &[&str],
        dn: &[(DnType, &str)],
        usage: ExtendedKeyUsagePurpose,
        validity: Validity,
    ) -> Issued {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        for (t, v) in dn {
            params.distinguished_name.push(t.clone(), *v);
        }
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if let Validity::Expired = validity {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params
            .signed_by(key, &self.cert, &self.key)
            .expect("sign leaf");
        let cert_path = dir.join(format!("{stem}.crt"));
        let key_path = dir.join(format!("{stem}.key"));
        fs::write(&cert_path, cert.pem()).unwrap();
        fs::write(&key_path, key.serialize_pem()).unwrap();
        Issued {
            cert: cert_path,
            key: key_path,
            der: cert.der().to_vec(),
        }
    }
}

/// The subject of a certificate in RFC 2253/4514 form, as OpenSSL writes it: an oracle
/// independent of lumberd's own formatting.
pub fn subject_rfc4514(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
        .arg(cert)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .trim_start_matches("subject=")
        .to_string()
}

/// Runs `openssl` with `args`, failing the test with its stderr.
pub fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed (the TLS tests convert key forms with it)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh RSA key as PKCS#8 PEM, at `dir/<stem>.pk8.pem`.
pub fn rsa_pkcs8(dir: &Path, stem: &str) -> PathBuf {
    let path = dir.join(format!("{stem}.pk8.pem"));
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        path.to_str().unwrap(),
    ]);
    path
}

/// The PKCS#1 (`RSA PRIVATE KEY`) form of an RSA PKCS#8 key.
pub fn to_pkcs1(pkcs8: &Path, out: &Path) {
    openssl(&[
        "rsa",
        "-in",
        pkcs8.to_str().unwrap(),
        "-traditional",
        "-out",
        out.to_str().unwrap(),
    ]);
}

/// The SEC1 (`EC PRIVATE KEY`) form of an EC PKCS#8 key.
pub fn to_sec1(pkcs8: &Path, out: &Path) {
    openssl(&[
        "ec",
        "-in",
        pkcs8.to_str().unwrap(),
        "-out",
        out.to_str().unwrap(),
    ]);
}

/// The encrypted PKCS#8 (`ENCRYPTED PRIVATE KEY`, PBES2 with AES-256-CBC) form of a key.
pub fn to_encrypted_pkcs8(pkcs8: &Path, out: &Path, passphrase: &str) {
    openssl(&[
        "pkcs8",
        "-topk8",
        "-v2",
        "aes-256-cbc",
        "-in",
        pkcs8.to_str().unwrap(),
        "-passout",
        &format!("pass:{passphrase}"),
        "-out",
        out.to_str().unwrap(),
    ]);
}

/// The first line of a PEM file (to check which form a key is in).
pub fn pem_label(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}
