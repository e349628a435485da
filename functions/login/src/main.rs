//! The login function: `POST /api/v1/users/login` (SPEC §3.2).

use users::config::Config;
use users::handlers::{LoginState, login};
use users::startup::{init_logging, or_exit, run};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_logging();
    let config = or_exit("login", Config::from_env());
    let state = or_exit("login", LoginState::from_config(&config).await);
    let state = &state;
    run("login", move |request| login(state, request)).await
}
