"""Two-way liveness with unmodified pyzmq (libzmq) clients.

1. A DEALER and a SUB with libzmq heartbeats on (ZMQ_HEARTBEAT_IVL) keep their connections across many PINGs
   each way and are still answered: the daemon's front answers their PINGs (the socket behind knows no PING).
2. A client process stopped with SIGSTOP (its socket open, nothing answering) is dropped by the daemon within
   its liveness timeout: its connection is seen closing from the daemon's side in /proc/net/tcp.

3. An idle client without heartbeats of its own stays: libzmq answers the daemon's PINGs.

Usage: liveness.py COMMAND_ENDPOINT EVENT_ENDPOINT TOKEN TIMEOUT_MS
Prints one JSON line with what it saw; exits non-zero on any failure.
"""
import json
import os
import signal
import subprocess
import sys
import time

import msgpack
import zmq
from zmq.utils.monitor import recv_monitor_message

cmd_ep, ev_ep, token, timeout_ms = sys.argv[1:5]
timeout = int(timeout_ms) / 1000.0
ctx = zmq.Context()
port = int(cmd_ep.rsplit(":", 1)[1])


def request(sock, cmd, rid):
    sock.send_multipart([b"", msgpack.packb({"v": 1, "id": rid, "token": token, "cmd": cmd, "args": {}})])
    if not sock.poll(5000):
        raise SystemExit("no reply to %s" % rid)
    frames = sock.recv_multipart()
    reply = msgpack.unpackb(frames[-1])
    assert reply["ok"] and reply["id"] == rid, reply
    return reply


def disconnects(monitor):
    n = 0
    while monitor.poll(0):
        ev = recv_monitor_message(monitor)
        if ev["event"] in (zmq.EVENT_DISCONNECTED, zmq.EVENT_CLOSED):
            n += 1
    return n


# 1. Heartbeating clients stay connected and answered.
dealer = ctx.socket(zmq.DEALER)
dealer.setsockopt(zmq.HEARTBEAT_IVL, 100)
dealer.setsockopt(zmq.HEARTBEAT_TIMEOUT, 1000)
dealer.setsockopt(zmq.LINGER, 0)
mon = dealer.get_monitor_socket()
dealer.connect(cmd_ep)
request(dealer, "ping", "hb-1")
# Without heartbeats of its own: libzmq answers the front's PINGs in its I/O thread, so an idle client stays.
quiet = ctx.socket(zmq.DEALER)
quiet.setsockopt(zmq.LINGER, 0)
quiet_mon = quiet.get_monitor_socket()
quiet.connect(cmd_ep)
request(quiet, "ping", "quiet-1")
sub = ctx.socket(zmq.SUB)
sub.setsockopt(zmq.HEARTBEAT_IVL, 100)
sub.setsockopt(zmq.HEARTBEAT_TIMEOUT, 1000)
sub.setsockopt(zmq.LINGER, 0)
sub_mon = sub.get_monitor_socket()
sub.setsockopt_string(zmq.SUBSCRIBE, "batos-auth:" + token)
sub.setsockopt_string(zmq.SUBSCRIBE, "")
sub.connect(ev_ep)
time.sleep(max(1.5, 3 * timeout))
request(dealer, "ping", "hb-2")
request(quiet, "ping", "quiet-2")
dealer_drops = disconnects(mon)
quiet_drops = disconnects(quiet_mon)
assert quiet_drops == 0, "an idle client answering PINGs was dropped %d times" % quiet_drops
sub_drops = disconnects(sub_mon)
assert dealer_drops == 0, "the heartbeating DEALER was disconnected %d times" % dealer_drops
assert sub_drops == 0, "the heartbeating SUB was disconnected %d times" % sub_drops
while sub.poll(0):
    sub.recv_multipart()
assert sub.poll(5000), "the heartbeating SUB hears no events"

# 2. A stopped client is dropped within its timeout.
def connections():
    """Local ports of loopback connections to the daemon's command port, with their TCP state."""
    seen = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            local, remote, state = f[1], f[2], f[3]
            if int(remote.rsplit(":", 1)[1], 16) == port:
                seen[int(local.rsplit(":", 1)[1], 16)] = state
    return seen


before = set(connections())
child = subprocess.Popen(
    [sys.executable, "-c", """
import sys, time, msgpack, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.DEALER)
s.connect(sys.argv[1])
s.send_multipart([b"", msgpack.packb({"v": 1, "id": "stopped-1", "token": sys.argv[2], "cmd": "ping", "args": {}})])
assert s.poll(5000)
s.recv_multipart()
print("ready", flush=True)
time.sleep(600)
""", cmd_ep, token],
    stdout=subprocess.PIPE,
)
try:
    assert child.stdout.readline().strip() == b"ready"
    mine = [p for p, st in connections().items() if p not in before and st == "01"]
    assert len(mine) == 1, "the stopped client's connection not found: %s" % connections()
    mine = mine[0]
    os.kill(child.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    # ESTABLISHED (01) until the daemon hangs up; then CLOSE_WAIT (08) on the stopped side.
    while connections().get(mine) == "01":
        if time.monotonic() - stopped > timeout + 5:
            raise SystemExit("the stopped client was not dropped in %.1f s" % (timeout + 5))
        time.sleep(0.05)
    dropped_after = time.monotonic() - stopped
finally:
    child.kill()
    child.wait()

print(json.dumps({
    "heartbeat_dealer_disconnects": dealer_drops,
    "heartbeat_sub_disconnects": sub_drops,
    "idle_disconnects": quiet_drops,
    "stopped_dropped_after_s": round(dropped_after, 2),
}))
