#!/usr/bin/env python3
"""Manual check of the gVisor sandbox policy (not run by cargo; needs root + runsc).

    sudo python3 sandbox/attack-suite.py [--rootfs DIR] [--state DIR] [--bench N] [NAME ...]

Builds one OCI bundle per case from sandbox/oci-config.template.json, runs
`runsc --root STATE --network=none run --bundle B ID` with the request on
stdin, applies the wall-clock timeout the way batos does (`runsc kill ID KILL`,
then `runsc delete -force ID`), and prints a Markdown table of what happened.
Output is capped the way batos caps it (actors/src/tools/sandbox/runsc.rs):
stdout and stderr are each read up to --max-output + 4096 bytes; stdout past
that is an overflow (the sandbox is killed, there is no reply), stderr past it
is no longer read (its pipe is closed, so further writes fail with EPIPE).
Exit status 1 if any case did not end as expected. --bench N also prints the
median cold-run latency of a trivial call (in the sandbox and outside it).
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(HERE, "oci-config.template.json")
DEFAULT_ROOTFS = os.environ.get(
    "BATOS_SANDBOX_ROOTFS", os.path.expanduser("~/.cache/batos/sandbox/rootfs"))
# tools.max_output_bytes in config/settings.toml, and the stderr slack batos reads on top of it
# (STDERR_KEEP in actors/src/tools/sandbox/runsc.rs).
DEFAULT_MAX_OUTPUT = 1 << 20
STDERR_KEEP = 4096


def make_bundle(rootfs, cid, base):
    with open(TEMPLATE) as f:
        text = f.read()
    text = text.replace("@ROOTFS@", rootfs).replace("@ID@", cid)
    bdir = os.path.join(base, cid)
    os.makedirs(bdir)
    with open(os.path.join(bdir, "config.json"), "w") as f:
        f.write(text)
    return bdir


def read_capped(f, cap):
    """Reads f until EOF or until more than cap bytes came; returns (at most cap bytes, overflowed)."""
    buf = bytearray()
    fd = f.fileno()
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            return bytes(buf), False
        if len(buf) + len(chunk) > cap:
            buf += chunk[:cap - len(buf)]
            return bytes(buf), True
        buf += chunk


def run(args, req, timeout):
    req = dict(req, max_output_bytes=args.max_output)
    cap = args.max_output + STDERR_KEEP
    cid = "batos-attack-" + uuid.uuid4().hex[:12]
    bdir = make_bundle(args.rootfs, cid, args.bundles)
    cmd = ["runsc", "--root", args.state, "--network=none", "run", "--bundle", bdir, cid]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    got = {}

    def drain(name, f):
        got[name] = read_capped(f, cap)
        f.close()  # what batos does at the cap: stop reading, so the writer gets EPIPE

    readers = [threading.Thread(target=drain, args=(n, f), daemon=True)
               for n, f in (("out", p.stdout), ("err", p.stderr))]
    for t in readers:
        t.start()
    try:
        p.stdin.write(json.dumps(req).encode())
        p.stdin.close()
    except OSError:
        pass
    readers[0].join(timeout)
    timed_out = readers[0].is_alive()
    overflow = not timed_out and got["out"][1]
    if timed_out or overflow:
        subprocess.run(["runsc", "--root", args.state, "kill", cid, "KILL"],
                       capture_output=True)
    readers[0].join(10)
    readers[1].join(2)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    secs = time.monotonic() - t0
    subprocess.run(["runsc", "--root", args.state, "delete", "-force", cid], capture_output=True)
    shutil.rmtree(bdir, ignore_errors=True)
    out, _ = got.get("out", (b"", False))
    err, err_overflow = got.get("err", (b"", False))
    reply = None
    if not (timed_out or overflow):
        lines = [ln for ln in out.decode("utf-8", "replace").splitlines() if ln.strip()]
        if lines:
            try:
                reply = json.loads(lines[-1])
            except ValueError:
                reply = None
    return {"rc": p.returncode, "secs": secs, "timed_out": timed_out, "reply": reply,
            "overflow": overflow, "stdout_bytes": len(out), "stderr_bytes": len(err),
            "stderr_overflow": err_overflow, "cap": cap}


def call(args, src, timeout=15):
    return run(args, {"mode": "call", "source": src, "function": "f", "args": {}}, timeout)


def err_has(*words):
    def pred(r):
        e = (r["reply"] or {}).get("error", "")
        return r["rc"] == 0 and any(w in e for w in words)
    return pred


def value_pred(fn):
    def pred(r):
        return r["rc"] == 0 and r["reply"] is not None and "value" in r["reply"] \
            and fn(r["reply"]["value"])
    return pred


def flood_contained(r):
    e = (r["reply"] or {}).get("error", "")
    return (r["rc"] == 0 and not r["overflow"] and r["stdout_bytes"] <= r["cap"]
            and r["stderr_overflow"]
            and (r["reply"] == {"value": "done"} or "Broken pipe" in e or "BrokenPipe" in e))


def cases(port):
    return [
        ("tcp connect to host 127.0.0.1:%d" % port,
         'import socket\ndef f():\n  s=socket.socket(); s.settimeout(3)\n'
         '  s.connect(("127.0.0.1", %d))\n  return "connected"' % port,
         15, err_has("Connection refused", "unreachable", "No route")),
        ("tcp connect to 1.1.1.1:80",
         'import socket\ndef f():\n  socket.create_connection(("1.1.1.1", 80), timeout=3)\n'
         '  return "connected"', 15, err_has("No route", "unreachable", "Network")),
        ("DNS lookup", 'import socket\ndef f():\n  return socket.getaddrinfo("example.com", 80)',
         15, err_has("name resolution", "gaierror")),
        ("network interfaces", 'import socket\ndef f():\n  return socket.if_nameindex()',
         15, value_pred(lambda v: [n for _, n in v] in ([], ["lo"]))),
        ("read /etc/shadow", 'def f():\n  return open("/etc/shadow").read()', 15,
         err_has("FileNotFoundError", "PermissionError")),
        ("read /root/.bashrc", 'def f():\n  return open("/root/.bashrc").read()', 15,
         err_has("FileNotFoundError", "PermissionError")),
        ("write to /", 'def f():\n  open("/pwned","w").write("x")\n  return "wrote"', 15,
         err_has("Permission denied", "Read-only")),
        ("write 20 MiB to /tmp", 'def f():\n  with open("/tmp/big","wb") as fh:\n'
         '    for i in range(20): fh.write(b"x"*(1<<20))\n  return "wrote"', 15,
         err_has("File too large", "No space")),
        ("os.setuid(0)", 'import os\ndef f():\n  os.setuid(0)\n  return os.getuid()', 15,
         err_has("Operation not permitted")),
        ("list other tools' files",
         'import os\ndef f():\n  r=[]\n  for p in ["/root","/home","/work","/data"]:\n'
         '    if os.path.exists(p): r.append(p)\n  return r + sorted(os.listdir("/etc"))',
         15, value_pred(lambda v: v == ["group", "passwd"])),
        ("fork bomb", 'import os, time\ndef f():\n  while True:\n    if os.fork()==0:\n'
         '      time.sleep(60); os._exit(0)', 20,
         lambda r: r["reply"] is None and r["rc"] in (2, 137)),
        ("allocate 1 GiB", 'def f():\n  b=bytearray(1<<30)\n  return len(b)', 30,
         lambda r: err_has("MemoryError")(r) or r["rc"] == 137),
        ("2 processes x 150 MiB",
         'import os\ndef f():\n  pid=os.fork()\n  b=bytearray(150<<20)\n'
         '  for i in range(0,len(b),4096): b[i]=1\n  if pid==0: os._exit(0)\n'
         '  os.waitpid(pid,0)\n  return len(b)', 30, lambda r: r["rc"] == 137),
        ("spin forever (timeout 3 s)", 'def f():\n  while True: pass', 3,
         lambda r: r["timed_out"] and r["rc"] == 137),
        # fd 1 is the runner's stderr: the flood must land there (stderr hit the cap) and the reply
        # channel must stay one small JSON line: "done" if the writes went through, or the broken pipe
        # the capped reader causes. Never more than the cap on stdout, never an overflow.
        ("print 100 MiB", 'import os\ndef f():\n  for i in range(100): os.write(1, b"x"*(1<<20))\n'
         '  return "done"', 30, flood_contained),
        # The runner's private reply descriptor (fd 3, a dup of the real stdout) can be found and
        # written by the tool: only the reader's cap contains that. Overflow, killed, no reply.
        ("write 100 MiB to the reply fd", 'import os, stat\ndef f():\n  fds=[]\n'
         '  for n in os.listdir("/proc/self/fd"):\n    fd=int(n)\n'
         '    try: m=os.fstat(fd).st_mode\n    except OSError: continue\n'
         '    if fd>2 and not stat.S_ISREG(m) and not stat.S_ISDIR(m): fds.append(fd)\n'
         '  if not fds: return "no reply fd"\n  for fd in fds:\n    left=100<<20\n'
         '    while left>0: left-=os.write(fd, b"x"*min(left, 1<<20))\n  return fds', 30,
         lambda r: r["overflow"] and r["reply"] is None and r["stdout_bytes"] <= r["cap"]),
        ("return 100 MiB", 'def f():\n  return "x"*(100<<20)', 30, err_has("too large")),
        ("os._exit(7)", 'import os\ndef f():\n  os._exit(7)', 15,
         lambda r: r["rc"] == 7 and r["reply"] is None),
        ("SIGSEGV", 'import ctypes\ndef f():\n  return ctypes.string_at(0)', 15,
         lambda r: r["rc"] == 139 and r["reply"] is None),
    ]


def bench(args, n):
    req = {"mode": "call", "source": "def f(a, b):\n    return a + b\n", "function": "f",
           "args": {"a": 1, "b": 2}}
    ts = []
    for _ in range(n):
        r = run(args, req, 30)
        assert r["reply"] == {"value": 3}, r
        ts.append(r["secs"])
    floor = []
    for _ in range(n):
        t0 = time.monotonic()
        p = subprocess.run(["/usr/bin/python3.11", "-I", "-S", os.path.join(HERE, "runner.py")],
                           input=json.dumps(req).encode(), capture_output=True)
        floor.append(time.monotonic() - t0)
        assert p.stdout.strip() == b'{"value": 3}', p
    print("cold run, trivial call: runsc median %.3f s (min %.3f, max %.3f); "
          "plain python3 runner.py median %.3f s" % (statistics.median(ts), min(ts), max(ts),
                                                     statistics.median(floor)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rootfs", default=DEFAULT_ROOTFS)
    ap.add_argument("--state", default=None, help="runsc --root (default: a temp dir)")
    ap.add_argument("--bench", type=int, default=0)
    ap.add_argument("--max-output", type=int, default=DEFAULT_MAX_OUTPUT,
                    help="tools.max_output_bytes (default %(default)s, as shipped)")
    ap.add_argument("names", nargs="*", help="substrings of case names to run")
    args = ap.parse_args()
    if not os.path.isfile(os.path.join(args.rootfs, ".batos-stamp")):
        sys.exit("no rootfs at %s: run sandbox/build-rootfs.sh first" % args.rootfs)
    tmp = tempfile.mkdtemp(prefix="batos-attack-")
    args.bundles = os.path.join(tmp, "bundles")
    os.makedirs(args.bundles)
    args.state = args.state or os.path.join(tmp, "state")

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    hits = []

    def accept():
        while True:
            c, a = srv.accept()
            hits.append(a)
            c.close()
    threading.Thread(target=accept, daemon=True).start()

    failed = 0
    try:
        if args.bench:
            bench(args, args.bench)
        print("| case | exit | time | reply / outcome | as expected |")
        print("|---|---|---|---|---|")
        for name, src, timeout, pred in cases(srv.getsockname()[1]):
            if args.names and not any(s in name for s in args.names):
                continue
            r = call(args, src, timeout)
            ok = pred(r)
            failed += not ok
            outcome = json.dumps(r["reply"])[:90] if r["reply"] is not None else "(no JSON)"
            if r["timed_out"]:
                outcome += " (killed by timeout)"
            if r["overflow"]:
                outcome += " (stdout over the cap: killed)"
            if r["stderr_bytes"] > 100000:
                outcome += " (stderr %d bytes)" % r["stderr_bytes"]
            print("| %s | %s | %.2f s | %s | %s |" % (name, r["rc"], r["secs"],
                                                     outcome.replace("|", "\\|"),
                                                     "yes" if ok else "**NO**"), flush=True)
        if hits:
            failed += 1
            print("host listener was reached from the sandbox: %r" % hits)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
