//! The user store: the record, the errors, and one narrow trait per thing a
//! handler needs, so each function depends only on what it does (register
//! writes, login reads and may upgrade a hash). [`dynamo`] implements them
//! over any DynamoDB-compatible endpoint.

pub mod dynamo;

use std::future::Future;

use time::OffsetDateTime;

use crate::domain::{Email, UserId, UserName};
use crate::password::StoredHash;

/// Whether an account may log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    /// May log in.
    Active,
    /// Disabled by an operator: the right password gets `ACCOUNT_INACTIVE`.
    Disabled,
}

impl AccountStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "disabled" => Some(Self::Disabled),
            _ => None,
        }
    }
}

/// A registered user as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// Random id, the token's `sub`.
    pub id: UserId,
    /// Display name.
    pub name: UserName,
    /// Normalized email, the identity.
    pub email: Email,
    /// Argon2id PHC string.
    pub password_hash: StoredHash,
    /// Registration time (UTC, whole seconds).
    pub created_at: OffsetDateTime,
    /// Whether the account may log in.
    pub status: AccountStatus,
}

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The normalized email is already registered.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// A conditional update lost to a concurrent change.
    #[error("the item changed concurrently")]
    Conflict,
    /// The item to change does not exist.
    #[error("no such user")]
    NotFound,
    /// The endpoint could not be reached or refused the request.
    #[error("the user store is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// An item in the table does not have the expected shape.
    #[error("stored item is malformed: {0}")]
    Corrupt(String),
}

/// Creates accounts: one atomic conditional write keyed on the email.
pub trait CreateUser: Send + Sync {
    /// Stores `user` unless its email is taken ([`StoreError::EmailTaken`]).
    fn create_user(&self, user: &User) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Finds accounts by email with one strongly consistent read.
pub trait FindUserByEmail: Send + Sync {
    /// The user registered under `email`, if any.
    fn find_by_email(
        &self,
        email: &Email,
    ) -> impl Future<Output = Result<Option<User>, StoreError>> + Send;
}

/// Finds accounts by id.
pub trait FindUserById: Send + Sync {
    /// The user with `id`, if any.
    fn find_by_id(
        &self,
        id: UserId,
    ) -> impl Future<Output = Result<Option<User>, StoreError>> + Send;
}

/// Replaces a password hash, for rehash-on-login.
pub trait ReplacePasswordHash: Send + Sync {
    /// Sets the hash of `email`'s account to `new` if it is still `old`
    /// ([`StoreError::Conflict`] otherwise: a concurrent change wins).
    fn replace_password_hash(
        &self,
        email: &Email,
        old: &StoredHash,
        new: &StoredHash,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
