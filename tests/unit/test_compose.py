"""docker-compose.yml without a Docker engine: valid against the Compose Specification schema
(vendored in tests/data, see its README), every file it builds from or mounts exists, and the
services reference each other correctly."""

from __future__ import annotations

import copy
import json
import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

REPO = Path(__file__).parents[2]
COMPOSE = REPO / "docker-compose.yml"
SCHEMA = REPO / "tests/data/compose-spec.json"


@cache
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def errors(doc: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator().iter_errors(doc)
    ]


def test_schema_is_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    assert schema["title"] == "Compose Specification"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_compose_file_is_valid() -> None:
    assert errors(compose()) == []


def test_no_variables_left_to_interpolate() -> None:
    """The file is validated as written: it must not rely on ${VARS} being set."""
    assert not re.search(r"(?<!\$)\$\{?[A-Za-z_]", COMPOSE.read_text())


@pytest.mark.parametrize(
    ("path", "bad", "expected"),
    [
        (["services", "streamwatch", "volume"], [], "'volume' was unexpected"),
        (
            ["services", "streamwatch", "depends_on", "kafka", "condition"],
            "service_ready",
            "not valid under any",
        ),
        (
            ["services", "streamwatch", "depends_on", "kafka", "conditon"],
            "service_healthy",
            "not valid under any",
        ),
        (["services", "kafka", "ports"], "9094:9094", "is not of type"),
        (["services", "streamwatch", "healthcheck", "interval"], 10, "is not of type 'string'"),
        (["services", "bad name!"], {"image": "x"}, "does not match any of the regexes"),
        (["volumes"], ["data"], "is not of type"),
    ],
)
def test_the_schema_catches_mistakes(path: list[str], bad: Any, expected: str) -> None:
    doc = copy.deepcopy(compose())
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad
    found = errors(doc)
    assert found and any(expected in e for e in found), found


def _build_context(svc: dict[str, Any]) -> tuple[Path, str]:
    build = svc["build"]
    if isinstance(build, str):
        return REPO / build, "Dockerfile"
    return REPO / build.get("context", "."), build.get("dockerfile", "Dockerfile")


def _copy_sources(dockerfile: str) -> list[str]:
    """Sources of the Dockerfile's COPY/ADD instructions from the build context (not --from=...)."""
    sources: list[str] = []
    for line in re.sub(r"\\\n", " ", dockerfile).splitlines():
        m = re.match(r"\s*(COPY|ADD)\s+(.+)$", line, re.I)
        if not m:
            continue
        args = m.group(2).strip()
        words = json.loads(args) if args.startswith("[") else shlex.split(args)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        sources += words[:-1]
    return sources


def test_build_contexts_and_their_files_exist() -> None:
    built = [svc for svc in compose()["services"].values() if "build" in svc]
    assert built, "the worker is built from the repository's Dockerfile"
    for svc in built:
        context, dockerfile = _build_context(svc)
        assert context.is_dir(), context
        text = (context / dockerfile).read_text()
        sources = _copy_sources(text)
        assert sources
        for src in sources:
            assert list(context.glob(src)), f"{dockerfile} copies {src}, which is not in {context}"


def _bind_sources(svc: dict[str, Any]) -> list[str]:
    out = []
    for vol in svc.get("volumes", []):
        if isinstance(vol, str):
            src = vol.split(":", 1)[0]
            if src.startswith((".", "/", "~")):  # otherwise a named volume
                out.append(src)
        elif vol.get("type") == "bind":
            out.append(vol["source"])
    for key in ("env_file", "label_file"):
        files = svc.get(key, [])
        for f in [files] if isinstance(files, str) else files:
            out.append(f if isinstance(f, str) else f["path"])
    return out


def test_every_mounted_file_exists() -> None:
    doc = compose()
    mounted = [src for svc in doc["services"].values() for src in _bind_sources(svc)]
    for section in ("configs", "secrets"):
        mounted += [v["file"] for v in doc.get(section, {}).values() if "file" in v]
    assert mounted
    for src in mounted:
        assert not src.startswith(("/", "~")), f"{src}: mount files of the repository, by relative path"
        assert (REPO / src).exists(), f"{src} is mounted but missing"


def test_services_reference_each_other() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        for dep, cond in deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps):
            assert dep in services, f"{name} depends on unknown service {dep}"
            if cond.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], (
                    f"{name} waits for {dep} to be healthy, which has no healthcheck"
                )
    published = [
        str(p).split(":")[-2] for svc in services.values() for p in svc.get("ports", []) if ":" in str(p)
    ]
    assert len(published) == len(set(published)), f"a host port is published twice: {published}"


def test_worker_serves_metrics_and_health_on_its_port() -> None:
    worker = compose()["services"]["streamwatch"]
    assert "9400:9400" in worker["ports"]
    assert "http://127.0.0.1:9400/readyz" in " ".join(worker["healthcheck"]["test"])
    prom = yaml.safe_load((REPO / "deploy/prometheus/prometheus.docker.yml").read_text())
    assert "streamwatch:9400" in prom["scrape_configs"][0]["static_configs"][0]["targets"]
