//! login
fn main() {}
