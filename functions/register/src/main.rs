//! register
fn main() {}
