//! Tests of the emulator as a process: the real `emulator` binary, real
//! child processes (the `emulator-fixture` function built with
//! `lambda_runtime`, and small scripts), real HTTP.
//!
//! The modules are marked `cfg(test)` (always true here) so the workspace's
//! test allowances (unwrap, expect, panic) apply to the helpers as well.

#[cfg(test)]
mod faults;
#[cfg(test)]
mod helpers;
#[cfg(test)]
mod http_api;
#[cfg(test)]
mod lifecycle;
#[cfg(test)]
mod pool;
#[cfg(test)]
mod runtime_api;
