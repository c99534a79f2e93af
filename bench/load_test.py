#!/usr/bin/env python3
"""Load test: many concurrent connections against the proxy in front of a slow upstream.

Everything runs on 127.0.0.1 and is bounded in time:
  * `azure-costs-proxy simulator --api-delay DELAY` is the Azure Costs STS and API, every API
    answer delayed (a slow upstream);
  * `azure-costs-proxy run` is the proxy, configured from the environment plus a config file
    written here;
  * CONNECTIONS asyncio clients each open a keep-alive connection and send GET /v1/teams in a
    loop for DURATION seconds;
  * meanwhile a probe asks the admin /healthz every 100 ms on its own connection and records
    how long each answer takes, and a sampler reads the proxy's RSS from /proc.

Prints a summary and writes it to bench/load-results.md. Exits 1 if a probe failed or took longer
than 1 s, or if a client request got anything but 200.

    bench/load_test.py [--connections 2000] [--duration 20] [--delay 1s] [--max-connections N]
"""

import argparse
import asyncio
import os
import platform
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, BIN, cpu_seconds, free_port, start_simulator, status_kib, wait_ready
from common import stop, write_proxy_config


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB."""
    return status_kib([pid], "VmRSS"), status_kib([pid], "VmHWM")


async def read_response(reader: asyncio.StreamReader) -> int:
    """Reads one HTTP/1.1 response (Content-Length or chunked); returns its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


class Stats:
    def __init__(self) -> None:
        self.ok = 0
        self.bad: dict[str, int] = {}
        self.latencies: list[float] = []
        self.connected = 0

    def fail(self, why: str) -> None:
        self.bad[why] = self.bad.get(why, 0) + 1


async def client(port: int, path: str, deadline: float, stats: Stats) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        stats.fail(f"connect: {e.strerror}")
        return
    stats.connected += 1
    request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
    try:
        while time.monotonic() < deadline:
            start = time.monotonic()
            writer.write(request)
            await writer.drain()
            status = await asyncio.wait_for(read_response(reader), 120)
            if status == 200:
                stats.ok += 1
                stats.latencies.append(time.monotonic() - start)
            else:
                stats.fail(f"HTTP {status}")
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
        stats.fail(type(e).__name__)
    finally:
        writer.close()


async def probe(port: int, until: float, samples: list[float], failures: list[str]) -> None:
    """GET /healthz on the admin listener every 100 ms, each on a new connection."""
    while time.monotonic() < until:
        start = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), 5
            )
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            status = await asyncio.wait_for(read_response(reader), 5)
            writer.close()
            if status != 200:
                failures.append(f"HTTP {status}")
            samples.append(time.monotonic() - start)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            failures.append(type(e).__name__)
        await asyncio.sleep(0.1)


async def sampler(pid: int, until: float, rss: list[int], conns: list[int]) -> None:
    while time.monotonic() < until:
        rss.append(rss_kib(pid)[0])
        try:
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            fds = 0
        conns.append(fds)
        await asyncio.sleep(0.2)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument("--delay", default="1s", help="the slow upstream's delay per answer")
    parser.add_argument(
        "--max-connections",
        type=int,
        default=4096,
        help="the proxy's listen.max_connections (default 4096, so all clients are served at "
        "once; with the shipped default of 1024 the rest wait in the backlog)",
    )
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--output", default=str(ROOT / "bench" / "load-results.md"))
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.connections * 3 + 1000
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < need:
        print(f"need {need} file descriptors (ulimit -n), have {soft}", file=sys.stderr)
        return 2

    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)

    secret = secrets.token_hex(24)
    env = dict(os.environ, AZURE_COSTS_CLIENT_SECRET=secret, RUST_LOG="warn")
    env.pop("AZURE_COSTS_PROXY_CONFIG", None)
    procs: list[subprocess.Popen] = []
    try:
        sim, urls = start_simulator(env, ["--api-delay", args.delay])
        procs.append(sim)

        port, admin = free_port(), free_port()
        work = Path(tempfile.mkdtemp(prefix="acp-load-"))
        config = write_proxy_config(
            work / "proxy.toml", port, admin, urls["API"], urls,
            listen_extra=f"max_connections = {args.max_connections}",
            upstream_extra='timeout = "30s"',
        )
        proxy = subprocess.Popen([str(BIN), "run", "--config", str(config)], env=env)
        procs.append(proxy)
        wait_ready(admin)

        idle_rss = rss_kib(proxy.pid)[0]
        cpu_before = cpu_seconds([proxy.pid])
        stats = Stats()
        probes: list[float] = []
        probe_failures: list[str] = []
        rss: list[int] = []
        fds: list[int] = []
        start = time.monotonic()
        deadline = start + args.duration
        tasks = [client(port, "/v1/teams", deadline, stats) for _ in range(args.connections)]
        await asyncio.gather(
            *tasks,
            probe(admin, deadline, probes, probe_failures),
            sampler(proxy.pid, deadline, rss, fds),
        )
        elapsed = time.monotonic() - start
        cpu = cpu_seconds([proxy.pid]) - cpu_before
        _, peak_rss = rss_kib(proxy.pid)
        after_rss = rss_kib(proxy.pid)[0]
    finally:
        # The proxy drains for up to its shutdown_grace (30 s).
        stop(procs, 40)

    lat = stats.latencies
    rows = [
        ("machine", f"{platform.machine()}, {os.cpu_count()} cores, {platform.release()}"),
        ("clients", f"{args.connections} keep-alive connections, {args.duration:.0f} s"),
        ("slow upstream", f"every answer delayed {args.delay}"),
        ("proxy max_connections", str(args.max_connections)),
        ("connected", str(stats.connected)),
        ("requests answered 200", f"{stats.ok} ({stats.ok / elapsed:.0f}/s)"),
        ("other outcomes", ", ".join(f"{k}: {v}" for k, v in stats.bad.items()) or "none"),
        ("client latency p50 / p99 / max",
         f"{pct(lat, 50) * 1000:.0f} / {pct(lat, 99) * 1000:.0f} / "
         f"{(max(lat) if lat else float('nan')) * 1000:.0f} ms"),
        ("/healthz probes", f"{len(probes)} answered, {len(probe_failures)} failed"),
        ("/healthz latency p50 / p99 / max",
         f"{pct(probes, 50) * 1000:.1f} / {pct(probes, 99) * 1000:.1f} / "
         f"{(max(probes) if probes else float('nan')) * 1000:.1f} ms"),
        ("proxy RSS idle / peak / after", f"{idle_rss / 1024:.1f} / {peak_rss / 1024:.1f} / "
         f"{after_rss / 1024:.1f} MiB"),
        ("proxy open fds, peak", str(max(fds) if fds else 0)),
        ("proxy CPU", f"{cpu:.2f} s ({cpu / max(stats.ok, 1) * 1000:.3f} s per 1,000 requests)"),
    ]
    width = max(len(k) for k, _ in rows)
    text = "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
    print(text)
    out = Path(args.output)
    out.write_text(
        "# Load test: many connections, slow upstream\n\n"
        f"`bench/load_test.py --connections {args.connections} --duration {args.duration:.0f} "
        f"--delay {args.delay} --max-connections {args.max_connections}`, "
        f"{time.strftime('%Y-%m-%d')}.\n\n"
        "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"
    )
    healthy = not probe_failures and probes and max(probes) < 1.0
    return 0 if healthy and not stats.bad else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
