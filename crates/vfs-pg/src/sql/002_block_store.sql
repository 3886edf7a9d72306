-- vfs-pg schema version 2: blocks kept outside the database (an S3 bucket).

-- Which store keeps this database's block bytes ('pg', or 's3://bucket/prefix'): set
-- by the first opener, checked by every later one, in vfs_meta under key 'blocks'.

-- Blocks deleted (refs reached 0) by a committed transaction whose bytes live in an
-- object store: the store deletes nothing inside a transaction, it adds the block here
-- in the same transaction, so the row appears if and only if the deletion commits.
-- gc removes such an object once `at` is older than its grace period (a reader whose
-- snapshot still saw the block has long finished), then the row.
CREATE TABLE block_gone (
    id bigint PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
