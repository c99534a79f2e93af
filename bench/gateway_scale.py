#!/usr/bin/env python3
"""The gateway at scale: three proxy processes behind one nginx (round robin), 50 clients with
distinct keys and scopes, all at once. Every answer must be exactly what the client's own scope
allows: its team's data, 403 for another team or a route it may not use, 401 for no key.

Each replica runs the gateway package's config (deploy/kubernetes/gateway/proxy.toml) on
loopback: one `/teams/{delegate}` route for any team, a `/partner` route on the partner's own
token, and the same 50 [[clients]] (key_sha256 only). Client i acts for one of the simulator's
three customer teams; every third may also use `/partner`. Each client runs its own thread and
keep-alive connection to nginx, asking in turn for its own team, another client's team, the
partner route, and (every tenth request) with no key.

Usage: bench/gateway_scale.py [--binary PATH] [--requests N]   (N per client, default 200)
Needs nginx (apt-get install -y nginx). Prints the figures; exit 1 if any answer crossed.
"""

import argparse
import hashlib
import http.client
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common
from common import free_port, start_simulator, stop, wait_ready, write_proxy_config

CLIENTS = 50
REPLICAS = 3
TEAMS = ["TEAM-CONTOSO", "TEAM-FABRIKAM", "TEAM-WOODGROVE"]


def client_key(i: int) -> str:
    return f"scale-client-{i:02d}-{hashlib.sha256(str(i).encode()).hexdigest()[:16]}"


def clients_toml() -> str:
    entries = []
    for i in range(CLIENTS):
        routes = '["/teams/{delegate}", "/partner"]' if i % 3 == 0 else '["/teams/{delegate}"]'
        entries.append(
            f'[[clients]]\nname = "customer-{i:02d}"\n'
            f'key_sha256 = "{hashlib.sha256(client_key(i).encode()).hexdigest()}"\n'
            f'routes = {routes}\ndelegates = ["{TEAMS[i % 3]}"]\n'
        )
    return "\n".join(entries)


def expected(i: int, kind: str) -> tuple[int, str | None]:
    """(status, team id or error code) client i must get for a request of `kind`."""
    if kind == "own":
        return 200, TEAMS[i % 3]
    if kind == "other":
        return 403, "forbidden_delegate"
    if kind == "partner":
        return (200, "TEAM-PARTNER") if i % 3 == 0 else (403, "forbidden_route")
    return 401, "unauthorized"


def run_client(i: int, port: int, n: int, results: dict, lock: threading.Lock) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    wrong = 0
    counts: dict[int, int] = {}
    for r in range(n):
        kind = "anonymous" if r % 10 == 9 else ["own", "other", "partner"][r % 3]
        team = TEAMS[i % 3] if kind in ("own", "anonymous") else TEAMS[(i + 1) % 3]
        path = "/partner/v1/teams" if kind == "partner" else f"/teams/{team}/v1/teams"
        headers = {"Host": "localhost"}
        if kind != "anonymous":
            headers["Authorization"] = f"Bearer {client_key(i)}"
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = json.loads(resp.read() or b"{}")
        if resp.getheader("Connection", "").lower() == "close":
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        got = (resp.status, body["teams"][0]["id"] if resp.status == 200 else body.get("error"))
        counts[resp.status] = counts.get(resp.status, 0) + 1
        if got != expected(i, kind):
            wrong += 1
            if wrong <= 3:
                print(f"customer-{i:02d} {kind} {path}: got {got}, expected {expected(i, kind)}",
                      file=sys.stderr)
    conn.close()
    with lock:
        results["wrong"] += wrong
        for status, c in counts.items():
            results["statuses"][status] = results["statuses"].get(status, 0) + c


def metric_total(admin: int, name: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
    conn.request("GET", "/metrics", headers={"Host": "localhost"})
    text = conn.getresponse().read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", type=Path, default=common.BIN)
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args()
    common.BIN = args.binary
    work = Path(tempfile.mkdtemp(prefix="acp-scale-"))
    work.chmod(0o755)
    env = dict(os.environ, AZURE_COSTS_CLIENT_SECRET=secrets.token_hex(24), RUST_LOG="warn")
    env.pop("AZURE_COSTS_PROXY_CONFIG", None)
    procs: list[subprocess.Popen] = []
    try:
        sim, urls = start_simulator(env, [])
        procs.append(sim)
        admins, ports = [], []
        for r in range(REPLICAS):
            port, admin = free_port(), free_port()
            config = write_proxy_config(work / f"proxy-{r}.toml", port, admin, urls["API"], urls)
            with open(config, "a") as f:
                f.write('\n[[routes]]\nprefix = "/teams/{delegate}"\ndelegates = ["*"]\n'
                        '\n[[routes]]\nprefix = "/partner"\n\n' + clients_toml())
            procs.append(subprocess.Popen([str(args.binary), "run", "--config", str(config)],
                                          env=env, stdout=subprocess.DEVNULL))
            wait_ready(admin, timeout=30)
            admins.append(admin)
            ports.append(port)
        lb = free_port()
        servers = "".join(f"server 127.0.0.1:{p};" for p in ports)
        (work / "nginx.conf").write_text(f"""
worker_processes 1; pid {work}/nginx.pid; error_log {work}/nginx.err warn; daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {work}/b; proxy_temp_path {work}/p; fastcgi_temp_path {work}/f;
    uwsgi_temp_path {work}/u; scgi_temp_path {work}/s;
    upstream replicas {{ {servers} keepalive 64; }}
    server {{ listen 127.0.0.1:{lb};
              location / {{ proxy_pass http://replicas; proxy_http_version 1.1;
                            proxy_set_header Connection ""; proxy_set_header Host localhost; }} }}
}}
""")
        procs.append(subprocess.Popen(["nginx", "-c", str(work / "nginx.conf")]))
        # nginx is ready when its port accepts.
        for _ in range(100):
            try:
                http.client.HTTPConnection("127.0.0.1", lb, timeout=1).connect()
                break
            except OSError:
                time.sleep(0.1)

        results = {"wrong": 0, "statuses": {}}
        lock = threading.Lock()
        threads = [threading.Thread(target=run_client, args=(i, lb, args.requests, results, lock))
                   for i in range(CLIENTS)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        total = CLIENTS * args.requests
        per_replica = [metric_total(a, "azure_costs_proxy_requests_total") for a in admins]
        sts = [metric_total(a, "azure_costs_proxy_sts_requests_total") for a in admins]
        print(f"{CLIENTS} clients x {args.requests} requests through nginx to {REPLICAS} replicas "
              f"in {elapsed:.1f} s ({total / elapsed:,.0f} requests/s, CPU: {cpu_model()})")
        print(f"  statuses: {dict(sorted(results['statuses'].items()))}")
        print(f"  requests per replica: {[int(x) for x in per_replica]}; "
              f"STS calls per replica: {[int(x) for x in sts]}")
        print(f"  answers outside the client's scope: {results['wrong']}")
        if results["wrong"] or sum(per_replica) < total or min(per_replica) == 0:
            print("FAIL", file=sys.stderr)
            return 1
        print("OK: every client got exactly its own scope's answers")
        return 0
    finally:
        stop(procs, 10)
        shutil.rmtree(work, ignore_errors=True)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
