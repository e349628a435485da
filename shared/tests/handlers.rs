//! The handlers driven with API Gateway HTTP API (payload 2.0) events, as
//! API Gateway sends them, over a real DynamoDB-compatible endpoint: every
//! outcome of SPEC §3.

// A test crate: helpers fail the test that calls them, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::{apigw_event, fixture, fresh_store, post_json, request, unreachable_store};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lambda_http::{Body, Response};
use serde_json::{Value, json};
use users::config::Config;
use users::domain::{Email, Password};
use users::handlers::{JwksState, LoginState, RegisterState, jwks, login, register};
use users::keys::{Jwks, SigningKey};
use users::password::{Argon2Policy, PasswordHasher, StoredHash};
use users::store::dynamo::DynamoStore;
use users::store::{AccountStatus, FindUserByEmail, ReplacePasswordHash, StoreError, User};
use users::token::{Claims, TokenIssuer};

const ISSUER: &str = "https://auth.example.com";
const AUDIENCE: &str = "shop-example";

fn hasher() -> PasswordHasher {
    PasswordHasher::new(Argon2Policy::INSECURE_FAST_FOR_TESTS).unwrap()
}

fn issuer() -> TokenIssuer {
    let key = SigningKey::from_pem(&fixture("test-only-rsa2048-pkcs8.pem")).unwrap();
    TokenIssuer::new(key, ISSUER.into(), AUDIENCE.into(), 900)
}

fn jwks_state(max_age: &str) -> JwksState {
    let pem = fixture("test-only-rsa2048-pkcs8.pem");
    let config = Config::from_lookup(|name| match name {
        "JWT_PRIVATE_KEY" => Some(pem.clone()),
        "JWKS_MAX_AGE_SECONDS" => Some(max_age.to_owned()),
        _ => None,
    })
    .unwrap();
    JwksState::from_config(&config).unwrap()
}

fn json_body(response: &Response<Body>) -> Value {
    serde_json::from_slice(response.body().as_ref()).expect("a JSON body")
}

fn header<'a>(response: &'a Response<Body>, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_else(|| panic!("no {name} header"))
}

async fn register_ada(state: &RegisterState<DynamoStore>) -> Value {
    let response = register(
        state,
        post_json(
            "/api/v1/users",
            r#"{"name":"Ada Lovelace","email":"Ada@Example.com","password":"analytical engine"}"#,
        ),
    )
    .await;
    assert_eq!(response.status(), 201, "{:?}", json_body(&response));
    json_body(&response)
}

fn login_body(email: &str, password: &str) -> String {
    json!({"email": email, "password": password}).to_string()
}

// ---------------------------------------------------------------- register

#[tokio::test]
async fn register_creates_the_account_and_answers_201_with_its_location() {
    let store = fresh_store().await;
    let state = RegisterState::new(store.clone(), hasher());
    let response = register(&state, post_json("/api/v1/users", r#"{"name":"  Ada Lovelace ","email":" Ada@Example.com","password":"analytical engine"}"#)).await;
    assert_eq!(response.status(), 201);
    assert_eq!(header(&response, "content-type"), "application/json");
    let body = json_body(&response);
    let id = body["id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().to_string(), id);
    assert_eq!(header(&response, "location"), format!("/api/v1/users/{id}"));
    assert_eq!(body["name"], "Ada Lovelace");
    assert_eq!(body["email"], "ada@example.com");
    let created_at = body["created_at"].as_str().unwrap();
    assert!(created_at.ends_with('Z'), "{created_at}");
    time::OffsetDateTime::parse(created_at, &time::format_description::well_known::Rfc3339)
        .unwrap();
    assert_eq!(
        body.as_object().unwrap().len(),
        4,
        "only id, name, email, created_at: {body}"
    );

    let stored = store
        .find_by_email(&Email::parse("ada@example.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.id.to_string(), id);
    assert!(stored.password_hash.as_phc().starts_with("$argon2id$"));
    let offered = Password::parse_offered("analytical engine".into()).unwrap();
    assert!(
        hasher()
            .verify(&offered, &stored.password_hash)
            .unwrap()
            .matched
    );
}

#[tokio::test]
async fn register_refuses_an_email_taken_in_another_case_with_409() {
    let store = fresh_store().await;
    let state = RegisterState::new(store.clone(), hasher());
    register_ada(&state).await;
    let response = register(
        &state,
        post_json(
            "/api/v1/users",
            r#"{"name":"Impostor","email":"ADA@example.COM","password":"another password"}"#,
        ),
    )
    .await;
    assert_eq!(response.status(), 409);
    assert_eq!(
        header(&response, "content-type"),
        "application/problem+json"
    );
    let body = json_body(&response);
    assert_eq!(body["code"], "EMAIL_TAKEN");
    assert_eq!(body["status"], 409);
    assert_eq!(store.count_users().await.unwrap(), 1);
}

#[tokio::test]
async fn register_reports_each_bad_field_with_400_and_writes_nothing() {
    let store = fresh_store().await;
    let state = RegisterState::new(store.clone(), hasher());
    let cases: [(&str, &[&str]); 7] = [
        ("not json", &[""]),
        ("[1,2]", &[""]),
        ("{}", &["name", "email", "password"]),
        (
            r#"{"name":1,"email":true,"password":null}"#,
            &["name", "email", "password"],
        ),
        (
            r#"{"name":"Ada","email":"ada.example.com","password":"analytical engine"}"#,
            &["email"],
        ),
        (
            r#"{"name":"Ada\u0000","email":"ada@example.com","password":"short"}"#,
            &["name", "password"],
        ),
        (
            r#"{"name":"Ada","email":"ada@example","password":"analytical engine"}"#,
            &["email"],
        ),
    ];
    for (body, fields) in cases {
        let response = register(&state, post_json("/api/v1/users", body)).await;
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(
            header(&response, "content-type"),
            "application/problem+json"
        );
        let problem = json_body(&response);
        assert_eq!(problem["code"], "INVALID_BODY");
        assert_eq!(problem["type"], "about:blank");
        assert_eq!(problem["title"], "Bad Request");
        let named: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(named, fields, "{body}");
    }
    assert_eq!(store.count_users().await.unwrap(), 0);
}

#[tokio::test]
async fn register_refuses_bodies_over_64_kib_with_413() {
    let store = fresh_store().await;
    let state = RegisterState::new(store.clone(), hasher());
    let big = json!({"name": "Ada", "email": "ada@example.com", "password": "analytical engine", "pad": "x".repeat(64 * 1024)}).to_string();
    let response = register(&state, post_json("/api/v1/users", &big)).await;
    assert_eq!(response.status(), 413);
    assert_eq!(json_body(&response)["code"], "BODY_TOO_LARGE");
    // Exactly at the limit is accepted (unknown fields are ignored).
    let filler = 64 * 1024 - json!({"name": "Ada", "email": "ada@example.com", "password": "analytical engine", "pad": ""}).to_string().len();
    let at_limit = json!({"name": "Ada", "email": "ada@example.com", "password": "analytical engine", "pad": "x".repeat(filler)}).to_string();
    assert_eq!(at_limit.len(), 64 * 1024);
    assert_eq!(
        register(&state, post_json("/api/v1/users", &at_limit))
            .await
            .status(),
        201
    );
    assert_eq!(store.count_users().await.unwrap(), 1);
}

#[tokio::test]
async fn register_requires_a_json_content_type() {
    let store = fresh_store().await;
    let state = RegisterState::new(store.clone(), hasher());
    let body = r#"{"name":"Ada","email":"ada@example.com","password":"analytical engine"}"#;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let response = register(
            &state,
            request(&apigw_event(
                "POST",
                "/api/v1/users",
                content_type,
                Some(body),
            )),
        )
        .await;
        assert_eq!(response.status(), 415, "{content_type:?}");
        assert_eq!(json_body(&response)["code"], "UNSUPPORTED_MEDIA_TYPE");
    }
    let with_charset = register(
        &state,
        request(&apigw_event(
            "POST",
            "/api/v1/users",
            Some("application/json; charset=utf-8"),
            Some(body),
        )),
    )
    .await;
    assert_eq!(with_charset.status(), 201);
}

#[tokio::test]
async fn register_accepts_a_base64_encoded_body() {
    use base64::Engine as _;
    let store = fresh_store().await;
    let state = RegisterState::new(store, hasher());
    let raw = r#"{"name":"Zoë","email":"zoe@example.com","password":"analytical engine"}"#;
    let mut event = apigw_event("POST", "/api/v1/users", Some("application/json"), Some(raw));
    event["body"] = json!(base64::engine::general_purpose::STANDARD.encode(raw));
    event["isBase64Encoded"] = json!(true);
    let response = register(&state, request(&event)).await;
    assert_eq!(response.status(), 201);
    assert_eq!(json_body(&response)["name"], "Zoë");
}

#[tokio::test]
async fn register_answers_405_to_other_methods() {
    let state = RegisterState::new(fresh_store().await, hasher());
    let response = register(
        &state,
        request(&apigw_event("GET", "/api/v1/users", None, None)),
    )
    .await;
    assert_eq!(response.status(), 405);
    assert_eq!(header(&response, "allow"), "POST");
}

#[tokio::test]
async fn register_answers_503_when_the_store_is_down() {
    let state = RegisterState::new(unreachable_store().await, hasher());
    let response = register(
        &state,
        post_json(
            "/api/v1/users",
            r#"{"name":"Ada","email":"ada@example.com","password":"analytical engine"}"#,
        ),
    )
    .await;
    assert_eq!(response.status(), 503);
    let body = json_body(&response);
    assert_eq!(body["code"], "SERVICE_UNAVAILABLE");
    let text = body.to_string();
    assert!(
        !text.contains("127.0.0.1") && !text.to_lowercase().contains("dispatch"),
        "no store detail leaks: {text}"
    );
}

// ------------------------------------------------------------------- login

/// Delegates to the real store and counts what login asks of it.
struct Counting {
    inner: DynamoStore,
    reads: AtomicUsize,
    writes: AtomicUsize,
}

impl FindUserByEmail for Counting {
    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.find_by_email(email).await
    }
}

impl ReplacePasswordHash for Counting {
    async fn replace_password_hash(
        &self,
        email: &Email,
        old: &StoredHash,
        new: &StoredHash,
    ) -> Result<(), StoreError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.replace_password_hash(email, old, new).await
    }
}

fn counting(store: DynamoStore) -> Counting {
    Counting {
        inner: store,
        reads: AtomicUsize::new(0),
        writes: AtomicUsize::new(0),
    }
}

fn validation() -> Validation {
    let mut v = Validation::new(Algorithm::RS256);
    v.set_issuer(&[ISSUER]);
    v.set_audience(&[AUDIENCE]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf"]);
    v
}

#[tokio::test]
async fn login_returns_a_token_that_verifies_against_the_jwks() {
    let store = fresh_store().await;
    let registered = register_ada(&RegisterState::new(store.clone(), hasher())).await;
    let state = LoginState::new(counting(store), hasher(), issuer()).unwrap();

    let response = login(
        &state,
        post_json(
            "/api/v1/users/login",
            &login_body("ADA@example.com", "analytical engine"),
        ),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), "application/json");
    assert_eq!(header(&response, "cache-control"), "no-store");
    let body = json_body(&response);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(
        body["user"],
        json!({"id": registered["id"], "name": "Ada Lovelace", "email": "ada@example.com"})
    );

    // Verify the token with the published key set, as another service would.
    let token = body["access_token"].as_str().unwrap();
    let jwks_response = jwks(
        &jwks_state("300"),
        &request(&apigw_event("GET", "/.well-known/jwks.json", None, None)),
    );
    let set: Jwks = serde_json::from_slice(jwks_response.body().as_ref()).unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let jwk = set
        .keys
        .iter()
        .find(|k| Some(&k.kid) == header.kid.as_ref())
        .expect("the token's kid is published");
    let key = DecodingKey::from_rsa_components(&jwk.n, &jwk.e).unwrap();
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation())
        .unwrap()
        .claims;
    assert_eq!(claims.sub, registered["id"].as_str().unwrap());
    assert_eq!(claims.email, "ada@example.com");
    assert_eq!(claims.name, "Ada Lovelace");
    assert_eq!(claims.exp - claims.iat, 900);
}

#[tokio::test]
async fn a_login_costs_one_read_one_verification_and_one_signature() {
    let store = fresh_store().await;
    register_ada(&RegisterState::new(store.clone(), hasher())).await;
    let state = LoginState::new(counting(store), hasher(), issuer()).unwrap();
    let ok = login(
        &state,
        post_json(
            "/api/v1/users/login",
            &login_body("ada@example.com", "analytical engine"),
        ),
    )
    .await;
    assert_eq!(ok.status(), 200);
    assert_eq!((state.verifications(), state.signatures()), (1, 1));
    let unknown = login(
        &state,
        post_json(
            "/api/v1/users/login",
            &login_body("nobody@example.com", "analytical engine"),
        ),
    )
    .await;
    assert_eq!(unknown.status(), 401);
    assert_eq!(
        (state.verifications(), state.signatures()),
        (2, 1),
        "an unknown email is verified against the dummy hash"
    );
}

#[tokio::test]
async fn store_reads_per_login_are_exactly_one() {
    let store = fresh_store().await;
    register_ada(&RegisterState::new(store.clone(), hasher())).await;
    let state = LoginState::new(counting(store), hasher(), issuer()).unwrap();
    for (email, password, status) in [
        ("ada@example.com", "analytical engine", 200),
        ("ada@example.com", "wrong password", 401),
        ("nobody@example.com", "analytical engine", 401),
    ] {
        let response = login(
            &state,
            post_json("/api/v1/users/login", &login_body(email, password)),
        )
        .await;
        assert_eq!(response.status(), status);
    }
    // Reads and writes are counted by the wrapper the state owns.
    let counts = login_store_counts(&state);
    assert_eq!(
        counts,
        (3, 0),
        "one read per login, no write without a rehash"
    );
}

fn login_store_counts(state: &LoginState<Counting>) -> (usize, usize) {
    let store = state.store();
    (
        store.reads.load(Ordering::SeqCst),
        store.writes.load(Ordering::SeqCst),
    )
}

#[tokio::test]
async fn unknown_email_and_wrong_password_get_byte_identical_401s() {
    let store = fresh_store().await;
    register_ada(&RegisterState::new(store.clone(), hasher())).await;
    let state = LoginState::new(store, hasher(), issuer()).unwrap();
    let wrong = login(
        &state,
        post_json(
            "/api/v1/users/login",
            &login_body("ada@example.com", "not the password"),
        ),
    )
    .await;
    let unknown = login(
        &state,
        post_json(
            "/api/v1/users/login",
            &login_body("nobody@example.com", "not the password"),
        ),
    )
    .await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(unknown.status(), 401);
    assert_eq!(wrong.headers(), unknown.headers());
    assert_eq!(wrong.body().as_ref(), unknown.body().as_ref());
    assert_eq!(json_body(&wrong)["code"], "LOGIN_INVALID");
}

#[tokio::test]
async fn a_disabled_account_with_the_right_password_gets_403_account_inactive() {
    let store = fresh_store().await;
    register_ada(&RegisterState::new(store.clone(), hasher())).await;
    store
        .set_status(
            &Email::parse("ada@example.com").unwrap(),
            AccountStatus::Disabled,
        )
        .await
        .unwrap();
    let state = LoginState::new(store, hasher(), issuer()).unwrap();
    let right = login(
        &state,
        post_json(
            "/api/v1/users/login",
            &login_body("ada@example.com", "analytical engine"),
        ),
    )
    .await;
    assert_eq!(right.status(), 403);
    assert_eq!(json_body(&right)["code"], "ACCOUNT_INACTIVE");
    // The wrong password says nothing about the account's state.
    let wrong = login(
        &state,
        post_json(
            "/api/v1/users/login",
            &login_body("ada@example.com", "not the password"),
        ),
    )
    .await;
    assert_eq!(wrong.status(), 401);
}

#[tokio::test]
async fn a_hash_with_older_parameters_is_upgraded_on_login() {
    let store = fresh_store().await;
    let old_policy = PasswordHasher::new(Argon2Policy::new(8, 1, 1).unwrap()).unwrap();
    register_ada(&RegisterState::new(store.clone(), old_policy)).await;
    let current = PasswordHasher::new(Argon2Policy::new(16, 2, 1).unwrap()).unwrap();
    let state = LoginState::new(counting(store.clone()), current, issuer()).unwrap();
    let response = login(
        &state,
        post_json(
            "/api/v1/users/login",
            &login_body("ada@example.com", "analytical engine"),
        ),
    )
    .await;
    assert_eq!(response.status(), 200);
    let stored = store
        .find_by_email(&Email::parse("ada@example.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored
            .password_hash
            .as_phc()
            .starts_with("$argon2id$v=19$m=16,t=2,p=1$"),
        "upgraded"
    );
    assert_eq!(login_store_counts(&state), (1, 1));
    // The upgraded hash still logs in, and needs no further upgrade.
    let again = login(
        &state,
        post_json(
            "/api/v1/users/login",
            &login_body("ada@example.com", "analytical engine"),
        ),
    )
    .await;
    assert_eq!(again.status(), 200);
    assert_eq!(login_store_counts(&state), (2, 1));
}

#[tokio::test]
async fn login_validates_like_register() {
    let store = fresh_store().await;
    let state = LoginState::new(store, hasher(), issuer()).unwrap();
    let bad = login(
        &state,
        post_json("/api/v1/users/login", r#"{"email":"nope"}"#),
    )
    .await;
    assert_eq!(bad.status(), 400);
    let fields: Vec<Value> = json_body(&bad)["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].clone())
        .collect();
    assert_eq!(fields, vec![json!("email"), json!("password")]);
    let big = login(
        &state,
        post_json("/api/v1/users/login", &"x".repeat(64 * 1024 + 1)),
    )
    .await;
    assert_eq!(big.status(), 413);
    let text = login(
        &state,
        request(&apigw_event(
            "POST",
            "/api/v1/users/login",
            Some("text/plain"),
            Some("{}"),
        )),
    )
    .await;
    assert_eq!(text.status(), 415);
    assert_eq!(state.verifications(), 0, "refused requests do no hashing");
}

#[tokio::test]
async fn login_answers_503_when_the_store_is_down() {
    let state = LoginState::new(unreachable_store().await, hasher(), issuer()).unwrap();
    let response = login(
        &state,
        post_json(
            "/api/v1/users/login",
            &login_body("ada@example.com", "analytical engine"),
        ),
    )
    .await;
    assert_eq!(response.status(), 503);
    assert_eq!(json_body(&response)["code"], "SERVICE_UNAVAILABLE");
}

// -------------------------------------------------------------------- jwks

#[tokio::test]
async fn jwks_publishes_the_signing_key_with_cache_headers() {
    let response = jwks(
        &jwks_state("300"),
        &request(&apigw_event("GET", "/.well-known/jwks.json", None, None)),
    );
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), "application/json");
    assert_eq!(header(&response, "cache-control"), "public, max-age=300");
    let key = SigningKey::from_pem(&fixture("test-only-rsa2048-pkcs8.pem")).unwrap();
    assert_eq!(
        json_body(&response),
        json!({"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": key.kid(), "n": key.jwk().n, "e": "AQAB"}]})
    );
}

#[tokio::test]
async fn jwks_max_age_is_configurable_and_other_methods_get_405() {
    let state = jwks_state("60");
    let response = jwks(
        &state,
        &request(&apigw_event("GET", "/.well-known/jwks.json", None, None)),
    );
    assert_eq!(header(&response, "cache-control"), "public, max-age=60");
    let post = jwks(
        &state,
        &request(&apigw_event(
            "POST",
            "/.well-known/jwks.json",
            Some("application/json"),
            Some("{}"),
        )),
    );
    assert_eq!(post.status(), 405);
    assert_eq!(header(&post, "allow"), "GET");
}
