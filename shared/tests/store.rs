//! The DynamoDB store against a real DynamoDB-compatible endpoint (moto in
//! `make test`, LocalStack in GitLab CI).

// A test crate: helpers fail the test that calls them, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::{fresh_store, unreachable_store};
use users::domain::{Email, UserId, UserName};
use users::password::StoredHash;
use users::store::{
    AccountStatus, CreateUser, FindUserByEmail, FindUserById, ReplacePasswordHash, StoreError, User,
};

fn user(email: &str) -> User {
    User {
        id: UserId::new_random(),
        name: UserName::parse("Ada Lovelace").unwrap(),
        email: Email::parse(email).unwrap(),
        password_hash: StoredHash::from_stored(format!(
            "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ${}",
            uuid::Uuid::new_v4().simple()
        )),
        created_at: time::macros::datetime!(2026-12-04 19:50:00 UTC),
        status: AccountStatus::Active,
    }
}

#[tokio::test]
async fn a_created_user_is_found_by_email_and_by_id() {
    let store = fresh_store().await;
    let ada = user("ada@example.com");
    store.create_user(&ada).await.unwrap();
    assert_eq!(
        store.find_by_email(&ada.email).await.unwrap(),
        Some(ada.clone())
    );
    assert_eq!(store.find_by_id(ada.id).await.unwrap(), Some(ada));
}

#[tokio::test]
async fn unknown_users_are_not_found() {
    let store = fresh_store().await;
    assert_eq!(
        store
            .find_by_email(&Email::parse("nobody@example.com").unwrap())
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.find_by_id(UserId::new_random()).await.unwrap(), None);
}

#[tokio::test]
async fn a_second_account_for_the_same_email_is_refused_and_the_first_kept() {
    let store = fresh_store().await;
    let first = user("ada@example.com");
    store.create_user(&first).await.unwrap();
    let second = user("ada@example.com");
    assert!(matches!(
        store.create_user(&second).await,
        Err(StoreError::EmailTaken)
    ));
    assert_eq!(
        store.find_by_email(&first.email).await.unwrap(),
        Some(first)
    );
    assert_eq!(store.find_by_id(second.id).await.unwrap(), None);
    assert_eq!(store.count_users().await.unwrap(), 1);
}

#[tokio::test]
async fn retrying_our_own_landed_write_is_not_a_conflict() {
    // A timed-out attempt that did land is retried by the SDK; the retry
    // must not report the user's own registration as EMAIL_TAKEN.
    let store = fresh_store().await;
    let ada = user("ada@example.com");
    store.create_user(&ada).await.unwrap();
    store.create_user(&ada).await.unwrap();
    assert_eq!(store.count_users().await.unwrap(), 1);
}

#[tokio::test]
async fn fifty_concurrent_registrations_of_one_email_make_exactly_one_account() {
    let store = Arc::new(fresh_store().await);
    let attempts: Vec<_> = (0..50)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let candidate = user("race@example.com");
                store.create_user(&candidate).await.map(|()| candidate.id)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut taken = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(id) => winners.push(id),
            Err(StoreError::EmailTaken) => taken += 1,
            Err(other) => panic!("unexpected store error: {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one registration wins");
    assert_eq!(taken, 49);
    assert_eq!(store.count_users().await.unwrap(), 1);
    let stored = store
        .find_by_email(&Email::parse("race@example.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.id, winners[0], "the stored account is the winner's");
}

#[tokio::test]
async fn a_password_hash_is_replaced_only_if_unchanged() {
    let store = fresh_store().await;
    let ada = user("ada@example.com");
    store.create_user(&ada).await.unwrap();
    let newer =
        StoredHash::from_stored("$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdA$bmV3aGFzaA".into());
    store
        .replace_password_hash(&ada.email, &ada.password_hash, &newer)
        .await
        .unwrap();
    // A second upgrade from the old hash lost the race: refused.
    let other = StoredHash::from_stored("$argon2id$v=19$m=19456,t=2,p=1$b3RoZXI$b3RoZXI".into());
    assert!(matches!(
        store
            .replace_password_hash(&ada.email, &ada.password_hash, &other)
            .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store
            .find_by_email(&ada.email)
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        newer
    );
}

#[tokio::test]
async fn an_account_can_be_disabled_and_enabled() {
    let store = fresh_store().await;
    let ada = user("ada@example.com");
    store.create_user(&ada).await.unwrap();
    store
        .set_status(&ada.email, AccountStatus::Disabled)
        .await
        .unwrap();
    assert_eq!(
        store
            .find_by_email(&ada.email)
            .await
            .unwrap()
            .unwrap()
            .status,
        AccountStatus::Disabled
    );
    store
        .set_status(&ada.email, AccountStatus::Active)
        .await
        .unwrap();
    assert_eq!(
        store
            .find_by_email(&ada.email)
            .await
            .unwrap()
            .unwrap()
            .status,
        AccountStatus::Active
    );
    let nobody = Email::parse("nobody@example.com").unwrap();
    assert!(matches!(
        store.set_status(&nobody, AccountStatus::Disabled).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store.count_users().await.unwrap(),
        1,
        "set-status never creates an item"
    );
}

#[tokio::test]
async fn creating_the_table_twice_is_harmless() {
    let store = fresh_store().await;
    assert!(!store.create_table_if_missing().await.unwrap());
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable_promptly() {
    let store = unreachable_store().await;
    let started = std::time::Instant::now();
    let ada = user("ada@example.com");
    assert!(matches!(
        store.create_user(&ada).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.find_by_email(&ada.email).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.find_by_id(ada.id).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "bounded by the store's timeouts"
    );
}
