"""Ping round trip through the gateway, clear text (NULL) against CURVE, on one daemon in one run.

Usage: curve_ping.py COMMAND_ENDPOINT DATA_DIR PINGS
Alternates blocks of pings between a clear-text REQ and a CURVE REQ (same libzmq, same machine), so both meet
the same weather; prints one JSON line with the p50 and p99 of each, in microseconds, and the p50 ratio.
"""
import json
import os
import shutil
import sys
import tempfile
import time
import uuid

import msgpack
import zmq
import zmq.auth

cmd_ep, data_dir, pings = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = zmq.Context()
server_public, _ = zmq.auth.load_certificate(os.path.join(data_dir, "curve", "server.key"))
keys_dir = tempfile.mkdtemp()
public_file, secret_file = zmq.auth.create_certificates(keys_dir, "bench")
public, secret = zmq.auth.load_certificate(secret_file)
shutil.copy(public_file, os.path.join(data_dir, "curve", "clients", "bench.key"))

clear = ctx.socket(zmq.REQ)
curve = ctx.socket(zmq.REQ)
curve.curve_serverkey, curve.curve_publickey, curve.curve_secretkey = server_public, public, secret
for s in (clear, curve):
    s.linger = 0
    s.connect(cmd_ep)


def ping(s):
    body = msgpack.packb({"v": 1, "id": uuid.uuid4().hex, "cmd": "ping", "args": {}})
    t = time.perf_counter()
    s.send(body)
    if not s.poll(5000):
        raise SystemExit("no pong")
    reply = msgpack.unpackb(s.recv(), raw=False)
    assert reply["ok"], reply
    return (time.perf_counter() - t) * 1e6


for s in (clear, curve):  # connect and warm both
    for _ in range(20):
        ping(s)
times = {"null": [], "curve": []}
block = 50
while len(times["curve"]) < pings:
    for name, s in (("null", clear), ("curve", curve)):
        times[name].extend(ping(s) for _ in range(min(block, pings - len(times[name]))))


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100 * len(v)))]


out = {k: {"p50_us": round(pct(v, 50)), "p99_us": round(pct(v, 99)), "n": len(v)} for k, v in times.items()}
out["ratio_p50"] = round(out["curve"]["p50_us"] / out["null"]["p50_us"], 3)
print(json.dumps(out), flush=True)
ctx.destroy(linger=0)
os._exit(0)
