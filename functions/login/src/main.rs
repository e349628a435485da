//! The login function: `POST /api/v1/users/login` (SPEC §3.2).

use users::config::Config;
use users::handlers::{LoginState, login};
use users::startup::{init_logging, or_exit, run};

// An instance runs one invocation at a time, so one thread does: a
// multi-threaded runtime only hands each event between worker threads
// (measured by `make bench`). Argon2 runs on the blocking pool either way.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    init_logging();
    let config = or_exit("login", Config::from_env());
    let state = or_exit("login", LoginState::from_config(&config).await);
    let state = &state;
    run("login", move |request| login(state, request)).await
}
