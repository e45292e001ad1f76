"""The HTTP door as its clients meet it (issue 33): plain HTTP for commands and events, the login cookie,
and the official OpenAI Python client. Prints one JSON object of what it saw; asserts what must hold.

usage: http_door.py BASE_URL TOKEN
"""
import json
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request

import openai

base, token = sys.argv[1], sys.argv[2]
auth = {"Authorization": f"Bearer {token}"}
seen = {}


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **kw):
        return None


opener = urllib.request.build_opener(NoRedirect)


class Resp:
    """What a test reads of a response: status, headers, text, json()."""

    def __init__(self, status, headers, body):
        self.status_code, self.headers, self.content = status, headers, body
        self.text = body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.content)


def request(method, path, body=None, headers=None, form=None, js=None):
    headers = dict(headers or {})
    if js is not None:
        body = json.dumps(js).encode()
        headers.setdefault("Content-Type", "application/json")
    if form is not None:
        body = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(base + path, data=body, headers=headers, method=method)
    try:
        with opener.open(req, timeout=60) as r:
            return Resp(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        return Resp(e.code, e.headers, e.read())


def cmd(name, args=None, headers=None):
    return request("POST", f"/api/v1/commands/{name}", js=args, headers=auth if headers is None else headers)


# The page and its headers.
r = request("GET", "/")
assert r.status_code == 200, r.status_code
csp = r.headers["content-security-policy"]
assert "script-src 'self'" in csp and "unsafe-inline" not in csp, csp
assert r.headers["x-content-type-options"] == "nosniff"
seen["page"] = "<main id=\"app\"" in r.text

# Commands: refused without the token, answered with it, errors with their statuses.
r = cmd("ping", {}, headers={})
assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", r.text
r = cmd("status", {}, headers={"Authorization": "Bearer wrong"})
assert r.status_code == 401, r.text
r = cmd("status")
assert r.status_code == 200 and r.json()["ok"], r.text
seen["status_keys"] = sorted(r.json()["result"].keys())
r = cmd("no_such_command", {})
assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_command", r.text
r = request("POST", "/api/v1/commands/status", body=b"{not json", headers=auth)
assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", r.text
r = cmd("submit_task", {"txt": "x"})
assert r.status_code == 400 and "txt" in r.json()["error"]["message"], r.text
try:
    r = request("POST", "/api/v1/commands/status", body=b"x" * 3_000_000, headers=auth)
    assert r.status_code == 413, r.status_code
except (ConnectionResetError, BrokenPipeError, urllib.error.URLError):
    pass  # the door may answer 413 and close before the whole body is sent

# Idempotency-Key is the request id: a retry gets the first reply, the task is not submitted twice.
key = {"Idempotency-Key": "http-door-retry-1", **auth}
a = cmd("submit_task", {"text": "What is 2+2?"}, headers=key).json()
b = cmd("submit_task", {"text": "What is 2+2?"}, headers=key).json()
assert a["ok"] and a["result"]["id"] == b["result"]["id"], (a, b)
seen["retried_task"] = a["result"]["id"]

# The cookie: a wrong token is refused, the right one logs in; reads work, writes need the CSRF header.
r = request("POST", "/login", form={"token": "wrong"})
assert r.status_code == 401, r.status_code
r = request("GET", "/login?once=" + "0" * 64)
assert r.status_code == 401, r.status_code
r = request("POST", "/login", form={"token": token})
assert r.status_code == 303, r.status_code
set_cookie = r.headers["set-cookie"]
assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie, set_cookie
assert token not in set_cookie, "the cookie must not carry the token"
jar = {"Cookie": set_cookie.split(";")[0]}
assert request("GET", "/v1/models", headers=jar).status_code == 200
r = request("POST", "/api/v1/commands/status", js={}, headers=jar)
assert r.status_code == 403, r.status_code
r = request("POST", "/api/v1/commands/status", js={}, headers={**jar, "X-Batos-Csrf": "1"})
assert r.status_code == 200, r.text

# Events: a snapshot first, then every event after it in seq order, through a task's end.
events = []
task_holder = {}


def follow():
    req = urllib.request.Request(base + "/api/v1/events", headers=auth)
    with urllib.request.urlopen(req, timeout=60) as s:
        assert s.status == 200, s.status
        assert s.headers["content-type"].startswith("text/event-stream")
        kind = None
        for raw in s:
            line = raw.decode().rstrip("\n")
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                body = json.loads(line[5:].strip())
                events.append((kind, body))
                if kind == "snapshot":
                    started.set()
                if kind == "task.done" and body["data"]["id"] == task_holder.get("id"):
                    return


started = threading.Event()
t = threading.Thread(target=follow, daemon=True)
t.start()
assert started.wait(30), "no snapshot"
r = cmd("submit_task", {"text": "Name a colour."}).json()
task_holder["id"] = r["result"]["id"]
t.join(90)
assert not t.is_alive(), "the stream did not carry the task to its end"
kinds = [k for k, _ in events]
assert kinds[0] == "snapshot", kinds[:3]
floor = events[0][1]["seq"]
seqs = [b["seq"] for k, b in events[1:] if k not in ("heartbeat", "resync")]
assert all(s > floor for s in seqs), (floor, seqs[:5])
assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a gap in the stream"
mine = [k for k, b in events if k.startswith("task.") and b["data"].get("id") == task_holder["id"]]
assert mine[0] == "task.submitted" and mine[-1] == "task.done", mine
seen["event_kinds"] = sorted(set(kinds))

# The official OpenAI client: models, a streamed completion, a whole one, a wrong key.
client = openai.OpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0, timeout=120)
models = [m.id for m in client.models.list().data]
assert models == ["batos"], models
pieces, chunk_id = [], None
for chunk in client.chat.completions.create(
    model="batos", messages=[{"role": "user", "content": "What is the capital of France?"}], stream=True
):
    chunk_id = chunk.id
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
streamed = "".join(pieces)
task_id = chunk_id.removeprefix("chatcmpl-")
got = cmd("get_task", {"id": task_id}).json()
assert got["ok"], got
assert got["result"]["status"] == "done", got
assert streamed == got["result"]["result"], (streamed, got["result"]["result"])
seen["streamed"] = streamed
whole = client.chat.completions.create(
    model="batos",
    messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "My dog is Rex."},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "What is my dog called?"},
    ],
)
seen["whole"] = whole.choices[0].message.content
assert whole.choices[0].finish_reason == "stop"
seen["whole_task"] = whole.model_extra["batos"]["task"]
try:
    openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).chat.completions.create(
        model="batos", messages=[{"role": "user", "content": "hi"}]
    )
    raise SystemExit("a wrong key was answered")
except openai.AuthenticationError:
    seen["wrong_key"] = "refused"
try:
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    raise SystemExit("an unknown model was answered")
except openai.NotFoundError as e:
    seen["unknown_model"] = str(e)
try:
    client.chat.completions.create(model="batos", messages=[{"role": "user", "content": "hi"}], temprature=1)
except TypeError:
    pass  # the client itself refuses a misspelt keyword; send it raw instead
r = request("POST", "/v1/chat/completions", headers=auth, js={"model": "batos", "messages": [{"role": "user", "content": "hi"}], "temprature": 1})
assert r.status_code == 400 and "temprature" in r.json()["error"]["message"], r.text
print(json.dumps(seen))
