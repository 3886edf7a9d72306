#!/bin/sh
# Instructions per operation under callgrind: repeatable on a noisy shared machine, unlike
# wall-clock. Prints one line per measured loop: name, total Ir, Ir per operation.
# Usage: crates/vfs-core/benches/ir_counts.sh [ITERS]   (from the workspace root)
set -eu
n=${1:-100000}
cargo bench -p vfs-core --bench op_barrier --bench debouncer --no-run >/dev/null 2>&1
latest() { ls -t target/release/deps/"$1"-* | grep -v '\.d$' | head -n 1; }
measure() { # bench-binary env-var function
    ir=$(env "$2=$n" valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        --toggle-collect="$(basename "$1" | sed 's/-.*//')::$3" "$1" 2>&1 |
        sed -n 's/.*I *refs: *//p' | tr -d ,)
    echo "$3 $ir $((ir / n))"
}
ob=$(latest op_barrier)
db=$(latest debouncer)
for f in ir_write_ticket ir_dashmap_entry_remove ir_read_nothing_pending ir_dashmap_get; do
    measure "$ob" OP_BARRIER_ITERS "$f"
done
for f in ir_state_apply ir_hashmap_insert; do
    measure "$db" DEBOUNCER_ITERS "$f"
done
