"""CurveZMQ check: unmodified pyzmq (libzmq) clients with CURVE keys talking to the daemon, and the ones it
must refuse. Every CURVE connection goes through a recording TCP proxy, so the bytes on the wire are read.

Usage: curve.py COMMAND_ENDPOINT EVENT_ENDPOINT TOKEN DATA_DIR
Prints one JSON line with what it saw; exits non-zero on any failure.
"""
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid

import msgpack
import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

cmd_ep, ev_ep, token, data_dir = sys.argv[1:5]
ctx = zmq.Context()
secret = "a task only the household may read " + uuid.uuid4().hex


class Recorder:
    """A TCP proxy on a free loopback port that forwards to `target` and keeps every byte each way."""

    def __init__(self, target):
        host, port = target.replace("tcp://", "").rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.endpoint = "tcp://127.0.0.1:%d" % self.listener.getsockname()[1]
        self.up = []  # bytes client -> daemon, per connection
        self.down = bytearray()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            s = socket.create_connection(self.target)
            up = bytearray()
            self.up.append(up)
            threading.Thread(target=self.pump, args=(c, s, up), daemon=True).start()
            threading.Thread(target=self.pump, args=(s, c, self.down), daemon=True).start()

    @staticmethod
    def pump(a, b, keep):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                keep.extend(data)
                b.sendall(data)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def wire(self):
        return b"".join(bytes(u) for u in self.up) + bytes(self.down)


def request(sock, cmd, args=None):
    body = {"v": 1, "id": uuid.uuid4().hex, "cmd": cmd, "args": args or {}, "token": token}
    sock.send(msgpack.packb(body))
    if not sock.poll(10000):
        raise SystemExit(f"no reply to {cmd}")
    reply = msgpack.unpackb(sock.recv(), raw=False)
    assert reply["v"] == 1 and reply["id"] == body["id"], reply
    return reply


def keyed(kind, public, secret_key, server):
    s = ctx.socket(kind)
    s.sndtimeo = 10000
    s.curve_publickey = public
    s.curve_secretkey = secret_key
    s.curve_serverkey = server
    s.linger = 0
    return s


def refused(public, secret_key, server, endpoint):
    """Whether a CURVE DEALER with these keys is refused: an auth failure, or no reply."""
    s = keyed(zmq.DEALER, public, secret_key, server)
    mon = s.get_monitor_socket()
    s.connect(endpoint)
    events = []
    deadline = time.time() + 3
    while time.time() < deadline:
        if mon.poll(200):
            events.append(recv_monitor_message(mon)["event"])
    # A refused DEALER may have no pipe left to queue on: a send that cannot go is not an answer either.
    s.sndtimeo = 1000
    try:
        s.send_multipart([b"", msgpack.packb({"v": 1, "id": "x", "cmd": "ping", "args": {}})])
        answered = bool(s.poll(1500))
    except zmq.Again:
        answered = False
    s.disable_monitor()
    mon.close(linger=0)
    s.close(linger=0)
    return zmq.EVENT_HANDSHAKE_SUCCEEDED not in events and not answered, events


server_public, _ = zmq.auth.load_certificate(os.path.join(data_dir, "curve", "server.key"))
keys_dir = tempfile.mkdtemp()
public_file, secret_file = zmq.auth.create_certificates(keys_dir, "py")
public, secret_key = zmq.auth.load_certificate(secret_file)
stranger_public, stranger_secret = zmq.curve_keypair()

# A key not yet in the allowed folder is refused; once its certificate is copied there, it is let in.
before, events_before = refused(public, secret_key, server_public, cmd_ep)
assert before, ("an unknown key was let in", events_before)
shutil.copy(public_file, os.path.join(data_dir, "curve", "clients", "py.key"))

cmd_rec, ev_rec = Recorder(cmd_ep), Recorder(ev_ep)
sub = keyed(zmq.SUB, public, secret_key, server_public)
sub.setsockopt_string(zmq.SUBSCRIBE, "batos-auth:" + token)
sub.setsockopt_string(zmq.SUBSCRIBE, "")
sub.connect(ev_rec.endpoint)
req = keyed(zmq.REQ, public, secret_key, server_public)
req.connect(cmd_rec.endpoint)
pong = request(req, "ping")
assert pong["ok"] and pong["result"]["pong"] is True, pong
time.sleep(0.5)  # the subscription reaches the daemon
submitted = request(req, "submit_task", {"text": secret})
assert submitted["ok"], submitted
task_id = submitted["result"]["id"]
deadline = time.time() + 60
status = None
while time.time() < deadline:
    status = request(req, "get_task", {"id": task_id})["result"]["status"]
    if status in ("done", "failed"):
        break
    time.sleep(0.1)
assert status == "done", status
kinds = set()
deadline = time.time() + 10
while time.time() < deadline and "task.done" not in kinds:
    if sub.poll(500):
        topic, raw_event = sub.recv_multipart()
        ev = msgpack.unpackb(raw_event, raw=False)
        assert ev["v"] == 1 and ev["kind"] == topic.decode(), ev
        kinds.add(ev["kind"])
assert "task.done" in kinds, kinds

# A DEALER with libzmq's heartbeats on: its PINGs are answered, and a request after a few of them works.
dealer = keyed(zmq.DEALER, public, secret_key, server_public)
dealer.heartbeat_ivl = 200
dealer.heartbeat_timeout = 1000
dealer.connect(cmd_rec.endpoint)
time.sleep(1.2)
body = {"v": 1, "id": "py-curve-dealer", "token": token, "cmd": "list_tasks", "args": {}}
dealer.send_multipart([b"", msgpack.packb(body)])
assert dealer.poll(5000), "no reply on the CURVE DEALER"
reply = msgpack.unpackb(dealer.recv_multipart()[-1], raw=False)
assert reply["ok"], reply

# Nothing readable crossed the wire: not the token, not the task's text, not its id.
wire = cmd_rec.wire() + ev_rec.wire()
for needle in (token.encode(), secret.encode(), task_id.encode()):
    assert needle not in wire, ("clear text on the wire", needle)

# A stranger's key, and a replay of a captured handshake (greeting, HELLO, INITIATE), are refused.
stranger, stranger_events = refused(stranger_public, stranger_secret, server_public, cmd_ep)
assert stranger, ("a stranger's key was let in", stranger_events)
captured = bytes(cmd_rec.up[0])
host, port = cmd_ep.replace("tcp://", "").rsplit(":", 1)
raw = socket.create_connection((host, int(port)))
raw.settimeout(3)
raw.sendall(captured[:64 + 202 + 300])
got = b""
try:
    while True:
        data = raw.recv(65536)
        if not data:
            break
        got += data
except ConnectionResetError:
    pass  # dropped with the replayed bytes unread: a reset, not a close
except socket.timeout:
    raise SystemExit("a replayed handshake was kept open")
# The daemon answered the greeting and a WELCOME (a new cookie), then dropped the replayed INITIATE: no READY.
assert b"READY" not in got, got
raw.close()

# The daemon lives: the same CURVE client is answered again.
again = request(req, "ping")
assert again["ok"], again
print(json.dumps({"status": status, "kinds": sorted(kinds), "wire_bytes": len(wire),
                  "unknown_key_events": events_before, "stranger_events": stranger_events}), flush=True)
# No socket may hold the exit: libzmq's context waits for lingering sockets.
ctx.destroy(linger=0)
os._exit(0)
