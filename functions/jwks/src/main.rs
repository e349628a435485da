//! jwks
fn main() {}
