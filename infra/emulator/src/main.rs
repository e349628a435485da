//! Lambda Runtime API emulator (work in progress).
fn main() {}
