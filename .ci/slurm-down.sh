#!/usr/bin/env bash
# Stop the Slurm that .ci/slurm-up.sh started (state folder DIR), by pid: slurmd, slurmctld, munged.
set -uo pipefail
dir="$1"
for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" /run/munge/oneshot-ci.pid; do
    [ -s "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
done
rm -f /run/munge/oneshot-ci.pid
rm -rf "$dir"
