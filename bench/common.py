"""What bench.py and load_test.py share: free ports, /proc figures, and starting the simulator
and the proxy configured against it."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The shipped build (`cargo build --profile dist`), as bench/run.sh builds it.
BIN = ROOT / "target" / "dist" / "azure-costs-proxy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_split(pids: list[int]) -> tuple[float, float]:
    """User and system CPU time of these processes, in seconds."""
    user = system = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        user += int(fields[11])
        system += int(fields[12])
    tick = os.sysconf("SC_CLK_TCK")
    return user / tick, system / tick


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of these processes, in seconds."""
    return sum(cpu_split(pids))


def status_kib(pids: list[int], key: str) -> int:
    """The sum of a /proc/PID/status figure (VmRSS, VmHWM) over these processes, in KiB."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name == key:
                total += int(rest.split()[0])
    return total


def start_simulator(env: dict, args: list[str]) -> tuple[subprocess.Popen, dict[str, str]]:
    """`azure-costs-proxy simulator ARGS` and the URLs it prints (API, STS, CLIENT_ID)."""
    sim = subprocess.Popen([str(BIN), "simulator", *args], env=env, stdout=subprocess.PIPE,
                           text=True)
    urls = {}
    while len(urls) < 3:
        line = sim.stdout.readline()
        if not line:
            raise RuntimeError("the simulator did not start")
        key, _, value = line.strip().partition(" ")
        urls[key] = value
    return sim, urls


def write_proxy_config(path: Path, port: int, admin: int, upstream: str, urls: dict[str, str],
                       listen_extra: str = "", upstream_extra: str = "") -> Path:
    """A proxy.toml on loopback in front of `upstream`, its token from the simulator's STS, the
    secret read from $AZURE_COSTS_CLIENT_SECRET."""
    path.write_text(
        f'[listen]\naddress = "127.0.0.1:{port}"\n{listen_extra}\n'
        f'[admin]\naddress = "127.0.0.1:{admin}"\n'
        f'[upstream]\nurl = "{upstream}"\n{upstream_extra}\n'
        f'[sts]\ntoken_url = "{urls["STS"]}"\n'
        f'[credentials.default]\nclient_id = "{urls["CLIENT_ID"]}"\n'
        'client_secret = { env = "AZURE_COSTS_CLIENT_SECRET" }\n'
    )
    return path


def wait_port(port: int, timeout: float = 10) -> None:
    """Waits until something accepts connections on `port` on 127.0.0.1."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port}")


def wait_ready(admin: int, timeout: float = 10, interval: float = 0.02) -> None:
    """Waits until the proxy's /readyz says 200 (it holds its token), asking every `interval` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", admin), timeout=1) as s:
                s.sendall(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                if b" 200 " in s.recv(64):
                    return
        except OSError:
            pass
        time.sleep(interval)
    raise RuntimeError("the proxy did not become ready")


def stop(procs: list[subprocess.Popen], timeout: float) -> None:
    """SIGTERM to each process still running (last started first), then waits up to `timeout`
    for each and kills what is left."""
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
    procs.clear()
