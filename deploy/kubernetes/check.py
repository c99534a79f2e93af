#!/usr/bin/env python3
"""Checks the Kubernetes example: schema validation, then that the pieces fit together.

1. Every manifest validates against the Kubernetes OpenAPI schemas bundled with the
   `kubernetes-validate` package (offline; strict: unknown fields are errors).
2. The deployment's proxy container reads the ConfigMap and the Secret the other files define,
   at the paths proxy.toml names; its probes hit the admin port proxy.toml binds; the data plane
   stays on loopback; it runs as the image's non-root user; the grace period covers
   shutdown_grace; no mount uses subPath (the kubelet never updates one, so a rotated Secret
   would not reach the proxy's file watch).
3. proxy.toml passes `azure-costs-proxy check` (with the secret path pointed at a scratch file).

Usage: deploy/kubernetes/check.py [path/to/azure-costs-proxy]   (default: target/release, then
target/debug). Needs `pip install kubernetes-validate` (it brings PyYAML).
"""

import glob
import os
import subprocess
import sys
import tempfile
import tomllib

import kubernetes_validate
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
KUBERNETES_VERSION = "1.31.0"
problems = []


def check(condition, message):
    if not condition:
        problems.append(message)


def seconds(text):
    units = {"s": 1, "m": 60}
    return int(text[:-1]) * units[text[-1]]


def main():
    documents = {}
    for path in sorted(glob.glob(os.path.join(HERE, "*.yaml"))):
        for doc in yaml.safe_load_all(open(path)):
            documents[doc["kind"]] = doc
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                problems.append(f"{os.path.basename(path)}: {e.message} at {list(e.path)}")
                continue
            print(f"schema ok: {os.path.basename(path)} ({doc['kind']} {doc['metadata']['name']})")

    config_map, secret, deployment = (documents.get(k) for k in ("ConfigMap", "Secret", "Deployment"))
    if not (config_map and secret and deployment):
        sys.exit(f"FAIL: expected a ConfigMap, a Secret and a Deployment, got {sorted(documents)}")
    config_text = config_map["data"]["proxy.toml"]
    config = tomllib.loads(config_text)
    pod = deployment["spec"]["template"]["spec"]
    sidecars = [c for c in pod.get("initContainers", []) + pod["containers"]
                if c["name"] == "azure-costs-proxy"]
    check(len(sidecars) == 1, "one container named azure-costs-proxy")
    proxy = sidecars[0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in proxy["volumeMounts"]}
    # A subPath mount is a copy the kubelet never updates: a rotated Secret would never apply.
    for m in proxy["volumeMounts"]:
        check("subPath" not in m, f"{m['mountPath']} is a subPath mount, which never updates")

    # The config file: the ConfigMap, mounted where --config points.
    config_arg = proxy["args"][proxy["args"].index("--config") + 1]
    volume = mounts.get(os.path.dirname(config_arg), {})
    check(volume.get("configMap", {}).get("name") == config_map["metadata"]["name"],
          f"--config {config_arg} is not the ConfigMap {config_map['metadata']['name']}")
    check(os.path.basename(config_arg) in config_map["data"], f"the ConfigMap has no {config_arg}")

    # The secret file: the Secret, mounted where proxy.toml reads it, readable by the user.
    secret_path = config["credentials"]["default"]["client_secret"]["file"]
    volume = mounts.get(os.path.dirname(secret_path), {})
    check(volume.get("secret", {}).get("secretName") == secret["metadata"]["name"],
          f"{secret_path} is not from the Secret {secret['metadata']['name']}")
    check(os.path.basename(secret_path) in secret["stringData"],
          f"the Secret has no key {os.path.basename(secret_path)}")
    user = proxy["securityContext"]["runAsUser"]
    check(user == 65532, "the proxy runs as the image's nonroot user 65532")
    mode = volume.get("secret", {}).get("defaultMode", 0o644)
    check(mode & 0o004 or (mode & 0o040 and pod["securityContext"].get("fsGroup") == user),
          "the secret file is readable by the proxy's user")

    # Listeners: the data plane on loopback, probes on the admin port.
    check(config["listen"]["address"].startswith("127.0.0.1:"),
          "the data plane stays on loopback inside the pod")
    admin_port = int(config["admin"]["address"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in proxy["ports"]}
    for probe, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"),
                        ("livenessProbe", "/healthz")):
        get = proxy.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path, f"{probe} asks {path}")
        check(ports.get(get.get("port")) == admin_port,
              f"{probe} port {get.get('port')} is the admin port {admin_port}")
    check("requests" in proxy.get("resources", {}), "the proxy has resource requests")
    grace = seconds(config["listen"].get("shutdown_grace", "30s"))
    check(pod.get("terminationGracePeriodSeconds", 30) > grace,
          f"terminationGracePeriodSeconds exceeds shutdown_grace ({grace}s)")
    check(proxy["securityContext"].get("readOnlyRootFilesystem") is True,
          "the proxy's root file system is read-only")

    # The config itself, through the binary's own validation.
    binary = sys.argv[1] if len(sys.argv) > 1 else next(
        (p for p in (os.path.join(ROOT, "target", d, "azure-costs-proxy") for d in ("release", "debug"))
         if os.path.exists(p)), None)
    if binary is None:
        sys.exit("FAIL: no azure-costs-proxy binary; build it first or pass its path")
    with tempfile.TemporaryDirectory() as scratch:
        secret_file = os.path.join(scratch, "client-secret")
        with open(secret_file, "w") as f:
            f.write("scratch-secret\n")
        local = os.path.join(scratch, "proxy.toml")
        with open(local, "w") as f:
            f.write(config_text.replace(secret_path, secret_file))
        out = subprocess.run([binary, "check", "--config", local], capture_output=True, text=True)
        check(out.returncode == 0, f"`check` refused proxy.toml: {out.stderr}")
        print(out.stdout, end="")

    if problems:
        for p in problems:
            print(f"FAIL: {p}", file=sys.stderr)
        sys.exit(1)
    print(f"OK: manifests valid for Kubernetes {KUBERNETES_VERSION} and consistent")


if __name__ == "__main__":
    main()
