-- vfs-pg schema version 1. Applied in one transaction by schema.rs; never edited once
-- released: a change is a new file 002_*.sql appended to MIGRATIONS.

-- Key/value facts about this filesystem: schema_version, fs_id (the identity that
-- source_id and so NFS handles derive from), created_at.
CREATE TABLE vfs_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- Inode numbers are unique across the whole database (every verset), never reused.
-- 1 is the mount root; 2 is the synthetic control file `ctl`; real inodes start at 16.
CREATE SEQUENCE vfs_ino_seq START 16;
CREATE SEQUENCE vfs_block_seq;

-- One row per inode. kind: 1 regular, 2 directory, 3 symlink, 4 fifo, 5 socket,
-- 6 character device, 7 block device. verset: the verset the inode belongs to (NULL for
-- the mount root and the module directories). target: a symlink's target.
CREATE TABLE inode (
    ino      bigint PRIMARY KEY,
    verset   bigint,
    kind     smallint NOT NULL CHECK (kind BETWEEN 1 AND 7),
    perm     integer NOT NULL,
    nlink    bigint NOT NULL CHECK (nlink >= 0),
    uid      bigint NOT NULL,
    gid      bigint NOT NULL,
    size     bigint NOT NULL DEFAULT 0 CHECK (size >= 0),
    rdev     bigint NOT NULL DEFAULT 0,
    atime_s  bigint NOT NULL,
    atime_ns integer NOT NULL,
    mtime_s  bigint NOT NULL,
    mtime_ns integer NOT NULL,
    ctime_s  bigint NOT NULL,
    ctime_ns integer NOT NULL,
    target   bytea
);
CREATE INDEX inode_verset ON inode (verset);

-- Directory entries. `.` and `..` are not stored: `..` of a directory is the parent of
-- its one entry. cookie: the entry's place in listings, a hash of its name (the first
-- free value from it on), as ext4 does, so a name removed and made again during a
-- listing comes back to the same place and is not listed twice. Cookies 1 and 2 are
-- `.` and `..`, 3 the mount root's `ctl`; hashes start at 16.
CREATE TABLE dentry (
    parent bigint NOT NULL REFERENCES inode (ino),
    name   bytea NOT NULL,
    ino    bigint NOT NULL REFERENCES inode (ino),
    cookie bigint NOT NULL CHECK (cookie >= 16),
    PRIMARY KEY (parent, name)
);
CREATE UNIQUE INDEX dentry_cookie ON dentry (parent, cookie);
CREATE INDEX dentry_ino ON dentry (ino);

CREATE TABLE xattr (
    ino   bigint NOT NULL REFERENCES inode (ino),
    name  bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (ino, name)
);

-- Blocks are immutable: a new version of a block is a new row. refs counts the
-- file_block rows naming it; a block whose count reaches 0 is deleted in the same
-- transaction. len: bytes stored (a block is never longer than the block size and never
-- holds bytes at or past its file's end; what it does not hold reads as zeros).
CREATE TABLE block (
    id   bigint PRIMARY KEY DEFAULT nextval('vfs_block_seq'),
    refs bigint NOT NULL CHECK (refs >= 0),
    len  integer NOT NULL CHECK (len >= 0)
);

-- Which block holds block number idx of file ino. A missing row is a hole.
CREATE TABLE file_block (
    ino   bigint NOT NULL REFERENCES inode (ino),
    idx   bigint NOT NULL CHECK (idx >= 0),
    block bigint NOT NULL REFERENCES block (id),
    PRIMARY KEY (ino, idx)
);
CREATE INDEX file_block_block ON file_block (block);

-- The bytes of each block, for the PostgreSQL block store (PgBlockStore).
CREATE TABLE block_data (
    id   bigint PRIMARY KEY REFERENCES block (id),
    data bytea NOT NULL
);

-- Modules and versets: the mount root lists modules, a module lists its versets, a
-- verset's root directory holds a whole tree.
CREATE TABLE module (
    number bigint PRIMARY KEY CHECK (number > 0),
    ino    bigint NOT NULL UNIQUE REFERENCES inode (ino)
);
CREATE TABLE verset (
    id     bigserial PRIMARY KEY,
    module bigint NOT NULL REFERENCES module (number),
    number bigint NOT NULL CHECK (number > 0),
    root   bigint NOT NULL UNIQUE REFERENCES inode (ino),
    UNIQUE (module, number)
);
