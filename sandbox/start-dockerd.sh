#!/usr/bin/env bash
# start-dockerd.sh — idempotently make a Docker daemon with the gVisor runtime
# ("runsc") available, for the Docker sandbox backend and for CI.
#
#   1. If `docker info` already works and lists the runsc runtime with
#      runtimeArgs ["--network=none"]: do nothing.
#   2. Otherwise (root only) merge
#        {"runtimes":{"runsc":{"path":"/usr/bin/runsc","runtimeArgs":["--network=none"]}}}
#      into /etc/docker/daemon.json (other keys are kept; a changed file is
#      backed up next to it as daemon.json.bak.<time>).
#      --network=none is REQUIRED with Debian's runsc 20221219 here: without it
#      `docker run --runtime=runsc --network=none ...` fails with "cannot run
#      with network enabled in root network namespace".
#   3. If a daemon is already running it is sent SIGHUP (dockerd reloads the
#      "runtimes" key live; it is never stopped or restarted). If none
#      answers, /usr/sbin/dockerd is started with nohup in the background
#      (log: ${DOCKERD_LOG:-/tmp/dockerd.log}; extra flags from $DOCKERD_FLAGS)
#      and the script waits up to ${DOCKERD_WAIT:-30} s for it to answer.
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

runsc_ok() {
    # the daemon lists runsc, registered with --network=none
    docker info --format '{{json .Runtimes}}' 2>/dev/null \
        | grep -q '"runsc":{[^}]*"runtimeArgs":\["--network=none"\]'
}

RUNNING=0
if docker info >/dev/null 2>&1; then
    RUNNING=1
    if runsc_ok; then
        say "dockerd already running with the runsc runtime (--network=none); nothing to do"
        exit 0
    fi
fi

[ "$(id -u)" = 0 ] || die "no reachable Docker daemon has runsc registered with runtimeArgs [\"--network=none\"], and fixing that needs root" 2
[ "$RUNNING" = 1 ] || [ -x "$DOCKERD" ] || die "$DOCKERD not found: apt-get install docker.io" 2

# ---- merge the runsc runtime into daemon.json
mkdir -p "$(dirname "$DAEMON_JSON")"
MERGE_PY='
import json, os, sys, time
path, runsc = sys.argv[1], sys.argv[2]
cfg = {}
if os.path.exists(path) and os.path.getsize(path) > 0:
    with open(path) as f:
        cfg = json.load(f)
    if not isinstance(cfg, dict):
        sys.exit("%s is not a JSON object" % path)
want = {"path": runsc, "runtimeArgs": ["--network=none"]}
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
'
PY="$(command -v python3 || true)"
if [ -n "$PY" ]; then
    "$PY" -c "$MERGE_PY" "$DAEMON_JSON" "$RUNSC"
elif [ ! -s "$DAEMON_JSON" ]; then
    printf '{\n  "runtimes": {\n    "runsc": {\n      "path": "%s",\n      "runtimeArgs": ["--network=none"]\n    }\n  }\n}\n' \
        "$RUNSC" > "$DAEMON_JSON"
    say "registered runsc in $DAEMON_JSON"
else
    die "$DAEMON_JSON exists and python3 is not available to merge it; add the runsc runtime by hand"
fi

# ---- a daemon is already running: live-reload its runtimes
if [ "$RUNNING" = 1 ]; then
    pidfile=/var/run/docker.pid
    [ -s "$pidfile" ] || die "dockerd is running but $pidfile is missing; reload it by hand (kill -HUP <dockerd pid>)"
    say "asking the running dockerd (pid $(cat "$pidfile")) to reload $DAEMON_JSON (SIGHUP)"
    kill -HUP "$(cat "$pidfile")"
    for _ in $(seq 1 10); do
        if runsc_ok; then
            say "dockerd now lists the runsc runtime"
            exit 0
        fi
        sleep 1
    done
    die "dockerd did not pick up the runsc runtime after SIGHUP (is it using $DAEMON_JSON?)"
fi

# ---- start dockerd
say "starting $DOCKERD in the background (log: $LOG)"
# shellcheck disable=SC2086
nohup "$DOCKERD" ${DOCKERD_FLAGS:-} >>"$LOG" 2>&1 </dev/null &
DPID=$!
for _ in $(seq 1 "$WAIT"); do
    if docker info >/dev/null 2>&1; then
        if runsc_ok; then
            say "dockerd is up (pid $DPID) with the runsc runtime"
            exit 0
        fi
        die "dockerd is up (pid $DPID) but does not list the runsc runtime with --network=none; see $LOG and $DAEMON_JSON"
    fi
    if ! kill -0 "$DPID" 2>/dev/null; then
        tail -n 20 "$LOG" >&2 || true
        die "dockerd exited during startup; see $LOG"
    fi
    sleep 1
done
tail -n 20 "$LOG" >&2 || true
die "dockerd did not answer within ${WAIT}s (pid $DPID still running); see $LOG"
