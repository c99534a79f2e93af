#!/usr/bin/env python3
"""Checks the final stage of ../../Dockerfile without a container runtime.

Base images cannot be pulled here, so this assembles the runtime image's file layout itself:
the release binary where the Dockerfile copies it, the shared libraries the distroless "cc" base
ships (glibc and libgcc, nothing more) and its /etc/passwd. It then runs, chrooted into that
tree as the Dockerfile's USER with an empty environment:

1. the built-in demo (simulator + proxy), as a stand-in Azure Costs;
2. the image's ENTRYPOINT + CMD configured by environment variables only, as `docker run -e ...`
   would, listening on 0.0.0.0 with allow_remote;
3. the image's HEALTHCHECK command against it (exit 0 expected), and against nothing (exit 1);

and fetches data through the proxy. Fails if the binary needs a library the base does not ship,
runs as root, or any step misbehaves. Needs root (chroot) and a release build (built if missing).

Usage: deploy/container/check-runtime.py [--no-build]
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The Dockerfile builds the dist profile; the release build links the same libraries and is the
# one CI has already built, so it stands in for it here.
BINARY = os.path.join(ROOT, "target", "release", "azure-costs-proxy")
# What gcr.io/distroless/cc-debian12 ships of shared libraries (glibc + libgcc-s1).
DISTROLESS_CC_LIBS = {
    "linux-vdso.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1", "libc.so.6",
    "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libgcc_s.so.1",
}
# From src/simulator/mod.rs: the credentials the demo's simulator accepts.
DEMO_CLIENT_ID = "3f1c0d2e-demo-4c7a-9a51-azurecosts01"
DEMO_CLIENT_SECRET = "demo-secret-not-for-production"
TIME_LIMIT = 30


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def final_stage(path):
    """The instructions of the Dockerfile's last stage, continuation lines joined."""
    text = open(path).read().replace("\\\n", " ")
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
    starts = [i for i, l in enumerate(lines) if l.upper().startswith("FROM ")]
    if not starts:
        fail("no FROM in the Dockerfile")
    stage = lines[starts[-1]:]
    found = {"FROM": stage[0].split()[1], "COPY": [], "USER": None, "ENTRYPOINT": None,
             "CMD": None, "HEALTHCHECK": None}
    for line in stage[1:]:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "COPY":
            found["COPY"].append(rest.split())
        elif word == "USER":
            found["USER"] = rest.strip()
        elif word in ("ENTRYPOINT", "CMD"):
            found[word] = json.loads(rest)
        elif word == "HEALTHCHECK":
            cmd = re.search(r"\bCMD\s+(\[.*\])", rest)
            found["HEALTHCHECK"] = json.loads(cmd.group(1)) if cmd else None
    return found


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, what):
    deadline = time.monotonic() + TIME_LIMIT
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    fail(f"timed out waiting for {what}")


def answers(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def uid_of(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    fail(f"no Uid for pid {pid}")


def main():
    if os.geteuid() != 0:
        fail("chroot needs root")
    chroot = shutil.which("chroot")
    if chroot is None:
        fail("no chroot command")
    stage = final_stage(os.path.join(ROOT, "Dockerfile"))
    print(f"final stage: FROM {stage['FROM']}, USER {stage['USER']}")
    if not stage["FROM"].startswith("gcr.io/distroless/cc-debian12"):
        fail(f"this check knows the distroless cc base, not {stage['FROM']}")
    user = stage["USER"] or ""
    if not re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", user):
        fail(f"USER must be a numeric non-root uid:gid, is {user!r}")
    copies = [c for c in stage["COPY"] if c[0].startswith("--from=")]
    if len(copies) != 1:
        fail(f"expected one COPY --from=build, found {copies}")
    destination = copies[0][-1]
    entrypoint, cmd, health = stage["ENTRYPOINT"], stage["CMD"], stage["HEALTHCHECK"]
    if entrypoint != [destination] or not health or health[0] != destination:
        fail(f"ENTRYPOINT {entrypoint} and HEALTHCHECK {health} must run {destination}")

    if "--no-build" not in sys.argv:
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)

    libs = {}
    for line in subprocess.run(["ldd", BINARY], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        parts = line.split()
        name = os.path.basename(parts[0])
        path = parts[2] if len(parts) > 2 and parts[1] == "=>" else parts[0]
        libs[name] = path if path.startswith("/") else None
    extra = set(libs) - DISTROLESS_CC_LIBS
    if extra:
        fail(f"the binary needs libraries the runtime image does not ship: {sorted(extra)}")
    print(f"shared libraries (all shipped by distroless cc): {sorted(libs)}")

    rootfs = tempfile.mkdtemp(prefix="acp-image-")
    os.chmod(rootfs, 0o755)  # as an image's root: the user must be able to enter it
    children = []
    try:
        target = os.path.join(rootfs, destination.lstrip("/"))
        os.makedirs(os.path.dirname(target))
        shutil.copy2(BINARY, target)
        for path in filter(None, libs.values()):
            real = os.path.realpath(path)
            for place in {path, real}:
                inside = os.path.join(rootfs, place.lstrip("/"))
                os.makedirs(os.path.dirname(inside), exist_ok=True)
                shutil.copy2(real, inside)
        os.makedirs(os.path.join(rootfs, "etc"))
        with open(os.path.join(rootfs, "etc", "passwd"), "w") as f:
            f.write("root:x:0:0:root:/root:/sbin/nologin\n"
                    "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
        os.makedirs(os.path.join(rootfs, "home", "nonroot"))
        os.makedirs(os.path.join(rootfs, "tmp"))
        print(f"image layout in {rootfs}: {sum(len(f) for _, _, f in os.walk(rootfs))} files")

        def start(args, env):
            child = subprocess.Popen(
                [chroot, f"--userspec={user}", rootfs] + args, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            children.append(child)
            return child

        # 1. The demo: a simulated Azure Costs STS and API inside the image layout.
        demo_port = free_port()
        demo = start([destination, "demo", "--listen", f"127.0.0.1:{demo_port}"], {})
        # A stuck demo is killed, which ends the read below.
        watchdog = threading.Timer(TIME_LIMIT, demo.kill)
        watchdog.start()
        banner = ""
        while "Press Ctrl-C" not in banner:
            line = demo.stdout.readline()
            if not line:
                fail(f"the demo ended or hung: {demo.stderr.read()}")
            banner += line
        watchdog.cancel()
        sts = re.search(r"STS (http://\S+),", banner).group(1)
        api = re.search(r"API (http://[^)\s]+)\)", banner).group(1)
        print(f"demo up as uid {uid_of(demo.pid)}: STS {sts}, API {api}")

        # 2. ENTRYPOINT + CMD, configured as `docker run -e ...` would.
        port, admin_port = free_port(), free_port()
        env = {
            "AZURE_COSTS_CLIENT_ID": DEMO_CLIENT_ID,
            "AZURE_COSTS_CLIENT_SECRET": DEMO_CLIENT_SECRET,
            "AZURE_COSTS_PROXY_LISTEN": f"0.0.0.0:{port}",
            "AZURE_COSTS_PROXY_ALLOW_REMOTE": "true",
            "AZURE_COSTS_PROXY_ADMIN": f"127.0.0.1:{admin_port}",
            "AZURE_COSTS_UPSTREAM_URL": api,
            "AZURE_COSTS_TOKEN_URL": sts,
        }
        proxy = start(entrypoint + cmd, env)
        wait_for(lambda: answers(f"http://127.0.0.1:{admin_port}/readyz") or proxy.poll() is not None,
                 "the proxy to be ready")
        if proxy.poll() is not None:
            fail(f"the proxy exited: {proxy.stderr.read()}")
        uid = uid_of(proxy.pid)
        if uid == 0:
            fail("the proxy runs as root")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/teams", timeout=5) as r:
            teams = json.load(r)
        print(f"proxy (ENTRYPOINT {entrypoint + cmd}) as uid {uid}: /v1/teams -> {r.status}, "
              f"{len(json.dumps(teams))} bytes of JSON")

        # 3. HEALTHCHECK, in the same environment: ready, then nothing to ask.
        ok = subprocess.run([chroot, f"--userspec={user}", rootfs] + health, env=env,
                            capture_output=True, text=True, timeout=TIME_LIMIT)
        if ok.returncode != 0:
            fail(f"HEALTHCHECK exited {ok.returncode}: {ok.stdout}{ok.stderr}")
        print(f"HEALTHCHECK {health} -> 0: {ok.stdout.strip()[:60]}...")
        gone = dict(env, AZURE_COSTS_PROXY_ADMIN=f"127.0.0.1:{free_port()}")
        down = subprocess.run([chroot, f"--userspec={user}", rootfs] + health, env=gone,
                              capture_output=True, text=True, timeout=TIME_LIMIT)
        if down.returncode != 1:
            fail(f"HEALTHCHECK against nothing exited {down.returncode}, not 1")
        print("HEALTHCHECK with nothing listening -> 1")

        proxy.send_signal(signal.SIGTERM)
        if proxy.wait(timeout=TIME_LIMIT) != 0:
            fail(f"the proxy exited {proxy.returncode} after SIGTERM: {proxy.stderr.read()}")
        print("SIGTERM -> exit 0")
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        shutil.rmtree(rootfs, ignore_errors=True)
    print("OK: the runtime stage runs as a non-root user with only what the image ships")


if __name__ == "__main__":
    main()
