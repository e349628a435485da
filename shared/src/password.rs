//! Argon2id password hashing in PHC string format (SPEC §6), with the cost
//! from configuration, the dummy hash that makes an unknown email cost as
//! much as a wrong password, and the upgrade check behind rehash-on-login.
//!
//! Hashing takes tens of milliseconds of CPU by design, so the async entry
//! points run it on tokio's blocking pool, never on the executor.
//!
//! Argon2's working memory (`m` KiB, 19 MiB by default) is kept per thread
//! and reused rather than allocated per hash: a fresh multi-megabyte
//! allocation per request made glibc's heap grow by hundreds of MiB per
//! instance under load (`make bench`), while a reused buffer bounds the
//! memory to one block set per thread hashing at once.

use std::cell::RefCell;
use std::sync::Arc;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{self, Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::domain::Password;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Policy {
    /// Memory in KiB (`m`).
    pub memory_kib: u32,
    /// Passes over memory (`t`).
    pub iterations: u32,
    /// Lanes (`p`).
    pub parallelism: u32,
}

impl Argon2Policy {
    /// OWASP Password Storage Cheat Sheet's first Argon2id configuration:
    /// m = 19 MiB, t = 2, p = 1.
    pub const OWASP: Self = Self {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
    };

    /// Argon2's own minimum, for fast tests only.
    pub const INSECURE_FAST_FOR_TESTS: Self = Self {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };

    /// A policy, checked against Argon2's limits.
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> Result<Self, HashError> {
        let policy = Self {
            memory_kib,
            iterations,
            parallelism,
        };
        policy.params()?;
        Ok(policy)
    }

    fn params(&self) -> Result<Params, HashError> {
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| HashError(e.to_string()))
    }
}

/// Hashing could not be carried out (bad parameters, a corrupt stored
/// hash, a failed worker): distinct from "the password does not match".
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// A PHC-format Argon2id hash. Its `Debug` never prints the hash.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredHash(String);

impl StoredHash {
    /// Wraps a hash read from the store.
    pub fn from_stored(phc: String) -> Self {
        Self(phc)
    }

    /// The PHC string, for the store only.
    pub fn as_phc(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredHash(<redacted>)")
    }
}

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    /// The password matches the hash.
    pub matched: bool,
    /// The hash was made with other parameters than the current policy and
    /// should be replaced (only meaningful when `matched`).
    pub needs_rehash: bool,
}

/// Hashes and verifies passwords under one policy.
#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    policy: Argon2Policy,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("policy", &self.policy)
            .finish()
    }
}

impl PasswordHasher {
    /// A hasher for `policy`.
    pub fn new(policy: Argon2Policy) -> Result<Self, HashError> {
        Ok(Self {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, policy.params()?),
            policy,
        })
    }

    /// The policy new hashes are made with.
    pub fn policy(&self) -> Argon2Policy {
        self.policy
    }

    /// Hashes `password` with a fresh 16-byte random salt.
    pub fn hash(&self, password: &Password) -> Result<StoredHash, HashError> {
        let salt = SaltString::generate(&mut OsRng);
        let params = self.policy.params()?;
        let output = argon2_output(&self.argon2, &params, password.expose(), salt.as_salt())?;
        let phc = PasswordHash {
            algorithm: argon2::ARGON2ID_IDENT,
            version: Some(Version::V0x13 as u32),
            params: ParamsString::try_from(&params).map_err(|e| HashError(e.to_string()))?,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        };
        Ok(StoredHash(phc.to_string()))
    }

    /// A hash no password matches, with the current policy's parameters.
    /// Login verifies against it when the email is unknown, so both paths
    /// do the same work (SPEC §3.2).
    ///
    /// It is made without hashing: verification recomputes Argon2id of the
    /// offered password under the stored salt and parameters and then
    /// compares outputs, so a random output of the default length under a
    /// random salt costs exactly what a real hash costs to check, and
    /// matches with probability 2^-256. Making it free keeps one Argon2id
    /// hash (tens of milliseconds) out of every login cold start.
    pub fn dummy_hash(&self) -> Result<StoredHash, HashError> {
        let salt = SaltString::generate(&mut OsRng);
        let mut output = [0u8; Params::DEFAULT_OUTPUT_LEN];
        OsRng.fill_bytes(&mut output);
        let output = password_hash::Output::new(&output).map_err(|e| HashError(e.to_string()))?;
        let p = self.policy;
        let phc = format!(
            "${}$v={}$m={},t={},p={}${}${output}",
            argon2::ARGON2ID_IDENT,
            Version::V0x13 as u32,
            p.memory_kib,
            p.iterations,
            p.parallelism,
            salt.as_str(),
        );
        // The same parse `verify` makes: a malformed dummy fails here, at
        // start-up, not at a login.
        PasswordHash::new(&phc).map_err(|e| HashError(format!("dummy hash: {e}")))?;
        Ok(StoredHash(phc))
    }

    /// Checks `password` against `stored`, with the parameters recorded in
    /// the hash itself (so hashes made under an older policy still verify).
    pub fn verify(
        &self,
        password: &Password,
        stored: &StoredHash,
    ) -> Result<Verification, HashError> {
        let parsed = PasswordHash::new(&stored.0)
            .map_err(|e| HashError(format!("stored hash is not PHC: {e}")))?;
        let corrupt = |what: &str| HashError(format!("stored hash: {what}"));
        let algorithm =
            Algorithm::try_from(parsed.algorithm).map_err(|e| corrupt(&e.to_string()))?;
        let version = match parsed.version {
            Some(v) => Version::try_from(v).map_err(|e| corrupt(&e.to_string()))?,
            None => Version::default(),
        };
        let params = Params::try_from(&parsed).map_err(|e| corrupt(&e.to_string()))?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Err(corrupt("no salt or no output"));
        };
        let argon2 = Argon2::new(algorithm, version, params.clone());
        let computed = argon2_output(&argon2, &params, password.expose(), salt)?;
        // `Output`'s equality is constant-time.
        let matched = computed == expected;
        Ok(Verification {
            matched,
            needs_rehash: matched && self.is_outdated(&parsed),
        })
    }

    /// Whether `hash` was made with another algorithm, version or cost than
    /// the current policy.
    fn is_outdated(&self, hash: &PasswordHash<'_>) -> bool {
        if hash.algorithm != argon2::ARGON2ID_IDENT || hash.version != Some(Version::V0x13 as u32) {
            return true;
        }
        match Params::try_from(hash) {
            Ok(p) => {
                (p.m_cost(), p.t_cost(), p.p_cost())
                    != (
                        self.policy.memory_kib,
                        self.policy.iterations,
                        self.policy.parallelism,
                    )
            }
            Err(_) => true,
        }
    }

    /// [`hash`](Self::hash) on the blocking pool.
    pub async fn hash_blocking(
        self: &Arc<Self>,
        password: Password,
    ) -> Result<StoredHash, HashError> {
        let hasher = Arc::clone(self);
        tokio::task::spawn_blocking(move || hasher.hash(&password))
            .await
            .map_err(|e| HashError(format!("hashing task failed: {e}")))?
    }

    /// [`verify`](Self::verify) on the blocking pool.
    pub async fn verify_blocking(
        self: &Arc<Self>,
        password: Password,
        stored: StoredHash,
    ) -> Result<(Verification, Password), HashError> {
        let hasher = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            hasher.verify(&password, &stored).map(|v| (v, password))
        })
        .await
        .map_err(|e| HashError(format!("verification task failed: {e}")))?
    }
}

thread_local! {
    /// This thread's Argon2 working memory, grown to the largest `m` seen
    /// and reused by every hash the thread computes.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// The Argon2 output of `password` under `salt` and `params` (the
/// parameters `argon2` was made with), computed in this thread's reused
/// working memory.
fn argon2_output(
    argon2: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: Salt<'_>,
) -> Result<Output, HashError> {
    let mut salt_bytes = [0u8; Salt::MAX_LENGTH];
    let salt = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|e| HashError(format!("salt: {e}")))?;
    let blocks = params.block_count();
    let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    BLOCKS.with_borrow_mut(|memory| {
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        Output::init_with(len, |out| {
            argon2
                .hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
                .map_err(|_| password_hash::Error::Crypto)
        })
        .map_err(|e| HashError(e.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};

    use super::*;

    fn password(text: &str) -> Password {
        Password::parse_new(text.to_owned()).unwrap()
    }

    fn fast() -> PasswordHasher {
        PasswordHasher::new(Argon2Policy::INSECURE_FAST_FOR_TESTS).unwrap()
    }

    #[test]
    fn hashes_are_argon2id_phc_strings_with_the_policy() {
        let hasher = PasswordHasher::new(Argon2Policy::new(64, 3, 2).unwrap()).unwrap();
        let hash = hasher.hash(&password("correct horse")).unwrap();
        assert!(
            hash.as_phc().starts_with("$argon2id$v=19$m=64,t=3,p=2$"),
            "{}",
            hash.as_phc()
        );
    }

    #[test]
    fn the_same_password_gets_a_different_salt_each_time() {
        let hasher = fast();
        assert_ne!(
            hasher.hash(&password("correct horse")).unwrap(),
            hasher.hash(&password("correct horse")).unwrap()
        );
    }

    #[test]
    fn right_password_matches_and_wrong_one_does_not() {
        let hasher = fast();
        let hash = hasher.hash(&password("correct horse")).unwrap();
        let ok = hasher.verify(&password("correct horse"), &hash).unwrap();
        assert_eq!(
            ok,
            Verification {
                matched: true,
                needs_rehash: false
            }
        );
        let wrong = hasher.verify(&password("correct horsf"), &hash).unwrap();
        assert!(!wrong.matched);
        // Passwords are not trimmed: a trailing space is a different password.
        assert!(
            !hasher
                .verify(&password("correct horse "), &hash)
                .unwrap()
                .matched
        );
    }

    #[test]
    fn hashes_agree_with_the_argon2_crates_own_phc_functions() {
        let policy = Argon2Policy::new(64, 2, 1).unwrap();
        let hasher = PasswordHasher::new(policy).unwrap();
        let reference = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            policy.params().unwrap(),
        );
        // Ours verifies with the reference implementation...
        let ours = hasher.hash(&password("correct horse")).unwrap();
        let parsed = PasswordHash::new(ours.as_phc()).unwrap();
        assert!(reference.verify_password(b"correct horse", &parsed).is_ok());
        assert!(
            reference
                .verify_password(b"correct horsf", &parsed)
                .is_err()
        );
        // ...and the reference's verifies with ours.
        let salt = SaltString::generate(&mut OsRng);
        let theirs = StoredHash(
            reference
                .hash_password(b"correct horse", &salt)
                .unwrap()
                .to_string(),
        );
        assert!(
            hasher
                .verify(&password("correct horse"), &theirs)
                .unwrap()
                .matched
        );
        assert!(
            !hasher
                .verify(&password("correct horsf"), &theirs)
                .unwrap()
                .matched
        );
    }

    #[test]
    fn working_memory_is_reused_across_parameters() {
        // A larger m after a smaller one, and back: the thread's buffer grows
        // once and serves both, and results stay those of each policy.
        let small = PasswordHasher::new(Argon2Policy::new(16, 1, 1).unwrap()).unwrap();
        let large = PasswordHasher::new(Argon2Policy::new(256, 1, 1).unwrap()).unwrap();
        let a = small.hash(&password("correct horse")).unwrap();
        let b = large.hash(&password("correct horse")).unwrap();
        assert!(
            small
                .verify(&password("correct horse"), &a)
                .unwrap()
                .matched
        );
        assert!(
            large
                .verify(&password("correct horse"), &b)
                .unwrap()
                .matched
        );
        assert!(
            large
                .verify(&password("correct horse"), &a)
                .unwrap()
                .matched
        );
    }

    #[test]
    fn a_hash_with_older_parameters_verifies_and_asks_for_an_upgrade() {
        let old = PasswordHasher::new(Argon2Policy::new(16, 1, 1).unwrap()).unwrap();
        let hash = old.hash(&password("correct horse")).unwrap();
        let current = PasswordHasher::new(Argon2Policy::new(32, 2, 1).unwrap()).unwrap();
        let v = current.verify(&password("correct horse"), &hash).unwrap();
        assert_eq!(
            v,
            Verification {
                matched: true,
                needs_rehash: true
            }
        );
        let upgraded = current.hash(&password("correct horse")).unwrap();
        assert!(
            !current
                .verify(&password("correct horse"), &upgraded)
                .unwrap()
                .needs_rehash
        );
    }

    #[test]
    fn an_argon2i_hash_is_upgraded_to_argon2id() {
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(8, 1, 1, None).unwrap(),
        );
        let salt = SaltString::generate(&mut OsRng);
        let hash = StoredHash(
            argon2i
                .hash_password(b"correct horse", &salt)
                .unwrap()
                .to_string(),
        );
        let v = fast().verify(&password("correct horse"), &hash).unwrap();
        assert_eq!(
            v,
            Verification {
                matched: true,
                needs_rehash: true
            }
        );
    }

    #[test]
    fn dummy_hash_uses_the_policy_and_matches_nothing() {
        let hasher = fast();
        let dummy = hasher.dummy_hash().unwrap();
        assert!(dummy.as_phc().starts_with("$argon2id$v=19$m=8,t=1,p=1$"));
        assert!(
            !hasher
                .verify(&password("correct horse"), &dummy)
                .unwrap()
                .matched
        );
    }

    #[test]
    fn dummy_hash_has_the_shape_of_a_real_hash() {
        // Same parameters, salt length and output length as a real hash:
        // checking a password against either is the same work.
        let hasher = PasswordHasher::new(Argon2Policy::new(64, 3, 2).unwrap()).unwrap();
        let real = hasher.hash(&password("correct horse")).unwrap();
        let dummy = hasher.dummy_hash().unwrap();
        let (real, dummy) = (
            PasswordHash::new(real.as_phc()).unwrap(),
            PasswordHash::new(dummy.as_phc()).unwrap(),
        );
        assert_eq!(real.algorithm, dummy.algorithm);
        assert_eq!(real.version, dummy.version);
        assert_eq!(real.params, dummy.params);
        assert_eq!(
            real.salt.unwrap().as_str().len(),
            dummy.salt.unwrap().as_str().len()
        );
        assert_eq!(real.hash.unwrap().len(), dummy.hash.unwrap().len());
        assert_ne!(
            hasher.dummy_hash().unwrap(),
            hasher.dummy_hash().unwrap(),
            "each dummy is fresh"
        );
    }

    #[test]
    fn a_corrupt_stored_hash_is_an_error_not_a_mismatch() {
        let err = fast().verify(
            &password("correct horse"),
            &StoredHash::from_stored("plaintext".into()),
        );
        assert!(err.is_err());
    }

    #[test]
    fn stored_hash_debug_is_redacted() {
        let hash = fast().hash(&password("correct horse")).unwrap();
        assert_eq!(format!("{hash:?}"), "StoredHash(<redacted>)");
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(Argon2Policy::new(4, 1, 1).is_err());
        assert!(Argon2Policy::new(64, 0, 1).is_err());
    }

    #[tokio::test]
    async fn blocking_pool_variants_agree() {
        let hasher = Arc::new(fast());
        let hash = hasher
            .hash_blocking(password("correct horse"))
            .await
            .unwrap();
        let (v, _) = hasher
            .verify_blocking(password("correct horse"), hash)
            .await
            .unwrap();
        assert!(v.matched);
    }
}
