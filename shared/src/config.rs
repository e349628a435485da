//! Configuration from the environment (SPEC §4), read and validated once per
//! cold start. Every error names the variable that is wrong, so an operator
//! can fix a deployment from the first log line.

use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::password::Argon2Policy;

/// Default `iss` claim: the local run's address.
pub const DEFAULT_ISSUER: &str = "http://localhost:8080";
/// Default `aud` claim, the original shop's audience.
pub const DEFAULT_AUDIENCE: &str = "shop-example";
/// Default access-token lifetime: 15 minutes, short enough that a leaked
/// token is soon useless without refresh machinery.
pub const DEFAULT_TTL_SECONDS: u64 = 900;
/// Default JWKS cache lifetime for verifiers and proxies.
pub const DEFAULT_JWKS_MAX_AGE_SECONDS: u32 = 300;
/// Default table name.
pub const DEFAULT_TABLE: &str = "users";

/// Upper bound for `JWT_TTL_SECONDS`: a day. Longer-lived bearer tokens
/// would need revocation, which this service does not offer.
const MAX_TTL_SECONDS: u64 = 86_400;
/// Upper bound for `JWKS_MAX_AGE_SECONDS`: a day, so that a rotated key is
/// picked up by verifiers within a bounded time.
const MAX_JWKS_MAX_AGE_SECONDS: u32 = 86_400;

/// A configuration value that cannot be used, with the variable it came from.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {reason}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: &'static str,
    /// What is wrong with it, in words an operator can act on.
    pub reason: String,
}

impl ConfigError {
    /// A new error for `variable`.
    pub fn new(variable: &'static str, reason: impl Into<String>) -> Self {
        Self {
            variable,
            reason: reason.into(),
        }
    }
}

/// The private signing key as PEM text, and where it came from (for messages).
pub struct PrivateKeyPem {
    /// The variable that supplied the key (`JWT_PRIVATE_KEY` or `JWT_PRIVATE_KEY_FILE`).
    pub variable: &'static str,
    /// The PEM text, wiped from memory when dropped.
    pub pem: Zeroizing<String>,
}

impl std::fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKeyPem")
            .field("variable", &self.variable)
            .field("pem", &"<redacted>")
            .finish()
    }
}

/// Extra public keys to publish, as PEM text, and the file they came from.
#[derive(Debug)]
pub struct PublicKeysPem {
    /// The file named by `JWT_PUBLIC_KEYS_FILE`.
    pub path: PathBuf,
    /// Its contents: one or more PEM public keys.
    pub pem: String,
}

/// Everything the functions read from the environment.
#[derive(Debug)]
pub struct Config {
    /// DynamoDB table name (`USERS_TABLE`).
    pub table: String,
    /// `iss` claim (`JWT_ISSUER`).
    pub issuer: String,
    /// `aud` claim (`JWT_AUDIENCE`).
    pub audience: String,
    /// Access-token lifetime in seconds (`JWT_TTL_SECONDS`).
    pub token_ttl_seconds: u64,
    /// The signing key, if one is configured.
    pub private_key: Option<PrivateKeyPem>,
    /// Extra verification keys to publish, if configured.
    pub public_keys: Option<PublicKeysPem>,
    /// `Cache-Control: max-age` of the JWKS (`JWKS_MAX_AGE_SECONDS`).
    pub jwks_max_age_seconds: u32,
    /// Password hashing cost (`ARGON2_*`).
    pub argon2: Argon2Policy,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup`, which returns a variable's value
    /// if it is set. Tests pass a map; [`Config::from_env`] passes the
    /// environment. Empty values count as unset, as a blank line in a
    /// ConfigMap usually means "use the default".
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let table = get("USERS_TABLE").unwrap_or_else(|| DEFAULT_TABLE.to_owned());
        validate_table_name(&table)?;

        let issuer = get("JWT_ISSUER").unwrap_or_else(|| DEFAULT_ISSUER.to_owned());
        if !(issuer.starts_with("https://") || issuer.starts_with("http://"))
            || issuer.chars().any(char::is_whitespace)
        {
            return Err(ConfigError::new(
                "JWT_ISSUER",
                "must be an http:// or https:// URL without spaces",
            ));
        }

        let audience = get("JWT_AUDIENCE").unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned());
        if audience.chars().any(char::is_control) {
            return Err(ConfigError::new(
                "JWT_AUDIENCE",
                "must not contain control characters",
            ));
        }

        let token_ttl_seconds = parse_number(
            get("JWT_TTL_SECONDS"),
            "JWT_TTL_SECONDS",
            DEFAULT_TTL_SECONDS,
            1,
            MAX_TTL_SECONDS,
        )?;
        let jwks_max_age_seconds = parse_number(
            get("JWKS_MAX_AGE_SECONDS"),
            "JWKS_MAX_AGE_SECONDS",
            DEFAULT_JWKS_MAX_AGE_SECONDS,
            0,
            MAX_JWKS_MAX_AGE_SECONDS,
        )?;

        let private_key = match (get("JWT_PRIVATE_KEY"), get("JWT_PRIVATE_KEY_FILE")) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "JWT_PRIVATE_KEY_FILE",
                    "set either JWT_PRIVATE_KEY or JWT_PRIVATE_KEY_FILE, not both",
                ));
            }
            (Some(pem), None) => Some(PrivateKeyPem {
                variable: "JWT_PRIVATE_KEY",
                pem: Zeroizing::new(pem),
            }),
            (None, Some(path)) => Some(PrivateKeyPem {
                variable: "JWT_PRIVATE_KEY_FILE",
                pem: Zeroizing::new(read_file("JWT_PRIVATE_KEY_FILE", &path)?),
            }),
            (None, None) => None,
        };

        let public_keys = match get("JWT_PUBLIC_KEYS_FILE") {
            Some(path) => Some(PublicKeysPem {
                pem: read_file("JWT_PUBLIC_KEYS_FILE", &path)?,
                path: PathBuf::from(path),
            }),
            None => None,
        };

        let argon2 = Argon2Policy::new(
            parse_number(
                get("ARGON2_MEMORY_KIB"),
                "ARGON2_MEMORY_KIB",
                Argon2Policy::OWASP.memory_kib,
                8,
                4 * 1024 * 1024,
            )?,
            parse_number(
                get("ARGON2_ITERATIONS"),
                "ARGON2_ITERATIONS",
                Argon2Policy::OWASP.iterations,
                1,
                64,
            )?,
            parse_number(
                get("ARGON2_PARALLELISM"),
                "ARGON2_PARALLELISM",
                Argon2Policy::OWASP.parallelism,
                1,
                64,
            )?,
        )
        .map_err(|e| ConfigError::new("ARGON2_MEMORY_KIB", e.to_string()))?;

        Ok(Self {
            table,
            issuer,
            audience,
            token_ttl_seconds,
            private_key,
            public_keys,
            jwks_max_age_seconds,
            argon2,
        })
    }
}

/// DynamoDB's table-name rule: 3 to 255 of `[a-zA-Z0-9_.-]`.
fn validate_table_name(name: &str) -> Result<(), ConfigError> {
    let ok = (3..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            "USERS_TABLE",
            "must be 3 to 255 characters of letters, digits, '_', '.' or '-'",
        ))
    }
}

fn parse_number<T>(
    value: Option<String>,
    variable: &'static str,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(text) = value else {
        return Ok(default);
    };
    match text.trim().parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(ConfigError::new(
            variable,
            format!("must be a whole number from {min} to {max}, got {text:?}"),
        )),
    }
}

fn read_file(variable: &'static str, path: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(variable, format!("cannot read {path}: {e}")))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    fn fixture(name: &str) -> String {
        format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn defaults_make_a_local_run_work() {
        let c = config(&[]).unwrap();
        assert_eq!(c.table, "users");
        assert_eq!(c.issuer, "http://localhost:8080");
        assert_eq!(c.audience, "shop-example");
        assert_eq!(c.token_ttl_seconds, 900);
        assert_eq!(c.jwks_max_age_seconds, 300);
        assert_eq!(c.argon2, Argon2Policy::OWASP);
        assert!(c.private_key.is_none());
        assert!(c.public_keys.is_none());
    }

    #[test]
    fn every_setting_is_read() {
        let c = config(&[
            ("USERS_TABLE", "users-staging"),
            ("JWT_ISSUER", "https://auth.example.com"),
            ("JWT_AUDIENCE", "shop"),
            ("JWT_TTL_SECONDS", "600"),
            ("JWKS_MAX_AGE_SECONDS", "60"),
            ("ARGON2_MEMORY_KIB", "65536"),
            ("ARGON2_ITERATIONS", "3"),
            ("ARGON2_PARALLELISM", "2"),
            (
                "JWT_PRIVATE_KEY_FILE",
                &fixture("test-only-rsa2048-pkcs8.pem"),
            ),
            (
                "JWT_PUBLIC_KEYS_FILE",
                &fixture("test-only-rsa2048-second.pub.pem"),
            ),
        ])
        .unwrap();
        assert_eq!(c.table, "users-staging");
        assert_eq!(c.issuer, "https://auth.example.com");
        assert_eq!(c.audience, "shop");
        assert_eq!(c.token_ttl_seconds, 600);
        assert_eq!(c.jwks_max_age_seconds, 60);
        assert_eq!(c.argon2, Argon2Policy::new(65536, 3, 2).unwrap());
        let key = c.private_key.unwrap();
        assert_eq!(key.variable, "JWT_PRIVATE_KEY_FILE");
        assert!(key.pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(c.public_keys.unwrap().pem.contains("BEGIN PUBLIC KEY"));
    }

    #[test]
    fn an_inline_key_is_accepted() {
        let pem = std::fs::read_to_string(fixture("test-only-rsa2048-pkcs1.pem")).unwrap();
        let c = config(&[("JWT_PRIVATE_KEY", &pem)]).unwrap();
        assert_eq!(c.private_key.unwrap().variable, "JWT_PRIVATE_KEY");
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        let cases = [
            ("USERS_TABLE", "x"),
            ("USERS_TABLE", "users table"),
            ("JWT_ISSUER", "auth.example.com"),
            ("JWT_TTL_SECONDS", "0"),
            ("JWT_TTL_SECONDS", "ninety"),
            ("JWT_TTL_SECONDS", "86401"),
            ("JWKS_MAX_AGE_SECONDS", "-1"),
            ("ARGON2_MEMORY_KIB", "4"),
            ("ARGON2_ITERATIONS", "0"),
            ("ARGON2_PARALLELISM", "1000"),
            ("JWT_PRIVATE_KEY_FILE", "/nonexistent/key.pem"),
            ("JWT_PUBLIC_KEYS_FILE", "/nonexistent/keys.pem"),
        ];
        for (variable, value) in cases {
            let err = config(&[(variable, value)]).unwrap_err();
            assert_eq!(err.variable, variable, "{variable}={value}: {err}");
            assert!(err.to_string().starts_with(variable), "{err}");
        }
    }

    #[test]
    fn both_key_sources_at_once_is_refused() {
        let err = config(&[("JWT_PRIVATE_KEY", "x"), ("JWT_PRIVATE_KEY_FILE", "y")]).unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
    }

    #[test]
    fn empty_values_mean_the_default() {
        let c = config(&[("JWT_TTL_SECONDS", ""), ("USERS_TABLE", " ")]).unwrap();
        assert_eq!(c.token_ttl_seconds, 900);
        assert_eq!(c.table, "users");
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let pem = std::fs::read_to_string(fixture("test-only-rsa2048-pkcs8.pem")).unwrap();
        let c = config(&[("JWT_PRIVATE_KEY", &pem)]).unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("BEGIN"), "{debug}");
        assert!(debug.contains("<redacted>"));
    }
}
