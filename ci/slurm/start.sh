#!/usr/bin/env bash
# Start (or check) a single-node SLURM cluster on this machine: munged, slurmctld, slurmd.
# Needs root and Debian's `slurm-wlm` and `munge` packages (`apt-get install -y slurm-wlm munge`).
# Idempotent: daemons already running are left alone (restarted only if the config changed),
# and it returns once `sinfo` shows the node idle. Stop it with ci/slurm/stop.sh.
# It never touches a cluster it did not set up: when /etc/slurm/slurm.conf exists and is not
# this script's (ClusterName=emo-ci), a running cluster is used as it is and a stopped one is
# left alone (exit 1), unless EMO_SLURM_FORCE=1 asks to replace that config.
#   EMO_SLURM_MEM_MB   memory the node offers to jobs (default 2048)
#   EMO_SLURM_FORCE    1: overwrite a slurm.conf this script did not write
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
host=$(hostname -s)
cpus=$(nproc)
mem=${EMO_SLURM_MEM_MB:-2048}
conf=/etc/slurm/slurm.conf

for tool in munged slurmctld slurmd sinfo; do
    command -v "$tool" >/dev/null || { echo "start.sh: $tool not found; apt-get install -y slurm-wlm munge" >&2; exit 1; }
done

alive() {  # alive PIDFILE: the process named in PIDFILE is running
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

if [ -f "$conf" ] && ! grep -q '^ClusterName=emo-ci$' "$conf" && [ "${EMO_SLURM_FORCE:-0}" != 1 ]; then
    if sinfo -h >/dev/null 2>&1; then
        echo "slurm: using the running cluster configured in $conf as it is (not set up by this script)"
        exit 0
    fi
    echo "start.sh: $conf belongs to another SLURM setup; refusing to overwrite it (EMO_SLURM_FORCE=1 replaces it)" >&2
    exit 1
fi

mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge
wanted=$(sed -e "s/@HOST@/$host/g" -e "s/@CPUS@/$cpus/g" -e "s/@MEM@/$mem/g" "$here/slurm.conf")
changed=0
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$wanted" ]; then
    printf '%s\n' "$wanted" > "$conf"
    changed=1
fi

# munge: a key, then the daemon (as root: this machine is the whole cluster).
if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
        || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key && chmod 0755 /run/munge
if ! alive /run/munge/munged.pid; then
    runuser -u munge -- munged
fi
for _ in $(seq 50); do munge -n </dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done

if [ "$changed" = 1 ]; then  # running daemons read the old config: restart them
    for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
        if alive "$pidfile"; then
            pid=$(cat "$pidfile"); kill "$pid"
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        fi
    done
fi
alive /run/slurmctld.pid || slurmctld
alive /run/slurmd.pid || slurmd

# Wait until the node takes jobs; a node left down by an earlier run is resumed.
for i in $(seq 120); do
    state=$(sinfo -h -N -n "$host" -o %t 2>/dev/null | head -n1 || true)
    case "$state" in
        idle|mix|alloc) echo "slurm: node $host is $state ($cpus CPUs, ${mem} MB)"; exit 0 ;;
        down*|drain*|drng*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
echo "start.sh: node $host did not become idle within 60 s (state: ${state:-none}); see /var/log/slurm/" >&2
exit 1
