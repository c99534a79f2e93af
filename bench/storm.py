#!/usr/bin/env python3
"""A BI refresh storm against a rate-limited API: direct, through nginx, through the proxy.

The API (the simulator) answers each request after 25 ms and at most 50 requests per second per
token identity; beyond that it answers 429 with `Retry-After` as an HTTP date (as many servers
do; --retry-after seconds|http-date|absent). The client behaves like Power BI refreshing a
dashboard: 16 concurrent workers, 800 requests over 40 distinct URLs (a skewed mix: a few URLs
asked often), each retried on 429/503 up to 3 times, waiting `Retry-After` when it is whole
seconds between 1 and 120 and retrying at once otherwise; a request still refused after that
has failed (and with it, after a few refreshes, the scheduled refresh).

Targets, one after the other against the same API:
  direct  the API itself, with a token from the STS
  nginx   nginx adding that token (fixed Authorization, keep-alive upstream): what a hand-made
          reverse proxy does
  proxy   azure-costs-proxy with its defaults (coalescing on)

Per target: wall time of the refresh, upstream requests the API saw, 429s it answered, failed
client requests. Usage: bench/storm.py [--binary PATH] [--retry-after FORM] [--markdown]
Needs nginx (apt-get install -y nginx).
"""

import argparse
import http.client
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import common
from common import free_port, start_simulator, stop, wait_port, wait_ready, write_proxy_config

WORKERS = 16
REQUESTS = 800
URLS = 40
RETRIES = 3


def paths() -> list[str]:
    """800 request paths over 40 URLs, skewed like a dashboard's visuals: URL i is asked about
    1/(i+1) as often as URL 0, the order shuffled by a fixed rule (no randomness between runs)."""
    weights = [1 / (i + 1) for i in range(URLS)]
    counts = [max(1, round(REQUESTS * w / sum(weights))) for w in weights]
    counts[0] += REQUESTS - sum(counts)
    out = [f"/v1/costs/by-service?month=2026-10&visual={i}"
           for i, n in enumerate(counts) for _ in range(n)]
    # A fixed interleaving: every 7th of what is left, so identical requests are spread out.
    mixed = []
    while out:
        mixed.append(out.pop((len(mixed) * 7) % len(out)))
    return mixed


def refresh(port: int, headers: dict[str, str]) -> tuple[float, int]:
    """Runs the storm against 127.0.0.1:`port`; returns (wall seconds, failed requests)."""
    work: "queue.Queue[str]" = queue.Queue()
    for p in paths():
        work.put(p)
    failed = [0]
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            try:
                path = work.get_nowait()
            except queue.Empty:
                break
            for attempt in range(RETRIES + 1):
                try:
                    conn.request("GET", path, headers=headers)
                    r = conn.getresponse()
                    r.read()
                    status, retry_after = r.status, r.getheader("Retry-After")
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    status, retry_after = 0, None
                if status not in (429, 503, 0):
                    break
                if attempt == RETRIES:
                    with lock:
                        failed[0] += 1
                    break
                # Power BI honours whole seconds only (0.5 to 120); anything else: at once.
                if retry_after and retry_after.isdigit() and 1 <= int(retry_after) <= 120:
                    time.sleep(int(retry_after))
        conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - started, failed[0]


def sim_stats(api: str) -> dict:
    with urllib.request.urlopen(f"{api.rstrip('/')}/_simulator/stats", timeout=10) as r:
        return json.load(r)


def token(urls: dict[str, str]) -> str:
    form = urllib.parse.urlencode({
        "grant_type": "client_credentials",
        "client_id": urls["CLIENT_ID"],
        "client_secret": os.environ["AZURE_COSTS_CLIENT_SECRET"],
    }).encode()
    with urllib.request.urlopen(urls["STS"], data=form, timeout=10) as r:
        return json.load(r)["access_token"]


def start_nginx(work: Path, api_port: int, bearer: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(f"""
master_process off; daemon off; worker_processes 1; pid {work}/nginx.pid;
error_log {work}/nginx.err warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {work}/pb; proxy_temp_path {work}/pp; fastcgi_temp_path {work}/pf;
    uwsgi_temp_path {work}/pu; scgi_temp_path {work}/ps;
    upstream api {{ server 127.0.0.1:{api_port}; keepalive 32; }}
    server {{ listen 127.0.0.1:{port};
              location / {{ proxy_pass http://api; proxy_http_version 1.1;
                            proxy_set_header Connection "";
                            proxy_set_header Authorization "Bearer {bearer}"; }} }}
}}
""")
    proc = subprocess.Popen(["nginx", "-c", str(conf)])
    wait_port(port)
    return proc, port


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", type=Path, default=common.BIN)
    ap.add_argument("--retry-after", default="http-date",
                    choices=["seconds", "http-date", "absent"])
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table too")
    args = ap.parse_args()
    common.BIN = args.binary
    if shutil.which("nginx") is None:
        print("nginx is needed: apt-get install -y nginx", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="acp-storm-"))
    work.chmod(0o755)
    env = dict(os.environ, AZURE_COSTS_CLIENT_SECRET="storm-secret", RUST_LOG="warn")
    os.environ["AZURE_COSTS_CLIENT_SECRET"] = env["AZURE_COSTS_CLIENT_SECRET"]
    procs: list[subprocess.Popen] = []
    rows = []
    try:
        sim, urls = start_simulator(env, ["--api-delay", "25ms", "--api-rate-limit", "50",
                                          "--api-retry-after", args.retry_after])
        procs.append(sim)
        api = urls["API"]
        api_port = urllib.parse.urlsplit(api).port
        bearer = token(urls)
        nginx, nginx_port = start_nginx(work, api_port, bearer)
        procs.append(nginx)
        port, admin = free_port(), free_port()
        config = write_proxy_config(work / "proxy.toml", port, admin, api, urls)
        proxy = subprocess.Popen([str(args.binary), "run", "--config", str(config)], env=env)
        procs.append(proxy)
        wait_ready(admin, timeout=30)
        targets = [
            ("direct (token)", api_port, {"Authorization": f"Bearer {bearer}"}),
            ("nginx (fixed token)", nginx_port, {}),
            ("azure-costs-proxy", port, {}),
        ]
        for name, target_port, headers in targets:
            # A fresh second for each target: the API's windows start on whole seconds.
            time.sleep(1.1)
            before = sim_stats(api)
            wall, failed = refresh(target_port, headers)
            after = sim_stats(api)
            upstream = after["api_requests"] - before["api_requests"]
            limited = after["rate_limited"] - before["rate_limited"]
            rows.append((name, wall, upstream, limited, failed))
            print(f"{name}: {wall:.2f} s, {upstream} upstream requests, {limited} answered 429, "
                  f"{failed} failed")
    finally:
        stop(procs, 10)
        shutil.rmtree(work, ignore_errors=True)
    if args.markdown:
        print(f"\n{REQUESTS} requests over {URLS} URLs, {WORKERS} workers, API 25 ms and "
              f"50/s per identity, Retry-After as {args.retry_after}\n")
        print("| target | wall time | upstream requests | 429s from the API | failed requests |")
        print("|---|---:|---:|---:|---:|")
        for name, wall, upstream, limited, failed in rows:
            print(f"| {name} | {wall:.2f} s | {upstream} | {limited} | {failed} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
