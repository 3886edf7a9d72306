//! A 10,000-entry directory listed through `nfs3_client`, page by page with cookies, by
//! READDIR (small `count`, so about 100 pages) and READDIRPLUS: every name exactly once.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use nfs3_client::nfs3_types::nfs3::{READDIR3args, READDIR3res, READDIRPLUS3args, READDIRPLUS3res, cookieverf3};
use vfs_core::memfs::MemFs;
use vfs_core::{Ino, Name, OpenFlags, RequestCtx, VirtualFs};

const N: usize = 10_000;

#[tokio::test]
async fn ten_thousand_entries_by_readdir_and_readdirplus() {
    let fs = MemFs::new();
    for i in 0..N {
        let name = format!("entry-{i:05}");
        let (a, fh) = fs
            .create(
                &RequestCtx::ROOT,
                Ino::ROOT,
                Name::from_bytes(name.as_bytes()).unwrap(),
                0o644,
                0,
                OpenFlags::RDWR,
            )
            .await
            .unwrap();
        fs.release(&RequestCtx::ROOT, a.ino, fh).await.unwrap();
    }
    let want: BTreeSet<String> = (0..N).map(|i| format!("entry-{i:05}")).collect();
    let server = common::serve(Arc::new(fs), common::no_root_squash());
    let (mut c, root) = common::mount(server.addr).await;

    let (mut seen, mut pages, mut cookie, mut verf) = (Vec::new(), 0, 0, cookieverf3::default());
    loop {
        let args = READDIR3args {
            dir: root.clone(),
            cookie,
            cookieverf: verf,
            count: 4096,
        };
        let READDIR3res::Ok(ok) = c.readdir(&args).await.unwrap() else {
            panic!("READDIR failed")
        };
        pages += 1;
        assert!(pages < 10_000, "the listing did not end");
        verf = ok.cookieverf;
        for e in &ok.reply.entries.0 {
            seen.push(String::from_utf8(e.name.0.to_vec()).unwrap());
            cookie = e.cookie;
        }
        if ok.reply.eof {
            break;
        }
    }
    seen.retain(|n| n != "." && n != "..");
    let distinct: BTreeSet<String> = seen.iter().cloned().collect();
    println!("READDIR: {} entries in {pages} pages", seen.len());
    assert_eq!(seen.len(), N, "each entry exactly once");
    assert_eq!(distinct, want);
    assert!(pages > 50);

    let (mut seen, mut pages, mut cookie) = (Vec::new(), 0, 0);
    loop {
        let args = READDIRPLUS3args {
            dir: root.clone(),
            cookie,
            cookieverf: cookieverf3::default(),
            dircount: 4096,
            maxcount: 16384,
        };
        let READDIRPLUS3res::Ok(ok) = c.readdirplus(&args).await.unwrap() else {
            panic!("READDIRPLUS failed")
        };
        pages += 1;
        assert!(pages < 10_000, "the listing did not end");
        for e in &ok.reply.entries.0 {
            seen.push(String::from_utf8(e.name.0.to_vec()).unwrap());
            cookie = e.cookie;
        }
        if ok.reply.eof {
            break;
        }
    }
    seen.retain(|n| n != "." && n != "..");
    println!("READDIRPLUS: {} entries in {pages} pages", seen.len());
    assert_eq!(seen.len(), N);
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), want);
}
