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

With --h2-uploads N it runs a second scenario instead: N HTTP/2 (h2c) client connections each open
100 streams (the proxy's per-connection limit), POST /v1/echo with a first byte, and then trickle
one byte per stream every 2 s (inside listen.body_timeout), so that every stream that gets an
upstream connection keeps it. A sampler counts the proxy's established connections to the API
(/proc/net/tcp) and its file descriptors; the /healthz probe runs as above. Exits 1 if the upstream
connections ever exceed upstream.max_connections or a probe failed or took longer than 1 s.

    bench/load_test.py [--connections 2000] [--duration 20] [--delay 1s] [--max-connections N]
    bench/load_test.py --h2-uploads 20 [--duration 20] [--upstream-max-connections 256]
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


# --- HTTP/2 uploads: raw frames, enough of RFC 9113 for a slow client ---------------------------

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7


def h2_frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def h2_post(path: bytes) -> bytes:
    """HPACK block of POST http://localhost{path}: :method POST and :scheme http indexed, :path and
    :authority as literals without indexing (no Huffman), so no encoder is needed."""
    return bytes([0x83, 0x86, 0x04, len(path)]) + path + bytes([0x01, 9]) + b"localhost"


class H2Stats:
    def __init__(self) -> None:
        self.connected = 0
        self.streams = 0
        self.answered_early = 0  # answered while the upload was still open: 503 upstream_busy
        self.reset = 0
        self.goaway = 0
        self.failed: dict[str, int] = {}


async def h2_uploader(port: int, streams: int, deadline: float, stats: H2Stats) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        stats.failed[f"connect: {e.strerror}"] = stats.failed.get(f"connect: {e.strerror}", 0) + 1
        return
    stats.connected += 1
    open_streams = set(range(1, 2 * streams, 2))
    writer.write(H2_PREFACE + h2_frame(SETTINGS, 0, 0))
    for sid in sorted(open_streams):
        writer.write(h2_frame(HEADERS, 0x4, sid, h2_post(b"/v1/echo")) + h2_frame(DATA, 0, sid, b"x"))
        stats.streams += 1
    await writer.drain()

    async def read_frames() -> None:
        while True:
            head = await reader.readexactly(9)
            length = int.from_bytes(head[:3], "big")
            kind, flags, sid = head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            payload = await reader.readexactly(length)
            if kind == SETTINGS and not flags & 1:
                writer.write(h2_frame(SETTINGS, 1, 0))
            elif kind == PING and not flags & 1:
                writer.write(h2_frame(PING, 1, 0, payload))
            elif kind == HEADERS and sid in open_streams:
                open_streams.discard(sid)
                stats.answered_early += 1
            elif kind == RST_STREAM and sid in open_streams:
                open_streams.discard(sid)
                stats.reset += 1
            elif kind == GOAWAY:
                stats.goaway += 1
                return

    frames = asyncio.ensure_future(read_frames())
    try:
        while time.monotonic() < deadline and not frames.done():
            await asyncio.sleep(2)
            for sid in list(open_streams):
                writer.write(h2_frame(DATA, 0, sid, b"x"))
            await writer.drain()
    except OSError as e:
        stats.failed[type(e).__name__] = stats.failed.get(type(e).__name__, 0) + 1
    finally:
        frames.cancel()
        writer.close()


def upstream_connections(api_port: int) -> int:
    """Established TCP connections to the API's port (the proxy is the only client)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01" and int(fields[2].split(":")[1], 16) == api_port:
            count += 1
    return count


async def upstream_sampler(api_port: int, until: float, counts: list[int]) -> None:
    while time.monotonic() < until:
        counts.append(upstream_connections(api_port))
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
    parser.add_argument(
        "--upstream-max-connections",
        type=int,
        default=None,
        help="the proxy's upstream.max_connections (default: --max-connections for the GET "
        "scenario, so that it measures the proxy and not the budget; 256, the shipped default, "
        "with --h2-uploads)",
    )
    parser.add_argument("--h2-uploads", type=int, default=0, metavar="N",
                        help="run the HTTP/2 slow-upload scenario with N client connections")
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--output", default=str(ROOT / "bench" / "load-results.md"))
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if args.upstream_max_connections is None:
        args.upstream_max_connections = 256 if args.h2_uploads else args.max_connections
    need = args.connections * 3 + 1000
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < need:
        print(f"need {need} file descriptors (ulimit -n), have {soft}", file=sys.stderr)
        return 2

    if not args.no_build:
        subprocess.run(["cargo", "build", "--profile", "dist", "--locked"], cwd=ROOT, check=True)

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
            upstream_extra=f'timeout = "30s"\nmax_connections = {args.upstream_max_connections}',
        )
        proxy = subprocess.Popen([str(BIN), "run", "--config", str(config)], env=env)
        procs.append(proxy)
        wait_ready(admin)

        if args.h2_uploads:
            api_port = int(urls["API"].rsplit(":", 1)[1].split("/")[0])
            return await h2_scenario(args, proxy, admin, port, api_port)
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
        + h2_section(out)
    )
    healthy = not probe_failures and probes and max(probes) < 1.0
    return 0 if healthy and not stats.bad else 1


H2_HEADING = "\n## HTTP/2 uploads: many streams, slow bodies\n"


def h2_section(out: Path) -> str:
    """The HTTP/2 section of an existing results file, kept when the GET scenario rewrites it."""
    text = out.read_text() if out.exists() else ""
    at = text.find(H2_HEADING)
    return text[at:] if at >= 0 else ""


async def h2_scenario(args, proxy: subprocess.Popen, admin: int, port: int, api_port: int) -> int:
    stats = H2Stats()
    probes: list[float] = []
    probe_failures: list[str] = []
    rss: list[int] = []
    fds: list[int] = []
    upstream: list[int] = []
    start = time.monotonic()
    deadline = start + args.duration
    await asyncio.gather(
        *[h2_uploader(port, 100, deadline, stats) for _ in range(args.h2_uploads)],
        probe(admin, deadline, probes, probe_failures),
        sampler(proxy.pid, deadline, rss, fds),
        upstream_sampler(api_port, deadline, upstream),
    )
    peak_upstream = max(upstream) if upstream else 0
    rows = [
        ("machine", f"{platform.machine()}, {os.cpu_count()} cores, {platform.release()}"),
        ("clients", f"{args.h2_uploads} h2c connections x 100 streams, {args.duration:.0f} s"),
        ("each stream", "POST /v1/echo, one byte every 2 s, never finished"),
        ("upstream.max_connections", str(args.upstream_max_connections)),
        ("streams opened", str(stats.streams)),
        ("upstream connections, peak", str(peak_upstream)),
        ("streams answered while uploading (503 upstream_busy)", str(stats.answered_early)),
        ("streams reset / connections sent GOAWAY", f"{stats.reset} / {stats.goaway}"),
        ("client errors", ", ".join(f"{k}: {v}" for k, v in stats.failed.items()) or "none"),
        ("/healthz probes", f"{len(probes)} answered, {len(probe_failures)} failed"),
        ("/healthz latency p50 / p99 / max",
         f"{pct(probes, 50) * 1000:.1f} / {pct(probes, 99) * 1000:.1f} / "
         f"{(max(probes) if probes else float('nan')) * 1000:.1f} ms"),
        ("proxy RSS peak", f"{(max(rss) if rss else 0) / 1024:.1f} MiB"),
        ("proxy open fds, peak", str(max(fds) if fds else 0)),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in rows))
    out = Path(args.output)
    text = out.read_text() if out.exists() else "# Load test\n"
    at = text.find(H2_HEADING)
    if at >= 0:
        text = text[:at]
    out.write_text(
        text.rstrip("\n") + "\n" + H2_HEADING + "\n"
        f"`bench/load_test.py --h2-uploads {args.h2_uploads} --duration {args.duration:.0f} "
        f"--upstream-max-connections {args.upstream_max_connections}`, "
        f"{time.strftime('%Y-%m-%d')}.\n\n"
        "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"
    )
    healthy = not probe_failures and probes and max(probes) < 1.0
    return 0 if healthy and peak_upstream <= args.upstream_max_connections else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
