//! RS256 access tokens (SPEC §3.5, RFC 9068's `at+jwt` profile): the claims
//! and the issuer that signs them. The current time and the token id are
//! parameters, so expiry is testable without a clock.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::keys::SigningKey;
use crate::store::User;

/// The `typ` header value for OAuth 2.0 access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer URL.
    pub iss: String,
    /// The user's UUID, bare.
    pub sub: String,
    /// Audience.
    pub aud: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Not before (= `iat`).
    pub nbf: i64,
    /// Expiry (= `iat` + TTL).
    pub exp: i64,
    /// A fresh UUID per token.
    pub jti: String,
    /// Display name.
    pub name: String,
    /// Normalized email.
    pub email: String,
}

/// Signing failed; with a key that loaded this does not happen in practice.
#[derive(Debug, thiserror::Error)]
#[error("token signing failed: {0}")]
pub struct TokenError(String);

/// Signs access tokens with one key for one issuer and audience.
#[derive(Debug)]
pub struct TokenIssuer {
    key: SigningKey,
    issuer: String,
    audience: String,
    ttl_seconds: u64,
}

impl TokenIssuer {
    /// An issuer for `issuer`/`audience` whose tokens live `ttl_seconds`.
    pub fn new(key: SigningKey, issuer: String, audience: String, ttl_seconds: u64) -> Self {
        Self {
            key,
            issuer,
            audience,
            ttl_seconds,
        }
    }

    /// Token lifetime in seconds (the response's `expires_in`).
    pub fn ttl_seconds(&self) -> u64 {
        self.ttl_seconds
    }

    /// The claims of a token for `user`, issued at `now` (epoch seconds).
    pub fn claims(&self, user: &User, now: i64, jti: Uuid) -> Claims {
        Claims {
            iss: self.issuer.clone(),
            sub: user.id.to_string(),
            aud: self.audience.clone(),
            iat: now,
            nbf: now,
            exp: now.saturating_add_unsigned(self.ttl_seconds),
            jti: jti.hyphenated().to_string(),
            name: user.name.as_str().to_owned(),
            email: user.email.as_str().to_owned(),
        }
    }

    /// A signed token for `user`, issued at `now` (epoch seconds).
    pub fn issue(&self, user: &User, now: i64, jti: Uuid) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        header.kid = Some(self.key.kid().to_owned());
        let header = serde_json::to_vec(&header).map_err(|e| TokenError(e.to_string()))?;
        let claims = serde_json::to_vec(&self.claims(user, now, jti))
            .map_err(|e| TokenError(e.to_string()))?;
        // JWS compact serialization (RFC 7515 §7.1): header.claims.signature,
        // each base64url without padding; the signature covers the first two.
        let mut token = String::with_capacity(512 + claims.len() * 4 / 3);
        URL_SAFE_NO_PAD.encode_string(&header, &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut token);
        let signature = self
            .key
            .sign_rs256(token.as_bytes())
            .map_err(|e| TokenError(e.to_string()))?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};

    use super::*;
    use crate::domain::{Email, UserId, UserName};
    use crate::password::StoredHash;
    use crate::store::AccountStatus;

    fn key() -> SigningKey {
        let pem = std::fs::read_to_string(format!(
            "{}/../tests/fixtures/test-only-rsa2048-pkcs8.pem",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        SigningKey::from_pem(&pem).unwrap()
    }

    fn user() -> User {
        User {
            id: UserId::new_random(),
            name: UserName::parse("Ada Lovelace").unwrap(),
            email: Email::parse("Ada@Example.com").unwrap(),
            password_hash: StoredHash::from_stored(
                "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into(),
            ),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            status: AccountStatus::Active,
        }
    }

    fn issuer() -> TokenIssuer {
        TokenIssuer::new(
            key(),
            "https://auth.example.com".into(),
            "shop-example".into(),
            900,
        )
    }

    fn decoding_key(issuer: &TokenIssuer) -> DecodingKey {
        let jwk = issuer.key.jwk();
        DecodingKey::from_rsa_components(&jwk.n, &jwk.e).unwrap()
    }

    #[test]
    fn header_is_rs256_at_jwt_with_the_thumbprint_kid() {
        let issuer = issuer();
        let token = issuer
            .issue(&user(), 1_700_000_000, Uuid::new_v4())
            .unwrap();
        let header = decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid.as_deref(), Some(issuer.key.kid()));
    }

    #[test]
    fn claims_carry_identity_times_and_a_fresh_jti() {
        let issuer = issuer();
        let user = user();
        let jti = Uuid::new_v4();
        let now = 1_700_000_000;
        let token = issuer.issue(&user, now, jti).unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&["https://auth.example.com"]);
        validation.set_audience(&["shop-example"]);
        validation.validate_exp = false;
        let claims = decode::<Claims>(&token, &decoding_key(&issuer), &validation)
            .unwrap()
            .claims;
        assert_eq!(
            claims,
            Claims {
                iss: "https://auth.example.com".into(),
                sub: user.id.to_string(),
                aud: "shop-example".into(),
                iat: now,
                nbf: now,
                exp: now + 900,
                jti: jti.to_string(),
                name: "Ada Lovelace".into(),
                email: "ada@example.com".into(),
            }
        );
        // `sub` is the bare UUID: no prefix, hyphenated, 36 characters.
        assert_eq!(
            Uuid::parse_str(&claims.sub).unwrap().to_string(),
            claims.sub
        );
    }

    #[test]
    fn a_token_issued_now_verifies_and_one_past_its_ttl_does_not() {
        let issuer = issuer();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&["https://auth.example.com"]);
        validation.set_audience(&["shop-example"]);
        validation.leeway = 0;
        let fresh = issuer.issue(&user(), now, Uuid::new_v4()).unwrap();
        assert!(decode::<Claims>(&fresh, &decoding_key(&issuer), &validation).is_ok());
        let stale = issuer.issue(&user(), now - 901, Uuid::new_v4()).unwrap();
        assert!(decode::<Claims>(&stale, &decoding_key(&issuer), &validation).is_err());
    }

    #[test]
    fn another_audience_is_rejected() {
        let issuer = issuer();
        let token = issuer
            .issue(
                &user(),
                time::OffsetDateTime::now_utc().unix_timestamp(),
                Uuid::new_v4(),
            )
            .unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&["orders"]);
        assert!(decode::<Claims>(&token, &decoding_key(&issuer), &validation).is_err());
    }
}
