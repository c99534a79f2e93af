#!/usr/bin/env python3
"""Instructions per proxied request, counted by callgrind: steady where wrk figures are not.

Starts an upstream nginx serving a 1 KB JSON answer, the simulated STS, and the proxy (one
worker thread) under `valgrind --tool=callgrind --instr-atstart=no`; after a 2 s warm-up it
switches instrumentation on, sends 10 s of wrk load (1 thread, 8 connections), switches it off,
and divides the instructions collected by the requests wrk counted. The count is the proxy's own
user-space work (system calls are not counted) and does not depend on what else the machine is
doing, so two builds can be compared on a busy machine.

With --nginx, nginx doing the same job (a fixed `Authorization` header added, keep-alive
connections to the same upstream, one worker process, no access log) is measured the same way in
the same run, and the ratio printed: one run on one machine gives both figures.

Each request asks its own URL (`?n=1`, `?n=2`, ...: what coalescing cannot share), so the
figure is a miss's, coalescing's bookkeeping included. With --same-url every request asks the
same one and identical requests in flight at once share one upstream request; the split
(`X-Cache` MISS/COALESCED, from /metrics) is printed beside the figure.

Usage: bench/instructions.py [--binary PATH] [--label NAME] [--access-log] [--clients N] [--nginx]
                             [--tls] [--same-url] [--no-coalesce]
  --binary      the build to measure (default: target/dist/azure-costs-proxy)
  --label       names the callgrind output, bench/callgrind.NAME.out, for callgrind_annotate
  --access-log  RUST_LOG=info (one access line per request) instead of warn
  --clients N   N [[clients]] entries (key_sha256, every scope); wrk sends the key of the last
                one, so the figure says what finding one client among N costs
  --nginx       also measure nginx as the proxy (bench/callgrind.nginx.out) and print the ratio
  --same-url    every request for the same URL (see above)
  --no-coalesce the route with `coalesce = false`: what coalescing's bookkeeping costs
  --tls         the upstream speaks HTTPS (a throwaway CA made with openssl; the proxy trusts it
                with [outbound] ca_file, nginx with proxy_ssl_trusted_certificate; both verify)
Needs valgrind, wrk and nginx (apt-get install -y valgrind wrk nginx).
"""

import argparse
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import common
from common import ROOT, free_port, start_simulator, stop, wait_port, wait_ready
from common import write_proxy_config


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", type=Path, default=common.BIN)
    ap.add_argument("--label", default="proxy")
    ap.add_argument("--access-log", action="store_true")
    ap.add_argument("--clients", type=int, default=0)
    ap.add_argument("--nginx", action="store_true")
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--same-url", action="store_true")
    ap.add_argument("--no-coalesce", action="store_true")
    args = ap.parse_args()
    common.BIN = args.binary  # the simulator too
    work = Path(tempfile.mkdtemp(prefix="acp-instr-"))
    work.chmod(0o755)  # nginx workers may run as another user
    (work / "www" / "v1").mkdir(parents=True)
    (work / "www" / "v1" / "small.json").write_text(("{" + '"a":1,' * 140 + '"b":2}').ljust(1024))
    upstream = free_port()
    tls = make_certificate(work) if args.tls else None
    listen_tls = (f"ssl; ssl_certificate {tls}/cert.pem; ssl_certificate_key {tls}/key.pem"
                  if tls else "")
    (work / "nginx.conf").write_text(f"""
worker_processes 1; pid {work}/nginx.pid; error_log {work}/nginx.err warn; daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log off; keepalive_requests 1000000;
    client_body_temp_path {work}/b; proxy_temp_path {work}/p; fastcgi_temp_path {work}/f;
    uwsgi_temp_path {work}/u; scgi_temp_path {work}/s;
    server {{ listen 127.0.0.1:{upstream} {listen_tls}; root {work}/www;
              location /v1/ {{ default_type application/json; }} }}
}}
""")
    env = dict(os.environ, AZURE_COSTS_CLIENT_SECRET=secrets.token_hex(24), RUST_LOG="warn")
    env.pop("AZURE_COSTS_PROXY_CONFIG", None)
    # The access log goes where valgrind writes, a file, as a service's goes to the journal.
    proxy_env = dict(env, RUST_LOG="info") if args.access_log else env
    out = ROOT / "bench" / f"callgrind.{args.label}.out"
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen(["nginx", "-c", str(work / "nginx.conf")]))
        sim, urls = start_simulator(env, [])
        procs.append(sim)
        port, admin = free_port(), free_port()
        scheme = "https" if tls else "http"
        config = write_proxy_config(work / "proxy.toml", port, admin,
                                    f"{scheme}://localhost:{upstream}", urls)
        if tls:
            with open(config, "a") as f:
                f.write(f'[outbound]\nca_file = "{tls}/ca.pem"\n')
        if args.no_coalesce:
            with open(config, "a") as f:
                f.write('[[routes]]\nprefix = "/"\ncoalesce = false\n')
        wrk_auth: list[str] = [] if args.same_url else ["-s", str(distinct_urls(work))]
        if args.clients:
            key = append_clients(config, args.clients)
            wrk_auth += ["-H", f"Authorization: Bearer {key}"]
        # Not beside the config: the proxy watches that folder, and every line written there
        # would wake its watch (about 1,700 instructions a line, counted against the proxy).
        (work / "logs").mkdir()
        log = open(work / "logs" / "valgrind.log", "w")
        proxy = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
             str(args.binary), "run", "--config", str(config), "--worker-threads", "1"],
            env=proxy_env, stdout=subprocess.DEVNULL, stderr=log)
        procs.append(proxy)
        wait_ready(admin, timeout=60)
        mine = measure(proxy, f"http://127.0.0.1:{port}/v1/small.json", wrk_auth,
                       work / "logs" / "valgrind.log", admin)
        if mine is None:
            return 1
        print(f"{args.label}: {mine[0]} requests, {mine[1]:,} instructions, "
              f"{mine[1] / mine[0]:,.0f} per request ({out}); X-Cache {mine[2]}")
        if args.nginx:
            theirs = measure_nginx(work, upstream, tls, wrk_auth[:2])
            if theirs is None:
                return 1
            ratio = (mine[1] / mine[0]) / (theirs[1] / theirs[0])
            print(f"nginx: {theirs[0]} requests, {theirs[1]:,} instructions, "
                  f"{theirs[1] / theirs[0]:,.0f} per request; {args.label} / nginx = {ratio:.2f}")
        return 0
    finally:
        stop(procs, 10)
        shutil.rmtree(work, ignore_errors=True)


def distinct_urls(work: Path) -> Path:
    """A wrk script that asks `{path}?n=1`, `?n=2`, ...: no two requests alike."""
    script = work / "distinct.lua"
    script.write_text(
        "counter = 0\n"
        "request = function()\n"
        "  counter = counter + 1\n"
        "  return wrk.format(nil, wrk.path .. \"?n=\" .. counter)\n"
        "end\n")
    return script


def cache_split(admin: int) -> str:
    """The proxy's `cache_total` counts, as `miss=N coalesced=N bypass=N`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as r:
        text = r.read().decode()
    found = re.findall(r'cache_total\{route="/",result="(\w+)"\} (\d+)', text)
    return " ".join(f"{result}={n}" for result, n in found)


def measure(proc: subprocess.Popen, url: str, wrk_auth: list[str],
            log: Path, admin: int | None = None) -> tuple[int, int, str] | None:
    """Warms `proc` (running under callgrind with instrumentation off) up for 2 s, counts its
    instructions over 10 s of wrk load on `url`, stops it; returns (requests, instructions,
    the proxy's `X-Cache` split when `admin` is its admin port), or None (having said why)
    when not every request was answered 200."""
    subprocess.run(["wrk", "-t1", "-c8", "-d2s", *wrk_auth, url], capture_output=True,
                   check=True)
    subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True,
                   check=True)
    load = subprocess.run(["wrk", "-t1", "-c8", "-d10s", *wrk_auth, url],
                          capture_output=True, text=True, check=True)
    subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], capture_output=True,
                   check=True)
    split = cache_split(admin) if admin else ""
    stop([proc], 30)
    requests = int(re.search(r"(\d+) requests in", load.stdout).group(1))
    if "Non-2xx" in load.stdout or requests == 0:
        print(f"error: not every request was answered 200:\n{load.stdout}", file=sys.stderr)
        return None
    text = log.read_text()
    collected = re.search(r"Collected : (\d+)", text)
    if collected is None:
        print(f"error: callgrind wrote no total (did the process exit cleanly?):\n{text[-2000:]}",
              file=sys.stderr)
        return None
    return requests, int(collected.group(1)), split


def measure_nginx(work: Path, upstream: int, tls: Path | None,
                  script: list[str]) -> tuple[int, int, str] | None:
    """nginx doing the proxy's job under callgrind: one process (no master), keep-alive to the
    upstream (over verified TLS with `tls`), a fixed bearer token added; measured as the proxy
    is."""
    port = free_port()
    scheme = "https" if tls else "http"
    verify = (f"proxy_ssl_trusted_certificate {tls}/ca.pem; proxy_ssl_verify on; "
              "proxy_ssl_name localhost; proxy_ssl_server_name on;" if tls else "")
    conf = work / "nginx-proxy.conf"
    conf.write_text(f"""
master_process off; daemon off; worker_processes 1; pid {work}/nginx-proxy.pid;
error_log {work}/nginx-proxy.err warn;
events {{ worker_connections 1024; }}
http {{
    access_log off; keepalive_requests 1000000;
    client_body_temp_path {work}/pb; proxy_temp_path {work}/pp; fastcgi_temp_path {work}/pf;
    uwsgi_temp_path {work}/pu; scgi_temp_path {work}/ps;
    upstream api {{ server 127.0.0.1:{upstream}; keepalive 32; }}
    server {{ listen 127.0.0.1:{port};
              location / {{ proxy_pass {scheme}://api; proxy_http_version 1.1; {verify}
                            proxy_set_header Connection "";
                            proxy_set_header Authorization "Bearer {secrets.token_hex(32)}"; }} }}
}}
""")
    out = ROOT / "bench" / "callgrind.nginx.out"
    # valgrind's own file: nginx points its stderr at its error log.
    log_path = work / "logs" / "valgrind-nginx.log"
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         f"--log-file={log_path}", "nginx", "-c", str(conf)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, timeout=60)
        return measure(proc, f"http://127.0.0.1:{port}/v1/small.json", script, log_path)
    finally:
        stop([proc], 10)


def make_certificate(work: Path) -> Path:
    """A throwaway CA (`ca.pem`) and a P-256 certificate for `localhost` it signed (`cert.pem`,
    `key.pem`) in `work`/tls."""
    folder = work / "tls"
    folder.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *args: subprocess.run(["openssl", *args], cwd=folder, capture_output=True,
                                       check=True)
    run("req", "-x509", *ec, "-days", "2", "-subj", "/CN=bench CA", "-keyout", "ca.key",
        "-out", "ca.pem")
    run("req", *ec, "-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "leaf.csr")
    (folder / "leaf.ext").write_text("basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost\n"
                                     "extendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "leaf.ext", "-out", "cert.pem")
    return folder


def append_clients(config: Path, n: int) -> str:
    """Appends `n` clients known by their key's digest to `config`; returns the last one's key."""
    lines = []
    key = ""
    for i in range(n):
        key = f"bench-client-key-{i:06d}-0123456789"
        digest = hashlib.sha256(key.encode()).hexdigest()
        lines.append(f'[[clients]]\nname = "client-{i}"\nkey_sha256 = "{digest}"\n')
    with open(config, "a") as f:
        f.write("\n".join(lines))
    return key


if __name__ == "__main__":
    sys.exit(main())
