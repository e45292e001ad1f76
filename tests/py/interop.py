"""Interop check: a plain pyzmq + msgpack client (from PyPI) talking wire protocol v1 to the daemon.

Usage: interop.py COMMAND_ENDPOINT EVENT_ENDPOINT TOKEN
Prints one JSON line with what it saw; exits non-zero on any protocol violation.
"""
import json
import sys
import time
import uuid

import msgpack
import zmq

cmd_ep, ev_ep, token = sys.argv[1:4]
ctx = zmq.Context()


def request(sock, cmd, args=None, req_id=None, with_token=True):
    body = {"v": 1, "id": req_id or uuid.uuid4().hex, "cmd": cmd, "args": args or {}}
    if with_token:
        body["token"] = token
    sock.send(msgpack.packb(body))
    if not sock.poll(5000):
        raise SystemExit(f"no reply to {cmd}")
    reply = msgpack.unpackb(sock.recv(), raw=False)
    assert reply["v"] == 1 and reply["id"] == body["id"], reply
    return reply


sub = ctx.socket(zmq.SUB)
# Authenticate first: the daemon forwards no subscription of a subscriber that has not sent this one.
sub.setsockopt_string(zmq.SUBSCRIBE, "batos-auth:" + token)
sub.setsockopt_string(zmq.SUBSCRIBE, "")
sub.connect(ev_ep)

req = ctx.socket(zmq.REQ)
req.connect(cmd_ep)
pong = request(req, "ping", with_token=False)
assert pong["ok"] and pong["result"]["pong"] is True, pong
denied = request(req, "status", with_token=False)
assert not denied["ok"] and denied["error"]["code"] == "unauthorized", denied

submitted = request(req, "submit_task", {"text": "hello from pyzmq"})
assert submitted["ok"], submitted
task_id = submitted["result"]["id"]
deadline = time.time() + 60
status = None
while time.time() < deadline:
    t = request(req, "get_task", {"id": task_id})
    status = t["result"]["status"]
    if status in ("done", "failed"):
        break
    time.sleep(0.1)
assert status == "done", status

dealer = ctx.socket(zmq.DEALER)
dealer.connect(cmd_ep)
body = {"v": 1, "id": "py-dealer", "token": token, "cmd": "list_tasks", "args": {}}
dealer.send_multipart([b"", msgpack.packb(body)])
assert dealer.poll(5000), "no reply on DEALER"
frames = dealer.recv_multipart()
assert frames[0] == b"" and len(frames) == 2, frames
listed = msgpack.unpackb(frames[1], raw=False)
assert any(t["id"] == task_id for t in listed["result"]["tasks"]), listed

kinds = set()
seqs = []
deadline = time.time() + 5
while time.time() < deadline and not {"heartbeat", "task.done"} <= kinds:
    if sub.poll(500):
        topic, raw = sub.recv_multipart()
        ev = msgpack.unpackb(raw, raw=False)
        assert ev["v"] == 1 and ev["kind"] == topic.decode(), ev
        kinds.add(ev["kind"])
        if ev["kind"] != "heartbeat":
            seqs.append(ev["seq"])
assert "heartbeat" in kinds, kinds
assert seqs == sorted(seqs), seqs
print(json.dumps({"task": task_id, "status": status, "kinds": sorted(kinds)}))
