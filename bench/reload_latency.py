#!/usr/bin/env python3
"""Reload latency of `[reload] watch`: from a change on disk to the first request served with
the new config, no signal sent.

Everything runs on 127.0.0.1 and is bounded in time: `azure-costs-proxy simulator` is the STS and
API, `azure-costs-proxy run` the proxy, its config and secret in files. Each round changes a file
and asks the proxy every 2 ms on one keep-alive connection until the answer shows the change:

  * config, renamed over: a second route is added (its path turns from 404 to 200), then removed;
  * config, Kubernetes volume: the same, by a new `..TIMESTAMP/` directory and a `..data` swap;
  * secret, rewritten in place: a wrong secret (the route's answer turns from 200 to 502, the STS
    refusing the new secret), then the right one again (back to 200).

Prints the median, fastest and slowest of each. The proxy waits for the writes to settle (1 s)
before it reloads, so about a second is expected; what is measured is how much more it takes.

    bench/reload_latency.py [--rounds 5] [--binary target/debug/azure-costs-proxy]
"""

import argparse
import http.client
import os
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import common
from common import BIN, free_port, start_simulator, stop, wait_ready


def config_text(port: int, admin: int, urls: dict[str, str], secret: Path, route: bool) -> str:
    text = (
        f'[listen]\naddress = "127.0.0.1:{port}"\n'
        f'[admin]\naddress = "127.0.0.1:{admin}"\n'
        f'[upstream]\nurl = "{urls["API"]}"\n'
        f'[sts]\ntoken_url = "{urls["STS"]}"\n'
        f'[credentials.default]\nclient_id = "{urls["CLIENT_ID"]}"\n'
        f'client_secret = {{ file = "{secret}" }}\n'
    )
    if route:
        text += '[[routes]]\nprefix = "/"\n[[routes]]\nprefix = "/contoso"\n'
    return text


def replace(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.rename(tmp, path)


def publish(volume: Path, version: str, files: dict[str, str]) -> None:
    """The kubelet's atomic writer: a new version directory, `..data` swapped, the old removed."""
    data = volume / "..data"
    old = os.readlink(data) if data.is_symlink() else None
    (volume / version).mkdir()
    for name, text in files.items():
        (volume / version / name).write_text(text)
        if not (volume / name).is_symlink():
            os.symlink(f"..data/{name}", volume / name)
    os.symlink(version, volume / "..data_tmp")
    os.rename(volume / "..data_tmp", data)
    if old:
        for f in (volume / old).iterdir():
            f.unlink()
        (volume / old).rmdir()


class Client:
    """One keep-alive connection to the proxy."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    def status(self, path: str) -> int:
        self.conn.request("GET", path, headers={"Host": "localhost"})
        r = self.conn.getresponse()
        r.read()
        return r.status

    def until(self, path: str, status: int, started: float, timeout: float = 20) -> float:
        """Seconds from `started` to the first answer `status` on `path`."""
        while True:
            if self.status(path) == status:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{path} never answered {status}")
            time.sleep(0.002)


def proxy(binary: Path, config: Path, env: dict, admin: int) -> subprocess.Popen:
    p = subprocess.Popen([str(binary), "run", "--config", str(config)], env=env,
                         stderr=subprocess.DEVNULL)
    wait_ready(admin)
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--binary", type=Path, default=None,
                    help="a built binary to use (default: build and use target/dist)")
    args = ap.parse_args()
    if args.binary is None:
        subprocess.run(["cargo", "build", "--profile", "dist", "--locked"], cwd=common.ROOT,
                       check=True)
        args.binary = BIN
    common.BIN = args.binary  # the simulator too
    secret = secrets.token_hex(16)
    env = {**os.environ, "AZURE_COSTS_CLIENT_SECRET": secret, "RUST_LOG": "warn"}
    procs: list[subprocess.Popen] = []
    results: dict[str, list[float]] = {}
    try:
        sim, urls = start_simulator(env, [])
        procs.append(sim)
        with tempfile.TemporaryDirectory(prefix="acp-reload-") as tmp:
            tmp = Path(tmp)
            # A config file renamed over, and a secret file rewritten in place.
            port, admin = free_port(), free_port()
            secret_file = tmp / "secret"
            secret_file.write_text(secret)
            path = tmp / "proxy.toml"
            path.write_text(config_text(port, admin, urls, secret_file, False))
            procs.append(proxy(args.binary, path, env, admin))
            c = Client(port)
            for _ in range(args.rounds):
                for route, want in [(True, 200), (False, 404)]:
                    time.sleep(0.3)
                    started = time.monotonic()
                    replace(path, config_text(port, admin, urls, secret_file, route))
                    results.setdefault("config renamed over", []).append(
                        c.until("/contoso/v1/teams", want, started))
                for text, want in [("wrong-" + secret, 502), (secret, 200)]:
                    time.sleep(0.3)
                    started = time.monotonic()
                    secret_file.write_text(text)
                    results.setdefault("secret rewritten in place", []).append(
                        c.until("/v1/teams", want, started))
            stop(procs[1:], 10)
            del procs[1:]

            # A Kubernetes ConfigMap/Secret volume.
            volume = tmp / "volume"
            volume.mkdir()
            port, admin = free_port(), free_port()
            ksecret = volume / "client_secret"
            n = 0

            def version(route: bool) -> None:
                nonlocal n
                n += 1
                publish(volume, f"..2026_01_01_00_00_{n:02}.000000001", {
                    "proxy.toml": config_text(port, admin, urls, ksecret, route),
                    "client_secret": secret,
                })

            version(False)
            procs.append(proxy(args.binary, volume / "proxy.toml", env, admin))
            c = Client(port)
            for _ in range(args.rounds):
                for route, want in [(True, 200), (False, 404)]:
                    time.sleep(0.3)
                    started = time.monotonic()
                    version(route)
                    results.setdefault("Kubernetes ..data swap", []).append(
                        c.until("/contoso/v1/teams", want, started))
    finally:
        stop(procs, 10)
    print(f"reload latency, change to first request served with it ({args.rounds} rounds):")
    for name, times in results.items():
        ms = [t * 1000 for t in times]
        print(f"  {name:28} median {statistics.median(ms):7.1f} ms  "
              f"min {min(ms):7.1f}  max {max(ms):7.1f}  (n={len(ms)})")


if __name__ == "__main__":
    main()
