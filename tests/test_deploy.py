"""deploy/: the kustomize overlays render and validate against the Kubernetes schemas, carry the
properties routers depend on, roll the pods when the configuration changes, and keep on each pod's
own volume what flowd must find again after the pod is deleted; the ConfigMap's TOML loads; the
Dockerfile installs flowd with the README's own command, and the image's entry point serves /healthz
and exits 0 on SIGTERM.

Rendering needs `kubectl` with kustomize v5 (kubectl >= 1.27; Debian 12's kubernetes-client 1.20
carries kustomize v2.0.3, which cannot build these kustomizations). Schema validation uses the
`kubernetes-validate` package's bundled OpenAPI schemas, offline. ServiceMonitor and Argo CD's
Application are custom resources with no schema here: they are checked structurally.
No Docker engine runs here, so instead of `docker build` the test replays the Dockerfile's
COPY and RUN steps on the build context that .dockerignore leaves.
"""

from __future__ import annotations

import ast
import fnmatch
import http.client
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowd.config import load_settings
from flowd.config_values import split_address
from tests.ports import free_port


def load_yaml_documents(text: str) -> list[Any]:
    yaml = pytest.importorskip("yaml", reason="PyYAML reads the manifests (kubernetes-validate brings it)")
    return [doc for doc in yaml.safe_load_all(text) if doc]


ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUSTOMIZE = DEPLOY / "kubernetes"
OVERLAYS = ("develop", "production")
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
KUBERNETES_VERSION = "1.30.0"
"""Oldest Kubernetes these manifests are validated against (mixed-protocol LoadBalancer Services
are GA since 1.26; kubernetes-validate bundles schemas for 1.25 and later)."""
FLOW_PORTS = {("UDP", 2055), ("UDP", 4739), ("UDP", 6343), ("TCP", 4739)}
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


# --- rendering -----------------------------------------------------------------------------------


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (>= 1.27, kustomize v5) not installed")
    out = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=30)
    version = json.loads(out.stdout or "{}").get("kustomizeVersion", "")
    match = re.match(r"v(\d+)", version)
    if not match or int(match.group(1)) < 5:
        pytest.skip(f"kubectl's kustomize {version or 'unknown'} is older than v5")
    return kubectl


def render(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return load_yaml_documents(result.stdout)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {overlay: render(KUSTOMIZE / "overlays" / overlay) for overlay in OVERLAYS}


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def configmap(objects: list[dict[str, Any]], base_name: str) -> dict[str, Any]:
    found = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and re.fullmatch(re.escape(base_name) + r"-[a-z0-9]{10}", o["metadata"]["name"])
    ]
    assert len(found) == 1, f"expected one generated ConfigMap {base_name}-<hash>"
    return found[0]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(objects, "StatefulSet", "flowd")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "flowd")


BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes storage quantity in bytes (the binary suffixes these manifests use, or none)."""
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", quantity)
    assert match, f"unexpected quantity {quantity!r}"
    return int(match.group(1)) * BINARY_SUFFIXES.get(match.group(2) or "", 1)


# --- schemas -------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_objects_validate_against_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    jsonschema = pytest.importorskip("jsonschema")
    objects = rendered[overlay]
    kinds = {o["kind"] for o in objects}
    assert {"StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule"} <= kinds
    errors = []
    for obj in objects:
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            if obj["kind"] == "PrometheusRule":
                check_prometheus_rule(obj, objects)
            else:
                check_servicemonitor(obj, objects)
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except jsonschema.ValidationError as error:  # kubernetes_validate's error or jsonschema's own
            path = ".".join(str(p) for p in error.path)
            errors.append(f"{overlay}: {obj['kind']}/{obj['metadata']['name']}: {path}: {error.message}")
    assert not errors, "\n".join(errors)


def check_servicemonitor(monitor: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    """Structural check (no Prometheus Operator CRD schema is available offline): the fields the
    operator reads, and that they select the metrics Service and name one of its ports."""
    assert monitor["kind"] == "ServiceMonitor"
    assert set(monitor) <= {"apiVersion", "kind", "metadata", "spec"}
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels", "podTargetLabels"}
    wanted = spec["selector"]["matchLabels"]
    services = [
        s for s in objects if s["kind"] == "Service" and wanted.items() <= s["metadata"].get("labels", {}).items()
    ]
    assert [s["metadata"]["name"] for s in services] == ["flowd-metrics"]
    port_names = {p["name"] for p in services[0]["spec"]["ports"]}
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "relabelings"}
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
        for key in ("interval", "scrapeTimeout"):
            assert re.fullmatch(r"(\d+(ms|s|m|h))+", endpoint[key]), endpoint[key]


def served_series() -> set[str]:
    """Series names flowd's /metrics has (the Grafana test holds the registry to what is served)."""
    from flowd.server.metrics import METRICS

    names = set()
    for name, metric in METRICS.items():
        if metric.kind == "counter":
            names.add(f"{name}_total")
        elif metric.kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


def check_prometheus_rule(rule: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    """Structural check of the alerts: each parses as PromQL, names only series flowd serves (and
    the scrape's `up` of the metrics Service's job), and has a severity, a summary and a description."""
    from tests.test_dashboards import promql_metric_names

    assert set(rule) <= {"apiVersion", "kind", "metadata", "spec"} and set(rule["spec"]) == {"groups"}
    metrics_service = one(objects, "Service", "flowd-metrics")["metadata"]["name"]
    served = served_series() | {"up"}
    alerts = [item for group in rule["spec"]["groups"] for item in group["rules"]]
    assert len({a["alert"] for a in alerts}) == len(alerts) >= 10
    for alert in alerts:
        assert set(alert) <= {"alert", "expr", "for", "labels", "annotations"}, alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}, alert["alert"]
        assert {"summary", "description"} <= set(alert["annotations"]), alert["alert"]
        assert re.fullmatch(r"\d+[smh]", alert.get("for", "0s")), alert["alert"]
        used = promql_metric_names(alert["expr"])
        assert used and used <= served, (alert["alert"], sorted(used - served))
        if "up" in used:
            assert f'job="{metrics_service}"' in alert["expr"], "ServiceMonitor targets take the Service's name as job"


# --- what routers and operators depend on --------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_flow_service_keeps_exporters_and_their_pods_together(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, tmp_path: Path
) -> None:
    objects = rendered[overlay]
    service = one(objects, "Service", "flowd")
    spec = service["spec"]
    assert spec["type"] == "LoadBalancer"
    assert spec["externalTrafficPolicy"] == "Local"
    assert spec["sessionAffinity"] == "ClientIP"
    assert {(p["protocol"], p["port"]) for p in spec["ports"]} == FLOW_PORTS
    annotations = service["metadata"]["annotations"]
    assert annotations["metallb.universe.tf/address-pool"]
    assert annotations["metallb.io/address-pool"] == annotations["metallb.universe.tf/address-pool"]
    # Every Service port reaches a container port of the same protocol, and the collector listens there.
    ports = {p["name"]: (p["protocol"], p["containerPort"]) for p in container(objects)["ports"]}
    for port in spec["ports"]:
        assert ports[port["targetPort"]] == (port["protocol"], port["port"])
    pods = one(objects, "StatefulSet", "flowd")["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"].items() <= pods.items()
    settings = load_settings(write_configmap_toml(objects, tmp_path), {}).settings
    listening = {
        (protocol, split_address(address)[1])
        for protocol, addresses in (
            ("UDP", settings.listen.netflow + settings.listen.ipfix + settings.listen.sflow),
            ("TCP", settings.listen.ipfix_tcp),
        )
        for address in addresses
    }
    assert listening == FLOW_PORTS


def test_production_pins_the_routers_address(rendered: dict[str, list[dict[str, Any]]]) -> None:
    annotations = one(rendered["production"], "Service", "flowd")["metadata"]["annotations"]
    assert annotations["metallb.universe.tf/loadBalancerIPs"]
    assert annotations["metallb.io/loadBalancerIPs"] == annotations["metallb.universe.tf/loadBalancerIPs"]


def served_paths() -> set[str]:
    """The HTTP paths flowd/server compares the request path against (`path == "/..."`)."""
    paths: set[str] = set()
    for source in (ROOT / "flowd" / "server").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "path":
                for comparator in node.comparators:
                    if isinstance(comparator, ast.Constant) and str(comparator.value).startswith("/"):
                        paths.add(str(comparator.value))
    return paths


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_scraping_use_what_the_collector_serves(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, tmp_path: Path
) -> None:
    objects = rendered[overlay]
    flowd = container(objects)
    served = served_paths()
    assert {"/metrics", "/healthz", "/readyz"} <= served
    assert flowd["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert flowd["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert flowd["startupProbe"]["httpGet"]["path"] in served
    metrics_port = next(p["containerPort"] for p in flowd["ports"] if p["name"] == "metrics")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert flowd[probe]["httpGet"]["port"] in ("metrics", metrics_port)
    annotations = one(objects, "StatefulSet", "flowd")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == metrics_port
    assert annotations["prometheus.io/path"] in served
    settings = load_settings(write_configmap_toml(objects, tmp_path), {}).settings
    host, port = split_address(settings.metrics.address)
    assert (host, port) == ("0.0.0.0", metrics_port), "probes come from the kubelet, not from localhost"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_unprivileged(rendered: dict[str, list[dict[str, Any]]], overlay: str, tmp_path: Path) -> None:
    objects = rendered[overlay]
    pod = one(objects, "StatefulSet", "flowd")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    context = container(objects)["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "add" not in context["capabilities"]
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["securityContext"]["runAsUser"] == context["runAsUser"] == int(dockerfile_user().split(":")[0]) > 0
    # Everything the collector writes is on a volume (the root filesystem is read-only).
    settings = load_settings(write_configmap_toml(objects, tmp_path), {}).settings
    mounts = {m["mountPath"]: m for m in container(objects)["volumeMounts"]}
    writable = [path for path, mount in mounts.items() if not mount.get("readOnly")]
    for written in (
        settings.templates.path,
        settings.output.directory,
        settings.elasticsearch.spool_dir,
        settings.elasticsearch.dead_letter_path,
    ):
        assert any(written.startswith(path + "/") for path in writable), written
    for database in (settings.enrich.geoip_city_db, settings.enrich.geoip_asn_db):
        assert any(database.startswith(path + "/") for path in mounts), database


def workload(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The one object whose pod template runs flowd, whatever its kind."""
    found = [
        o
        for o in objects
        if o["kind"] in {"Deployment", "StatefulSet", "DaemonSet"} and o["metadata"]["name"] == "flowd"
    ]
    assert len(found) == 1, [o["kind"] for o in found]
    return found[0]


def kept_paths(settings: Any) -> dict[str, str]:
    """What flowd writes to find again at its next start, by what it is (flowd's own path rules)."""
    from flowd.server.app import template_path
    from flowd.server.parked_store import parked_directory

    paths = {
        f"template snapshot of worker {worker}": str(template_path(settings.templates.path, worker))
        for worker in range(settings.listen.workers)
    }
    paths["data sets parked for their templates"] = str(parked_directory(settings.templates.path))
    paths["Elasticsearch spool"] = settings.elasticsearch.spool_dir
    paths["dead letters"] = settings.elasticsearch.dead_letter_path
    paths["NDJSON files (no Elasticsearch host)"] = settings.output.directory
    return paths


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_what_flowd_keeps_outlives_the_pod(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, tmp_path: Path
) -> None:
    """A kubelet's SIGTERM nearly always ends with the pod deleted (rollout, eviction, drain), and an
    emptyDir goes with the pod: what flowd spools and persists at SIGTERM must be on a volume from
    a volumeClaimTemplate, which the pod's successor of the same name mounts again."""
    objects = rendered[overlay]
    owner = workload(objects)
    pod = owner["spec"]["template"]["spec"]
    flowd = next(c for c in pod["containers"] if c["name"] == "flowd")
    claims = {t["metadata"]["name"]: t for t in owner["spec"].get("volumeClaimTemplates", [])}
    pod_volumes = {v["name"]: v for v in pod.get("volumes", [])}
    environment = configmap(objects, "flowd-env")["data"]
    settings = load_settings(write_configmap_toml(objects, tmp_path), environment).settings
    for what, written in kept_paths(settings).items():
        mounts = [m for m in flowd["volumeMounts"] if (written + "/").startswith(m["mountPath"].rstrip("/") + "/")]
        assert mounts, f"{overlay}: {what} ({written}) is on no volume"
        mount = max(mounts, key=lambda m: len(m["mountPath"]))
        volume = mount["name"]
        where = f"{overlay}: {what} ({written}) is on volume {volume!r}"
        source = ", ".join(sorted(pod_volumes.get(volume, {}).keys() - {"name"})) or "undeclared"
        assert volume in claims, f"{where} ({source}), not one from a volumeClaimTemplate"
        assert volume not in pod_volumes, f"{where}, which the pod template also declares"
        assert not mount.get("readOnly") and not mount.get("subPath"), where
    # One claim per pod, its own; large enough for the spool's cap with room for everything else.
    assert owner["kind"] == "StatefulSet"
    for claim in claims.values():
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        size = quantity_bytes(claim["spec"]["resources"]["requests"]["storage"])
        assert size >= 1.5 * settings.elasticsearch.spool_max_bytes, "the spool's cap, the filesystem's reserve, more"
    assert owner["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    # A fresh claim is a root-owned filesystem: the kubelet hands it to fsGroup, flowd's own group.
    assert pod["securityContext"]["fsGroup"] == flowd["securityContext"]["runAsGroup"]
    assert pod["securityContext"]["fsGroup"] == int(dockerfile_user().split(":")[1])
    # The governing Service is headless and selects these pods.
    governing = one(objects, "Service", owner["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    assert governing["spec"]["selector"].items() <= owner["spec"]["template"]["metadata"]["labels"].items()
    # The ephemeral-storage limit holds what is still ephemeral (the disk-backed emptyDirs, with room
    # for the log); the data directory, on its claim, is no longer part of it.
    on_disk = sum(
        quantity_bytes(v["emptyDir"].get("sizeLimit", "0"))
        for v in pod_volumes.values()
        if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory"
    )
    limit = quantity_bytes(flowd["resources"]["limits"]["ephemeral-storage"])
    assert on_disk < limit


def test_overlays_differ_as_environments_do(rendered: dict[str, list[dict[str, Any]]]) -> None:
    def summary(objects: list[dict[str, Any]]) -> tuple[str, int, str, str]:
        statefulset = one(objects, "StatefulSet", "flowd")
        env = configmap(objects, "flowd-env")["data"]
        return (
            statefulset["metadata"]["namespace"],
            statefulset["spec"]["replicas"],
            env["FLOWD_ELASTICSEARCH_HOSTS"],
            container(objects)["image"],
        )

    develop, production = summary(rendered["develop"]), summary(rendered["production"])
    for left, right in zip(develop, production, strict=True):
        assert left and right and left != right
    assert production[1] >= 2
    for overlay in OVERLAYS:
        objects = rendered[overlay]
        assert {o["metadata"].get("namespace") for o in objects} == {summary(objects)[0]}
        pdb = one(objects, "PodDisruptionBudget", "flowd")
        selector = one(objects, "StatefulSet", "flowd")["spec"]["selector"]["matchLabels"]
        assert pdb["spec"]["selector"]["matchLabels"] == selector


# --- configuration -------------------------------------------------------------------------------


def write_configmap_toml(objects: list[dict[str, Any]], directory: Path) -> Path:
    path = directory / "flowd.toml"
    path.write_text(configmap(objects, "flowd-config")["data"]["flowd.toml"])
    return path


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_toml_loads_with_the_overlay_environment(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, tmp_path: Path
) -> None:
    objects = rendered[overlay]
    path = write_configmap_toml(objects, tmp_path)
    environment = configmap(objects, "flowd-env")["data"]
    loaded = load_settings(path, environment)
    assert loaded.settings.elasticsearch.hosts == environment["FLOWD_ELASTICSEARCH_HOSTS"].split(",")
    workers = loaded.settings.listen.workers
    cpu = container(objects)["resources"]["limits"]["cpu"]
    assert workers == int(cpu), "one worker per CPU of the container's limit"
    config_mount = next(m for m in container(objects)["volumeMounts"] if m["name"] == "config")
    assert container(objects)["args"] == ["run", "--config", config_mount["mountPath"] + "/flowd.toml"]
    check = subprocess.run(
        [*flowd_command(), "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**_clean_environ(), **environment},
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stderr
    assert f"# toml:{path}" in check.stdout


def flowd_command() -> list[str]:
    script = Path(sys.executable).parent / "flowd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "flowd.cli"]


def _clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("FLOWD_", "ELASTIFLOW_"))}


def _image_environ() -> dict[str, str]:
    """For the image's own venv: without PYTHONPATH and PYTHONHOME, which would put the checkout
    the tests run from (or another interpreter's library) before what the venv installed."""
    return {k: v for k, v in _clean_environ().items() if k not in {"PYTHONPATH", "PYTHONHOME"}}


def test_configuration_change_rolls_the_pods(tmp_path: Path) -> None:
    """A changed flowd.toml or environment value gives a new ConfigMap name (content hash), the
    StatefulSet follows it, and checksum/config or checksum/env changes with it: a new pod template."""
    tree = tmp_path / "kubernetes"
    shutil.copytree(KUSTOMIZE, tree)
    overlay = tree / "overlays" / "production"

    def state() -> tuple[str, str, str, str]:
        objects = render(overlay)
        template = one(objects, "StatefulSet", "flowd")["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        config_name = configmap(objects, "flowd-config")["metadata"]["name"]
        env_name = configmap(objects, "flowd-env")["metadata"]["name"]
        assert annotations["checksum/config"] == config_name
        assert annotations["checksum/env"] == env_name
        volume = next(v for v in template["spec"]["volumes"] if v["name"] == "config")
        assert volume["configMap"]["name"] == config_name
        return config_name, env_name, annotations["checksum/config"], annotations["checksum/env"]

    before = state()
    toml = tree / "base" / "flowd.toml"
    toml.write_text(toml.read_text().replace("queue_size = 65536", "queue_size = 131072"))
    after_toml = state()
    assert after_toml[0] != before[0] and after_toml[2] != before[2]
    assert after_toml[1] == before[1] and after_toml[3] == before[3]
    kustomization = overlay / "kustomization.yaml"
    kustomization.write_text(
        kustomization.read_text().replace(
            "FLOWD_ELASTICSEARCH_RETENTION_DAYS=30", "FLOWD_ELASTICSEARCH_RETENTION_DAYS=60"
        )
    )
    after_env = state()
    assert after_env[1] != after_toml[1] and after_env[3] != after_toml[3]
    assert after_env[0] == after_toml[0]


def test_argocd_application_syncs_the_production_overlay(rendered: dict[str, list[dict[str, Any]]]) -> None:
    (application,) = load_yaml_documents((DEPLOY / "argocd" / "application.yaml").read_text())
    assert (application["apiVersion"], application["kind"]) == ("argoproj.io/v1alpha1", "Application")
    source, destination = application["spec"]["source"], application["spec"]["destination"]
    assert (ROOT / source["path"]).resolve() == (KUSTOMIZE / "overlays" / "production").resolve()
    namespace = one(rendered["production"], "StatefulSet", "flowd")["metadata"]["namespace"]
    assert destination["namespace"] == namespace
    policy = application["spec"]["syncPolicy"]
    assert policy["automated"] == {"prune": True, "selfHeal": True}
    assert "CreateNamespace=true" in policy["syncOptions"]


# --- the image -----------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, rest = text.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            current = []
            stages[rest.split()[-1]] = current
        current.append((keyword, rest))
    return stages


def dockerfile_user() -> str:
    return [rest for keyword, rest in dockerfile_stages()["runtime"] if keyword == "USER"][-1]


def readme_first_command() -> list[str]:
    block = re.search(r"```sh\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md opens with a sh block"
    return [step.strip() for step in block.group(1).strip().split("&&")]


def dockerfile_install_steps() -> list[str]:
    runs = [rest for keyword, rest in dockerfile_stages()["build"] if keyword == "RUN" and "-m venv" in rest]
    assert len(runs) == 1, "one RUN creates the virtual environment and installs flowd"
    return [step.strip() for step in runs[0].split("&&")]


def test_dockerfile_installs_with_the_readme_command() -> None:
    install, start = readme_first_command()[:-1], readme_first_command()[-1]
    assert dockerfile_install_steps() == install
    build = dockerfile_stages()["build"]
    runtime = dockerfile_stages()["runtime"]
    workdir = [rest for keyword, rest in build if keyword == "WORKDIR"][-1]
    # The README starts .venv/bin/flowd run; the image runs the same program from the same venv.
    program, command = start.split()[0], start.split()[1:]
    environment = " ".join(rest for keyword, rest in runtime if keyword == "ENV")
    assert f"PATH={workdir}/{Path(program).parent}:" in environment
    assert f"--from=build {workdir} {workdir}" in " ".join(rest for keyword, rest in runtime if keyword == "COPY")
    entrypoint = json.loads(next(rest for keyword, rest in runtime if keyword == "ENTRYPOINT"))
    cmd = json.loads(next(rest for keyword, rest in runtime if keyword == "CMD"))
    assert entrypoint == [Path(program).name]
    assert cmd[: len(command)] == command
    exposed = {
        (int(port), protocol.upper())
        for keyword, rest in runtime
        if keyword == "EXPOSE"
        for port, _, protocol in (item.partition("/") for item in rest.split())
    }
    assert {(port, protocol) for protocol, port in FLOW_PORTS} <= exposed
    assert any(keyword == "HEALTHCHECK" and "/healthz" in rest for keyword, rest in runtime)
    user = dockerfile_user()
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), "numeric, so runAsNonRoot can verify it"
    assert any(keyword == "RUN" and "ieee-data" in rest for keyword, rest in runtime)
    assert not any(
        "mmdb" in rest.lower() or "geoip" in rest.lower() for keyword, rest in runtime if keyword in {"COPY", "ADD"}
    )


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    """.dockerignore matching as far as these patterns need it: a match on a path or a parent."""
    parts = relative.split("/")
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(parts[depth - 1], pattern[3:]):
                return True
    return False


def build_context() -> Iterator[str]:
    patterns = dockerignore_patterns()
    for directory, subdirectories, files in os.walk(ROOT):
        relative_directory = Path(directory).relative_to(ROOT).as_posix()
        keep = []
        for name in subdirectories:
            relative = name if relative_directory == "." else f"{relative_directory}/{name}"
            if not ignored(relative, patterns):
                keep.append(name)
        subdirectories[:] = keep
        for name in files:
            relative = name if relative_directory == "." else f"{relative_directory}/{name}"
            if not ignored(relative, patterns):
                yield relative


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, http.client.HTTPException):  # not bound yet (a self-connect reads its own request)
        return 0


@pytest.mark.slow
def test_image_steps_install_flowd_and_its_entry_point_serves(tmp_path: Path) -> None:
    """Replays the build stage (COPY from the .dockerignore'd context, then the README's install
    command, made offline: the new venv sees this venv's packages through a .pth file and pip
    installs flowd alone without build isolation) and runs ENTRYPOINT + CMD against the base
    ConfigMap TOML adapted to free loopback ports and temporary directories."""
    stages = dockerfile_stages()
    context = set(build_context())
    assert "pyproject.toml" in context and "flowd/cli.py" in context
    assert not any(path.startswith((".venv/", ".git/", "tests/")) for path in context)
    image = tmp_path / "image"
    workdir = [rest for keyword, rest in stages["build"] if keyword == "WORKDIR"][-1]
    build_dir = image / workdir.lstrip("/")
    build_dir.mkdir(parents=True)
    for keyword, rest in stages["build"]:
        if keyword != "COPY":
            continue
        *sources, destination = shlex.split(rest)
        for source in sources:
            if source in context:  # a file: into a directory destination, or to the named path
                into_directory = destination.endswith("/") or len(sources) > 1
                copies = [(source, build_dir / destination / (Path(source).name if into_directory else ""))]
            else:  # a directory: its contents go to the destination
                copies = [
                    (path, build_dir / destination / Path(path).relative_to(source))
                    for path in context
                    if path.startswith(source + "/")
                ]
            assert copies, f"COPY {source}: not in the build context (.dockerignore?)"
            for path, target in copies:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / path, target)
    for keyword, rest in stages["runtime"]:
        if keyword == "COPY" and not rest.startswith("--from"):
            for source in shlex.split(rest)[:-1]:
                assert source in context, f"COPY {source}: not in the build context"

    venv_step, pip_step = dockerfile_install_steps()
    assert shlex.split(venv_step)[:3] == ["python3", "-m", "venv"]
    venv = build_dir / shlex.split(venv_step)[3]
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, cwd=build_dir)
    site_packages = Path(sysconfig.get_paths()["purelib"])
    new_site = next((venv / "lib").glob("python3*/site-packages"))
    (new_site / "zz_flowd_test_parent.pth").write_text(f"{site_packages}\n")
    pip = shlex.split(pip_step)
    assert pip[:2] == [".venv/bin/pip", "install"]
    # Without build isolation (offline) when this environment can build an editable wheel; else pip
    # fetches the build backend that pyproject.toml names, as `docker build` does.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("wheel") else []
    subprocess.run(
        [str(build_dir / pip[0]), *pip[1:2], "-q", "--no-deps", *isolation, *pip[2:]],
        check=True,
        timeout=180,
        cwd=build_dir,
        env={**_image_environ(), "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import flowd; print(flowd.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=True,
        env=_image_environ(),
    )
    assert Path(where.stdout.strip()).is_relative_to(build_dir), where.stdout

    # The base ConfigMap's TOML, with the pod's addresses and directories moved to this machine.
    data = tmp_path / "var-lib-flowd"
    text = (KUSTOMIZE / "base" / "flowd.toml").read_text()
    flow_port, ipfix_port, sflow_port, metrics_port = (free_port() for _ in range(4))
    replacements = {
        '"0.0.0.0:2055"': f'"127.0.0.1:{flow_port}"',
        '"0.0.0.0:4739"': f'"127.0.0.1:{ipfix_port}"',
        '"0.0.0.0:6343"': f'"127.0.0.1:{sflow_port}"',
        '"0.0.0.0:9107"': f'"127.0.0.1:{metrics_port}"',
        "/var/lib/flowd/": f"{data}/",
        "/var/lib/GeoIP/": f"{tmp_path / 'geoip'}/",
    }
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    config = tmp_path / "flowd.toml"
    config.write_text(text)
    tomllib.loads(text)

    runtime = stages["runtime"]
    entrypoint = json.loads(next(rest for keyword, rest in runtime if keyword == "ENTRYPOINT"))
    cmd = json.loads(next(rest for keyword, rest in runtime if keyword == "CMD"))
    assert cmd[-2] == "--config"
    argv = [str(venv / "bin" / entrypoint[0]), *entrypoint[1:], *cmd[:-1], str(config)]
    data.mkdir()
    process = subprocess.Popen(
        argv, cwd=data, env=_image_environ(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{metrics_port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            if http_status(base + "/healthz") == 200 and http_status(base + "/readyz") == 200:
                break
            time.sleep(0.2)
        assert process.poll() is None, "flowd run exited early"
        assert http_status(base + "/healthz") == 200
        assert http_status(base + "/readyz") == 200
        with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
            assert b"flowd_" in response.read()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=STOP_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    output = process.stdout.read() if process.stdout else ""
    assert code == 0, output
