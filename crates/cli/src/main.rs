//! strait
fn main() {}
