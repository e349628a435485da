//! The users service library: everything the `register`, `login` and `jwks`
//! functions do, unit-testable without any Lambda machinery.
//!
//! The function binaries stay thin: they read [`config::Config`] once per cold
//! start, build the state of [`handlers`] once, and hand a handler to
//! [`startup::run`].

pub mod config;
pub mod domain;
pub mod handlers;
pub mod keys;
pub mod password;
pub mod problem;
pub mod startup;
pub mod store;
pub mod token;
