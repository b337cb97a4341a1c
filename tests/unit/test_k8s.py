"""deploy/k8s: every manifest is valid against the Kubernetes (v1.34) and prometheus-operator JSON
schemas vendored in tests/data, offline, and the pieces fit together (selectors, ports, probes,
config, secrets, the same alerting rules as deploy/prometheus/rules).

deploy/k8s/prometheus-operator/prometheusrule.yaml is generated from
deploy/prometheus/rules/streamwatch.rules.yml; after changing the rules run

    .venv/bin/python tests/unit/test_k8s.py --write
"""

from __future__ import annotations

import copy
import json
import re
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from streamwatch.config import load_config
from streamwatch.logs import is_secret_key

REPO = Path(__file__).parents[2]
K8S = REPO / "deploy/k8s"
DATA = REPO / "tests/data"
RULES = REPO / "deploy/prometheus/rules/streamwatch.rules.yml"
PROMETHEUSRULE = K8S / "prometheus-operator/prometheusrule.yaml"

SCHEMAS = {
    ("v1", "Namespace"): "kubernetes/namespace-v1.json",
    ("v1", "ConfigMap"): "kubernetes/configmap-v1.json",
    ("v1", "Secret"): "kubernetes/secret-v1.json",
    ("v1", "Service"): "kubernetes/service-v1.json",
    ("apps/v1", "Deployment"): "kubernetes/deployment-apps-v1.json",
    ("policy/v1", "PodDisruptionBudget"): "kubernetes/poddisruptionbudget-policy-v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "prometheus-operator/servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheus-operator/prometheusrule_v1.json",
}


# --- loading -------------------------------------------------------------------------------------


def kustomize_resources(folder: Path) -> list[Path]:
    """The manifest files ``kustomize build folder`` would read (resources, depth first)."""
    kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and kust["kind"] == "Kustomization"
    files: list[Path] = []
    for entry in kust["resources"]:
        path = (folder / entry).resolve()
        assert path.exists(), f"{folder / 'kustomization.yaml'} lists {entry}, which does not exist"
        files += kustomize_resources(path) if path.is_dir() else [path]
    return files


def load_manifests() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in kustomize_resources(K8S):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((str(path.relative_to(K8S)), doc))
    return out


MANIFESTS = load_manifests() if __name__ != "__main__" else []  # --write needs no manifests


def one(kind: str) -> dict[str, Any]:
    [doc] = [d for _, d in MANIFESTS if d["kind"] == kind]
    return doc


@cache
def validator(api_version: str, kind: str) -> Draft202012Validator:
    schema = json.loads((DATA / SCHEMAS[(api_version, kind)]).read_text())
    defs = json.loads((DATA / "kubernetes/_definitions.json").read_text())
    registry: Registry[Any] = Registry().with_resource(defs["$id"], Resource.from_contents(defs))
    return Draft202012Validator(schema, registry=registry)


def schema_errors(doc: dict[str, Any]) -> list[str]:
    v = validator(doc["apiVersion"], doc["kind"])
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in v.iter_errors(doc)]


def render_prometheusrule() -> str:
    """deploy/k8s/prometheus-operator/prometheusrule.yaml, from the Prometheus rule file."""

    class Dumper(yaml.SafeDumper):
        pass

    def str_block(dumper: yaml.SafeDumper, s: str) -> yaml.Node:
        style = (
            "|" if "\n" in s else ">" if len(s) > 80 else None
        )  # long annotations folded, as in the source
        return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=style)

    Dumper.add_representer(str, str_block)
    rules = yaml.safe_load(RULES.read_text())
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "streamwatch",
            "namespace": "streamwatch",
            "labels": {"app.kubernetes.io/name": "streamwatch"},
        },
        "spec": {"groups": rules["groups"]},
    }
    header = (
        "# GENERATED from deploy/prometheus/rules/streamwatch.rules.yml by\n"
        "#   .venv/bin/python tests/unit/test_k8s.py --write\n"
        "# Do not edit: change the rule file (its comments explain each rule) and regenerate;\n"
        "# tests/unit/test_k8s.py fails while the two differ. Your Prometheus resource must select\n"
        "# this PrometheusRule (ruleSelector; kube-prometheus-stack wants the label release: <name>).\n"
    )
    body = yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=110, allow_unicode=True)
    return header + body


# --- schemas -------------------------------------------------------------------------------------


def test_kustomizations_reach_every_manifest_once() -> None:
    reached = kustomize_resources(K8S)
    assert len(reached) == len(set(reached))
    on_disk = {p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert set(reached) == on_disk, "a manifest is not listed in a kustomization.yaml (or vice versa)"


def test_the_expected_objects_are_there() -> None:
    kinds = sorted(d["kind"] for _, d in MANIFESTS)
    assert kinds == sorted(
        [
            "Namespace",
            "ConfigMap",
            "Secret",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "ServiceMonitor",
            "PrometheusRule",
        ]
    )


@pytest.mark.parametrize("doc", [d for _, d in MANIFESTS], ids=[f"{f}:{d['kind']}" for f, d in MANIFESTS])
def test_manifest_is_valid_against_its_schema(doc: dict[str, Any]) -> None:
    assert (doc["apiVersion"], doc["kind"]) in SCHEMAS, "no vendored schema for this kind"
    assert schema_errors(doc) == []
    # the CRD schemas accept any apiVersion and kind string, and any metadata
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])


@pytest.mark.parametrize(
    ("kind", "path", "bad", "expected"),
    [
        ("Deployment", ["spec", "replicas"], "two", "is not of type"),
        (
            "Deployment",
            ["spec", "template", "spec", "containers", 0, "livenessProbe", "httpGet", "prot"],
            1,
            "Additional properties",
        ),
        (
            "Deployment",
            ["spec", "template", "spec", "containers", 0, "securityContext", "runAsNonRoot"],
            "yes",
            "is not of type",
        ),
        ("Service", ["spec", "ports", 0, "port"], "metrics", "is not of type"),
        ("PodDisruptionBudget", ["spec", "minAvailabe"], 1, "Additional properties"),
        ("ServiceMonitor", ["spec", "endpoints", 0, "interval"], "15 seconds", "does not match"),
        ("ServiceMonitor", ["spec", "endpoint"], [], "Additional properties"),
        ("PrometheusRule", ["spec", "groups", 0, "rules", 0, "expresion"], "up", "Additional properties"),
    ],
)
def test_the_schemas_catch_mistakes(kind: str, path: list[str | int], bad: Any, expected: str) -> None:
    """The vendored schemas are strict, $refs included: a typo deep in a PodSpec is an error."""
    doc = copy.deepcopy(one(kind))
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad
    errors = schema_errors(doc)
    assert errors and any(expected in e for e in errors), errors


# --- how the pieces fit --------------------------------------------------------------------------


def test_everything_is_in_the_namespace() -> None:
    ns = one("Namespace")["metadata"]["name"]
    for _, doc in MANIFESTS:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == ns, doc["metadata"]["name"]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_selectors_and_ports_connect() -> None:
    dep, svc, pdb, sm = one("Deployment"), one("Service"), one("PodDisruptionBudget"), one("ServiceMonitor")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert _selects(dep["spec"]["selector"]["matchLabels"], pod_labels)
    assert _selects(svc["spec"]["selector"], pod_labels)
    assert _selects(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    assert _selects(
        dep["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"],
        pod_labels,
    )
    assert _selects(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
    # the ServiceMonitor's port is a Service port whose target is the container's metrics port
    [container] = dep["spec"]["template"]["spec"]["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    for ep in sm["spec"]["endpoints"]:
        assert ep["port"] in svc_ports and ep["path"] == "/metrics"
        assert svc_ports[ep["port"]]["targetPort"] in container_ports
    # job label = the Service's app.kubernetes.io/name = "streamwatch", as the alerting rules expect
    assert svc["metadata"]["labels"][sm["spec"]["jobLabel"]] == "streamwatch"
    assert 'job="streamwatch"' in RULES.read_text()
    assert pdb["spec"]["minAvailable"] < dep["spec"]["replicas"]


def _container() -> dict[str, Any]:
    [container] = one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def _config_text() -> str:
    """The ConfigMap key the worker reads, checked to be mounted where --config points."""
    dep, cm = one("Deployment"), one("ConfigMap")
    c = _container()
    config_path = Path(c["args"][c["args"].index("--config") + 1])
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
    assert mount.get("readOnly") is True
    assert volumes[mount["name"]]["configMap"]["name"] == cm["metadata"]["name"]
    return str(cm["data"][config_path.name])


def _env(secret_values: bool = True) -> dict[str, str]:
    secret = one("Secret")
    env = {}
    for e in _container()["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
            env[e["name"]] = secret["stringData"][ref["key"]] if secret_values else "from-secret"
    return env


def test_worker_runs_the_image_as_built() -> None:
    """The args and the user match the Dockerfile's ENTRYPOINT, CMD and user."""
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["streamwatch"]' in dockerfile
    cmd = json.loads(re.search(r"^CMD (.+)$", dockerfile, re.M).group(1))  # type: ignore[union-attr]
    assert _container()["args"] == cmd
    uid = int(re.search(r"--uid (\d+)", dockerfile).group(1))  # type: ignore[union-attr]
    pod_sc = one("Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert pod_sc["runAsUser"] == uid and pod_sc["runAsNonRoot"] is True


def test_deployment_probes_resources_and_security() -> None:
    dep = one("Deployment")
    assert dep["spec"]["replicas"] == 2
    c = _container()
    port = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path and port[get["port"]] == 9400
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["runAsNonRoot"] is True and sc["capabilities"]["drop"] == ["ALL"]
    # with a read-only root filesystem the calibration cache must live on a writable volume
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    writable = [m["mountPath"] for m in c["volumeMounts"] if "emptyDir" in volumes[m["name"]]]
    cache_dir = _env()["STREAMWATCH_CACHE_DIR"]
    assert any(Path(cache_dir).is_relative_to(w) for w in writable)
    assert "/tmp" in writable


def test_config_from_configmap_and_secret_is_valid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "streamwatch.yaml"
    cfg.write_text(_config_text())
    for k, v in _env().items():
        monkeypatch.setenv(k, v)
    s = load_config(cfg)
    assert s.metrics.port == 9400 and s.metrics.host == "0.0.0.0"
    secret = one("Secret")["stringData"]
    # the Secret's values reach librdkafka's keys, next to the ConfigMap's client settings
    assert s.kafka.client["sasl.password"] == secret["sasl-password"]
    assert s.kafka.client["sasl.username"] == secret["sasl-username"]
    assert s.kafka.client["security.protocol"] == "SASL_SSL"
    assert s.kafka.redacted_client()["sasl.password"] == "***"
    port = one("Service")["metadata"]["annotations"]["prometheus.io/port"]
    assert str(s.metrics.port) == port


def test_secrets_come_only_from_the_secret() -> None:
    names = {e["name"]: e for e in _container()["env"]}
    pw = names["STREAMWATCH_KAFKA__CLIENT__SASL_PASSWORD"]
    assert "value" not in pw and "secretKeyRef" in pw["valueFrom"]
    for e in _container()["env"]:
        if is_secret_key(e["name"]):
            assert "secretKeyRef" in e["valueFrom"], e["name"]
    client = yaml.safe_load(_config_text())["kafka"]["client"]
    assert not [k for k in client if is_secret_key(k) and k != "sasl.mechanism"]


def test_service_has_scrape_annotations() -> None:
    svc = one("Service")
    ann = svc["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/path"] == "/metrics"
    assert int(ann["prometheus.io/port"]) in {p["port"] for p in svc["spec"]["ports"]}


def test_prometheusrule_embeds_the_rule_file() -> None:
    rule = yaml.safe_load(PROMETHEUSRULE.read_text())
    source = yaml.safe_load(RULES.read_text())
    assert rule["spec"] == {"groups": source["groups"]}, (
        "deploy/k8s/prometheus-operator/prometheusrule.yaml differs from the rule file: "
        "run .venv/bin/python tests/unit/test_k8s.py --write"
    )
    assert PROMETHEUSRULE.read_text() == render_prometheusrule()


def test_vendored_schemas_say_where_they_come_from() -> None:
    readme = (DATA / "README.md").read_text()
    for path in DATA.rglob("*.json"):
        folder = path.parent.relative_to(DATA)
        assert path.name in readme or f"{folder}/" in readme, (
            f"{path} is not described in tests/data/README.md"
        )


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    PROMETHEUSRULE.write_text(render_prometheusrule())
    print(f"wrote {PROMETHEUSRULE.relative_to(REPO)}")
