//! `bench-hello`: the cold-start reference of `make bench`. The smallest
//! useful `lambda_http` function, built with the workspace's release
//! profile, so its spawn-to-first-answer time is what any function pays
//! before doing anything of its own.

use lambda_http::{Body, Error, Request, Response, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::run(service_fn(|_request: Request| async {
        Ok::<_, Error>(Response::new(Body::Text("hello".to_owned())))
    }))
    .await
}
