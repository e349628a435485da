//! The user store over `aws-sdk-dynamodb`. The endpoint, region and
//! credentials come from the standard AWS settings through `aws-config`
//! (`AWS_ENDPOINT_URL` selects moto, LocalStack or ScyllaDB Alternator).
//!
//! Layout: one item per user, keyed on the normalized email (so registration
//! is a single conditional `PutItem` and login a single consistent
//! `GetItem`), with a global secondary index on `id` for lookup by id.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ReturnValuesOnConditionCheckFailure, ScalarAttributeType,
    TableStatus,
};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{
    AccountStatus, CreateUser, FindUserByEmail, FindUserById, ReplacePasswordHash, StoreError, User,
};
use crate::config::ConfigError;
use crate::domain::{Email, UserId, UserName};
use crate::password::StoredHash;

/// Partition key of the table: the normalized email.
pub const EMAIL: &str = "email";
/// The user's id; partition key of [`BY_ID_INDEX`].
pub const ID: &str = "id";
/// Global secondary index for lookup by id.
pub const BY_ID_INDEX: &str = "by_id";
const NAME: &str = "name";
const PASSWORD_HASH: &str = "password_hash";
const CREATED_AT: &str = "created_at";
const STATUS: &str = "status";

/// Connection set-up time. On loopback or within a region a connection takes
/// milliseconds; a second means the endpoint is not there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// One attempt. DynamoDB's single-item operations answer in single-digit
/// milliseconds; two seconds leaves room for a cold TLS handshake.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// All attempts together, well inside the functions' 10 s timeout, so a
/// store outage is answered with 503 rather than a gateway timeout.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Standard retry mode (exponential backoff with jitter, retry quota): the
/// first attempt and two retries.
const MAX_ATTEMPTS: u32 = 3;

/// The table's definition in DynamoDB's `CreateTable` JSON shape: the one
/// description of the keys and indexes, which `users-admin table-definition`
/// prints and the AWS template is checked against.
pub fn table_definition(table: &str) -> serde_json::Value {
    json!({
        "TableName": table,
        "AttributeDefinitions": [
            {"AttributeName": EMAIL, "AttributeType": "S"},
            {"AttributeName": ID, "AttributeType": "S"},
        ],
        "KeySchema": [{"AttributeName": EMAIL, "KeyType": "HASH"}],
        "GlobalSecondaryIndexes": [{
            "IndexName": BY_ID_INDEX,
            "KeySchema": [{"AttributeName": ID, "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "ALL"},
        }],
        "BillingMode": "PAY_PER_REQUEST",
    })
}

/// The users table on a DynamoDB-compatible endpoint.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    /// Loads the AWS settings from the environment once (region, endpoint,
    /// credentials) with this store's timeouts and retries.
    pub async fn connect(table: &str) -> Result<Self, ConfigError> {
        Self::connect_with(table, aws_config::defaults(BehaviorVersion::latest())).await
    }

    /// Like [`connect`](Self::connect), with the endpoint given here rather
    /// than by `AWS_ENDPOINT_URL` (tools and tests).
    pub async fn connect_to(table: &str, endpoint_url: &str) -> Result<Self, ConfigError> {
        Self::connect_with(
            table,
            aws_config::defaults(BehaviorVersion::latest()).endpoint_url(endpoint_url),
        )
        .await
    }

    async fn connect_with(
        table: &str,
        loader: aws_config::ConfigLoader,
    ) -> Result<Self, ConfigError> {
        let sdk = loader
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .operation_timeout(OPERATION_TIMEOUT)
                    .build(),
            )
            .load()
            .await;
        if sdk.region().is_none() {
            return Err(ConfigError::new(
                "AWS_REGION",
                "no AWS region configured: set AWS_REGION (for example eu-central-1)",
            ));
        }
        Ok(Self::new(Client::new(&sdk), table))
    }

    /// A store on an existing client.
    pub fn new(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
        }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table as [`table_definition`] describes it, unless it
    /// exists, and waits until it is active. Returns whether it was created.
    pub async fn create_table_if_missing(&self) -> Result<bool, StoreError> {
        let created = match self
            .client
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(attribute(EMAIL)?)
            .attribute_definitions(attribute(ID)?)
            .key_schema(hash_key(EMAIL)?)
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(BY_ID_INDEX)
                    .key_schema(hash_key(ID)?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build()
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
        {
            Ok(_) => true,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception()) =>
            {
                false
            }
            Err(e) => return Err(unavailable(e)),
        };
        // A new table is CREATING for a few seconds on AWS; wait up to a minute.
        for _ in 0..120 {
            let described = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(unavailable)?;
            if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(created);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(StoreError::Unavailable(
            format!("table {} did not become active", self.table).into(),
        ))
    }

    /// Sets an account's status (operator command).
    pub async fn set_status(&self, email: &Email, status: AccountStatus) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(EMAIL, AttributeValue::S(email.as_str().to_owned()))
            .update_expression("SET #status = :status")
            .condition_expression("attribute_exists(#email)")
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_names("#email", EMAIL)
            .expression_attribute_values(":status", AttributeValue::S(status.as_str().to_owned()))
            .send()
            .await
            .map_err(|e| update_error(e, StoreError::NotFound))?;
        Ok(())
    }

    /// Counts the items in the table with a paginated scan (tests and
    /// benchmarks; never on a request path).
    pub async fn count_users(&self) -> Result<usize, StoreError> {
        let mut count = 0usize;
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .select(aws_sdk_dynamodb::types::Select::Count)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable)?;
            count += usize::try_from(page.count()).unwrap_or(0);
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(count),
            }
        }
    }
}

fn attribute(name: &str) -> Result<AttributeDefinition, StoreError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn hash_key(name: &str) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(KeyType::Hash)
        .build()
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn unavailable<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    StoreError::Unavailable(Box::new(e))
}

/// A failed conditional `UpdateItem`: its condition's failure means
/// `on_condition`; anything else is the store being unavailable.
fn update_error<R>(
    e: SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError, R>,
    on_condition: StoreError,
) -> StoreError
where
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if e.as_service_error()
        .is_some_and(|s| s.is_conditional_check_failed_exception())
    {
        on_condition
    } else {
        unavailable(e)
    }
}

impl CreateUser for DynamoStore {
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(user)?))
            .condition_expression("attribute_not_exists(#email)")
            .expression_attribute_names("#email", EMAIL)
            // On a conflict DynamoDB returns the existing item, so a retried
            // write whose first attempt did land is recognised as ours.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(conflict)) => {
                    let existing_id = conflict.item().and_then(|item| item.get(ID)).and_then(|v| v.as_s().ok());
                    if existing_id.is_some_and(|id| *id == user.id.to_string()) {
                        Ok(())
                    } else {
                        Err(StoreError::EmailTaken)
                    }
                }
                _ => Err(unavailable(e)),
            },
        }
    }
}

impl FindUserByEmail for DynamoStore {
    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(EMAIL, AttributeValue::S(email.as_str().to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        output.item.map(from_item).transpose()
    }
}

impl FindUserById for DynamoStore {
    async fn find_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(BY_ID_INDEX)
            .key_condition_expression("#id = :id")
            .expression_attribute_names("#id", ID)
            .expression_attribute_values(":id", AttributeValue::S(id.to_string()))
            .send()
            .await
            .map_err(unavailable)?;
        output
            .items
            .unwrap_or_default()
            .into_iter()
            .next()
            .map(from_item)
            .transpose()
    }
}

impl ReplacePasswordHash for DynamoStore {
    async fn replace_password_hash(
        &self,
        email: &Email,
        old: &StoredHash,
        new: &StoredHash,
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(EMAIL, AttributeValue::S(email.as_str().to_owned()))
            .update_expression("SET #hash = :new")
            .condition_expression("#hash = :old")
            .expression_attribute_names("#hash", PASSWORD_HASH)
            .expression_attribute_values(":new", AttributeValue::S(new.as_phc().to_owned()))
            .expression_attribute_values(":old", AttributeValue::S(old.as_phc().to_owned()))
            .send()
            .await
            .map_err(|e| update_error(e, StoreError::Conflict))?;
        Ok(())
    }
}

fn to_item(user: &User) -> Result<HashMap<String, AttributeValue>, StoreError> {
    let created_at = user
        .created_at
        .format(&Rfc3339)
        .map_err(|e| StoreError::Corrupt(format!("created_at: {e}")))?;
    Ok(HashMap::from([
        (
            EMAIL.to_owned(),
            AttributeValue::S(user.email.as_str().to_owned()),
        ),
        (ID.to_owned(), AttributeValue::S(user.id.to_string())),
        (
            NAME.to_owned(),
            AttributeValue::S(user.name.as_str().to_owned()),
        ),
        (
            PASSWORD_HASH.to_owned(),
            AttributeValue::S(user.password_hash.as_phc().to_owned()),
        ),
        (CREATED_AT.to_owned(), AttributeValue::S(created_at)),
        (
            STATUS.to_owned(),
            AttributeValue::S(user.status.as_str().to_owned()),
        ),
    ]))
}

fn from_item(mut item: HashMap<String, AttributeValue>) -> Result<User, StoreError> {
    let mut take = |name: &str| match item.remove(name) {
        Some(AttributeValue::S(s)) => Ok(s),
        _ => Err(StoreError::Corrupt(format!(
            "missing string attribute {name}"
        ))),
    };
    let email = take(EMAIL)?;
    let id = take(ID)?;
    let name = take(NAME)?;
    let password_hash = take(PASSWORD_HASH)?;
    let created_at = take(CREATED_AT)?;
    // Items written before the status attribute existed are active.
    let status = take(STATUS).unwrap_or_else(|_| AccountStatus::Active.as_str().to_owned());
    Ok(User {
        id: UserId::parse(&id).map_err(|e| StoreError::Corrupt(format!("id: {e}")))?,
        name: UserName::from_stored(name),
        email: Email::from_stored(email),
        password_hash: StoredHash::from_stored(password_hash),
        created_at: OffsetDateTime::parse(&created_at, &Rfc3339)
            .map_err(|e| StoreError::Corrupt(format!("created_at: {e}")))?,
        status: AccountStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("status {status:?}")))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip() {
        let user = User {
            id: UserId::new_random(),
            name: UserName::parse("Ada Lovelace").unwrap(),
            email: Email::parse("ada@example.com").unwrap(),
            password_hash: StoredHash::from_stored(
                "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".into(),
            ),
            created_at: time::macros::datetime!(2026-12-04 19:50:00 UTC),
            status: AccountStatus::Disabled,
        };
        let item = to_item(&user).unwrap();
        assert_eq!(
            item[CREATED_AT],
            AttributeValue::S("2026-12-04T19:50:00Z".into())
        );
        assert_eq!(from_item(item).unwrap(), user);
    }

    #[test]
    fn malformed_items_are_reported_not_panicked_on() {
        let mut item = HashMap::from([(EMAIL.to_owned(), AttributeValue::N("1".into()))]);
        assert!(matches!(
            from_item(item.clone()),
            Err(StoreError::Corrupt(_))
        ));
        item.insert(EMAIL.to_owned(), AttributeValue::S("a@b.c".into()));
        assert!(matches!(from_item(item), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn table_definition_names_the_keys_and_the_index() {
        let def = table_definition("users");
        assert_eq!(def["KeySchema"][0]["AttributeName"], "email");
        assert_eq!(def["GlobalSecondaryIndexes"][0]["IndexName"], "by_id");
        assert_eq!(
            def["GlobalSecondaryIndexes"][0]["KeySchema"][0]["AttributeName"],
            "id"
        );
    }
}
