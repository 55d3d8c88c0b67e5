//! A throw-away PKI for the local TLS upstreams.
//!
//! One process-wide set of certificates, generated once with rcgen (ECDSA P-256,
//! a few milliseconds) and shared by every server in the test binary:
//!
//! | identity | issuer | SANs | used by |
//! | --- | --- | --- | --- |
//! | good CA | self-signed | – | trusted through `ca_file` in a policy |
//! | good server | good CA | `localhost`, `127.0.0.1` | [`TlsKind::Good`] |
//! | wrong-name server | good CA | `wrong.example` only | [`TlsKind::WrongName`] |
//! | other CA | self-signed, unrelated | – | never trusted |
//! | unknown-CA server | other CA | `localhost`, `127.0.0.1` | [`TlsKind::UnknownCa`] |
//!
//! A test points a service's `ca_file` at the good CA:
//!
//! ```no_run
//! # let dir = std::path::Path::new("/tmp");
//! let ca_path = vaultd_tests::pki::Pki::get().write_ca_pem(dir); // dir/ca.pem
//! let policy = format!("ca_file = {:?}", ca_path.display().to_string());
//! ```
//!
//! Every server configuration offers ALPN `h2` and `http/1.1`. The crypto
//! provider is rustls' `ring` provider, chosen explicitly (never the process
//! default), so nothing here depends on which provider features other crates turn on.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Which certificate a TLS server presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsKind {
    /// Signed by the good CA, valid for `localhost` and `127.0.0.1`.
    Good,
    /// Signed by an unrelated CA that nothing trusts; SANs `localhost`, `127.0.0.1`.
    UnknownCa,
    /// Signed by the good CA but valid only for `wrong.example`.
    WrongName,
}

/// A certificate chain and its private key.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

/// The test PKI. Get the shared instance with [`Pki::get`].
pub struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    other_ca_pem: String,
    good: Identity,
    wrong_name: Identity,
    unknown_ca: Identity,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

fn ca(common_name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no SANs");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "vaultd tests");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("generate CA key");
    CertifiedIssuer::self_signed(params, key).expect("self-sign CA")
}

fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, sans: &[&str]) -> Identity {
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans.clone()).expect("valid SANs");
    params
        .distinguished_name
        .push(DnType::CommonName, sans[0].as_str());
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().expect("generate leaf key");
    let cert = params.signed_by(&key, issuer).expect("sign leaf");
    Identity {
        chain: vec![cert.der().clone(), issuer.der().clone()],
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
    }
}

/// The rustls `ring` provider, as an `Arc` for the config builders.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Pki {
    /// Generates a fresh PKI. Most tests want the shared one: [`Pki::get`].
    pub fn generate() -> Pki {
        let good_ca = ca("vaultd tests good CA");
        let other_ca = ca("vaultd tests OTHER (untrusted) CA");
        Pki {
            ca_pem: good_ca.pem(),
            ca_der: good_ca.der().clone(),
            other_ca_pem: other_ca.pem(),
            good: leaf(&good_ca, &["localhost", "127.0.0.1"]),
            wrong_name: leaf(&good_ca, &["wrong.example"]),
            unknown_ca: leaf(&other_ca, &["localhost", "127.0.0.1"]),
        }
    }

    /// The process-wide PKI, generated on first use.
    pub fn get() -> &'static Pki {
        static PKI: OnceLock<Pki> = OnceLock::new();
        PKI.get_or_init(Pki::generate)
    }

    /// The good CA's certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The good CA's certificate, DER.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// The unrelated CA's certificate, PEM (for tests that want to trust the wrong CA).
    pub fn other_ca_pem(&self) -> &str {
        &self.other_ca_pem
    }

    /// Writes the good CA's PEM to `dir/ca.pem` (creating `dir`) and returns that path,
    /// for a policy's `ca_file`.
    pub fn write_ca_pem(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).expect("create dir for ca.pem");
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.ca_pem).expect("write ca.pem");
        path
    }

    fn identity(&self, kind: TlsKind) -> &Identity {
        match kind {
            TlsKind::Good => &self.good,
            TlsKind::UnknownCa => &self.unknown_ca,
            TlsKind::WrongName => &self.wrong_name,
        }
    }

    /// The certificate chain (leaf first, then its CA) a server of `kind` presents.
    pub fn server_chain(&self, kind: TlsKind) -> Vec<CertificateDer<'static>> {
        self.identity(kind).chain.clone()
    }

    /// A rustls server configuration presenting `kind`'s certificate, ALPN `h2` and `http/1.1`.
    pub fn server_config(&self, kind: TlsKind) -> Arc<ServerConfig> {
        let id = self.identity(kind);
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_no_client_auth()
            .with_single_cert(id.chain.clone(), PrivateKeyDer::Pkcs8(id.key.clone_key()))
            .expect("server certificate and key match");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A root store holding only the good CA.
    pub fn root_store(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .expect("CA certificate parses");
        roots
    }

    /// A rustls client configuration trusting only the good CA, offering `alpn`
    /// (e.g. `&[b"h2"]`, `&[b"http/1.1"]`, or empty for none).
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(self.root_store())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}
