//! `users-admin`: the operator's command line for the users service. It
//! creates the table, generates signing keys, prints the JWKS and the table
//! definition, and enables or disables accounts. It reads the same
//! environment as the functions (SPEC §4).

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use rsa::RsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use users::config::Config;
use users::domain::Email;
use users::keys;
use users::store::AccountStatus;
use users::store::dynamo::{DynamoStore, table_definition};

#[derive(Parser)]
#[command(version, about = "Operator commands for the users service", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the users table (USERS_TABLE) unless it exists; waits until it is active.
    CreateTable,
    /// Print the table definition (DynamoDB CreateTable JSON).
    TableDefinition,
    /// Write a new RSA private key (PKCS#8 PEM, file mode 0600).
    Keygen {
        /// Where to write the key.
        #[arg(long)]
        out: PathBuf,
        /// Modulus length.
        #[arg(long, default_value_t = 2048, value_parser = parse_bits)]
        bits: usize,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Print the JWKS of the configured keys (JWT_PRIVATE_KEY[_FILE], JWT_PUBLIC_KEYS_FILE).
    Jwks,
    /// Enable or disable an account; a disabled account gets ACCOUNT_INACTIVE at login.
    SetStatus {
        /// The account's email (normalized as at registration).
        email: String,
        /// The new status.
        status: Status,
    },
    /// Count the accounts in the table (a full scan: for tests and benchmarks).
    CountUsers,
}

#[derive(Clone, Copy, ValueEnum)]
enum Status {
    Active,
    Disabled,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("users-admin: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::CreateTable => {
            let store = store().await?;
            let created = store
                .create_table_if_missing()
                .await
                .context("creating the table")?;
            println!(
                "table {} {}",
                store.table(),
                if created { "created" } else { "already exists" }
            );
        }
        Command::TableDefinition => {
            let config = Config::from_env()?;
            println!(
                "{}",
                serde_json::to_string_pretty(&table_definition(&config.table))?
            );
        }
        Command::Keygen { out, bits, force } => keygen(&out, bits, force)?,
        Command::Jwks => {
            let jwks = keys::published_keys(&Config::from_env()?)?;
            println!("{}", serde_json::to_string_pretty(&jwks)?);
        }
        Command::SetStatus { email, status } => {
            let email = Email::parse(&email).map_err(|e| anyhow::anyhow!("email {e}"))?;
            let status = match status {
                Status::Active => AccountStatus::Active,
                Status::Disabled => AccountStatus::Disabled,
            };
            store()
                .await?
                .set_status(&email, status)
                .await
                .context("setting the status")?;
            println!("{} is now {}", email.as_str(), status.as_str());
        }
        Command::CountUsers => println!(
            "{}",
            store()
                .await?
                .count_users()
                .await
                .context("counting users")?
        ),
    }
    Ok(())
}

/// 2048 is the minimum RS256 allows; 3072 and 4096 for longer-lived keys.
fn parse_bits(text: &str) -> Result<usize, String> {
    match text {
        "2048" => Ok(2048),
        "3072" => Ok(3072),
        "4096" => Ok(4096),
        _ => Err("must be 2048, 3072 or 4096".into()),
    }
}

async fn store() -> anyhow::Result<DynamoStore> {
    let config = Config::from_env()?;
    Ok(DynamoStore::connect(&config.table).await?)
}

fn keygen(out: &PathBuf, bits: usize, force: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    if out.exists() && !force {
        bail!("{} exists; pass --force to replace it", out.display());
    }
    let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, bits).context("generating the key")?;
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .context("encoding the key")?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("opening {}", out.display()))?;
    // `mode` applies only to new files; an existing one is narrowed too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(pem.as_bytes())?;
    let signing = keys::SigningKey::from_pem(&pem)?;
    eprintln!(
        "wrote a {bits}-bit RSA key to {} (kid {})",
        out.display(),
        signing.kid()
    );
    Ok(())
}
