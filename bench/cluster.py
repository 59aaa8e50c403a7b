#!/usr/bin/env python3
"""The cluster measurement behind bench/cluster.sh: three gateway instances on one PostgreSQL
database. Measures (1) the invalidation delay: an API key used (and so cached) on instances B
and C is revoked on A, and B and C are polled until they refuse it, 200 times; (2) the admitted
rate of one API key's limit under load spread over the three instances, as a percentage of the
configured rate. Prints a table and, last, one line:
    invalidation p99 <N> ms, shared limit within <P>% of the configured rate
Environment: ORIGINS (three https://localhost:port, comma-separated; the first is A), CACERT,
OUTBOX (the gateways' shared mail outbox), REVOCATIONS (200), LIMIT_REQUESTS and LIMIT_WINDOW
(the configured api_key limit), LOAD_SECONDS (10), ADMINS (the instances' admin ports,
comma-separated, for how often a limit check found Redis unreachable and fell back).
"""
import http.client
import json
import os
import re
import ssl
import statistics
import sys
import threading
import time
import urllib.parse

ORIGINS = os.environ["ORIGINS"].split(",")
CTX = ssl.create_default_context(cafile=os.environ["CACERT"])
OUTBOX = os.environ["OUTBOX"]
REVOCATIONS = int(os.environ.get("REVOCATIONS", "200"))
LIMIT_REQUESTS = int(os.environ["LIMIT_REQUESTS"])
LIMIT_WINDOW = float(os.environ["LIMIT_WINDOW"])
LOAD_SECONDS = float(os.environ.get("LOAD_SECONDS", "10"))
PASSWORD = "correct horse battery staple"


class Conn:
    """A keep-alive HTTPS connection to one instance, with the browser's cookies."""

    def __init__(self, origin):
        self.origin = origin
        u = urllib.parse.urlparse(origin)
        self.host, self.port = u.hostname, u.port
        self.cookies = {}
        self.c = None

    def request(self, method, path, body=None, headers=None):
        h = {"origin": self.origin}
        if self.cookies:
            h["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        csrf = self.cookies.get("__Host-zonegate-csrf")
        if csrf:
            h["x-csrf-token"] = csrf
        if body is not None:
            body = json.dumps(body)
            h["content-type"] = "application/json"
        h.update(headers or {})
        for attempt in range(2):
            try:
                if self.c is None:
                    self.c = http.client.HTTPSConnection(self.host, self.port, context=CTX)
                self.c.request(method, path, body=body, headers=h)
                r = self.c.getresponse()
                data = r.read()
                break
            except (http.client.HTTPException, OSError):
                self.c = None
                if attempt:
                    raise
        for k, v in r.getheaders():
            if k.lower() == "set-cookie":
                name, _, rest = v.partition("=")
                self.cookies[name] = rest.split(";")[0]
                if not self.cookies[name]:
                    del self.cookies[name]
        if r.getheader("connection", "").lower() == "close":
            self.c = None
        return r.status, (json.loads(data) if data and data[:1] in b"{[" else data)


def mailed_token(email):
    for _ in range(100):
        names = sorted(os.listdir(OUTBOX), key=lambda n: os.path.getmtime(os.path.join(OUTBOX, n)))
        for n in reversed(names):
            text = open(os.path.join(OUTBOX, n), encoding="utf-8").read()
            text = re.sub(r"=\r?\n", "", text).replace("=3D", "=")
            if email in text:
                m = re.search(r"#token=([A-Za-z0-9_-]{43})", text)
                if m:
                    return m.group(1)
        time.sleep(0.05)
    sys.exit(f"no mail to {email}")


def owner():
    a = Conn(ORIGINS[0])
    email = f"bench-{int(time.time())}@example.com"
    assert a.request("POST", "/auth/signup", {"email": email, "password": PASSWORD})[0] == 202
    assert a.request("POST", "/auth/verify-email", {"token": mailed_token(email)})[0] == 200
    assert a.request("POST", "/auth/login", {"email": email, "password": PASSWORD})[0] == 200
    status, org = a.request("POST", "/v1/orgs", {"name": "Bench"})
    assert status == 201, org
    return a, org["id"]


def new_key(a, org):
    status, k = a.request("POST", f"/v1/orgs/{org}/api-keys", {"name": "bench", "scopes": ["zones:read"]})
    assert status == 201, k
    return k["id"], k["key"]


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def fallbacks():
    """Sum of zonegate_shared_limits_unreachable_total over the instances."""
    total = 0
    for port in filter(None, os.environ.get("ADMINS", "").split(",")):
        c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
        c.request("GET", "/metrics")
        for line in c.getresponse().read().decode().splitlines():
            if line.startswith("zonegate_shared_limits_unreachable_total "):
                total += int(float(line.split()[1]))
    return total


def main():
    a, org = owner()
    others = [Conn(o) for o in ORIGINS[1:]]
    zones = f"/v1/orgs/{org}/zones"

    # (1) Invalidation delay.
    delays = []
    for _ in range(REVOCATIONS):
        kid, key = new_key(a, org)
        auth = {"authorization": f"Bearer {key}"}
        for c in others:
            assert c.request("GET", zones, headers=auth)[0] == 200
        status, _ = a.request("DELETE", f"/v1/orgs/{org}/api-keys/{kid}")
        assert status == 204
        revoked = time.perf_counter()
        for c in others:
            while True:
                status, _ = c.request("GET", zones, headers=auth)
                if status == 401:
                    delays.append((time.perf_counter() - revoked) * 1000)
                    break
                if time.perf_counter() - revoked > 60:
                    sys.exit("a revoked key still worked after 60 s")
    # (2) One key's limit under load over all three instances.
    _, key = new_key(a, org)
    auth = {"authorization": f"Bearer {key}"}
    admitted = [0] * len(ORIGINS)
    refused = [0] * len(ORIGINS)
    stop = time.perf_counter() + LOAD_SECONDS

    def load(i):
        c = Conn(ORIGINS[i])
        while time.perf_counter() < stop:
            status, _ = c.request("GET", zones, headers=auth)
            if status == 200:
                admitted[i] += 1
            elif status == 429:
                refused[i] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=load, args=(i,)) for i in range(len(ORIGINS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    rate = LIMIT_REQUESTS / LIMIT_WINDOW
    allowed = LIMIT_REQUESTS + rate * elapsed  # the burst, then the steady rate
    total = sum(admitted)
    off = (total - allowed) / allowed * 100

    print("| measurement | value |")
    print("| --- | ---: |")
    print(f"| revocations (each seen by {len(others)} other instances) | {REVOCATIONS} |")
    print(f"| invalidation delay p50 | {statistics.median(delays):.1f} ms |")
    print(f"| invalidation delay p99 | {pct(delays, 99):.1f} ms |")
    print(f"| invalidation delay max | {max(delays):.1f} ms |")
    print(f"| key limit configured | {LIMIT_REQUESTS} per {LIMIT_WINDOW:g} s |")
    print(f"| load | {elapsed:.1f} s over {len(ORIGINS)} instances, {total + sum(refused)} requests |")
    print(f"| admitted / allowed by the limit | {total} / {allowed:.0f} ({total / allowed * 100:.0f}%) |")
    print(f"| admitted per instance | {', '.join(map(str, admitted))} |")
    print(f"| checks that fell back to the local share (Redis unreachable) | {fallbacks()} |")
    print()
    print(f"invalidation p99 {pct(delays, 99):.1f} ms, shared limit within {abs(off):.0f}% of the configured rate")


main()
