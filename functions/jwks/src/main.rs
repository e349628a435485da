//! The jwks function: `GET /.well-known/jwks.json` (SPEC §3.3). It needs
//! no store and can run on public keys alone.

use users::config::Config;
use users::handlers::{JwksState, jwks};
use users::startup::{init_logging, or_exit, run};

// An instance runs one invocation at a time, so one thread does: a
// multi-threaded runtime only hands each event between worker threads
// (measured by `make bench`). Argon2 runs on the blocking pool either way.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    init_logging();
    let config = or_exit("jwks", Config::from_env());
    let state = or_exit("jwks", JwksState::from_config(&config));
    let state = &state;
    run("jwks", move |request| {
        std::future::ready(jwks(state, &request))
    })
    .await
}
