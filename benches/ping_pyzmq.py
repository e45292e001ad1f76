"""Gateway ping round trips from an independent client (pyzmq / libzmq), daemon against daemon (issue 31).

Usage (from the repository root, with the test venv's python):
    python benches/ping_pyzmq.py SECONDS ROUNDS BIN [BIN ...]

For each round and each BIN in turn: starts `BIN run` on the shipped settings (config/settings.toml) with a
temporary data dir, free ports, Ollama at a closed port (no command here reaches a model), the Curator and the
Motivator off and logs at warn (as tests/e2e/support/daemon.rs does); waits for its first pong; then for SECONDS
sends pings from a pyzmq REQ socket in blocks of 50, each block followed by 50 round trips through a pyzmq
REQ/REP echo in this process (the same transport, no daemon); stops the daemon. Prints one JSON line per run
with the p50/p99 of each (microseconds). Interleaving the daemons round by round lets a shared machine's drifts
fall on all of them alike: compare the ping medians of one run.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import msgpack
import zmq

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_key(lines, section, key, value):
    """Sets `key = value` in `[section]` (None: before the first section) of a TOML file's lines."""
    current = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[["):
            current = stripped.strip("[]").strip()
        elif current == section and stripped.split("=")[0].strip() == key:
            lines[i] = f"{key} = {json.dumps(value)}\n"
            return
    raise SystemExit(f"no {key} in [{section}] of config/settings.toml")


def config(root, cport, eport):
    cfg = os.path.join(root, "config")
    os.makedirs(os.path.join(cfg, "exam"))
    for f in ["codex.toml", "forge-general.jsonl", "exam/gate.jsonl"]:
        shutil.copy(os.path.join(REPO, "config", f), os.path.join(cfg, f))
    lines = open(os.path.join(REPO, "config", "settings.toml")).readlines()
    for section, key, value in [
        (None, "data_dir", "../data"),
        ("gateway", "command_endpoint", f"tcp://127.0.0.1:{cport}"),
        ("gateway", "event_endpoint", f"tcp://127.0.0.1:{eport}"),
        ("llm", "backend", "ollama"),
        ("llm", "ollama_url", f"http://127.0.0.1:{free_port()}"),
        ("tools", "rootfs", os.path.join(REPO, "data", "sandbox", "rootfs")),
        ("tools", "pool_size", 0),
        ("curator", "enabled", False),
        ("motivator", "enabled", False),
        ("log", "level", "warn"),
    ]:
        set_key(lines, section, key, value)
    path = os.path.join(cfg, "settings.toml")
    open(path, "w").writelines(lines)
    return path


def ping(s):
    body = msgpack.packb({"v": 1, "id": uuid.uuid4().hex, "cmd": "ping", "args": {}})
    t = time.perf_counter()
    s.send(body)
    if not s.poll(5000):
        raise SystemExit("no reply within 5 s")
    reply = s.recv()
    dt = (time.perf_counter() - t) * 1e6
    return dt, reply


def run(ctx, bin_path, seconds, echo_ep):
    root = tempfile.mkdtemp()
    cport, eport = free_port(), free_port()
    proc = subprocess.Popen([bin_path, "run", "--config", config(root, cport, eport)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        gw = ctx.socket(zmq.REQ)
        gw.linger = 0
        gw.connect(f"tcp://127.0.0.1:{cport}")
        raw = ctx.socket(zmq.REQ)
        raw.linger = 0
        raw.connect(echo_ep)
        deadline = time.time() + 120
        while True:  # the daemon's first pong (it may still be starting its organs)
            gw.send(msgpack.packb({"v": 1, "id": uuid.uuid4().hex, "cmd": "ping", "args": {}}))
            if gw.poll(1000):
                gw.recv()
                break
            if time.time() > deadline or proc.poll() is not None:
                raise SystemExit(f"{bin_path}: no pong")
            gw.close()
            gw = ctx.socket(zmq.REQ)
            gw.linger = 0
            gw.connect(f"tcp://127.0.0.1:{cport}")
        for _ in range(50):
            _, r = ping(gw)
            ping(raw)
        reply = msgpack.unpackb(r, raw=False)
        assert reply.get("ok"), reply
        times = {"ping": [], "echo": []}
        end = time.time() + seconds
        while time.time() < end:
            times["ping"] += [ping(gw)[0] for _ in range(50)]
            times["echo"] += [ping(raw)[0] for _ in range(50)]
        gw.close()
        raw.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)

    def pct(v, p):
        v = sorted(v)
        return v[min(len(v) - 1, int(p / 100 * len(v)))]

    return {k: {"p50_us": round(pct(v, 50)), "p99_us": round(pct(v, 99)), "n": len(v)} for k, v in times.items()}


def main():
    seconds, rounds, bins = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    echo_port = rep.bind_to_random_port("tcp://127.0.0.1")

    def echo():
        while True:
            rep.send(rep.recv())

    threading.Thread(target=echo, daemon=True).start()
    for r in range(rounds):
        for b in bins:
            out = run(ctx, b, seconds, f"tcp://127.0.0.1:{echo_port}")
            print(json.dumps({"round": r + 1, "bin": b, **out}), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
