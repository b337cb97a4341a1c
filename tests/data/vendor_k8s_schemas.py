"""Refresh the Kubernetes JSON schemas in tests/data/kubernetes/ from a kubernetes-validate wheel.

kubernetes-validate (PyPI) ships the "local-strict" JSON schemas of every Kubernetes release
(additionalProperties false everywhere, $refs into one _definitions.json of 1.5 MB). This copies
the schemas of the kinds in ``KINDS`` and a ``_definitions.json`` pruned to the definitions they
reach, without the ``description`` keywords (documentation only: they change no verdict)::

    pip download --no-deps -d /tmp/kv kubernetes-validate==1.37.0
    python tests/data/vendor_k8s_schemas.py /tmp/kv/kubernetes_validate-1.37.0-py3-none-any.whl v1.34.0

Not a test: run by hand when the manifests use a new kind or the Kubernetes version moves.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

KINDS = (
    "namespace-v1",
    "configmap-v1",
    "secret-v1",
    "service-v1",
    "deployment-apps-v1",
    "poddisruptionbudget-policy-v1",
)
OUT = Path(__file__).parent / "kubernetes"


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        for v in node.values():
            found += _refs(v)
        return found
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _strip_descriptions(node: Any, *, names: bool = False) -> Any:
    """Drop the ``description`` keyword; ``names`` marks a mapping of property names to schemas."""
    if isinstance(node, dict):
        return {
            k: _strip_descriptions(v, names=(k in ("properties", "$defs") and not names))
            for k, v in node.items()
            if names or k != "description"
        }
    if isinstance(node, list):
        return [_strip_descriptions(v) for v in node]
    return node


def main(wheel: str, version: str) -> None:
    prefix = f"kubernetes_validate/kubernetes-json-schema/{version}-local-strict/"
    with zipfile.ZipFile(wheel) as zf:
        kinds = {k: json.loads(zf.read(f"{prefix}{k}.json")) for k in KINDS}
        defs = json.loads(zf.read(f"{prefix}_definitions.json"))
    keep: set[str] = set()
    todo = [r for schema in kinds.values() for r in _refs(schema)]
    while todo:
        name = todo.pop().split("/$defs/", 1)[1]
        if name not in keep:
            keep.add(name)
            todo += _refs(defs["$defs"][name])
    defs["$defs"] = {k: v for k, v in sorted(defs["$defs"].items()) if k in keep}
    OUT.mkdir(exist_ok=True)
    for path in OUT.glob("*.json"):
        path.unlink()
    for name, schema in {**kinds, "_definitions": defs}.items():
        text = json.dumps(_strip_descriptions(schema), indent=1, sort_keys=True)
        (OUT / f"{name}.json").write_text(text + "\n")
    print(f"{len(kinds)} kinds, {len(keep)} definitions from {Path(wheel).name} {version} -> {OUT}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
