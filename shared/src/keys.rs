//! RSA keys: loading the signing key and extra verification keys from PEM,
//! and rendering them as a JSON Web Key Set (RFC 7517) whose `kid`s are
//! RFC 7638 thumbprints.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Config, ConfigError};

/// Smallest accepted RSA modulus. NIST SP 800-57 and RFC 7518 §3.3 require
/// at least 2048 bits for RS256.
pub const MIN_RSA_BITS: usize = 2048;

/// Why a key could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// No `-----BEGIN …-----` block was found.
    #[error(
        "no PEM block found (expected -----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)"
    )]
    NotPem,
    /// The PEM holds an encrypted key, which would need a passphrase.
    #[error("encrypted private keys are not supported; store the key unencrypted in a Secret")]
    Encrypted,
    /// The PEM holds something other than an RSA key.
    #[error("unsupported PEM block {0:?}")]
    Unsupported(String),
    /// The PEM block does not decode to an RSA key.
    #[error("not a valid RSA key: {0}")]
    Invalid(String),
    /// The key is shorter than [`MIN_RSA_BITS`].
    #[error("RSA key has {bits} bits; at least {MIN_RSA_BITS} are required")]
    TooSmall {
        /// The key's modulus length.
        bits: usize,
    },
}

/// One public key as a JWK (RFC 7517 §4, RFC 7518 §6.3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Always `RSA`.
    pub kty: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
    /// Always `RS256`.
    pub alg: String,
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// Modulus, base64url without padding.
    pub n: String,
    /// Public exponent, base64url without padding.
    pub e: String,
}

impl Jwk {
    /// The JWK of an RSA public key.
    pub fn from_public_key(key: &RsaPublicKey) -> Self {
        let n = URL_SAFE_NO_PAD.encode(key.n().to_bytes_be());
        let e = URL_SAFE_NO_PAD.encode(key.e().to_bytes_be());
        Self {
            kty: "RSA".into(),
            use_: "sig".into(),
            alg: "RS256".into(),
            kid: thumbprint(&n, &e),
            n,
            e,
        }
    }
}

/// A JSON Web Key Set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys, current signing key first.
    pub keys: Vec<Jwk>,
}

/// RFC 7638 §3: the SHA-256 of the JSON object of the required members in
/// lexicographic order with no whitespace, base64url without padding.
pub fn thumbprint(n: &str, e: &str) -> String {
    // n and e are base64url, so they need no JSON escaping.
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The private key tokens are signed with, and its public JWK.
pub struct SigningKey {
    /// Parsed and checked once: aws-lc validates an RSA key when it loads
    /// it, which costs several times the signature itself, so the key must
    /// not be re-parsed per token (as `jsonwebtoken::encode` does).
    key_pair: RsaKeyPair,
    jwk: Jwk,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.jwk.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads an RSA private key from PKCS#8 (`PRIVATE KEY`) or PKCS#1
    /// (`RSA PRIVATE KEY`) PEM.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let (label, block) = pem_blocks(pem).next().ok_or(KeyError::NotPem)?;
        let key = match label {
            "PRIVATE KEY" => RsaPrivateKey::from_pkcs8_pem(block)
                .map_err(|e| KeyError::Invalid(e.to_string()))?,
            "RSA PRIVATE KEY" => RsaPrivateKey::from_pkcs1_pem(block)
                .map_err(|e| KeyError::Invalid(e.to_string()))?,
            "ENCRYPTED PRIVATE KEY" => return Err(KeyError::Encrypted),
            other => return Err(KeyError::Unsupported(other.to_owned())),
        };
        check_size(key.size())?;
        let der = key
            .to_pkcs1_der()
            .map_err(|e| KeyError::Invalid(e.to_string()))?;
        Ok(Self {
            key_pair: RsaKeyPair::from_der(der.as_bytes())
                .map_err(|e| KeyError::Invalid(e.to_string()))?,
            jwk: Jwk::from_public_key(&key.to_public_key()),
        })
    }

    /// The key id (RFC 7638 thumbprint) put in every token header.
    pub fn kid(&self) -> &str {
        &self.jwk.kid
    }

    /// The public half as a JWK.
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// The RSASSA-PKCS1-v1_5 SHA-256 signature of `message` (JWS `RS256`,
    /// RFC 7518 §3.3).
    pub(crate) fn sign_rs256(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut signature = vec![0; self.key_pair.public_modulus_len()];
        self.key_pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|e| KeyError::Invalid(e.to_string()))?;
        Ok(signature)
    }
}

/// Loads every public key in `pem`: SPKI (`PUBLIC KEY`) or PKCS#1
/// (`RSA PUBLIC KEY`) blocks, one after another.
pub fn public_keys_from_pem(pem: &str) -> Result<Vec<RsaPublicKey>, KeyError> {
    let mut keys = Vec::new();
    for (label, block) in pem_blocks(pem) {
        let key = match label {
            "PUBLIC KEY" => RsaPublicKey::from_public_key_pem(block)
                .map_err(|e| KeyError::Invalid(e.to_string()))?,
            "RSA PUBLIC KEY" => {
                RsaPublicKey::from_pkcs1_pem(block).map_err(|e| KeyError::Invalid(e.to_string()))?
            }
            other => return Err(KeyError::Unsupported(other.to_owned())),
        };
        check_size(key.size())?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(KeyError::NotPem);
    }
    Ok(keys)
}

fn check_size(bytes: usize) -> Result<(), KeyError> {
    let bits = bytes * 8;
    if bits < MIN_RSA_BITS {
        Err(KeyError::TooSmall { bits })
    } else {
        Ok(())
    }
}

/// Splits PEM text into `(label, block)` pairs, each block running from its
/// `-----BEGIN` line through its `-----END` line.
fn pem_blocks(text: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let start = rest.find("-----BEGIN ")?;
        let after_begin = &rest[start + "-----BEGIN ".len()..];
        let label_end = after_begin.find("-----")?;
        let label = &after_begin[..label_end];
        let end_marker = format!("-----END {label}-----");
        let end = rest[start..].find(&end_marker)? + start + end_marker.len();
        let block = &rest[start..end];
        rest = &rest[end..];
        Some((label, block))
    })
}

/// Loads the signing key named by the configuration; a function that signs
/// cannot start without one.
pub fn signing_key(config: &Config) -> Result<SigningKey, ConfigError> {
    let source = config.private_key.as_ref().ok_or_else(|| {
        ConfigError::new(
            "JWT_PRIVATE_KEY_FILE",
            "no signing key configured: set JWT_PRIVATE_KEY_FILE (or JWT_PRIVATE_KEY) to an RSA private key in PEM",
        )
    })?;
    SigningKey::from_pem(&source.pem).map_err(|e| ConfigError::new(source.variable, e.to_string()))
}

/// The key set to publish: the signing key's public half, if configured,
/// then every extra key from `JWT_PUBLIC_KEYS_FILE`, without duplicates.
pub fn published_keys(config: &Config) -> Result<Jwks, ConfigError> {
    let mut keys = Vec::new();
    if config.private_key.is_some() {
        keys.push(signing_key(config)?.jwk().clone());
    }
    if let Some(extra) = &config.public_keys {
        let loaded = public_keys_from_pem(&extra.pem).map_err(|e| {
            ConfigError::new(
                "JWT_PUBLIC_KEYS_FILE",
                format!("{}: {e}", extra.path.display()),
            )
        })?;
        for key in loaded {
            let jwk = Jwk::from_public_key(&key);
            if !keys.iter().any(|k: &Jwk| k.kid == jwk.kid) {
                keys.push(jwk);
            }
        }
    }
    if keys.is_empty() {
        return Err(ConfigError::new(
            "JWT_PUBLIC_KEYS_FILE",
            "no keys to publish: set JWT_PRIVATE_KEY_FILE, JWT_PRIVATE_KEY or JWT_PUBLIC_KEYS_FILE",
        ));
    }
    Ok(Jwks { keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/../tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 7638 §3.1: the example key and its thumbprint.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let e = "AQAB";
        assert_eq!(
            thumbprint(n, e),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn pkcs8_and_pkcs1_forms_of_one_key_agree() {
        let pkcs8 = SigningKey::from_pem(&fixture("test-only-rsa2048-pkcs8.pem")).unwrap();
        let pkcs1 = SigningKey::from_pem(&fixture("test-only-rsa2048-pkcs1.pem")).unwrap();
        assert_eq!(pkcs8.jwk(), pkcs1.jwk());
        assert_eq!(pkcs8.jwk().e, "AQAB");
        assert_eq!(pkcs8.jwk().kty, "RSA");
        assert_eq!(pkcs8.jwk().alg, "RS256");
        assert_eq!(pkcs8.jwk().use_, "sig");
        // A 2048-bit modulus is 256 bytes, 342 base64url characters.
        assert_eq!(pkcs8.jwk().n.len(), 342);
        assert_eq!(pkcs8.kid(), thumbprint(&pkcs8.jwk().n, "AQAB"));
    }

    #[test]
    fn keys_under_2048_bits_are_refused_with_their_size() {
        let err = SigningKey::from_pem(&fixture("test-only-rsa1024-too-small.pem")).unwrap_err();
        assert_eq!(err, KeyError::TooSmall { bits: 1024 });
        assert_eq!(
            err.to_string(),
            "RSA key has 1024 bits; at least 2048 are required"
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(SigningKey::from_pem("hello").unwrap_err(), KeyError::NotPem);
        let broken = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            SigningKey::from_pem(broken),
            Err(KeyError::Invalid(_))
        ));
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(
            SigningKey::from_pem(cert).unwrap_err(),
            KeyError::Unsupported("CERTIFICATE".into())
        );
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert_eq!(
            SigningKey::from_pem(encrypted).unwrap_err(),
            KeyError::Encrypted
        );
        // A public key is not a signing key.
        assert!(SigningKey::from_pem(&fixture("test-only-rsa2048-second.pub.pem")).is_err());
    }

    #[test]
    fn public_keys_load_in_both_forms_and_match_the_private_key() {
        let private = SigningKey::from_pem(&fixture("test-only-rsa2048-second.pem")).unwrap();
        let both = format!(
            "{}\n{}",
            fixture("test-only-rsa2048-second.pub.pem"),
            fixture("test-only-rsa2048-second.pkcs1.pub.pem")
        );
        let keys = public_keys_from_pem(&both).unwrap();
        assert_eq!(keys.len(), 2);
        for key in &keys {
            assert_eq!(&Jwk::from_public_key(key), private.jwk());
        }
        assert_eq!(
            public_keys_from_pem("nothing here").unwrap_err(),
            KeyError::NotPem
        );
    }

    #[test]
    fn debug_shows_only_the_kid() {
        let key = SigningKey::from_pem(&fixture("test-only-rsa2048-pkcs8.pem")).unwrap();
        let debug = format!("{key:?}");
        assert!(debug.contains(key.kid()));
        assert!(!debug.contains(&key.jwk().n));
    }

    fn config(vars: &[(&str, String)]) -> Config {
        Config::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        })
        .unwrap()
    }

    #[test]
    fn published_keys_hold_the_signing_key_then_the_extra_keys_once_each() {
        let dir = std::env::temp_dir().join(format!("users-keys-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let extra = dir.join("public.pem");
        // The extra file repeats the signing key: it is published once.
        let signing_public = {
            let key =
                RsaPrivateKey::from_pkcs8_pem(&fixture("test-only-rsa2048-pkcs8.pem")).unwrap();
            rsa::pkcs8::EncodePublicKey::to_public_key_pem(
                &key.to_public_key(),
                rsa::pkcs8::LineEnding::LF,
            )
            .unwrap()
        };
        std::fs::write(
            &extra,
            format!(
                "{}{signing_public}",
                fixture("test-only-rsa2048-second.pub.pem")
            ),
        )
        .unwrap();
        let c = config(&[
            ("JWT_PRIVATE_KEY", fixture("test-only-rsa2048-pkcs8.pem")),
            ("JWT_PUBLIC_KEYS_FILE", extra.display().to_string()),
        ]);
        let jwks = published_keys(&c).unwrap();
        let signing = signing_key(&c).unwrap();
        let second = SigningKey::from_pem(&fixture("test-only-rsa2048-second.pem")).unwrap();
        assert_eq!(jwks.keys, vec![signing.jwk().clone(), second.jwk().clone()]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn jwks_can_run_on_public_keys_alone() {
        let dir = std::env::temp_dir().join(format!("users-keys-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let extra = dir.join("public.pem");
        std::fs::write(&extra, fixture("test-only-rsa2048-second.pub.pem")).unwrap();
        let c = config(&[("JWT_PUBLIC_KEYS_FILE", extra.display().to_string())]);
        assert_eq!(published_keys(&c).unwrap().keys.len(), 1);
        let err = signing_key(&c).unwrap_err();
        assert_eq!(err.variable, "JWT_PRIVATE_KEY_FILE");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_bad_key_names_the_variable_it_came_from() {
        let c = config(&[(
            "JWT_PRIVATE_KEY",
            fixture("test-only-rsa1024-too-small.pem"),
        )]);
        let err = signing_key(&c).unwrap_err();
        assert_eq!(err.variable, "JWT_PRIVATE_KEY");
        assert!(err.reason.contains("1024 bits"));
        let none = config(&[]);
        assert!(published_keys(&none).is_err());
    }
}
