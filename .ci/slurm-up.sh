#!/usr/bin/env bash
# Start a single-node Slurm on this machine for the tests (Debian's slurm-wlm and munge; installed
# here when missing). Prints the state folder; .ci/slurm-down.sh DIR stops what this started, by pid.
# Partition `debug` holds this host with all its CPUs; the hostname must resolve to loopback.
set -euo pipefail
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >&2
fi
dir="${SLURM_CI_DIR:-$(mktemp -d /tmp/oneshot-slurm.XXXXXX)}"
mkdir -p "$dir"/{state,spool,log}
trap '"$(dirname "$0")/slurm-down.sh" "$dir"' ERR  # a failed start stops what it started
host="$(hostname -s)"
cpus="$(nproc)"
mem="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
# munged runs as the munge user: its key, socket folder and a pid file it can write
[ -s /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key 2>/dev/null \
    || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then  # else: a munged already runs here
    runuser -u munge -- munged --pid-file=/run/munge/oneshot-ci.pid
fi
cat > "$dir/slurm.conf" <<CONF
ClusterName=oneshot-ci
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
echo "$dir/slurm.conf" > "$dir/conf-path"
export SLURM_CONF="$dir/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
    sinfo -h -o %T 2>/dev/null | grep -qx idle && break
    sleep 0.5
done
sinfo -h -o %T | grep -qx idle || { echo "slurm did not come up; logs in $dir/log" >&2; exit 1; }
echo "$dir"
