#!/usr/bin/env python3
"""Side-by-side benchmark: the upstream directly (A), azure-costs-proxy (B), nginx doing the same
job (C), all on 127.0.0.1, alternated A B C A B C so that drift hits all alike.

The upstream is an nginx serving a fixed 1 KB JSON answer, a 100 MB file and a 1 GiB file (its
own worker, not the nginx under test), over plain HTTP and, for the `tls-*` scenarios, over TLS
with HTTP/2 (certificates made by this script with openssl; the proxy trusts their CA through
`ca_file` and picks h2 by ALPN). The STS is `azure-costs-proxy simulator`. nginx (C) proxies with
a fixed `Authorization: Bearer ...` header and upstream keep-alive: the same job as the proxy
with a token that never changes; towards the TLS upstream in its best configuration
(`proxy_pass https://`, keep-alive, `proxy_ssl_session_reuse on`, verification on; nginx speaks
only HTTP/1.1 upstream). Upstream connections opened during each run are counted by the
upstream's `stub_status`. `small-32-log` runs B and C with their access logs on (RUST_LOG=info,
one line per request, as in production; nginx's `access_log`), both to a file; elsewhere both
are off.

Figures per target (medians over rounds): requests/s, p50 and p99 latency (wrk --latency), CPU
seconds per 1,000 requests of the serving process(es) from /proc, peak RSS. Writes
bench/results.md and bench/results.png.

Run through bench/run.sh, which installs what is missing.
"""

import argparse
import resource
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BIN, ROOT, cpu_split, free_port, start_simulator, status_kib
from common import stop, wait_port, wait_ready, write_proxy_config
import checks

TOKEN = "bench-" + "t" * 40


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(text: str) -> dict:
    def latency(pct: str) -> float:
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    reqs = re.search(r"(\d+) requests in", text)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", text)
    scale = {"B": 1 / 2**20, "KB": 1 / 1024, "MB": 1, "GB": 1024}
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "requests": int(reqs.group(1)) if reqs else 0,
        "p50": latency("50"),
        "p99": latency("99"),
        "errors": (int(errors.group(1)) if errors else 0)
        + (sum(int(x) for x in sock.groups()) if sock else 0),
        "mib_s": float(transfer.group(1)) * scale.get(transfer.group(2), 1) if transfer else 0.0,
    }


class Target:
    def __init__(self, name: str, label: str, port: int, pids_of, scheme: str = "http"):
        self.name, self.label, self.port, self.pids_of = name, label, port, pids_of
        self.scheme = scheme


def upstream_accepts(status_port: int) -> int:
    """Connections the upstream nginx has accepted so far (its stub_status)."""
    with socket.create_connection(("127.0.0.1", status_port), timeout=5) as s:
        s.sendall(b"GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        text = b""
        while chunk := s.recv(4096):
            text += chunk
    m = re.search(rb"\n\s*(\d+)\s+\d+\s+\d+", text)
    return int(m.group(1)) if m else 0


def make_tls(work: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for localhost / 127.0.0.1 signed by it (openssl)."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=work, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=acp-bench-ca", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost")
    (work / "leaf.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext")
    return work / "ca.pem", work / "leaf.pem", work / "leaf.key"


def run_wrk(target: Target, path: str, conns: int, seconds: int, threads: int,
            status_port: int) -> dict:
    pids = target.pids_of()
    before = cpu_split(pids) if pids else (0.0, 0.0)
    accepted = upstream_accepts(status_port)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency",
         f"{target.scheme}://127.0.0.1:{target.port}{path}"],
        capture_output=True, text=True, check=True,
    ).stdout
    result = parse_wrk(out)
    result["upstream_conns"] = upstream_accepts(status_port) - accepted
    if pids:
        user, system = (a - b for a, b in zip(cpu_split(pids), before))
        per_1k = 1000 / max(result["requests"], 1)
        result["cpu_per_1k"] = (user + system) * per_1k
        result["user_per_1k"] = user * per_1k
        result["sys_per_1k"] = system * per_1k
        result["rss_mib"] = status_kib(pids, "VmHWM") / 1024
    else:
        result["cpu_per_1k"] = float("nan")
        result["user_per_1k"] = result["sys_per_1k"] = float("nan")
        result["rss_mib"] = float("nan")
    return result


def nginx_conf(work: Path, name: str, port: int, workers: str, body: str) -> Path:
    conf = work / f"{name}.conf"
    conf.write_text(
        f"""
worker_processes {workers};
pid {work}/{name}.pid;
error_log {work}/{name}.error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/{name}-body;
    proxy_temp_path {work}/{name}-proxy;
    fastcgi_temp_path {work}/{name}-fcgi;
    uwsgi_temp_path {work}/{name}-uwsgi;
    scgi_temp_path {work}/{name}-scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        {body}
    }}
}}
"""
    )
    return conf


def start(cmd: list[str], env=None, cpus: str | None = None,
          log: Path | None = None) -> subprocess.Popen:
    """Starts a server; its output goes to `log`, else to the bench log (a pipe nobody reads
    could block it)."""
    if cpus:
        cmd = ["taskset", "-c", cpus] + cmd
    out = open(log or Path(tempfile.gettempdir()) / "acp-bench.log", "ab")
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=out)


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s: a smoke test")
    parser.add_argument("--only", help="comma-separated scenario keys, e.g. small-32,small-32-1core")
    parser.add_argument("--no-checks", action="store_true",
                        help="skip start-up, memory and cold-request checks")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 2

    # 1,000 concurrent clients: the proxy (inheriting this limit) holds about 2 descriptors each.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(8192, hard)), hard))
    work = Path(tempfile.mkdtemp(prefix="acp-bench-"))
    work.chmod(0o755)  # nginx workers may run as another user
    (work / "www" / "v1").mkdir(parents=True)
    small = json.dumps({"items": [{"service": f"svc-{i:02d}", "cost_usd": 1234.5678 + i,
                                   "currency": "USD"} for i in range(18)]})[:1000]
    (work / "www" / "v1" / "small.json").write_text(small.ljust(1024))
    with open(work / "www" / "v1" / "big.bin", "wb") as f:
        f.truncate(100 * 2**20)
    with open(work / "www" / "v1" / "huge.bin", "wb") as f:
        f.truncate(checks.GIB)

    secret = secrets.token_hex(24)
    env = dict(os.environ, AZURE_COSTS_CLIENT_SECRET=secret, RUST_LOG="warn")
    env.pop("AZURE_COSTS_PROXY_CONFIG", None)
    procs: list[subprocess.Popen] = []
    results: dict[str, dict[str, list[dict]]] = {}

    try:
        up_port, tls_port, status_port = free_port(), free_port(), free_port()
        ca, cert, key = make_tls(work)
        files = f"root {work}/www; location /v1/ {{ default_type application/json; }}"
        # Three servers in one upstream nginx: plain, TLS with HTTP/2, and its stub_status.
        up = start(["nginx", "-c", str(nginx_conf(
            work, "upstream", up_port, "1",
            f"""{files}
    }}
    server {{
        listen 127.0.0.1:{tls_port} ssl http2 backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_session_cache shared:bench:10m;
        keepalive_requests 1000000;
        http2_max_requests 1000000;
        {files}
    }}
    server {{
        listen 127.0.0.1:{status_port};
        location = /status {{ stub_status; }}"""))])
        procs.append(up)
        for port in (up_port, tls_port, status_port):
            wait_port(port)

        sim, urls = start_simulator(env, [])
        procs.append(sim)

        def launch(cpus: str | None, workers: str, tls: bool,
                   access_log: bool) -> tuple[Target, Target, Target]:
            proxy_port, admin_port, nginx_port = free_port(), free_port(), free_port()
            if tls:
                upstream, extra = f"https://localhost:{tls_port}", f'ca_file = "{ca}"'
            else:
                upstream, extra = f"http://127.0.0.1:{up_port}", ""
            config = write_proxy_config(
                work / "proxy.toml", proxy_port, admin_port, upstream, urls, upstream_extra=extra
            )
            # The access log as in production (RUST_LOG=info, one line per request, here to a
            # file), and nginx's to a file too; else both off. The proxy's log goes to a folder
            # of its own, as the service's `logs\` and journald do: the proxy watches the folder
            # of its config, and a log beside it would wake the watch on every line.
            proxy_env = dict(env, RUST_LOG="info") if access_log else env
            (work / "logs").mkdir(exist_ok=True)
            proxy = start([str(BIN), "run", "--config", str(config)], env=proxy_env, cpus=cpus,
                          log=work / "logs" / "proxy-access.log" if access_log else None)
            procs.append(proxy)
            # nginx towards the TLS upstream in its best configuration: keep-alive, session
            # reuse, verification on.
            tls_lines = f"""
                    proxy_ssl_session_reuse on;
                    proxy_ssl_server_name on;
                    proxy_ssl_name localhost;
                    proxy_ssl_verify on;
                    proxy_ssl_trusted_certificate {ca};""" if tls else ""
            target_port = tls_port if tls else up_port
            ng = start(["nginx", "-c", str(nginx_conf(
                work, f"proxy-{workers}-{'tls' if tls else 'plain'}", nginx_port, workers,
                f"""location / {{
                    proxy_pass {'https' if tls else 'http'}://up;
                    proxy_http_version 1.1;
                    proxy_set_header Connection "";
                    proxy_set_header Host {'localhost' if tls else '127.0.0.1'}:{target_port};
                    proxy_set_header Authorization "Bearer {TOKEN}";
                    proxy_max_temp_file_size 0;{tls_lines}
                    access_log {work / "nginx-access.log" if access_log else "off"};
                }}
            }}
            upstream up {{ server 127.0.0.1:{target_port}; keepalive 256;""",
            ))], cpus=cpus)
            procs.append(ng)
            for port in (proxy_port, nginx_port):
                wait_port(port)
            wait_ready(admin_port)
            return (
                Target("A", "upstream direct", target_port,
                       lambda: children(up.pid) or [up.pid], "https" if tls else "http"),
                Target("B", "azure-costs-proxy", proxy_port, lambda: [proxy.pid]),
                Target("C", "nginx proxy", nginx_port, lambda: children(ng.pid) or [ng.pid]),
            )

        scenarios = [
            # (key, path, connections, wrk threads, cpus for B and C, nginx workers, TLS upstream,
            #  access log of B and C)
            ("small-32", "/v1/small.json", 32, 2, None, "auto", False, False),
            ("small-256", "/v1/small.json", 256, 2, None, "auto", False, False),
            ("big-4", "/v1/big.bin", 4, 2, None, "auto", False, False),
            ("tls-32", "/v1/small.json", 32, 2, None, "auto", True, False),
            ("tls-256", "/v1/small.json", 256, 2, None, "auto", True, False),
            ("tls-big-4", "/v1/big.bin", 4, 2, None, "auto", True, False),
            ("small-32-1core", "/v1/small.json", 32, 1, "1", "1", False, False),
            ("small-32-log", "/v1/small.json", 32, 2, None, "auto", False, True),
        ]
        if args.only:
            wanted = args.only.split(",")
            scenarios = [s for s in scenarios if s[0] in wanted]
        current = None
        targets = ()
        for key, path, conns, threads, cpus, workers, tls, access_log in scenarios:
            if current != (cpus, workers, tls, access_log):
                # Restart B and C with the scenario's CPU limit (A and the STS stay).
                for p in procs[2:]:
                    p.send_signal(signal.SIGTERM)
                    p.wait(timeout=40)
                del procs[2:]
                targets = launch(cpus, workers, tls, access_log)
                current = (cpus, workers, tls, access_log)
            results[key] = {t.name: [] for t in targets}
            for t in targets:  # warm-up
                run_wrk(t, path, conns, 1, threads, status_port)
            for _ in range(args.rounds):
                for t in targets:
                    results[key][t.name].append(
                        run_wrk(t, path, conns, args.seconds, threads, status_port))
            print(f"{key}: " + ", ".join(
                f"{t.name} {median([r['rps'] for r in results[key][t.name]]):.0f} req/s"
                for t in targets), flush=True)
        labels = {t.name: t.label for t in targets}
        # B and C stop first: the checks start proxies of their own.
        for p in procs[2:]:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=40)
        del procs[2:]
        extra = {}
        if not args.no_checks:
            extra = checks.run_all(work, env, f"http://127.0.0.1:{up_port}", urls)
            print(f"checks: {extra}", flush=True)
    finally:
        stop(procs, 10)
        shutil.rmtree(work, ignore_errors=True)

    write_report(results, labels, args, extra)
    return 0


def write_report(results: dict, labels: dict, args, extra: dict) -> None:
    def med(key: str, target: str, field: str) -> float:
        return median([r[field] for r in results[key][target]])

    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                         capture_output=True, text=True).stdout.strip()
    lines = [
        "# Benchmark: upstream direct (A), azure-costs-proxy (B), nginx (C)",
        "",
        f"`bench/run.sh`, {time.strftime('%Y-%m-%d %H:%M')}, {args.rounds} rounds of "
        f"{args.seconds} s per target, alternated A B C. Medians.",
        f"Machine: {cpu}, {os.cpu_count()} cores, Linux {platform.release()}; "
        f"{subprocess.run(['nginx', '-v'], capture_output=True, text=True).stderr.strip()}; "
        "load from wrk.",
        "",
        "| scenario | target | req/s | p50 ms | p99 ms | CPU s / 1k req (user + sys) | "
        "peak RSS MiB | upstream conns opened | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in results:
        for t in results[key]:
            lines.append(
                f"| {key} | {t} {labels[t]} | {med(key, t, 'rps'):.0f} | {med(key, t, 'p50'):.3f} | "
                f"{med(key, t, 'p99'):.3f} | {med(key, t, 'cpu_per_1k'):.4f} "
                f"({med(key, t, 'user_per_1k'):.4f} + {med(key, t, 'sys_per_1k'):.4f}) | "
                f"{med(key, t, 'rss_mib'):.1f} | {med(key, t, 'upstream_conns'):.0f} | "
                f"{sum(r['errors'] for r in results[key][t])} |"
            )
    lines += ["", "## Ratios (proxy / nginx)", "",
              "| scenario | throughput | CPU per request | added p50 over direct (B vs C) | p99 |",
              "|---|---:|---:|---:|---:|"]
    for key in results:
        b_rps, c_rps = med(key, "B", "rps"), med(key, "C", "rps")
        b_cpu, c_cpu = med(key, "B", "cpu_per_1k"), med(key, "C", "cpu_per_1k")
        a50 = med(key, "A", "p50")
        added_b, added_c = med(key, "B", "p50") - a50, med(key, "C", "p50") - a50
        lines.append(
            f"| {key} | {b_rps / c_rps:.2f}x | {b_cpu / c_cpu:.2f}x | "
            f"{added_b:.3f} vs {added_c:.3f} ms | {med(key, 'B', 'p99'):.3f} vs "
            f"{med(key, 'C', 'p99'):.3f} ms |"
        )
    if extra:
        c = extra["cold"]
        lines += ["", "## One-off checks (a fresh proxy process each)", "",
                  "| check | measured | target | met |", "|---|---:|---:|---|",
                  f"| start-up, exec to ready (token fetched from the local STS), median of 10 | "
                  f"{extra['startup_ms']:.1f} ms (max {extra['startup_max_ms']:.1f}) | < 50 ms | "
                  f"{'yes' if extra['startup_ms'] < 50 else 'NO'} |",
                  f"| idle RSS, ready | {extra['idle_mib']:.1f} MiB | < 12 MiB | "
                  f"{'yes' if extra['idle_mib'] < 12 else 'NO'} |",
                  f"| peak RSS after streaming 1 GiB ({extra['bytes']:,} bytes, "
                  f"{extra['mib_per_s']:.0f} MiB/s to one Python reader) | "
                  f"{extra['peak_mib']:.1f} MiB | < 32 MiB | "
                  f"{'yes' if extra['peak_mib'] < 32 and extra['bytes'] == checks.GIB else 'NO'} |",
                  f"| {c['requests']:,} concurrent cold requests (token not fetched yet: "
                  f"{'yes' if c['cold'] else 'no'}), STS answering after 500 ms | "
                  f"{c['ok']:,} answered 200, {c['sts_calls']} STS call(s), {c['seconds']:.2f} s | "
                  f"1 STS call | {'yes' if c['sts_calls'] == 1 and c['ok'] == c['requests'] and c['cold'] else 'NO'} |"]
    out = ROOT / "bench" / "results.md"
    out.write_text("\n".join(lines) + "\n\n![chart](results.png)\n")
    print("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no chart", file=sys.stderr)
        return
    keys = [k for k in results if "big" not in k]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.25
    for i, t in enumerate(["A", "B", "C"]):
        xs = [j + (i - 1) * width for j in range(len(keys))]
        axes[0].bar(xs, [med(k, t, "rps") / 1000 for k in keys], width, label=labels[t])
        axes[1].bar(xs, [med(k, t, "cpu_per_1k") for k in keys], width, label=labels[t])
    for ax, title in zip(axes, ["thousand requests/s (higher is better)",
                                "CPU s per 1,000 requests (lower is better)"]):
        ax.set_xticks(range(len(keys)), keys, rotation=20, ha="right")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(ROOT / "bench" / "results.png", dpi=100)


if __name__ == "__main__":
    sys.exit(main())
