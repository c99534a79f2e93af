"""The issue's one-off targets, each on a fresh proxy process: start-up time, idle memory, peak
memory while streaming 1 GiB, and 1,000 concurrent cold requests sharing one STS call.

Called by bench.py with the nginx upstream it started; the figures go into results.md."""

import asyncio
import http.client
import statistics
import subprocess
import time
from pathlib import Path

from common import BIN, free_port, start_simulator, status_kib, stop, wait_ready
from common import write_proxy_config

GIB = 2**30


def _proxy(work: Path, env: dict, upstream: str, urls: dict, name: str):
    port, admin = free_port(), free_port()
    config = write_proxy_config(work / f"{name}.toml", port, admin, upstream, urls)
    log = open(work / f"{name}.log", "ab")
    started = time.monotonic()
    proc = subprocess.Popen([str(BIN), "run", "--config", str(config)], env=env,
                            stdout=log, stderr=log)
    return proc, port, admin, started


def startup(work: Path, env: dict, upstream: str, urls: dict, runs: int = 10) -> list[float]:
    """Milliseconds from exec to /readyz answering 200: listeners up and the token fetched from
    the (local) STS. /readyz is asked every 0.5 ms."""
    times = []
    for i in range(runs):
        proc, _, admin, started = _proxy(work, env, upstream, urls, f"startup-{i}")
        try:
            wait_ready(admin, timeout=10, interval=0.0005)
            times.append((time.monotonic() - started) * 1000)
        finally:
            stop([proc], 10)
    return times


def memory(work: Path, env: dict, upstream: str, urls: dict, path: str) -> dict:
    """Idle RSS of a fresh, ready proxy; then one GET of `path` (1 GiB) read to the end, and the
    proxy's peak RSS (VmHWM) afterwards."""
    proc, port, admin, _ = _proxy(work, env, upstream, urls, "memory")
    try:
        wait_ready(admin)
        time.sleep(1)  # let start-up allocations settle: this is the idle figure
        idle = status_kib([proc.pid], "VmRSS") / 1024
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        started = time.monotonic()
        conn.request("GET", path)
        response = conn.getresponse()
        total = 0
        while chunk := response.read(1 << 20):
            total += len(chunk)
        seconds = time.monotonic() - started
        conn.close()
        peak = status_kib([proc.pid], "VmHWM") / 1024
        return {"idle_mib": idle, "peak_mib": peak, "bytes": total, "status": response.status,
                "mib_per_s": total / 2**20 / seconds}
    finally:
        stop([proc], 10)


async def _get(port: int, path: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readline()
    await reader.read()
    writer.close()
    return int(head.split()[1])


async def _burst(port: int, path: str, n: int) -> list[int]:
    return await asyncio.gather(*(_get(port, path) for _ in range(n)),
                                return_exceptions=True)


def cold(work: Path, env: dict, upstream: str, path: str, n: int = 1000) -> dict:
    """A proxy whose STS answers after 500 ms: n requests sent at once while it has no token yet
    (/readyz still 503) must all be answered, with one STS call between them."""
    sim, urls = start_simulator(env, ["--sts-delay", "500ms"])
    proc, port, admin, _ = _proxy(work, env, upstream, urls, "cold")
    try:
        deadline = time.monotonic() + 10
        while True:  # the data listener is up (the token fetch has started)
            try:
                http.client.HTTPConnection("127.0.0.1", admin, timeout=1).connect()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.005)
        probe = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
        probe.request("GET", "/readyz")
        was_ready = probe.getresponse().status == 200
        probe.close()
        started = time.monotonic()
        statuses = asyncio.run(_burst(port, path, n))
        seconds = time.monotonic() - started
        metrics = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
        metrics.request("GET", "/metrics")
        text = metrics.getresponse().read().decode()
        calls = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                    if line.startswith("azure_costs_proxy_sts_requests_total"))
        ok = sum(1 for s in statuses if s == 200)
        return {"requests": n, "ok": ok, "sts_calls": int(calls), "cold": not was_ready,
                "seconds": seconds}
    finally:
        stop([proc, sim], 10)


def run_all(work: Path, env: dict, upstream: str, urls: dict) -> dict:
    times = startup(work, env, upstream, urls)
    result = {"startup_ms": statistics.median(times), "startup_max_ms": max(times)}
    result.update(memory(work, env, upstream, urls, "/v1/huge.bin"))
    result["cold"] = cold(work, env, upstream, "/v1/small.json")
    return result
