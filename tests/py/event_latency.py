"""Event latency from publish to reader (issue 33's bench): the ZeroMQ subscriber (pyzmq), the HTTP door's
Server-Sent Events read by Python, and the page's own EventSource in headless Chromium, all three following the
same events in one run. Each event's latency is the reader's clock at arrival minus the body's `ts` (set by the
daemon when it published); one machine, one clock.

usage: event_latency.py BASE_URL TOKEN EVENT_ENDPOINT N
Prints {"zmq": {...}, "sse": {...}, "page": {...}} with n, p50_ms, p99_ms each.
"""
import json
import statistics
import sys
import threading
import time
import urllib.request

import msgpack
import zmq
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

base, token, events_ep, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
auth = {"Authorization": f"Bearer {token}"}
lat = {"zmq": [], "sse": []}
stop = threading.Event()


def zmq_reader(ready):
    s = zmq.Context.instance().socket(zmq.SUB)
    s.setsockopt(zmq.RCVTIMEO, 200)
    s.connect(events_ep)
    s.setsockopt_string(zmq.SUBSCRIBE, "batos-auth:" + token)
    s.setsockopt_string(zmq.SUBSCRIBE, "persona.state")
    s.setsockopt_string(zmq.SUBSCRIBE, "heartbeat")
    while not stop.is_set():
        try:
            topic, body = s.recv_multipart()
        except zmq.Again:
            continue
        now = time.time()
        if topic == b"heartbeat":
            ready.set()
            continue
        b = msgpack.unpackb(body)
        if b["data"]["persona"] == "BABS":
            lat["zmq"].append(now - b["ts"])


def sse_reader(ready):
    req = urllib.request.Request(base + "/api/v1/events", headers=auth)
    with urllib.request.urlopen(req, timeout=60) as r:
        kind = None
        for raw in r:
            now = time.time()
            line = raw.decode().rstrip("\n")
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                if kind == "snapshot":
                    ready.set()
                elif kind == "persona.state":
                    b = json.loads(line[5:])
                    if b["data"]["persona"] == "BABS":
                        lat["sse"].append(now - b["ts"])
            if stop.is_set():
                return


def command(cmd, args):
    req = urllib.request.Request(f"{base}/api/v1/commands/{cmd}", data=json.dumps(args).encode(), method="POST",
                                 headers={**auth, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200, r.status


def stats(xs):
    ms = sorted(x * 1000 for x in xs)
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 3), "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 3)}


opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]:
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
try:
    driver.get(base + "/")
    field = WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "token"))
    field.send_keys(token)
    field.send_keys(Keys.ENTER)
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "conn").text == "live")
    # A listener of the page's own kind, beside the page's: it keeps each arrival's latency.
    driver.execute_script("""
        window.__lat = []; window.__open = false;
        const src = new EventSource('/api/v1/events');
        src.addEventListener('snapshot', () => { window.__open = true; });
        src.addEventListener('persona.state', (m) => {
            const now = (performance.timeOrigin + performance.now()) / 1000;
            const b = JSON.parse(m.data);
            if (b.data.persona === 'BABS') window.__lat.push(now - b.ts);
        });
    """)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return window.__open"))
    ready = [threading.Event(), threading.Event()]
    threads = [threading.Thread(target=zmq_reader, args=(ready[0],), daemon=True),
               threading.Thread(target=sse_reader, args=(ready[1],), daemon=True)]
    for t in threads:
        t.start()
    for r in ready:
        assert r.wait(30), "a reader did not start"
    for i in range(n):
        command("update_persona", {"persona": "BABS", "field": "temperature", "value": 0.5 if i % 2 else 0.6})
        time.sleep(0.02)
    time.sleep(2)
    stop.set()
    page = driver.execute_script("return window.__lat")
finally:
    driver.quit()
out = {"zmq": stats(lat["zmq"]), "sse": stats(lat["sse"]), "page": stats(page)}
for k, v in out.items():
    assert v["n"] == n, f"{k} saw {v['n']} of {n} events"
print(json.dumps(out))
