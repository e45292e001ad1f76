#!/usr/bin/env bash
# start-dockerd.sh — idempotently make a Docker daemon with the gVisor runtime
# ("runsc") available, for the Docker sandbox backend and for CI.
#
#   1. If `docker info` already works and lists the runsc runtime: do nothing.
#   2. Otherwise (root only) merge {"runtimes":{"runsc":{"path":"/usr/bin/runsc"}}}
#      into /etc/docker/daemon.json (other keys are kept; a backup of a changed
#      file is written next to it as daemon.json.bak.<time>).
#   3. If no daemon answers, start /usr/sbin/dockerd with nohup in the
#      background (log: ${DOCKERD_LOG:-/tmp/dockerd.log}; extra flags from
#      $DOCKERD_FLAGS) and wait up to ${DOCKERD_WAIT:-30} s for it to answer.
#
# It never restarts or stops a daemon that is already running: if that daemon
# lacks the runsc runtime it says so and exits 1.
#
# Needs: Debian packages docker.io (dockerd + containerd) and runsc.
# Exit status: 0 daemon reachable with runsc, 1 failure, 2 missing prerequisite.
set -euo pipefail

PROG="start-dockerd"
say() { printf '[%s] %s\n' "$PROG" "$*"; }
die() { printf '[%s] ERROR: %s\n' "$PROG" "$1" >&2; exit "${2:-1}"; }

RUNSC="${RUNSC:-/usr/bin/runsc}"
DOCKERD="${DOCKERD:-/usr/sbin/dockerd}"
DAEMON_JSON="${DAEMON_JSON:-/etc/docker/daemon.json}"
LOG="${DOCKERD_LOG:-/tmp/dockerd.log}"
WAIT="${DOCKERD_WAIT:-30}"

command -v docker >/dev/null || die "docker CLI not found: apt-get install docker.io" 2
[ -x "$RUNSC" ] || die "$RUNSC not found: apt-get install runsc" 2

has_runsc() {
    docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'
}

if docker info >/dev/null 2>&1; then
    if has_runsc; then
        say "dockerd already running with the runsc runtime; nothing to do"
        exit 0
    fi
    die "a Docker daemon is running but has no 'runsc' runtime. Add {\"runtimes\":{\"runsc\":{\"path\":\"$RUNSC\"}}} to $DAEMON_JSON and restart that daemon (this script does not restart daemons it did not start)"
fi

[ "$(id -u)" = 0 ] || die "no Docker daemon is reachable and starting one needs root" 2
[ -x "$DOCKERD" ] || die "$DOCKERD not found: apt-get install docker.io" 2

# ---- merge the runsc runtime into daemon.json
mkdir -p "$(dirname "$DAEMON_JSON")"
PY="$(command -v python3 || true)"
if [ -n "$PY" ]; then
    "$PY" - "$DAEMON_JSON" "$RUNSC" <<'EOF'
import json, os, sys, time
path, runsc = sys.argv[1], sys.argv[2]
cfg = {}
if os.path.exists(path) and os.path.getsize(path) > 0:
    with open(path) as f:
        cfg = json.load(f)
    if not isinstance(cfg, dict):
        sys.exit("%s is not a JSON object" % path)
want = {"path": runsc}
rt = cfg.setdefault("runtimes", {})
if rt.get("runsc") == want:
    print("[start-dockerd] %s already registers runsc" % path)
    sys.exit(0)
if os.path.exists(path):
    bak = "%s.bak.%d" % (path, int(time.time()))
    os.rename(path, bak)
    print("[start-dockerd] previous %s saved as %s" % (path, bak))
rt["runsc"] = want
tmp = path + ".tmp"
with open(tmp, "w") as f:
    json.dump(cfg, f, indent=2)
    f.write("\n")
os.replace(tmp, path)
print("[start-dockerd] registered runsc in %s" % path)
EOF
elif [ ! -s "$DAEMON_JSON" ]; then
    printf '{\n  "runtimes": {\n    "runsc": {\n      "path": "%s"\n    }\n  }\n}\n' "$RUNSC" > "$DAEMON_JSON"
    say "registered runsc in $DAEMON_JSON"
elif ! grep -q '"runsc"' "$DAEMON_JSON"; then
    die "$DAEMON_JSON exists and python3 is not available to merge it; add the runsc runtime by hand"
fi

# ---- start dockerd
say "starting $DOCKERD in the background (log: $LOG)"
# shellcheck disable=SC2086
nohup "$DOCKERD" ${DOCKERD_FLAGS:-} >>"$LOG" 2>&1 </dev/null &
DPID=$!
for _ in $(seq 1 "$WAIT"); do
    if docker info >/dev/null 2>&1; then
        if has_runsc; then
            say "dockerd is up (pid $DPID) with the runsc runtime"
            exit 0
        fi
        die "dockerd is up (pid $DPID) but does not list the runsc runtime; see $LOG"
    fi
    if ! kill -0 "$DPID" 2>/dev/null; then
        tail -n 20 "$LOG" >&2 || true
        die "dockerd exited during startup; see $LOG"
    fi
    sleep 1
done
tail -n 20 "$LOG" >&2 || true
die "dockerd did not answer within ${WAIT}s (pid $DPID still running); see $LOG"
