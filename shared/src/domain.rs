//! Domain types that can only hold valid values (SPEC §3.1), and the request
//! bodies built from them. Parsing collects one error per field, so a client
//! learns everything that is wrong with a request at once.

use serde::Serialize;
use serde_json::{Map, Value};
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;
use zeroize::Zeroizing;

/// Longest accepted email address, in characters (RFC 5321's path limit).
pub const EMAIL_MAX_CHARS: usize = 254;
/// Longest accepted display name, in characters.
pub const NAME_MAX_CHARS: usize = 255;
/// Shortest accepted password at registration, in Unicode scalar values
/// (NIST SP 800-63B §5.1.1.2 asks for at least 8).
pub const PASSWORD_MIN_CHARS: usize = 8;
/// Longest accepted password, in Unicode scalar values: long enough for any
/// passphrase, short enough that hashing cannot be used to burn CPU.
pub const PASSWORD_MAX_CHARS: usize = 1024;

/// One thing wrong with one field of a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The JSON field (`""` for the body as a whole).
    pub field: &'static str,
    /// What is wrong, for a human.
    pub message: String,
}

impl FieldError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// An email address in normalized form (trimmed, Unicode NFKC, lowercase):
/// the identity of an account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Normalizes and validates `raw`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let normalized = normalize_email(raw);
        if normalized.is_empty() {
            return Err("must not be empty".into());
        }
        if normalized.chars().count() > EMAIL_MAX_CHARS {
            return Err(format!("must be at most {EMAIL_MAX_CHARS} characters"));
        }
        if normalized
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("must not contain spaces or control characters".into());
        }
        let mut parts = normalized.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err("must contain exactly one '@'".into());
        };
        if local.is_empty() {
            return Err("must have a name before the '@'".into());
        }
        if !domain.contains('.') || domain.split('.').any(str::is_empty) {
            return Err("must have a domain with a dot after the '@', such as example.com".into());
        }
        Ok(Self(normalized))
    }

    /// Wraps an address read back from the store, which was normalized when
    /// it was written.
    pub(crate) fn from_stored(normalized: String) -> Self {
        Self(normalized)
    }

    /// The normalized address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Trim, NFKC, lowercase — and NFKC once more, because lowercasing can
/// produce sequences that NFKC would compose, and the identity must be a
/// fixed point: normalizing a normalized address changes nothing.
fn normalize_email(raw: &str) -> String {
    let lowered = raw.trim().nfkc().collect::<String>().to_lowercase();
    lowered.nfkc().collect::<String>().trim().to_owned()
}

/// A display name: trimmed, 1 to 255 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    /// Trims and validates `raw`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        if name.is_empty() {
            return Err("must not be empty".into());
        }
        if name.chars().count() > NAME_MAX_CHARS {
            return Err(format!("must be at most {NAME_MAX_CHARS} characters"));
        }
        if name.chars().any(is_forbidden_in_name) {
            return Err("must not contain control characters".into());
        }
        Ok(Self(name.to_owned()))
    }

    /// Wraps a name read back from the store.
    pub(crate) fn from_stored(name: String) -> Self {
        Self(name)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Control characters, and the Unicode line and paragraph separators that
/// act like them in logs and headers.
fn is_forbidden_in_name(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// A password as the client sent it: never trimmed, never truncated, wiped
/// from memory when dropped, and never printed by `Debug`.
pub struct Password(Zeroizing<String>);

impl Password {
    /// A password for registration: 8 to 1024 Unicode scalar values.
    pub fn parse_new(raw: String) -> Result<Self, String> {
        let raw = Zeroizing::new(raw);
        let len = raw.chars().count();
        if len < PASSWORD_MIN_CHARS {
            return Err(format!("must be at least {PASSWORD_MIN_CHARS} characters"));
        }
        if len > PASSWORD_MAX_CHARS {
            return Err(format!("must be at most {PASSWORD_MAX_CHARS} characters"));
        }
        Ok(Self(raw))
    }

    /// A password offered at login: not empty and within the same upper
    /// bound. The lower bound is not applied, so a rule tightened later
    /// cannot lock out an account registered before it.
    pub fn parse_offered(raw: String) -> Result<Self, String> {
        let raw = Zeroizing::new(raw);
        if raw.is_empty() {
            return Err("must not be empty".into());
        }
        if raw.chars().count() > PASSWORD_MAX_CHARS {
            return Err(format!("must be at most {PASSWORD_MAX_CHARS} characters"));
        }
        Ok(Self(raw))
    }

    /// The password's bytes, for the hasher only.
    pub(crate) fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A user's id: a random (v4) UUID, rendered bare in tokens and URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserId(Uuid);

impl UserId {
    /// A fresh random id.
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }

    /// Parses the hyphenated form.
    pub fn parse(text: &str) -> Result<Self, String> {
        Uuid::try_parse(text)
            .map(Self)
            .map_err(|_| "must be a UUID".to_owned())
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The body of `POST /api/v1/users`.
#[derive(Debug)]
pub struct RegisterRequest {
    /// Display name.
    pub name: UserName,
    /// Normalized email.
    pub email: Email,
    /// Password to hash.
    pub password: Password,
}

impl RegisterRequest {
    /// Parses a JSON body, reporting every bad field.
    pub fn from_json(body: &[u8]) -> Result<Self, Vec<FieldError>> {
        let mut fields = JsonFields::parse(body)?;
        let name = fields
            .string("name")
            .and_then(|s| fields.check("name", UserName::parse(&s)));
        let email = fields
            .string("email")
            .and_then(|s| fields.check("email", Email::parse(&s)));
        let password = fields
            .string("password")
            .and_then(|s| fields.check("password", Password::parse_new(s)));
        match (name, email, password) {
            (Some(name), Some(email), Some(password)) if fields.errors.is_empty() => Ok(Self {
                name,
                email,
                password,
            }),
            _ => Err(fields.errors),
        }
    }
}

/// The body of `POST /api/v1/users/login`.
#[derive(Debug)]
pub struct LoginRequest {
    /// Normalized email.
    pub email: Email,
    /// Password offered.
    pub password: Password,
}

impl LoginRequest {
    /// Parses a JSON body, reporting every bad field.
    pub fn from_json(body: &[u8]) -> Result<Self, Vec<FieldError>> {
        let mut fields = JsonFields::parse(body)?;
        let email = fields
            .string("email")
            .and_then(|s| fields.check("email", Email::parse(&s)));
        let password = fields
            .string("password")
            .and_then(|s| fields.check("password", Password::parse_offered(s)));
        match (email, password) {
            (Some(email), Some(password)) if fields.errors.is_empty() => {
                Ok(Self { email, password })
            }
            _ => Err(fields.errors),
        }
    }
}

/// A JSON object being taken apart field by field, collecting errors.
struct JsonFields {
    object: Map<String, Value>,
    errors: Vec<FieldError>,
}

impl JsonFields {
    fn parse(body: &[u8]) -> Result<Self, Vec<FieldError>> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(object)) => Ok(Self {
                object,
                errors: Vec::new(),
            }),
            Ok(_) => Err(vec![FieldError::new("", "the body must be a JSON object")]),
            Err(e) => Err(vec![FieldError::new(
                "",
                format!(
                    "the body is not valid JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            )]),
        }
    }

    /// Takes a string field out of the object, or records why it cannot.
    fn string(&mut self, field: &'static str) -> Option<String> {
        match self.object.remove(field) {
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.errors.push(FieldError::new(field, "must be a string"));
                None
            }
            None => {
                self.errors.push(FieldError::new(field, "is required"));
                None
            }
        }
    }

    fn check<T>(&mut self, field: &'static str, result: Result<T, String>) -> Option<T> {
        result
            .map_err(|message| self.errors.push(FieldError::new(field, message)))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_trimmed_and_lowercased() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
    }

    #[test]
    fn email_is_nfkc_normalized() {
        // Fullwidth letters and a fullwidth at sign fold to ASCII under NFKC.
        assert_eq!(
            Email::parse("Ａｄａ＠example.com").unwrap().as_str(),
            "ada@example.com"
        );
        // A precomposed and a decomposed é are the same account.
        let composed = Email::parse("jos\u{e9}@example.com").unwrap();
        let decomposed = Email::parse("jose\u{301}@example.com").unwrap();
        assert_eq!(composed, decomposed);
    }

    #[test]
    fn normalization_is_a_fixed_point() {
        for raw in [
            "İSTANBUL@example.com",
            "ǅemal@example.com",
            "ﬁnn@example.com",
            "ΣΊΣΥΦΟΣ@example.gr",
            "Ada@Example.com",
        ] {
            let once = Email::parse(raw).unwrap();
            let twice = Email::parse(once.as_str()).unwrap();
            assert_eq!(once, twice, "{raw}");
        }
    }

    #[test]
    fn email_shape_is_checked() {
        for bad in [
            "",
            "   ",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a@b@example.com",
            "ada@example..com",
            "ada@.example.com",
            "ada@example.com.",
            "ada lovelace@example.com",
            "ada\u{0}@example.com",
            "ada@exam\tple.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn email_length_limit_is_254_characters() {
        let at_limit = format!("{}@example.com", "a".repeat(254 - 12));
        assert_eq!(at_limit.chars().count(), 254);
        assert!(Email::parse(&at_limit).is_ok());
        let over = format!("{}@example.com", "a".repeat(254 - 11));
        assert!(Email::parse(&over).is_err());
    }

    #[test]
    fn name_is_trimmed_and_bounded() {
        assert_eq!(
            UserName::parse("  Ada Lovelace\n").unwrap().as_str(),
            "Ada Lovelace"
        );
        assert!(UserName::parse("   ").is_err());
        assert!(UserName::parse(&"é".repeat(255)).is_ok());
        assert!(UserName::parse(&"é".repeat(256)).is_err());
    }

    #[test]
    fn name_refuses_control_characters() {
        for bad in [
            "Ada\u{0}",
            "Ada\nLovelace",
            "Ada\u{7f}",
            "Ada\u{85}x",
            "Ada\u{2028}Lovelace",
            "A\u{1b}[31m",
        ] {
            assert!(UserName::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(UserName::parse("Ada Lovelace 🚀 Zoë").is_ok());
    }

    #[test]
    fn password_counts_unicode_scalar_values_and_is_not_trimmed() {
        // 8 scalar values, 32 bytes.
        assert!(Password::parse_new("🔑🔑🔑🔑🔑🔑🔑🔑".into()).is_ok());
        assert!(Password::parse_new("🔑🔑🔑🔑🔑🔑🔑".into()).is_err());
        let spaced = Password::parse_new("  secret  ".into()).unwrap();
        assert_eq!(spaced.expose(), b"  secret  ");
        assert!(Password::parse_new("x".repeat(1024)).is_ok());
        assert!(Password::parse_new("x".repeat(1025)).is_err());
    }

    #[test]
    fn offered_password_has_no_minimum_but_the_same_maximum() {
        assert!(Password::parse_offered("short".into()).is_ok());
        assert!(Password::parse_offered(String::new()).is_err());
        assert!(Password::parse_offered("x".repeat(1025)).is_err());
    }

    #[test]
    fn password_debug_is_redacted() {
        let p = Password::parse_new("correct horse battery staple".into()).unwrap();
        assert_eq!(format!("{p:?}"), "Password(<redacted>)");
        let r = RegisterRequest::from_json(
            br#"{"name":"A","email":"a@example.com","password":"correct horse"}"#,
        )
        .unwrap();
        assert!(!format!("{r:?}").contains("horse"));
    }

    #[test]
    fn register_request_parses() {
        let r = RegisterRequest::from_json(br#"{"name":" Ada Lovelace ","email":"Ada@Example.com","password":"analytical engine"}"#).unwrap();
        assert_eq!(r.name.as_str(), "Ada Lovelace");
        assert_eq!(r.email.as_str(), "ada@example.com");
        assert_eq!(r.password.expose(), b"analytical engine");
    }

    #[test]
    fn register_request_reports_every_bad_field() {
        let errors = RegisterRequest::from_json(br#"{"name":"","email":42}"#).unwrap_err();
        let fields: Vec<_> = errors
            .iter()
            .map(|e| (e.field, e.message.as_str()))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("name", "must not be empty"),
                ("email", "must be a string"),
                ("password", "is required")
            ]
        );
    }

    #[test]
    fn non_objects_and_broken_json_are_body_errors() {
        for body in [&b"[]"[..], b"null", b"\"x\"", b"{", b"", b"\xff\xfe"] {
            let errors = RegisterRequest::from_json(body).unwrap_err();
            assert_eq!(errors.len(), 1, "{body:?}");
            assert_eq!(errors[0].field, "");
        }
    }

    #[test]
    fn login_request_parses_and_reports() {
        let r = LoginRequest::from_json(br#"{"email":"ADA@example.com","password":"pw"}"#).unwrap();
        assert_eq!(r.email.as_str(), "ada@example.com");
        let errors = LoginRequest::from_json(br#"{"email":"nope","password":null}"#).unwrap_err();
        assert_eq!(
            errors.iter().map(|e| e.field).collect::<Vec<_>>(),
            vec!["email", "password"]
        );
    }

    #[test]
    fn arbitrary_bodies_are_answered_not_panicked_on() {
        use rand::rngs::StdRng;
        use rand::{Rng as _, SeedableRng as _};

        let mut rng = StdRng::seed_from_u64(0x5eed);
        for _ in 0..2_000 {
            let len = rng.gen_range(0..256);
            let bytes: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            assert!(RegisterRequest::from_json(&bytes).is_err());
            assert!(LoginRequest::from_json(&bytes).is_err());
        }
        // Well-formed JSON with hostile values in every field.
        let values = [
            "null",
            "true",
            "0",
            "-0",
            "1e999",
            "[]",
            "{}",
            r#""""#,
            r#"" ""#,
            r#""\u0000""#,
            r#""a@b.c""#,
            r#""Ａ＠ｂ.ｃｏ""#,
            r#""ada@example.com""#,
            r#""\u202e\u0085x""#,
            r#""🔑🔑🔑🔑🔑🔑🔑🔑""#,
            r#""a@b@c.d""#,
            r#""\ud83d\udd11""#,
            r#""İ@example.com""#,
            r#"{"nested":["x"]}"#,
        ];
        for _ in 0..2_000 {
            let mut pick = || values[rng.gen_range(0..values.len())];
            let body = format!(
                r#"{{"name":{},"email":{},"password":{}}}"#,
                pick(),
                pick(),
                pick()
            );
            if let Err(errors) = RegisterRequest::from_json(body.as_bytes()) {
                assert!(!errors.is_empty(), "{body}");
            }
            if let Err(errors) = LoginRequest::from_json(body.as_bytes()) {
                assert!(!errors.is_empty(), "{body}");
            }
        }
    }

    #[test]
    fn user_id_renders_bare_and_round_trips() {
        let id = UserId::new_random();
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(UserId::parse(&text).unwrap(), id);
        assert!(UserId::parse("not-a-uuid").is_err());
    }
}
