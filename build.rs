//! Extracts the README's `Hello` backend (its first ```rust block) into
//! `$OUT_DIR/readme_hello.rs`, so the `hello` example and `tests/hello_kit.rs` compile,
//! mount and run the conformance kit on the README's very code, not on a copy that could
//! drift from it.

use std::{env, fs, path::Path, process};

fn main() {
    println!("cargo::rerun-if-changed=README.md");
    let readme = match fs::read_to_string("README.md") {
        Ok(s) => s,
        Err(e) => fail(&format!("cannot read README.md: {e}")),
    };
    let Some(start) = readme.find("```rust\n") else {
        fail("README.md has no ```rust block (the Hello backend)")
    };
    let body = &readme[start + "```rust\n".len()..];
    let Some(end) = body.find("\n```") else {
        fail("README.md's ```rust block is not closed")
    };
    let code = format!("{}\n", &body[..end]);
    if !code.contains("impl VirtualFs for Hello") {
        fail("README.md's first ```rust block is not the Hello backend");
    }
    let out = match env::var("OUT_DIR") {
        Ok(d) => Path::new(&d).join("readme_hello.rs"),
        Err(e) => fail(&format!("OUT_DIR: {e}")),
    };
    if let Err(e) = fs::write(&out, code) {
        fail(&format!("cannot write {}: {e}", out.display()));
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("build.rs: {msg}");
    process::exit(1)
}
