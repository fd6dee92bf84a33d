//! A webhook's `[tls]` section, checked and ready for an HTTP client: the client identity it
//! presents (mTLS) and the extra certificate authorities it trusts for the receiver.

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use outbox_core::TlsSpec;
use rustls::RootCertStore;
use rustls_pki_types::pem::{self, PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::field_error::FieldError;
use crate::x509;

/// The TLS material of one webhook. Holds a private key: its `Debug` shows only a fingerprint.
pub struct TlsSettings {
    /// PEM with the client certificate chain and exactly one private key, normalised (nothing else).
    identity: Option<String>,
    /// PEM of each extra trusted CA certificate.
    roots: Vec<String>,
    /// SHA-256 over everything above: equal settings share one HTTP client.
    fingerprint: [u8; 32],
    /// Files the material was read from, with a hash of what they held, to notice rotation.
    files: Vec<(String, [u8; 32])>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("client_cert", &self.identity.is_some())
            .field("ca_certs", &self.roots.len())
            .field("fingerprint", &hex::encode(&self.fingerprint[..8]))
            .finish()
    }
}

/// Where a PEM value came from, for messages (never the value itself).
enum Source<'a> {
    Inline,
    File(&'a str),
}

impl fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Inline => f.write_str("the inline PEM"),
            Source::File(path) => write!(f, "{path}"),
        }
    }
}

impl TlsSettings {
    /// Reads and checks `[tls]`: files exist, PEM parses, the client certificate comes with its
    /// key and they belong together, CA certificates parse as trust anchors. `Ok(None)` when the
    /// section sets nothing. Every problem is reported, none quotes key material.
    pub fn from_spec(spec: &TlsSpec) -> Result<Option<TlsSettings>, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut files = Vec::new();
        let mut identity = None;
        let mut roots = Vec::new();

        if let Some(value) = spec.client_cert.as_deref() {
            let field = "tls.client_cert";
            match load(field, value, &mut files) {
                Err(e) => errors.push(e),
                Ok((text, source)) => match parse_identity(&text, &source) {
                    Ok(pem) => identity = Some(pem),
                    Err(message) => errors.push(FieldError::new(field, message)),
                },
            }
        }
        if let Some(value) = spec.ca_cert.as_deref() {
            let field = "tls.ca_cert";
            match load(field, value, &mut files) {
                Err(e) => errors.push(e),
                Ok((text, source)) => match parse_roots(&text, &source) {
                    Ok(pems) => roots = pems,
                    Err(message) => errors.push(FieldError::new(field, message)),
                },
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if identity.is_none() && roots.is_empty() {
            return Ok(None);
        }
        let mut hash = Sha256::new();
        hash.update(identity.as_deref().unwrap_or("").as_bytes());
        for root in &roots {
            hash.update(b"\0");
            hash.update(root.as_bytes());
        }
        Ok(Some(TlsSettings {
            identity,
            roots,
            fingerprint: hash.finalize().into(),
            files,
        }))
    }

    /// Identifies the material: webhooks with equal settings share an HTTP client.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// Whether a file this was read from now holds something else (or cannot be read): the
    /// webhook must be compiled again to pick up a rotated certificate.
    pub fn files_changed(&self) -> bool {
        self.files
            .iter()
            .any(|(path, digest)| match std::fs::read(path) {
                Ok(bytes) => Sha256::digest(&bytes)[..] != digest[..],
                Err(_) => true,
            })
    }

    /// Adds the identity and the extra roots to a client under construction: a rustls
    /// configuration like reqwest's own (the platform's roots plus the extra CAs, TLS 1.2 and
    /// 1.3, ALPN h2 and http/1.1), built here because reqwest's identity check refuses client
    /// certificates that are not X.509 v3.
    pub(crate) fn apply(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, String> {
        let config = crate::tls_config::client_config(self.identity.as_deref(), &self.roots)?;
        Ok(builder.tls_backend_preconfigured(config))
    }
}

/// The PEM text of a value that is either inline PEM or an absolute file path.
fn load<'a>(
    field: &str,
    value: &'a str,
    files: &mut Vec<(String, [u8; 32])>,
) -> Result<(String, Source<'a>), FieldError> {
    if value.contains("-----BEGIN") {
        return Ok((value.to_string(), Source::Inline));
    }
    let path = value.trim();
    if path.is_empty() {
        return Err(FieldError::new(
            field,
            "is empty; give the absolute path of a PEM file, or the PEM text itself",
        ));
    }
    if !Path::new(path).is_absolute() {
        return Err(FieldError::new(
            field,
            format!(
                "{path:?} is a relative path; give an absolute path (the relay reads the file from its own working directory) or the PEM text itself"
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| {
        FieldError::new(
            field,
            format!("cannot read {path}: {e}; give the path of a PEM file the relay can read, or the PEM text itself"),
        )
    })?;
    files.push((path.to_string(), Sha256::digest(&bytes).into()));
    match String::from_utf8(bytes) {
        Ok(text) => Ok((text, Source::File(path))),
        Err(_) => Err(FieldError::new(
            field,
            format!(
                "{path} is not a PEM text file (DER or PKCS#12 files must be converted to PEM first, e.g. with openssl)"
            ),
        )),
    }
}

/// Every PEM block of a known kind, in order; unknown kinds are skipped.
fn sections(text: &str, source: &Source) -> Result<Vec<(SectionKind, Vec<u8>)>, String> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            let what = match e {
                pem::Error::MissingSectionEnd { .. } => "a block is missing its -----END line",
                pem::Error::IllegalSectionStart { .. } => "a -----BEGIN line is malformed",
                pem::Error::Base64Decode(_) => "a block is not valid base64",
                _ => "it cannot be read",
            };
            format!("{source} is not valid PEM: {what}")
        })
}

fn parse_identity(text: &str, source: &Source) -> Result<String, String> {
    let blocks = sections(text, source)?;
    let mut certs = Vec::new();
    let mut keys = Vec::new();
    for (kind, der) in blocks {
        match kind {
            SectionKind::Certificate => certs.push(der),
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                keys.push((kind, der))
            }
            _ => {}
        }
    }
    if certs.is_empty() {
        return Err(format!(
            "{source} holds no certificate; it must hold the client certificate (-----BEGIN CERTIFICATE-----) and its private key"
        ));
    }
    if keys.is_empty() {
        let hint = if text.contains("ENCRYPTED PRIVATE KEY") {
            " (its key is encrypted: decrypt it first, e.g. openssl pkey -in key.pem -out plain.pem)"
        } else {
            ""
        };
        return Err(format!(
            "{source} holds no private key{hint}; it must hold the client certificate and its key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)"
        ));
    }
    if keys.len() > 1 {
        return Err(format!(
            "{source} holds {} private keys; it must hold exactly one, the client certificate's",
            keys.len()
        ));
    }
    let (key_kind, key_der) = keys.remove(0);
    let key = match key_kind {
        SectionKind::RsaPrivateKey => PrivateKeyDer::Pkcs1(key_der.clone().into()),
        SectionKind::EcPrivateKey => PrivateKeyDer::Sec1(key_der.clone().into()),
        _ => PrivateKeyDer::Pkcs8(key_der.clone().into()),
    };
    // The certificate may be of any X.509 version (`openssl x509 -req` makes v1): the relay
    // only presents it, so the one thing to check is that the key is the certificate's.
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{source}: the private key cannot be used: {e}"))?;
    let Some(cert_spki) = x509::subject_public_key_info(&certs[0]) else {
        return Err(format!(
            "{source}: the (first) certificate cannot be read as an X.509 certificate"
        ));
    };
    if let Some(key_spki) = signing_key.public_key()
        && key_spki.as_ref() != cert_spki
    {
        return Err(format!(
            "in {source} the private key does not belong to the (first) certificate; put the client certificate first, then its issuers, and its own key"
        ));
    }
    let mut pem = String::new();
    for cert in &certs {
        pem.push_str(&encode("CERTIFICATE", cert));
    }
    let label = match key_kind {
        SectionKind::RsaPrivateKey => "RSA PRIVATE KEY",
        SectionKind::EcPrivateKey => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    pem.push_str(&encode(label, &key_der));
    Ok(pem)
}

fn parse_roots(text: &str, source: &Source) -> Result<Vec<String>, String> {
    let certs: Vec<Vec<u8>> = sections(text, source)?
        .into_iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| der)
        .collect();
    if certs.is_empty() {
        return Err(format!(
            "{source} holds no certificate; it must hold the CA certificate(s) to trust (-----BEGIN CERTIFICATE-----)"
        ));
    }
    let mut store = RootCertStore::empty();
    let mut pems = Vec::with_capacity(certs.len());
    for (i, der) in certs.iter().enumerate() {
        if let Err(e) = store.add(CertificateDer::from(der.as_slice())) {
            return Err(format!(
                "certificate #{} of {source} cannot be used as a trusted CA: {e}",
                i + 1
            ));
        }
        pems.push(encode("CERTIFICATE", der));
    }
    Ok(pems)
}

fn encode(label: &str, der: &[u8]) -> String {
    let b64 = BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbox_testkit::tls::TestCa;

    fn spec(client_cert: Option<&str>, ca_cert: Option<&str>) -> TlsSpec {
        TlsSpec {
            client_cert: client_cert.map(str::to_string),
            ca_cert: ca_cert.map(str::to_string),
        }
    }

    fn errors(spec: &TlsSpec) -> String {
        TlsSettings::from_spec(spec)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn inline_and_file_pem_are_accepted_and_fingerprinted_by_content() {
        let ca = TestCa::new("test ca");
        let client = ca.client_cert("relay");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.pem");
        std::fs::write(&path, client.bundle_pem()).unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.cert_pem()).unwrap();

        let from_file = TlsSettings::from_spec(&spec(
            Some(path.to_str().unwrap()),
            Some(ca_path.to_str().unwrap()),
        ))
        .unwrap()
        .unwrap();
        let inline =
            TlsSettings::from_spec(&spec(Some(&client.bundle_pem()), Some(&ca.cert_pem())))
                .unwrap()
                .unwrap();
        assert_eq!(from_file.fingerprint(), inline.fingerprint());
        assert!(!from_file.files_changed());
        let debug = format!("{inline:?}");
        assert!(!debug.contains("PRIVATE"), "{debug}");

        // Another certificate in the same file: a different identity, noticed on disk.
        let other = ca.client_cert("relay-2");
        std::fs::write(&path, other.bundle_pem()).unwrap();
        assert!(from_file.files_changed());
        let rotated = TlsSettings::from_spec(&spec(Some(path.to_str().unwrap()), None))
            .unwrap()
            .unwrap();
        assert_ne!(rotated.fingerprint(), from_file.fingerprint());
        assert!(
            TlsSettings::from_spec(&spec(None, None)).unwrap().is_none(),
            "an empty section is no TLS configuration"
        );
    }

    #[test]
    fn problems_are_named_without_quoting_keys() {
        let ca = TestCa::new("test ca");
        let client = ca.client_cert("relay");
        let stranger = TestCa::new("other ca").client_cert("x");
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");

        let e = errors(&spec(Some(missing.to_str().unwrap()), None));
        assert!(
            e.contains("tls.client_cert: cannot read") && e.contains("nope.pem"),
            "{e}"
        );
        let e = errors(&spec(Some("certs/client.pem"), None));
        assert!(e.contains("relative path"), "{e}");
        let e = errors(&spec(Some(&client.cert_pem), None));
        assert!(e.contains("holds no private key"), "{e}");
        let e = errors(&spec(Some(&client.key_pem), None));
        assert!(e.contains("holds no certificate"), "{e}");
        let mismatched = format!("{}{}", client.cert_pem, stranger.key_pem);
        let e = errors(&spec(Some(&mismatched), None));
        assert!(e.contains("does not belong"), "{e}");
        let garbage = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let e = errors(&spec(Some(garbage), Some(garbage)));
        assert!(
            e.contains("tls.client_cert") && e.contains("tls.ca_cert"),
            "{e}"
        );
        let not_a_cert = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            BASE64.encode(b"not a certificate")
        );
        let e = errors(&spec(None, Some(&not_a_cert)));
        assert!(e.contains("tls.ca_cert: certificate #1"), "{e}");
        let e = errors(&spec(Some(&client.key_pem), Some(&client.key_pem)));
        assert!(
            e.contains("tls.ca_cert") && e.contains("no certificate"),
            "{e}"
        );
        let all = [
            errors(&spec(Some(&mismatched), None)),
            errors(&spec(Some(&client.key_pem), None)),
            e,
        ]
        .concat();
        for secret_line in client.key_pem.lines().skip(1) {
            assert!(!all.contains(secret_line), "{all}");
        }
    }

    #[test]
    fn x509_v1_client_certificates_are_accepted_when_the_key_is_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = outbox_testkit::tls::openssl_v1_client(dir.path(), "relay-v1");
        let path = dir.path().join("client-bundle.pem");
        std::fs::write(&path, v1.client.bundle_pem()).unwrap();
        for value in [v1.client.bundle_pem(), path.to_str().unwrap().to_string()] {
            let settings = TlsSettings::from_spec(&spec(Some(&value), Some(&v1.ca_pem)))
                .unwrap_or_else(|e| panic!("{e:?}"))
                .unwrap();
            assert!(settings.identity.is_some());
        }
        let stranger = TestCa::new("other").client_cert("x");
        let mismatched = format!("{}{}", v1.client.cert_pem, stranger.key_pem);
        let e = errors(&spec(Some(&mismatched), None));
        assert!(e.contains("does not belong"), "{e}");
    }
}
