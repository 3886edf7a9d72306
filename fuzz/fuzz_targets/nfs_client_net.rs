//! Fuzz target: an NFS client allowlist entry as typed on the command line
//! (`vfs_nfs::ClientNet::from_str`, `--allow-client CIDR`).
//!
//! Invariants checked: never panics; whatever parses prints as `ADDRESS/PREFIX`, parses
//! back to the same network, and contains its own address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfs_nfs::ClientNet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(net) = text.parse::<ClientNet>() else {
        return;
    };
    let printed = net.to_string();
    let again: ClientNet = printed.parse().expect("a printed network parses");
    assert_eq!(again, net, "{printed}");
    let addr = printed.split('/').next().and_then(|a| a.parse().ok()).expect("an address");
    assert!(net.contains(addr), "{printed} does not contain its own address");
});
