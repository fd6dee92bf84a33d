//! Just enough X.509 to check that a client certificate and its private key belong together,
//! for certificates of every version.
//!
//! rustls checks this by parsing the certificate with webpki, which accepts only X.509 v3 — but
//! `openssl x509 -req` without an extensions file makes v1 certificates, which curl, OpenSSL and
//! most servers accept as client certificates. The relay only *presents* its client certificate
//! (the server judges it), so all it needs is the certificate's public key: the
//! `subjectPublicKeyInfo` of the `tbsCertificate`, read here with a small DER walk (RFC 5280 §4.1).

/// One DER element, and what follows it.
struct Element<'a> {
    tag: u8,
    contents: &'a [u8],
    /// Tag, length and contents.
    whole: &'a [u8],
    rest: &'a [u8],
}

fn element(input: &[u8]) -> Option<Element<'_>> {
    let (&tag, after_tag) = input.split_first()?;
    let (&first, mut rest) = after_tag.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 4 || rest.len() < octets {
            return None;
        }
        let len = rest[..octets]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        rest = &rest[octets..];
        len
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    Some(Element {
        tag,
        contents: &rest[..len],
        whole: &input[..header + len],
        rest: &rest[len..],
    })
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
/// `[0] EXPLICIT Version`, present in v2 and v3 certificates only.
const VERSION: u8 = 0xa0;

/// The DER `SubjectPublicKeyInfo` (the whole SEQUENCE) of a DER certificate of any version, or
/// `None` when it is not shaped like a certificate.
pub(crate) fn subject_public_key_info(cert: &[u8]) -> Option<&[u8]> {
    let certificate = element(cert).filter(|e| e.tag == SEQUENCE)?;
    let tbs = element(certificate.contents).filter(|e| e.tag == SEQUENCE)?;
    let mut rest = tbs.contents;
    if rest.first() == Some(&VERSION) {
        rest = element(rest)?.rest;
    }
    // serialNumber, signature, issuer, validity, subject
    for expected in [INTEGER, SEQUENCE, SEQUENCE, SEQUENCE, SEQUENCE] {
        rest = element(rest).filter(|e| e.tag == expected)?.rest;
    }
    element(rest).filter(|e| e.tag == SEQUENCE).map(|e| e.whole)
}

/// The certificate's X.509 version (1, 2 or 3).
#[cfg(test)]
fn version(cert: &[u8]) -> Option<u8> {
    let tbs = element(element(cert)?.contents)?;
    match element(tbs.contents)? {
        Element {
            tag: VERSION,
            contents,
            ..
        } => match element(contents)? {
            Element {
                tag: INTEGER,
                contents: [v],
                ..
            } => Some(v + 1),
            _ => None,
        },
        _ => Some(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbox_testkit::tls::{TestCa, openssl_v1_client};
    use rustls::crypto::aws_lc_rs::default_provider;
    use rustls_pki_types::PrivateKeyDer;

    fn key_spki(key_der: &[u8]) -> Vec<u8> {
        let key = default_provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(key_der.to_vec().into()))
            .unwrap();
        key.public_key().unwrap().as_ref().to_vec()
    }

    #[test]
    fn the_public_key_of_v3_and_v1_certificates_is_found() {
        let v3 = TestCa::new("ca").client_cert("relay");
        assert_eq!(version(&v3.cert_der), Some(3));
        assert_eq!(
            subject_public_key_info(&v3.cert_der),
            Some(key_spki(&v3.key_der).as_slice())
        );

        let dir = tempfile::tempdir().unwrap();
        let v1 = openssl_v1_client(dir.path(), "relay-v1").client;
        assert_eq!(version(&v1.cert_der), Some(1), "openssl x509 -req makes v1");
        assert_eq!(
            subject_public_key_info(&v1.cert_der),
            Some(key_spki(&v1.key_der).as_slice())
        );
        assert_ne!(key_spki(&v1.key_der), key_spki(&v3.key_der));
    }

    #[test]
    fn anything_else_is_no_certificate() {
        let cert = TestCa::new("ca").client_cert("relay").cert_der;
        for bad in [
            &b""[..],
            b"\x30",
            b"\x30\x84\xff\xff\xff\xff",
            b"\x02\x01\x00",
            &cert[..cert.len() / 2],
        ] {
            assert_eq!(subject_public_key_info(bad), None, "{bad:?}");
        }
    }
}
