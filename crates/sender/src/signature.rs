use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use outbox_core::SignatureSpec;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Signs request bodies as a webhook's `[signature]` section says.
#[derive(Clone)]
pub enum Signer {
    /// Standard Webhooks v1: `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`,
    /// one signature per secret (space-separated), keys decoded from `whsec_<base64>`.
    Standard { keys: Vec<Vec<u8>> },
    /// HMAC-SHA256 of the raw body with the secret's UTF-8 bytes, in a configurable header.
    HmacSha256 {
        secrets: Vec<Vec<u8>>,
        header: String,
        prefix: String,
        encoding: Encoding,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    HexUpper,
    Hex,
    Base64,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signer::Standard { keys } => write!(f, "Standard({} secrets: ***)", keys.len()),
            Signer::HmacSha256 { header, .. } => {
                write!(f, "HmacSha256(header {header}, secrets: ***)")
            }
        }
    }
}

impl Signer {
    /// Builds a signer from configuration. Errors are (field, message) pairs; they never quote a secret.
    pub fn from_spec(spec: &SignatureSpec) -> Result<Signer, Vec<(String, String)>> {
        let mut errors = Vec::new();
        if spec.secrets.is_empty() {
            errors.push((
                "signature.secrets".to_string(),
                "at least one secret is required".to_string(),
            ));
        }
        let signer = match spec.scheme.as_str() {
            "standard" => {
                for (field, value) in [
                    ("header", &spec.header),
                    ("prefix", &spec.prefix),
                    ("encoding", &spec.encoding),
                ] {
                    if value.is_some() {
                        errors.push((
                            format!("signature.{field}"),
                            "only applies to scheme \"hmac-sha256\"; the standard scheme always uses the webhook-signature header".into(),
                        ));
                    }
                }
                let mut keys = Vec::new();
                for (i, secret) in spec.secrets.iter().enumerate() {
                    match decode_standard_secret(secret) {
                        Ok(k) => keys.push(k),
                        Err(msg) => errors.push((format!("signature.secrets[{i}]"), msg)),
                    }
                }
                Signer::Standard { keys }
            }
            "hmac-sha256" => {
                let encoding = match spec.encoding.as_deref().unwrap_or("hex-upper") {
                    "hex-upper" => Encoding::HexUpper,
                    "hex" => Encoding::Hex,
                    "base64" => Encoding::Base64,
                    other => {
                        errors.push((
                            "signature.encoding".into(),
                            format!("unknown encoding {other:?}; use \"hex-upper\", \"hex\" or \"base64\""),
                        ));
                        Encoding::HexUpper
                    }
                };
                let header = spec.header.clone().unwrap_or_else(|| "ms-signature".into());
                if header.is_empty()
                    || !header
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    errors.push((
                        "signature.header".into(),
                        format!("{header:?} is not a valid header name"),
                    ));
                }
                for (i, s) in spec.secrets.iter().enumerate() {
                    if s.is_empty() {
                        errors.push((format!("signature.secrets[{i}]"), "secret is empty".into()));
                    }
                }
                Signer::HmacSha256 {
                    secrets: spec.secrets.iter().map(|s| s.as_bytes().to_vec()).collect(),
                    header: header.to_ascii_lowercase(),
                    prefix: spec.prefix.clone().unwrap_or_else(|| "sha256=".into()),
                    encoding,
                }
            }
            other => {
                errors.push((
                    "signature.scheme".into(),
                    format!("unknown scheme {other:?}; use \"standard\" or \"hmac-sha256\""),
                ));
                return Err(errors);
            }
        };
        if errors.is_empty() {
            Ok(signer)
        } else {
            Err(errors)
        }
    }

    /// The name of the header the signature goes in (lower case).
    pub fn header(&self) -> &str {
        match self {
            Signer::Standard { .. } => "webhook-signature",
            Signer::HmacSha256 { header, .. } => header,
        }
    }

    /// The signature header (name, value) for one attempt.
    pub fn sign(&self, message_id: &str, timestamp: i64, body: &[u8]) -> (String, String) {
        match self {
            Signer::Standard { keys } => {
                let mut value = String::new();
                for key in keys {
                    let mut mac =
                        HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
                    mac.update(message_id.as_bytes());
                    mac.update(b".");
                    mac.update(timestamp.to_string().as_bytes());
                    mac.update(b".");
                    mac.update(body);
                    if !value.is_empty() {
                        value.push(' ');
                    }
                    value.push_str("v1,");
                    value.push_str(&BASE64.encode(mac.finalize().into_bytes()));
                }
                ("webhook-signature".into(), value)
            }
            Signer::HmacSha256 {
                secrets,
                header,
                prefix,
                encoding,
            } => {
                let mut value = String::new();
                for secret in secrets {
                    let mut mac =
                        HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
                    mac.update(body);
                    let digest = mac.finalize().into_bytes();
                    if !value.is_empty() {
                        value.push_str(", ");
                    }
                    value.push_str(prefix);
                    match encoding {
                        Encoding::HexUpper => value.push_str(&hex::encode_upper(digest)),
                        Encoding::Hex => value.push_str(&hex::encode(digest)),
                        Encoding::Base64 => value.push_str(&BASE64.encode(digest)),
                    }
                }
                (header.clone(), value)
            }
        }
    }
}

/// `whsec_<base64>` → key bytes.
pub fn decode_standard_secret(secret: &str) -> Result<Vec<u8>, String> {
    let Some(encoded) = secret.strip_prefix("whsec_") else {
        return Err("a standard-scheme secret must look like whsec_<base64> (e.g. whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw)".into());
    };
    match BASE64.decode(encoded) {
        Ok(key) if key.len() >= 16 => Ok(key),
        Ok(key) => Err(format!(
            "the secret's key is {} bytes; use at least 16 (24-64 recommended)",
            key.len()
        )),
        Err(_) => Err("the part after whsec_ is not valid base64".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(scheme: &str, secrets: &[&str]) -> SignatureSpec {
        SignatureSpec {
            scheme: scheme.into(),
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
            header: None,
            prefix: None,
            encoding: None,
        }
    }

    #[test]
    fn hmac_matches_the_published_vector() {
        let signer = Signer::from_spec(&spec("hmac-sha256", &["secret123"])).unwrap();
        let (name, value) = signer.sign("ignored", 0, b"{'test':'test2'}");
        assert_eq!(name, "ms-signature");
        assert_eq!(
            value,
            "sha256=25FB6994568A75CD233E04BA1C653AF1BF476041CC543AF04F82CAAC482C201A"
        );
    }

    #[test]
    fn standard_signs_id_timestamp_and_body_once_per_secret() {
        let signer = Signer::from_spec(&spec(
            "standard",
            &[
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ],
        ))
        .unwrap();
        // Vector from the Standard Webhooks specification's reference libraries.
        let (name, value) = signer.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(name, "webhook-signature");
        assert_eq!(
            value,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn malformed_secrets_are_reported_without_echoing_them() {
        let errors = Signer::from_spec(&spec("standard", &["not-a-secret"])).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(!errors[0].1.contains("not-a-secret"));
        assert!(Signer::from_spec(&spec("rsa", &["x"])).is_err());
    }
}
