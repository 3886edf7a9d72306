//! The testkit's reference model, through NFS: random operation sequences run against a
//! `MemFs` served over NFSv3 and driven by `nfs3_client` (through `NfsClientFs`), and
//! against the model; every answer and, after every step, the whole tree — names, types,
//! sizes, link counts, symlink targets, hard links and every file's bytes, read back with
//! READ — must agree.
//!
//! The one change to the testkit's generator: renames carry no `renameat2` flags, which
//! NFSv3 cannot express (`tests/scenarios.rs` keeps `rename_noreplace`/`rename_exchange`
//! as the scenarios that cannot hold).
//!
//! `VFS_NFS_MODEL_CASES` sets the number of sequences (default 800, about 13,000
//! operations); `VFS_TESTKIT_SEED` makes the generation reproducible.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestError};
use vfs_core::VirtualFs;
use vfs_core::localfs::LocalFs;
use vfs_core::memfs::MemFs;
use vfs_core::testkit::model::{Model, Op, apply_backend, compare_trees, op, test_runner};

fn without_rename_flags(op: Op) -> Op {
    match op {
        Op::Rename {
            dir,
            name,
            to_dir,
            to_name,
            ..
        } => Op::Rename {
            dir,
            name,
            to_dir,
            to_name,
            flags: 0,
        },
        other => other,
    }
}

/// Runs `ops` against `fs` and the model; counts the steps run and the trees compared.
async fn run(fs: &common::NfsClientFs, ops: &[Op], steps: &AtomicU64) -> Result<(), String> {
    let mut model = Model::new();
    let mut trace = String::new();
    for (i, op) in ops.iter().enumerate() {
        let Some(step) = model.resolve_op(op) else { continue };
        let want = model.apply(&step);
        let got = apply_backend(fs, &step).await;
        steps.fetch_add(1, Ordering::Relaxed);
        trace.push_str(&format!("  {i:>2}: {step:?} -> {got:?}\n"));
        if got != want {
            return Err(format!(
                "{trace}step {i} answered {got:?} over NFS, the model says {want:?}"
            ));
        }
        if let Err(diff) = compare_trees(fs, &model).await {
            return Err(format!("{trace}after step {i} the trees differ: {diff}"));
        }
    }
    Ok(())
}

#[test]
fn model_random_sequences_through_nfs3_client() {
    let cases: u32 = std::env::var("VFS_NFS_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(800);
    let steps = check(cases, || (Arc::new(MemFs::new()), None));
    if cases >= 800 {
        assert!(steps >= 10_000, "only {steps} operations ran");
    }
}

/// The same over `LocalFs` on a host directory: real descriptors in the handle pool, so
/// the read-only → writable upgrade (seed 003 (doc/LESSONS.md#seed-003)) runs against the host's `EBADF`.
#[test]
fn model_random_sequences_through_nfs3_client_on_localfs() {
    let cases: u32 = std::env::var("VFS_NFS_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(150, |c| c.div_ceil(5));
    check(cases, || {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = LocalFs::new(dir.path()).expect("LocalFs");
        (Arc::new(fs), Some(dir))
    });
}

/// Runs `cases` sequences, each on a fresh backend from `backend`; returns the number of
/// operations run.
fn check<F: VirtualFs>(cases: u32, backend: impl Fn() -> (Arc<F>, Option<tempfile::TempDir>)) -> u64 {
    let mut runner = test_runner(cases, 2_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let steps = AtomicU64::new(0);
    let reads = AtomicU64::new(0);
    let calls = AtomicU64::new(0);
    let sequences = proptest::collection::vec(op().prop_map(without_rename_flags), 1..40);
    let result = runner.run(&sequences, |ops| {
        let (fs, _dir) = backend();
        let server = common::serve(fs, common::no_root_squash());
        let fs = common::NfsClientFs::new(server.addr);
        let r = rt.block_on(run(&fs, &ops, &steps));
        reads.fetch_add(fs.reads.load(Ordering::Relaxed), Ordering::Relaxed);
        calls.fetch_add(fs.calls.load(Ordering::Relaxed), Ordering::Relaxed);
        server.stop();
        r.map_err(TestCaseError::fail)
    });
    let steps = steps.load(Ordering::Relaxed);
    println!(
        "model through NFS ({}): {cases} sequences, {steps} operations, {} NFS calls, {} READs verified against the model",
        std::any::type_name::<F>().rsplit("::").next().unwrap_or("?"),
        calls.load(Ordering::Relaxed),
        reads.load(Ordering::Relaxed)
    );
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => panic!(
            "model test through NFS failed; minimal failing sequence ({} operations):\n{reason}",
            ops.len()
        ),
        Err(TestError::Abort(reason)) => panic!("model test aborted: {reason}"),
    }
    steps
}
