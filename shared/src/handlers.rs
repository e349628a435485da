//! The three request handlers of SPEC §3. Each takes its state and a
//! `lambda_http::Request` and returns a response; none can fail or panic on
//! client input, and every error leaves through [`ApiError`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::config::{Config, ConfigError};
use crate::domain::{LoginRequest, RegisterRequest, UserId};
use crate::keys;
use crate::password::{PasswordHasher, StoredHash};
use crate::problem::ApiError;
use crate::store::dynamo::DynamoStore;
use crate::store::{
    AccountStatus, CreateUser, FindUserByEmail, ReplacePasswordHash, StoreError, User,
};
use crate::token::TokenIssuer;

/// Largest accepted request body (SPEC §3.1): 64 KiB is generous for three
/// short strings and keeps parsing cheap.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Path of the register route; the `Location` of a new user is below it.
pub const USERS_PATH: &str = "/api/v1/users";

/// State of the register function, built once per cold start.
#[derive(Debug)]
pub struct RegisterState<S> {
    store: S,
    hasher: Arc<PasswordHasher>,
}

impl<S> RegisterState<S> {
    /// State over any store.
    pub fn new(store: S, hasher: PasswordHasher) -> Self {
        Self {
            store,
            hasher: Arc::new(hasher),
        }
    }
}

impl RegisterState<DynamoStore> {
    /// State from configuration, on DynamoDB.
    pub async fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let hasher = PasswordHasher::new(config.argon2)
            .map_err(|e| ConfigError::new("ARGON2_MEMORY_KIB", e.to_string()))?;
        Ok(Self::new(
            DynamoStore::connect(&config.table).await?,
            hasher,
        ))
    }
}

/// State of the login function, built once per cold start.
#[derive(Debug)]
pub struct LoginState<S> {
    store: S,
    hasher: Arc<PasswordHasher>,
    dummy_hash: StoredHash,
    issuer: TokenIssuer,
    verifications: AtomicU64,
    signatures: AtomicU64,
}

impl<S> LoginState<S> {
    /// State over any store, with a fresh dummy hash (made without hashing).
    pub fn new(store: S, hasher: PasswordHasher, issuer: TokenIssuer) -> Result<Self, ConfigError> {
        let dummy_hash = hasher
            .dummy_hash()
            .map_err(|e| ConfigError::new("ARGON2_MEMORY_KIB", e.to_string()))?;
        Ok(Self {
            store,
            hasher: Arc::new(hasher),
            dummy_hash,
            issuer,
            verifications: AtomicU64::new(0),
            signatures: AtomicU64::new(0),
        })
    }

    /// The store this state reads from.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Password verifications done so far (each login does exactly one).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Tokens signed so far.
    pub fn signatures(&self) -> u64 {
        self.signatures.load(Ordering::Relaxed)
    }
}

impl LoginState<DynamoStore> {
    /// State from configuration, on DynamoDB; refuses to start without a
    /// signing key.
    pub async fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let key = keys::signing_key(config)?;
        let issuer = TokenIssuer::new(
            key,
            config.issuer.clone(),
            config.audience.clone(),
            config.token_ttl_seconds,
        );
        let hasher = PasswordHasher::new(config.argon2)
            .map_err(|e| ConfigError::new("ARGON2_MEMORY_KIB", e.to_string()))?;
        Self::new(DynamoStore::connect(&config.table).await?, hasher, issuer)
    }
}

/// State of the jwks function: the rendered document, built once.
#[derive(Debug)]
pub struct JwksState {
    body: Vec<u8>,
    cache_control: HeaderValue,
}

impl JwksState {
    /// Renders the published keys of `config`; works on public keys alone.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let jwks = keys::published_keys(config)?;
        let body = serde_json::to_vec(&jwks)
            .map_err(|e| ConfigError::new("JWT_PUBLIC_KEYS_FILE", e.to_string()))?;
        let cache_control =
            HeaderValue::try_from(format!("public, max-age={}", config.jwks_max_age_seconds))
                .map_err(|e| ConfigError::new("JWKS_MAX_AGE_SECONDS", e.to_string()))?;
        Ok(Self {
            body,
            cache_control,
        })
    }
}

#[derive(Serialize)]
struct RegisteredUser<'a> {
    id: String,
    name: &'a str,
    email: &'a str,
    created_at: String,
}

#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    user: PublicUser<'a>,
}

#[derive(Serialize)]
struct PublicUser<'a> {
    id: String,
    name: &'a str,
    email: &'a str,
}

/// `POST /api/v1/users`.
pub async fn register<S: CreateUser>(state: &RegisterState<S>, request: Request) -> Response<Body> {
    respond(try_register(state, request).await)
}

async fn try_register<S: CreateUser>(
    state: &RegisterState<S>,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let body = json_body(&request, Method::POST)?;
    let RegisterRequest {
        name,
        email,
        password,
    } = RegisterRequest::from_json(body).map_err(ApiError::InvalidBody)?;
    let password_hash = state
        .hasher
        .hash_blocking(password)
        .await
        .map_err(|e| internal(&e))?;
    let user = User {
        id: UserId::new_random(),
        name,
        email,
        password_hash,
        created_at: now()
            .replace_nanosecond(0)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        status: AccountStatus::Active,
    };
    state
        .store
        .create_user(&user)
        .await
        .map_err(|e| store_error(&e))?;
    tracing::info!(user_id = %user.id, "user registered");
    let created_at = user.created_at.format(&Rfc3339).map_err(|e| internal(&e))?;
    let body = RegisteredUser {
        id: user.id.to_string(),
        name: user.name.as_str(),
        email: user.email.as_str(),
        created_at,
    };
    let mut response = json_response(StatusCode::CREATED, &body)?;
    let location =
        HeaderValue::try_from(format!("{USERS_PATH}/{}", user.id)).map_err(|e| internal(&e))?;
    response.headers_mut().insert(LOCATION, location);
    Ok(response)
}

/// `POST /api/v1/users/login`.
pub async fn login<S: FindUserByEmail + ReplacePasswordHash>(
    state: &LoginState<S>,
    request: Request,
) -> Response<Body> {
    respond(try_login(state, request).await)
}

async fn try_login<S: FindUserByEmail + ReplacePasswordHash>(
    state: &LoginState<S>,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let body = json_body(&request, Method::POST)?;
    let LoginRequest { email, password } =
        LoginRequest::from_json(body).map_err(ApiError::InvalidBody)?;
    let user = state
        .store
        .find_by_email(&email)
        .await
        .map_err(|e| store_error(&e))?;
    // An unknown email is checked against the dummy hash: the same work,
    // the same answer, so neither tells whether an account exists.
    let stored = user
        .as_ref()
        .map_or_else(|| state.dummy_hash.clone(), |u| u.password_hash.clone());
    state.verifications.fetch_add(1, Ordering::Relaxed);
    let (verification, password) = state
        .hasher
        .verify_blocking(password, stored.clone())
        .await
        .map_err(|e| internal(&e))?;
    let user = match user {
        Some(user) if verification.matched => user,
        _ => return Err(ApiError::LoginInvalid),
    };
    if user.status != AccountStatus::Active {
        return Err(ApiError::AccountInactive);
    }
    if verification.needs_rehash {
        upgrade_hash(state, &user, password, &stored).await;
    }
    let now = now().unix_timestamp();
    state.signatures.fetch_add(1, Ordering::Relaxed);
    let access_token = state
        .issuer
        .issue(&user, now, Uuid::new_v4())
        .map_err(|e| internal(&e))?;
    let body = TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: state.issuer.ttl_seconds(),
        user: PublicUser {
            id: user.id.to_string(),
            name: user.name.as_str(),
            email: user.email.as_str(),
        },
    };
    let mut response = json_response(StatusCode::OK, &body)?;
    // RFC 6749 §5.1: responses carrying tokens must not be cached.
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Replaces a hash made under an older policy. Best effort: the login has
/// succeeded either way, and the next one tries again.
async fn upgrade_hash<S: ReplacePasswordHash>(
    state: &LoginState<S>,
    user: &User,
    password: crate::domain::Password,
    old: &StoredHash,
) {
    let new = match state.hasher.hash_blocking(password).await {
        Ok(new) => new,
        Err(e) => {
            tracing::warn!(user_id = %user.id, error = %e, "password rehash failed");
            return;
        }
    };
    match state
        .store
        .replace_password_hash(&user.email, old, &new)
        .await
    {
        Ok(()) => {
            tracing::info!(user_id = %user.id, "password hash upgraded to the current policy")
        }
        Err(e) => {
            tracing::warn!(user_id = %user.id, error = %e, "password hash upgrade not stored")
        }
    }
}

/// `GET /.well-known/jwks.json`.
pub fn jwks(state: &JwksState, request: &Request) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return ApiError::MethodNotAllowed { allow: "GET" }.into_response();
    }
    let mut response = Response::new(Body::Binary(state.body.clone()));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, state.cache_control.clone());
    response
}

fn respond(result: Result<Response<Body>, ApiError>) -> Response<Body> {
    result.unwrap_or_else(|error| {
        tracing::info!(code = error.code(), "request refused");
        error.into_response()
    })
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// The body of a JSON request, after the method, size and media-type checks.
fn json_body(request: &Request, method: Method) -> Result<&[u8], ApiError> {
    if request.method() != method {
        return Err(ApiError::MethodNotAllowed {
            allow: if method == Method::GET { "GET" } else { "POST" },
        });
    }
    let body: &[u8] = request.body().as_ref();
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::BodyTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    let is_json = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_json_media_type);
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    Ok(body)
}

/// `application/json` or any `application/*+json` (RFC 6839), parameters
/// such as `charset` allowed, case-insensitive.
fn is_json_media_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Result<Response<Body>, ApiError> {
    let bytes = serde_json::to_vec(body).map_err(|e| internal(&e))?;
    let mut response = Response::new(Body::Binary(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

fn store_error(error: &StoreError) -> ApiError {
    match error {
        StoreError::EmailTaken => ApiError::EmailTaken,
        other => {
            tracing::error!(error = %error_chain(other), "user store failed");
            ApiError::ServiceUnavailable
        }
    }
}

fn internal(error: &dyn std::error::Error) -> ApiError {
    tracing::error!(error = %error_chain(error), "internal error");
    ApiError::Internal
}

/// An error and its sources on one line, for the log.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types_are_recognised() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
            " application/json ",
        ] {
            assert!(is_json_media_type(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
            "json",
            "",
        ] {
            assert!(!is_json_media_type(bad), "{bad}");
        }
    }

    #[test]
    fn error_chains_are_flattened() {
        let inner = std::io::Error::other("connection refused");
        let outer = StoreError::Unavailable(Box::new(inner));
        assert_eq!(
            error_chain(&outer),
            "the user store is unavailable: connection refused"
        );
    }
}
