"""The pull secrets kubelet would use for a pod, each checked, and a keyring for a pull test.

kubelet reads the pod's ``spec.imagePullSecrets`` only (``getPullSecretsForPod``), and a Secret
it cannot read is skipped with a warning, not an error. A ServiceAccount's ``imagePullSecrets``
reach a pod through the ServiceAccount admission plugin, which copies them into the pod when it
is created and only when the pod lists none; so the ServiceAccount is read too, to say when it
names secrets the pod does not carry (added after the pod was created: recreate it).

Each secret is checked: missing, unreadable (no permission), of a type kubelet ignores, or with
content kubelet cannot decode; the good ones are merged into one :class:`Keyring` in the pod's
order, and :meth:`SecretsCheck.for_image` says which entry matches an image under kubelet's rules
(or names the registries the secrets do have, near misses first). No value from a secret is ever
put in a check, a message or an exception: only secret names, types and registry keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal, Protocol

from lightkube.resources.core_v1 import Pod, Secret, ServiceAccount

from agent.credentials import CredentialError, Keyring, KeyringMatch, loads_docker_config
from agent.kube.client import KubeApiError
from agent.pods._text import LIST_LIMIT, listing
from agent.reference import InvalidReference, parse

__all__ = [
    "DOCKER_SECRET_TYPES",
    "MAX_SECRETS",
    "ImageSecrets",
    "SecretCheck",
    "SecretReader",
    "SecretsCheck",
    "pull_secrets",
]

DOCKER_SECRET_TYPES = {
    "kubernetes.io/dockerconfigjson": ".dockerconfigjson",
    "kubernetes.io/dockercfg": ".dockercfg",
}
MAX_SECRETS = 64  # pull secrets read for one pod (a pod listing more is cut, and says so)

SecretStatus = Literal["ok", "missing", "forbidden", "wrong_type", "undecodable", "error"]


class SecretReader(Protocol):
    """What :func:`pull_secrets` reads (:class:`agent.kube.client.KubeReader` is one)."""

    async def get_secret(self, namespace: str, name: str) -> Secret: ...

    async def get_service_account(self, namespace: str, name: str) -> ServiceAccount: ...


@dataclass(frozen=True)
class SecretCheck:
    """One pull secret the pod names: whether kubelet can use it, and the registry keys it holds."""

    name: str
    status: SecretStatus
    detail: str  # one line: what is wrong and what to do ("" when ok); never a secret
    type: str = ""
    keys: tuple[str, ...] = ()  # normalised registry keys, in kubelet's matching order


@dataclass(frozen=True)
class ImageSecrets:
    """The pod's pull secrets against one image, under kubelet's keyring rules."""

    image: str
    registry: str
    status: Literal["matched", "no_match", "no_secrets", "invalid_image", "not_pulled"]
    matched: tuple[str, ...]  # keys kubelet would use, most specific first
    detail: str  # which entries match, or why none does (near misses first); names only
    fix: str  # for no_match: the key to add ('add an entry for "10.0.0.5:5000"')


@dataclass(frozen=True)
class SecretsCheck:
    """The pull secrets of one pod as kubelet would use them."""

    namespace: str
    service_account: str
    secrets: tuple[SecretCheck, ...]
    notes: tuple[str, ...]  # about the ServiceAccount, or a list cut at its bound
    keyring: Keyring = field(repr=False, compare=False)  # the usable secrets, merged in order

    @property
    def problems(self) -> tuple[SecretCheck, ...]:
        return tuple(s for s in self.secrets if s.status != "ok")

    @property
    def usable(self) -> tuple[str, ...]:
        """The names of the secrets kubelet can use, in the pod's order."""
        return tuple(s.name for s in self.secrets if s.status == "ok")

    def for_image(self, image: str) -> ImageSecrets:
        """Which entry of the usable secrets kubelet would send for ``image``, or why none."""
        try:
            reference = parse(image)
        except InvalidReference:
            return ImageSecrets(image, "", "invalid_image", (), "not a valid image reference", "")
        if not self.usable:
            named = "names no pull secret" if not self.secrets else "has no usable pull secret"
            return ImageSecrets(
                image,
                reference.domain,
                "no_secrets",
                (),
                f"the pod {named}, so kubelet pulls {reference.domain} anonymously "
                "(or with the node's own credentials, which the API does not show)",
                "",
            )
        match: KeyringMatch = self.keyring.explain(reference)
        keys = tuple(c.key for c in match.matched)
        status: Literal["matched", "no_match"] = "matched" if keys else "no_match"
        return ImageSecrets(
            image,
            reference.domain,
            status,
            keys,
            match.describe(LIST_LIMIT),
            "" if keys else match.fix,
        )


def _check(secret: Secret, namespace: str, name: str) -> tuple[SecretCheck, Keyring | None]:
    secret_type = secret.type or "Opaque"
    data = secret.data or {}
    wanted = DOCKER_SECRET_TYPES.get(secret_type)
    if wanted is None:
        held = [key for key in DOCKER_SECRET_TYPES.values() if key in data]
        hint = (
            f"; it holds {held[0]}, so set type {_type_for(held[0])} (recreate it with "
            "kubectl create secret docker-registry)"
            if held
            else ""
        )
        detail = (
            f"type {secret_type}: kubelet only uses secrets of type "
            f"{' or '.join(DOCKER_SECRET_TYPES)}{hint}"
        )
        return SecretCheck(name, "wrong_type", detail, secret_type), None
    document = {
        "kind": "Secret",
        "type": secret_type,
        "metadata": {"name": name, "namespace": namespace},
        "data": {wanted: data[wanted]} if wanted in data else {},
    }
    try:
        keyring = loads_docker_config(json.dumps(document), origin=f"{namespace}/{name}")
    except CredentialError as exc:  # names the secret, key and field; never a value
        return SecretCheck(name, "undecodable", str(exc), secret_type), None
    if not len(keyring):
        detail = f"{wanted} has no registry entries, so kubelet finds no credentials in it"
        return SecretCheck(name, "undecodable", detail, secret_type), None
    return SecretCheck(name, "ok", "", secret_type, tuple(keyring.keys())), keyring


def _type_for(key: str) -> str:
    return next(t for t, k in DOCKER_SECRET_TYPES.items() if k == key)


async def _read(
    reader: SecretReader, namespace: str, name: str
) -> tuple[SecretCheck, Keyring | None]:
    try:
        secret = await reader.get_secret(namespace, name)
    except KubeApiError as exc:
        if exc.kind == "not_found":
            detail = (
                f'Secret "{name}" does not exist in namespace "{namespace}"; kubelet skips it '
                "and pulls without it (create it in the pod's namespace)"
            )
            return SecretCheck(name, "missing", detail), None
        status: SecretStatus = "forbidden" if exc.kind == "forbidden" else "error"
        return SecretCheck(name, status, str(exc)), None
    return _check(secret, namespace, name)


async def _service_account_notes(
    reader: SecretReader, namespace: str, account: str, listed: list[str]
) -> list[str]:
    try:
        service_account = await reader.get_service_account(namespace, account)
    except KubeApiError as exc:
        if exc.kind == "not_found":
            return [f'ServiceAccount "{account}" does not exist in namespace "{namespace}"']
        return [f"ServiceAccount not checked: {exc}"]
    names = [ref.name for ref in service_account.imagePullSecrets or [] if ref.name]
    absent = [n for n in names if n not in listed]
    if not absent:
        return []
    if not listed:
        return [
            f'ServiceAccount "{account}" lists pull secrets {listing(absent)}, but the pod '
            "carries none: the admission plugin copies them into a pod only when it is created, "
            "so recreate the pod (delete it; its controller makes a new one)"
        ]
    return [
        f'ServiceAccount "{account}" also lists {listing(absent)}, which this pod does not '
        "carry (a pod's own imagePullSecrets replace the ServiceAccount's at creation)"
    ]


async def pull_secrets(pod: Pod, reader: SecretReader) -> SecretsCheck:
    """The pull secrets kubelet would use for ``pod``, each checked, and their keyring."""
    meta, spec = pod.metadata, pod.spec
    namespace = (meta.namespace if meta else None) or "default"
    account = (spec.serviceAccountName if spec else None) or "default"
    refs = (spec.imagePullSecrets if spec else None) or []
    names = list(dict.fromkeys(ref.name for ref in refs if ref.name))
    notes: list[str] = []
    if len(names) > MAX_SECRETS:
        notes.append(f"the pod names {len(names)} pull secrets; the first {MAX_SECRETS} checked")
        names = names[:MAX_SECRETS]
    checks: list[SecretCheck] = []
    keyring = Keyring()
    for name in names:
        check, found = await _read(reader, namespace, name)
        checks.append(check)
        if found is not None:
            keyring.extend(found)
    notes.extend(await _service_account_notes(reader, namespace, account, names))
    return SecretsCheck(namespace, account, tuple(checks), tuple(notes), keyring)
