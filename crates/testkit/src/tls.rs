//! Test certificates: a private CA that issues server and client certificates (rcgen).

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate and its private key, PEM and DER.
#[derive(Clone)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

impl CertAndKey {
    /// Certificate then key, as one PEM text (what `tls.client_cert` takes).
    pub fn bundle_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }
}

/// A private certificate authority for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).expect("self-signed CA"),
        }
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn cert_der(&self) -> Vec<u8> {
        self.issuer.der().to_vec()
    }

    /// A server certificate for `127.0.0.1` and `localhost`.
    pub fn server_cert(&self) -> CertAndKey {
        self.issue(
            "test receiver",
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate with common name `name`.
    pub fn client_cert(&self, name: &str) -> CertAndKey {
        self.issue(name, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, name: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose) -> CertAndKey {
        let mut params = CertificateParams::new(sans).expect("certificate parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("certificate key");
        let cert = params.signed_by(&key, &*self.issuer).expect("signing");
        CertAndKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }
}

/// A client certificate as `openssl x509 -req` makes it without an extensions file: X.509
/// **version 1** (no extensions at all), signed by a CA that openssl made too. Files (`ca.pem`,
/// `ca.key`, `client.pem`, `client.key`) are written to `dir`.
pub struct OpensslV1 {
    pub ca_pem: String,
    pub client: CertAndKey,
}

/// Makes an [`OpensslV1`] client certificate with common name `name`, with the `openssl`
/// command (it panics, saying so, when the command is missing).
pub fn openssl_v1_client(dir: &std::path::Path, name: &str) -> OpensslV1 {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command runs (these tests need it: apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-subj",
            "/CN=openssl test CA",
            "-days",
            "2",
        ],
        &["-out", "ca.pem"],
    ]
    .concat());
    let subject = format!("/CN={name}");
    run(&[
        &["req", "-new"][..],
        &ec,
        &[
            "-keyout",
            "client.key",
            "-subj",
            &subject,
            "-out",
            "client.csr",
        ],
    ]
    .concat());
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "client.pem",
    ]);
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).expect("openssl wrote it");
    let cert_pem = read("client.pem");
    let key_pem = read("client.key");
    let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .expect("a PEM certificate")
        .to_vec();
    let key_der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .expect("a PEM private key")
        .secret_der()
        .to_vec();
    OpensslV1 {
        ca_pem: read("ca.pem"),
        client: CertAndKey {
            cert_pem,
            key_pem,
            cert_der,
            key_der,
        },
    }
}
