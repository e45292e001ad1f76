#!/usr/bin/env python3
"""Manual check of the gVisor sandbox policy (not run by cargo; needs root + runsc).

    sudo python3 sandbox/attack-suite.py [--rootfs DIR] [--state DIR] [--bench N] [NAME ...]

Builds one OCI bundle per case from sandbox/oci-config.template.json, runs
`runsc --root STATE --network=none run --bundle B ID` with the request on
stdin, applies the wall-clock timeout the way batos does (`runsc kill ID KILL`,
then `runsc delete -force ID`), and prints a Markdown table of what happened.
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


def make_bundle(rootfs, cid, base):
    with open(TEMPLATE) as f:
        text = f.read()
    text = text.replace("@ROOTFS@", rootfs).replace("@ID@", cid)
    bdir = os.path.join(base, cid)
    os.makedirs(bdir)
    with open(os.path.join(bdir, "config.json"), "w") as f:
        f.write(text)
    return bdir


def run(args, req, timeout, cap=1 << 20):
    cid = "batos-attack-" + uuid.uuid4().hex[:12]
    bdir = make_bundle(args.rootfs, cid, args.bundles)
    cmd = ["runsc", "--root", args.state, "--network=none", "run", "--bundle", bdir, cid]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    timed_out = False
    try:
        out, err = p.communicate(json.dumps(req).encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        subprocess.run(["runsc", "--root", args.state, "kill", cid, "KILL"],
                       capture_output=True)
        try:
            out, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
    secs = time.monotonic() - t0
    subprocess.run(["runsc", "--root", args.state, "delete", "-force", cid], capture_output=True)
    shutil.rmtree(bdir, ignore_errors=True)
    lines = [ln for ln in out.decode("utf-8", "replace").splitlines() if ln.strip()]
    reply = None
    if lines:
        try:
            reply = json.loads(lines[-1])
        except ValueError:
            reply = None
    return {"rc": p.returncode, "secs": secs, "timed_out": timed_out, "reply": reply,
            "stdout_bytes": len(out), "stderr_bytes": len(err)}


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
        ("print 100 MiB", 'import os\ndef f():\n  for i in range(100): os.write(1, b"x"*(1<<20))\n'
         '  return "done"', 30, lambda r: r["rc"] == 0 and r["reply"] == {"value": "done"}),
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
