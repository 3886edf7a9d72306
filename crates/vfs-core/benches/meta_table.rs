//! Placeholder: the MetaTable bench lands with the foundation issue.
fn main() {}
