#!/bin/sh
# Instructions per operation of each handle_pool scenario, counted by callgrind: unlike
# wall-clock figures these are identical run to run on a noisy shared machine.
# Usage (from the workspace root): crates/vfs-core/benches/handle_pool_ir.sh [N]
set -eu
N=${1:-100000}
BIN=$(cargo bench -p vfs-core --bench handle_pool --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -n 1)
ir() {
    HANDLE_POOL_IR=$1 HANDLE_POOL_N=$2 valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" 2>&1 |
        sed -n 's/.*Collected : *//p'
}
# The baseline runs the same loop with no operation.
base=$(ir none "$N")
for s in get/dashmap get/dashmap_fx get/pool publish/dashmap publish/dashmap_fx publish/pool \
    read_op/dashmap+backend read_op/dashmap_fx+backend read_op/pool; do
    total=$(ir "$s" "$N")
    echo "$s $(( (total - base) / N ))"
done
