//! The rustls client configuration of a webhook with `[tls]` settings.
//!
//! It is what reqwest would build from `Identity` and `tls_certs_merge` — certificate
//! verification by the platform verifier with the webhook's CAs added, TLS 1.2 and 1.3, ALPN
//! `h2` and `http/1.1` — with one difference: the client certificate is not parsed by webpki,
//! which accepts X.509 v3 only. Whether key and certificate belong together was checked when the
//! settings were read ([`crate::x509`]); the server judges the certificate itself.

use std::sync::Arc;

use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The configuration for a client presenting `identity` (PEM: certificate chain and key) and
/// trusting `roots` (PEM CA certificates) besides the platform's roots.
pub(crate) fn client_config(
    identity: Option<&str>,
    roots: &[String],
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let extra_roots = roots
        .iter()
        .map(|pem| CertificateDer::from_pem_slice(pem.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("a CA certificate cannot be read: {e}"))?;
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())
            .map_err(|e| format!("cannot set up certificate verification: {e}"))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("the client certificate cannot be read: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| format!("the private key cannot be read: {e}"))?;
            let key = provider
                .key_provider
                .load_private_key(key)
                .map_err(|e| format!("the private key cannot be used: {e}"))?;
            let identity = CertifiedKey::new(chain, key);
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(identity)))
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
