//! The vfs-core conformance and race kit, model test included, on vfs-pg: each test on
//! a fresh database of one private PostgreSQL server that this test process starts
//! (and stops at exit), serving verset 1 of module 1 as the root.

use vfs_core::testkit::Backend;
use vfs_pg::testing::fresh_fs;
use vfs_pg::{PgOptions, Root};

fn verset_fs() -> vfs_pg::PgFs {
    fresh_fs(PgOptions {
        root: Root::Verset { module: 1, verset: 1 },
        pool_size: 8,
        ..PgOptions::default()
    })
}

vfs_core::vfs_conformance!(pgfs, || Backend::new(verset_fs()));
