//! A tour of `VirtualFs` on the in-memory backend: create, write, rename over, hard-link,
//! unlink while open, list. Prints each step and what the filesystem answered.
//!
//! Run: `cargo run --example tour`

use std::ffi::OsStr;

use vfs_core::memfs::MemFs;
use vfs_core::{Ino, Name, OpenFlags, RenameFlags, RequestCtx, VfsResult, VirtualFs};

fn name(s: &str) -> VfsResult<Name<'_>> {
    Name::new(OsStr::new(s))
}

async fn tour() -> VfsResult<()> {
    let fs = MemFs::new();
    let ctx = RequestCtx::ROOT;

    let docs = fs.mkdir(&ctx, Ino::ROOT, name("docs")?, 0o755, 0o022).await?;
    println!(
        "mkdir /docs                      -> ino {}, mode {:o}",
        docs.ino.0,
        docs.mode()
    );

    // Atomic save, the way editors and git do it: write a temp, rename it over the target.
    let (tmp, fh) = fs
        .create(&ctx, docs.ino, name("notes.txt.tmp")?, 0o644, 0o022, OpenFlags::RDWR)
        .await?;
    let n = fs.write(&ctx, tmp.ino, fh, 0, b"hello from MemFs\n").await?;
    fs.release(&ctx, tmp.ino, fh).await?;
    println!("write /docs/notes.txt.tmp        -> {n} bytes");
    fs.rename(
        &ctx,
        docs.ino,
        name("notes.txt.tmp")?,
        docs.ino,
        name("notes.txt")?,
        RenameFlags::NONE,
    )
    .await?;
    let notes = fs.lookup(&ctx, docs.ino, name("notes.txt")?).await?;
    println!(
        "rename .tmp -> notes.txt         -> ino {}, size {}",
        notes.ino.0, notes.size
    );

    let linked = fs.link(&ctx, notes.ino, Ino::ROOT, name("notes-link")?).await?;
    println!("link /notes-link                 -> nlink {}", linked.nlink);

    // Unlink while open: the data stays readable through the handle until release.
    let fh = fs.open(&ctx, notes.ino, OpenFlags::RDONLY).await?;
    fs.unlink(&ctx, docs.ino, name("notes.txt")?).await?;
    fs.unlink(&ctx, Ino::ROOT, name("notes-link")?).await?;
    let data = fs.read(&ctx, notes.ino, fh, 0, 4096).await?;
    println!(
        "read after unlinking both names  -> {:?}",
        String::from_utf8_lossy(&data)
    );
    fs.release(&ctx, notes.ino, fh).await?;
    println!(
        "release                          -> inode freed: {}",
        fs.getattr(&ctx, notes.ino, None).await.is_err()
    );

    match fs.lookup(&ctx, Ino::ROOT, name("missing")?).await {
        Err(e) => println!(
            "lookup /missing                  -> {} (an answer, not an error)",
            e.errno()
        ),
        Ok(_) => println!("lookup /missing                  -> unexpectedly found"),
    }
    match Name::new(OsStr::new("../escape")) {
        Err(e) => println!("name \"../escape\"                 -> refused: {e}"),
        Ok(_) => println!("name \"../escape\"                 -> unexpectedly accepted"),
    }

    let listing = fs.readdir(&ctx, Ino::ROOT, 0, 100).await?;
    let names: Vec<_> = listing.iter().map(|e| e.name.to_string_lossy().into_owned()).collect();
    println!("readdir /                        -> {names:?}");
    println!("inodes alive                     -> {}", fs.inode_count());
    Ok(())
}

fn main() {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tour: cannot start a runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(tour()) {
        eprintln!("tour: {e}");
        std::process::exit(1);
    }
}
