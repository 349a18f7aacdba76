"""Shared helpers of the Helm chart tests: render the chart with the Helm 4
engine of helm-python-sdk (no helm binary), and validate what comes out.

Built-in kinds are validated by kubernetes-validate (strict: unknown fields
are errors) for the Kubernetes version the chart requires. picsift's custom
resources are validated against the openAPIV3Schema of the CRDs generated
from the Rust types into charts/picsift/crds/, translated to JSON Schema the
way the API server reads it (nullable, int-or-string, unknown fields
rejected as with `kubectl apply --validate=strict`).
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "picsift"
CRD_DIR = CHART / "crds"
EXAMPLES_DIR = REPO / "crds" / "examples"

KUBE_VERSION = "1.33.0"
RELEASE = "demo"
NAMESPACE = "picsift"
GROUP = "picsift.io"
CRD_FILES = ("uploadbatches.yaml", "validationpolicies.yaml", "workerpools.yaml")

# Every optional feature on, with non-default values wherever a template
# branches on one.
ALL_FEATURES: dict[str, Any] = {
    "imagePullSecrets": [{"name": "registry"}],
    "s3": {"endpoint": "http://garage.storage:3900", "region": "garage", "prefix": "prod/"},
    "extraConfig": {"PICSIFT_WORKER_CONCURRENCY": "4", "PICSIFT_POLICY_MAX_ENTRIES": "20000"},
    "gateway": {
        "nodeSelector": {"node-role/web": "true"},
        "tolerations": [{"key": "web", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "gateway"}},
                        },
                    }
                ]
            }
        },
        "priorityClassName": "picsift-web",
        "podAnnotations": {"example.com/team": "images"},
        "podLabels": {"team": "images"},
        "service": {"annotations": {"example.com/lb": "internal"}},
        "serviceAccount": {"annotations": {"example.com/role": "gateway"}},
        "pdb": {"enabled": True, "minAvailable": 1, "maxUnavailable": None},
    },
    "operator": {
        "nodeSelector": {"node-role/system": "true"},
        "tolerations": [{"key": "system", "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
        "priorityClassName": "picsift-system",
        "pdb": {"enabled": True},
    },
    "worker": {"serviceAccount": {"annotations": {"example.com/role": "worker"}}},
    "workerPool": {
        "minWorkers": 1,
        "maxWorkers": 40,
        "targetBacklogPerWorker": 8,
        "idleTimeoutSeconds": 600,
        "namespace": "picsift-workers",
        "gpu": {"resourceName": "nvidia.com/gpu", "count": 2},
        "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "32Gi"}},
        "nodeSelector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "priorityClassName": "picsift-batch",
        "kueueQueueName": "gpu-batch",
    },
    "validationPolicy": {
        "formats": ["jpeg", "png", "webp"],
        "limits": {
            "maxUploadBytes": 8589934592,
            "maxEntries": 10000,
            "maxTotalUncompressedBytes": 34359738368,
            "maxEntryBytes": 67108864,
            "maxCompressionRatio": 100,
            "maxDimension": 20000,
            "maxPixels": 50000000,
        },
    },
    "serviceMonitor": {"enabled": True, "interval": "15s", "scrapeTimeout": "10s", "labels": {"release": "prom"}},
    "networkPolicy": {
        "enabled": True,
        "gatewayIngressFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}],
        "metricsIngressFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        "egress": {
            "rules": {
                "redis": {"ports": [{"port": 6379, "protocol": "TCP"}], "to": [{"podSelector": {"matchLabels": {"app": "redis"}}}]},
                "webhooks": {"ports": [{"port": 443, "protocol": "TCP"}]},
            },
            "extra": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 8443, "protocol": "TCP"}]}],
        },
    },
}

# A CPU-only install on AWS credentials from the environment, no webhooks.
CPU_ONLY: dict[str, Any] = {
    "s3": {"existingSecret": ""},
    "webhook": {"existingSecret": ""},
    "workerPool": {"gpu": {"count": 0}},
    "gateway": {"tmpSizeLimit": None},
    "networkPolicy": {"enabled": True, "egress": {"enabled": False}},
}

SCENARIOS: dict[str, dict[str, Any]] = {"defaults": {}, "all-features": ALL_FEATURES, "cpu-only": CPU_ONLY}


class Rendered:
    """The manifests of one render, parsed."""

    def __init__(self, manifests: dict[str, str]):
        self.notes = ""
        self.docs: list[tuple[str, dict[str, Any]]] = []
        for template, text in sorted(manifests.items()):
            if template.endswith("NOTES.txt"):
                self.notes = text
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    self.docs.append((template, doc))

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for _, doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        found = [
            doc
            for doc in self.of_kind(kind)
            if doc["metadata"]["name"] == name
            and (namespace is None or doc["metadata"].get("namespace") == namespace)
        ]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]


@functools.cache
def _chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render(values: dict[str, Any] | None = None) -> Rendered:
    return Rendered(_chart().render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True))


def validate_schema(values: dict[str, Any]) -> None:
    _chart().validate_schema(values)


def lint(values: dict[str, Any] | None = None) -> dict[str, Any]:
    return helm.lint(CHART, values or {}, strict=True, namespace=NAMESPACE, kube_version="v" + KUBE_VERSION)


def validate_builtin(doc: dict[str, Any]) -> None:
    """Validate a built-in kind for KUBE_VERSION, unknown fields rejected."""
    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def describe(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata", {})
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{doc.get('kind')} {where}{meta.get('name')}"


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def require_crds() -> dict[str, dict[str, Any]]:
    """The generated CRDs by kind; fails the test when they are missing."""
    missing = [name for name in CRD_FILES if not (CRD_DIR / name).is_file()]
    if missing:
        pytest.fail(
            f"CRDs missing from {CRD_DIR.relative_to(REPO)}/: {', '.join(missing)}. "
            "They are generated from the Rust types (crds crate); generate them, "
            "then rerun. The custom-resource checks cannot run without them.",
            pytrace=False,
        )
    crds: dict[str, dict[str, Any]] = {}
    for name in CRD_FILES:
        for doc in load_yaml_docs(CRD_DIR / name):
            assert doc["kind"] == "CustomResourceDefinition", f"{name}: {describe(doc)} is not a CRD"
            crds[doc["spec"]["names"]["kind"]] = doc
    return crds


def crd_version(crd: dict[str, Any], api_version: str) -> dict[str, Any]:
    group, _, version = api_version.partition("/")
    assert group == crd["spec"]["group"], f"{api_version}: group is not {crd['spec']['group']}"
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            assert entry.get("served", False), f"{api_version} is not served by {crd['metadata']['name']}"
            return entry
    raise AssertionError(f"{crd['metadata']['name']} has no version {version}")


# Keywords whose value is one schema, a list of schemas, or a map of schemas.
_ONE = ("items", "additionalProperties", "not")
_MANY = ("allOf", "anyOf", "oneOf")
_MAP = ("properties", "patternProperties", "definitions")


def _to_json_schema(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key in _ONE:
            out[key] = _to_json_schema(value)
        elif key in _MANY:
            out[key] = [_to_json_schema(v) for v in value]
        elif key in _MAP:
            out[key] = {k: _to_json_schema(v) for k, v in value.items()}
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    preserve = node.get("x-kubernetes-preserve-unknown-fields", False)
    if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node and not preserve:
        # The API server prunes unknown fields, and rejects them under
        # strict field validation: a typo must not pass silently.
        out["additionalProperties"] = False
    if node.get("nullable"):
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        elif "type" not in out:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def _prune_nulls(value: Any, schema: dict[str, Any]) -> Any:
    """Drop nulls where the schema is not nullable, as the API server does
    before validating a custom resource."""
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            sub = properties.get(key, extra if isinstance(extra, dict) else {})
            if item is None and not sub.get("nullable"):
                continue
            out[key] = _prune_nulls(item, sub)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prune_nulls(item, schema["items"]) for item in value]
    return value


def _openapi_schema(crd: dict[str, Any], api_version: str) -> dict[str, Any]:
    return crd_version(crd, api_version)["schema"]["openAPIV3Schema"]


def custom_resource_validator(crd: dict[str, Any], api_version: str) -> jsonschema.Validator:
    schema = copy.deepcopy(_openapi_schema(crd, api_version))
    properties = schema.setdefault("properties", {})
    # Every object has these; generated schemas often leave them out.
    properties.setdefault("apiVersion", {"type": "string"})
    properties.setdefault("kind", {"type": "string"})
    properties.setdefault("metadata", {"type": "object"})
    converted = _to_json_schema(schema)
    # OpenAPI v3.0 schemas follow JSON Schema draft 4 (boolean exclusiveMinimum).
    jsonschema.Draft4Validator.check_schema(converted)
    return jsonschema.Draft4Validator(converted)


DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def validate_custom_resource(doc: dict[str, Any], crds: dict[str, dict[str, Any]], origin: str) -> None:
    """Validate a picsift.io object against its CRD; raises AssertionError."""
    kind = doc.get("kind")
    assert kind in crds, f"{origin}: {describe(doc)}: no CRD for kind {kind} (have {sorted(crds)})"
    crd = crds[kind]
    validator = custom_resource_validator(crd, doc["apiVersion"])
    pruned = _prune_nulls(doc, _openapi_schema(crd, doc["apiVersion"]))
    errors = sorted(validator.iter_errors(pruned), key=lambda e: list(e.absolute_path))
    assert not errors, f"{origin}: {describe(doc)} does not match its CRD:\n" + "\n".join(
        f"  at {'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors
    )
    meta = doc["metadata"]
    assert DNS_SUBDOMAIN.match(meta["name"]) and len(meta["name"]) <= 253, f"{origin}: bad name {meta['name']!r}"
    if crd["spec"]["scope"] == "Cluster":
        assert "namespace" not in meta, f"{origin}: {describe(doc)} is cluster-scoped but names a namespace"
