"""agent.reference: distribution/reference's grammar and normalisation, kubelet's defaults.

Expectations follow the behaviour of distribution/reference (``ParseNormalizedNamed``,
``ParseDockerRef``), go-digest and kubelet's ``applyDefaultImageTag``.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from agent import dockerhub
from agent.hosts import registry_endpoints
from agent.reference import (
    InvalidReference,
    Reference,
    is_registry_only,
    parse,
    parse_registry,
)

H64 = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
D256 = "sha256:" + H64
D384 = "sha384:" + "a" * 96
D512 = "sha512:" + "b" * 128
ID64 = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"

# --- valid references ---------------------------------------------------------------------------

# input, domain, path, tag, digest, normalized, api_host, object, kubelet_image
VALID: list[tuple[str, str, str, str | None, str | None, str, str, str, str]] = [
    # Docker Hub defaulting
    ("nginx", "docker.io", "library/nginx", None, None,
     "docker.io/library/nginx:latest", "registry-1.docker.io", "latest", "nginx:latest"),
    ("nginx:1.25", "docker.io", "library/nginx", "1.25", None,
     "docker.io/library/nginx:1.25", "registry-1.docker.io", "1.25", "nginx:1.25"),
    ("library/nginx", "docker.io", "library/nginx", None, None,
     "docker.io/library/nginx:latest", "registry-1.docker.io", "latest",
     "library/nginx:latest"),
    ("docker.io/nginx", "docker.io", "library/nginx", None, None,
     "docker.io/library/nginx:latest", "registry-1.docker.io", "latest",
     "docker.io/nginx:latest"),
    ("docker.io/library/nginx:stable", "docker.io", "library/nginx", "stable", None,
     "docker.io/library/nginx:stable", "registry-1.docker.io", "stable",
     "docker.io/library/nginx:stable"),
    ("index.docker.io/library/debian", "docker.io", "library/debian", None, None,
     "docker.io/library/debian:latest", "registry-1.docker.io", "latest",
     "index.docker.io/library/debian:latest"),
    ("index.docker.io/debian", "docker.io", "library/debian", None, None,
     "docker.io/library/debian:latest", "registry-1.docker.io", "latest",
     "index.docker.io/debian:latest"),
    ("dmcgowan/myapp", "docker.io", "dmcgowan/myapp", None, None,
     "docker.io/dmcgowan/myapp:latest", "registry-1.docker.io", "latest",
     "dmcgowan/myapp:latest"),
    ("docker/docker", "docker.io", "docker/docker", None, None,
     "docker.io/docker/docker:latest", "registry-1.docker.io", "latest",
     "docker/docker:latest"),
    ("library/foo/bar", "docker.io", "library/foo/bar", None, None,
     "docker.io/library/foo/bar:latest", "registry-1.docker.io", "latest",
     "library/foo/bar:latest"),
    ("other/library", "docker.io", "other/library", None, None,
     "docker.io/other/library:latest", "registry-1.docker.io", "latest",
     "other/library:latest"),
    ("test_com/foo", "docker.io", "test_com/foo", None, None,
     "docker.io/test_com/foo:latest", "registry-1.docker.io", "latest",
     "test_com/foo:latest"),
    # a single component is always a Docker Hub name, even when it looks like a host
    ("localhost", "docker.io", "library/localhost", None, None,
     "docker.io/library/localhost:latest", "registry-1.docker.io", "latest",
     "localhost:latest"),
    ("localhost:5000", "docker.io", "library/localhost", "5000", None,
     "docker.io/library/localhost:5000", "registry-1.docker.io", "5000",
     "localhost:5000"),
    ("test.com:5000", "docker.io", "library/test.com", "5000", None,
     "docker.io/library/test.com:5000", "registry-1.docker.io", "5000",
     "test.com:5000"),
    ("192.168.1.1", "docker.io", "library/192.168.1.1", None, None,
     "docker.io/library/192.168.1.1:latest", "registry-1.docker.io", "latest",
     "192.168.1.1:latest"),
    ("foo_bar.com:8080", "docker.io", "library/foo_bar.com", "8080", None,
     "docker.io/library/foo_bar.com:8080", "registry-1.docker.io", "8080",
     "foo_bar.com:8080"),
    ("lowercase:Uppercase", "docker.io", "library/lowercase", "Uppercase", None,
     "docker.io/library/lowercase:Uppercase", "registry-1.docker.io",
     "Uppercase", "lowercase:Uppercase"),
    ("thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev", "docker.io",
     "library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev", None, None,
     "docker.io/library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev:latest",
     "registry-1.docker.io",
     "latest", "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev:latest"),
    ("docker.io/" + ID64, "docker.io", "library/" + ID64, None, None,
     f"docker.io/library/{ID64}:latest", "registry-1.docker.io", "latest",
     f"docker.io/{ID64}:latest"),
    # separators
    ("docker---rules/docker", "docker.io", "docker---rules/docker", None, None,
     "docker.io/docker---rules/docker:latest", "registry-1.docker.io",
     "latest", "docker---rules/docker:latest"),
    ("dock__er/docker", "docker.io", "dock__er/docker", None, None,
     "docker.io/dock__er/docker:latest", "registry-1.docker.io", "latest",
     "dock__er/docker:latest"),
    ("d/docker", "docker.io", "d/docker", None, None,
     "docker.io/d/docker:latest", "registry-1.docker.io", "latest",
     "d/docker:latest"),
    ("ubuntu-12.04-base", "docker.io", "library/ubuntu-12.04-base", None, None,
     "docker.io/library/ubuntu-12.04-base:latest", "registry-1.docker.io",
     "latest", "ubuntu-12.04-base:latest"),
    # registries
    ("quay.io/coreos/etcd:v3.5.0", "quay.io", "coreos/etcd", "v3.5.0", None,
     "quay.io/coreos/etcd:v3.5.0", "quay.io", "v3.5.0",
     "quay.io/coreos/etcd:v3.5.0"),
    ("plain.pullcheck.test:15000/pullcheck/good:1.0", "plain.pullcheck.test:15000",
     "pullcheck/good", "1.0", None, "plain.pullcheck.test:15000/pullcheck/good:1.0",
     "plain.pullcheck.test:15000", "1.0",
     "plain.pullcheck.test:15000/pullcheck/good:1.0"),
    ("localhost/foo", "localhost", "foo", None, None,
     "localhost/foo:latest", "localhost", "latest", "localhost/foo:latest"),
    ("localhost:5000/foo/bar", "localhost:5000", "foo/bar", None, None,
     "localhost:5000/foo/bar:latest", "localhost:5000", "latest",
     "localhost:5000/foo/bar:latest"),
    ("test:5000/repo", "test:5000", "repo", None, None,
     "test:5000/repo:latest", "test:5000", "latest", "test:5000/repo:latest"),
    ("test-com:8080/foo", "test-com:8080", "foo", None, None,
     "test-com:8080/foo:latest", "test-com:8080", "latest",
     "test-com:8080/foo:latest"),
    ("127.0.0.1:5000/library/debian", "127.0.0.1:5000", "library/debian", None, None,
     "127.0.0.1:5000/library/debian:latest", "127.0.0.1:5000",
     "latest", "127.0.0.1:5000/library/debian:latest"),
    ("192.168.1.1:5000/repo:5050", "192.168.1.1:5000", "repo", "5050", None,
     "192.168.1.1:5000/repo:5050", "192.168.1.1:5000", "5050",
     "192.168.1.1:5000/repo:5050"),
    ("xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com", "myimage", "xn--n3h.com", None,
     "xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com",
     "xn--n3h.com", "xn--n3h.com/myimage:xn--n3h.com"),
    ("b.gcr.io/test.example.com/my-app:test.example.com", "b.gcr.io", "test.example.com/my-app",
     "test.example.com", None, "b.gcr.io/test.example.com/my-app:test.example.com",
     "b.gcr.io", "test.example.com",
     "b.gcr.io/test.example.com/my-app:test.example.com"),
    ("sub-dom1.foo.com/bar/baz/quux:some-long-tag", "sub-dom1.foo.com", "bar/baz/quux",
     "some-long-tag", None, "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
     "sub-dom1.foo.com", "some-long-tag",
     "sub-dom1.foo.com/bar/baz/quux:some-long-tag"),
    # registry-1.docker.io is not normalised: it is just another host for distribution
    ("registry-1.docker.io/library/nginx", "registry-1.docker.io", "library/nginx", None, None,
     "registry-1.docker.io/library/nginx:latest",
     "registry-1.docker.io", "latest", "registry-1.docker.io/library/nginx:latest"),
    # an upper-case first component is taken as a domain
    ("Foo/bar", "Foo", "bar", None, None,
     "Foo/bar:latest", "Foo", "latest", "Foo/bar:latest"),
    ("DOCKER/docker", "DOCKER", "docker", None, None,
     "DOCKER/docker:latest", "DOCKER", "latest", "DOCKER/docker:latest"),
    # IPv6
    ("[::1]:5000/foo", "[::1]:5000", "foo", None, None,
     "[::1]:5000/foo:latest", "[::1]:5000", "latest", "[::1]:5000/foo:latest"),
    ("[2001:db8::1]/repo", "[2001:db8::1]", "repo", None, None,
     "[2001:db8::1]/repo:latest", "[2001:db8::1]", "latest",
     "[2001:db8::1]/repo:latest"),
    ("[fc00:1:2:3:4:5:6:7]:5000/library/debian:tag", "[fc00:1:2:3:4:5:6:7]:5000",
     "library/debian", "tag", None, "[fc00:1:2:3:4:5:6:7]:5000/library/debian:tag",
     "[fc00:1:2:3:4:5:6:7]:5000", "tag",
     "[fc00:1:2:3:4:5:6:7]:5000/library/debian:tag"),
    # digests
    (f"redis@{D256}", "docker.io", "library/redis", None, D256,
     f"docker.io/library/redis@{D256}", "registry-1.docker.io", D256,
     f"redis@{D256}"),
    (f"test:5000/repo@{D256}", "test:5000", "repo", None, D256,
     f"test:5000/repo@{D256}", "test:5000", D256,
     f"test:5000/repo@{D256}"),
    (f"quay.io/org/app@{D384}", "quay.io", "org/app", None, D384,
     f"quay.io/org/app@{D384}", "quay.io", D384,
     f"quay.io/org/app@{D384}"),
    (f"xn--7o8h.com/myimage:xn--7o8h.com@{D512}", "xn--7o8h.com", "myimage", "xn--7o8h.com",
     D512, f"xn--7o8h.com/myimage@{D512}",
     "xn--7o8h.com", D512, f"xn--7o8h.com/myimage:xn--7o8h.com@{D512}"),
    # tag and digest: ParseDockerRef drops the tag, kubelet keeps both
    (f"busybox:latest@{D256}", "docker.io", "library/busybox", "latest", D256,
     f"docker.io/library/busybox@{D256}", "registry-1.docker.io",
     D256, f"busybox:latest@{D256}"),
    (f"[2001:db8::1]:5000/repo:tag@{D256}", "[2001:db8::1]:5000", "repo", "tag", D256,
     f"[2001:db8::1]:5000/repo@{D256}",
     "[2001:db8::1]:5000", D256, f"[2001:db8::1]:5000/repo:tag@{D256}"),
    # longest tag (128 characters)
    ("nginx:_" + "a" * 127, "docker.io", "library/nginx", "_" + "a" * 127, None,
     "docker.io/library/nginx:_" + "a" * 127, "registry-1.docker.io",
     "_" + "a" * 127, "nginx:_" + "a" * 127),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "domain", "path", "tag", "digest", "normalized", "api_host", "obj", "kubelet_image"),
    VALID,
    ids=[case[0][:60] for case in VALID],
)  # fmt: skip
def test_valid(
    text: str,
    domain: str,
    path: str,
    tag: str | None,
    digest: str | None,
    normalized: str,
    api_host: str,
    obj: str,
    kubelet_image: str,
) -> None:
    ref = parse(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert ref.original == text
    assert ref.name == f"{domain}/{path}"
    assert ref.normalized == normalized
    assert str(ref) == normalized
    assert ref.registry_host == domain
    # without a hosts.toml, containerd asks the registry API there
    [upstream] = registry_endpoints(ref.registry_host, "")
    assert upstream.url.endswith(f"://{api_host}/v2")
    assert ref.object == obj
    assert ref.kubelet_image == kubelet_image


# input, reason (pullcheck's diagnosis), upstream (distribution's own error text)
INVALID: list[tuple[str, str, str]] = [
    ("", "empty image reference", "invalid reference format"),
    (" nginx", "image reference must not contain whitespace", "invalid reference format"),
    ("nginx ", "image reference must not contain whitespace", "invalid reference format"),
    ("nginx\n", "image reference must not contain whitespace", "invalid reference format"),
    ("ngi nx:1", "image reference must not contain whitespace", "invalid reference format"),
    ("https://github.com/docker/docker", "image reference must not include a URL scheme",
     "invalid reference format"),
    # upper case in the repository name
    ("docker.io/Foo/bar", "repository name (Foo/bar) must be lowercase",
     "invalid reference format: repository name (Foo/bar) must be lowercase"),
    ("docker/Docker", "repository name (docker/Docker) must be lowercase",
     "invalid reference format: repository name (docker/Docker) must be lowercase"),
    ("Uppercase:tag", "repository name (library/Uppercase) must be lowercase",
     "invalid reference format: repository name (library/Uppercase) must be lowercase"),
    ("test:5000/Uppercase/lowercase:tag", "repository name (Uppercase/lowercase) must be lowercase",
     "invalid reference format: repository name (Uppercase/lowercase) must be lowercase"),
    ("quay.io/org/App@" + D256, "repository name (org/App) must be lowercase",
     "invalid reference format: repository name (org/App@sha256) must be lowercase"),
    # distribution's quirk: the digest algorithm is inside the "repository name" it reports
    ("nginx@SHA256:" + H64, "invalid digest format: algorithm must be lower-case",
     "invalid reference format: repository name (library/nginx@SHA256) must be lowercase"),
    # tags
    ("nginx:", "invalid tag format", "invalid reference format"),
    ("nginx:-bad", "invalid tag format", "invalid reference format"),
    ("nginx:.bad", "invalid tag format", "invalid reference format"),
    ("nginx:a/b", "invalid domain (nginx:a)", "invalid reference format"),
    ("nginx:ta+g", "invalid tag format", "invalid reference format"),
    ("nginx:" + "a" * 129, "invalid tag format", "invalid reference format"),
    ("quay.io/a/b:t\u00e4g", "invalid tag format", "invalid reference format"),
    # digests
    ("nginx@", "invalid digest format", "invalid reference format"),
    ("nginx@sha256:abc", "invalid digest format", "invalid reference format"),
    ("nginx@sha256:" + "z" * 64, "invalid digest format", "invalid reference format"),
    ("repo@sha256:" + "f" * 34, "invalid digest format: sha256 needs 64 lower-case hex digits",
     "invalid checksum digest format"),
    ("repo@sha256:" + "f" * 65, "invalid digest format: sha256 needs 64 lower-case hex digits",
     "invalid checksum digest format"),
    ("repo@sha256:" + "F" * 64, "invalid digest format: sha256 needs 64 lower-case hex digits",
     "invalid checksum digest format"),
    ("repo@sha512:" + "f" * 64, "invalid digest format: sha512 needs 128 lower-case hex digits",
     "invalid checksum digest format"),
    ("validname@invaliddigest:" + H64, "unsupported digest algorithm (invaliddigest)",
     "unsupported digest algorithm"),
    ("repo@md5:" + "f" * 32, "unsupported digest algorithm (md5)", "unsupported digest algorithm"),
    ("repo@sha256+b64:" + H64, "unsupported digest algorithm (sha256+b64)",
     "unsupported digest algorithm"),
    ("repo:tag@Sha256:" + H64, "invalid digest format", "invalid checksum digest format"),
    ("@" + D256, "repository name must have at least one component", "invalid reference format"),
    # image IDs
    (ID64, "cannot specify 64-byte hexadecimal strings",
     f"invalid repository name ({ID64}), cannot specify 64-byte hexadecimal strings"),
    # names
    (":justtag", "repository name must have at least one component", "invalid reference format"),
    ("-docker", "invalid repository name component (-docker)", "invalid reference format"),
    ("-docker/docker", "invalid repository name component (-docker)", "invalid reference format"),
    ("docker-/docker", "invalid repository name component (docker-)", "invalid reference format"),
    ("____/____", "invalid repository name component (____)", "invalid reference format"),
    ("_docker/_docker", "invalid repository name component (_docker)", "invalid reference format"),
    # a first component with a dot is a domain, so these fail as domains
    ("dock..er/docker", "invalid domain (dock..er)", "invalid reference format"),
    ("dock_.er/docker", "invalid domain (dock_.er)", "invalid reference format"),
    ("quay.io/dock..er/docker", "invalid repository name component (dock..er)",
     "invalid reference format"),
    ("quay.io/dock-.er", "invalid repository name component (dock-.er)",
     "invalid reference format"),
    ("dock___er/docker", "invalid repository name component (dock___er)",
     "invalid reference format"),
    ("aa/asdf$$^/aa", "invalid repository name component (asdf$$^)", "invalid reference format"),
    ("docker/", "repository name must not contain empty path components",
     "invalid reference format"),
    ("docker///docker", "repository name must not contain empty path components",
     "invalid reference format"),
    ("docker.io/docker///docker", "repository name must not contain empty path components",
     "invalid reference format"),
    ("quay.io/", "repository name must have at least one component", "invalid reference format"),
    ("-docker.io/docker/docker", "invalid domain (-docker.io)", "invalid reference format"),
    ("fc00::1:5000/debian", "invalid domain (fc00::1:5000)", "invalid reference format"),
    ("[fe80::1%eth0]:5000/debian", "invalid domain ([fe80::1%eth0]:5000)",
     "invalid reference format"),
    ("[2001:db8:3:4::192.0.2.33]:5000/debian", "invalid domain ([2001:db8:3:4::192.0.2.33]:5000)",
     "invalid reference format"),
    ("[fc00::1]", "repository name must have at least one component ([fc00::1] is a registry, "
     "not an image)", "invalid reference format"),
    ("[2001:db8::1]:5000", "repository name must have at least one component "
     "([2001:db8::1]:5000 is a registry, not an image)", "invalid reference format"),
    ("caf\u00e9/app", "invalid repository name component (caf\u00e9)", "invalid reference format"),
    # length: the path (not the domain) is limited to 255 characters, "library/" included
    ("a/" * 128 + "a:tag", "repository name must not be more than 255 characters",
     "repository name must not be more than 255 characters"),
    ("a" * 248, "repository name must not be more than 255 characters",
     "repository name must not be more than 255 characters"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "reason", "upstream"), INVALID, ids=[c[0][:50] for c in INVALID])
def test_invalid(text: str, reason: str, upstream: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse(text)
    exc = info.value
    assert exc.reference == text
    assert exc.reason == reason
    assert exc.upstream == upstream
    assert isinstance(exc, ValueError)
    assert reason in str(exc)
    assert exc.kubelet_message == f'couldn\'t parse image name "{text}": {upstream}'


def test_path_length_limit_excludes_domain() -> None:
    path = "/".join(["a" * 63] * 4)  # 255 characters
    assert len(path) == 255
    long_domain = ".".join(["d" * 60] * 4) + ":5000"
    ref = parse(f"{long_domain}/{path}")
    assert ref.path == path
    with pytest.raises(InvalidReference, match="255"):
        parse(f"{long_domain}/{path}b")
    # familiar names count the implied "library/"
    assert parse("a" * 247).path == "library/" + "a" * 247
    # a long tag does not count
    assert parse("a/" * 127 + "a:tag-puts-this-over-max").tag == "tag-puts-this-over-max"


def test_equality_ignores_original_and_follows_normalisation() -> None:
    assert parse("nginx") == parse("docker.io/library/nginx")
    assert parse("nginx") == parse("index.docker.io/nginx")
    assert parse("nginx") != parse("nginx:latest")  # one is tagged, one is not
    assert parse(str(parse("nginx"))) == parse("nginx:latest")
    assert hash(parse("nginx")) == hash(parse("docker.io/nginx"))
    both = parse(f"nginx:1.25@{D256}")
    assert parse(str(both)) == parse(f"docker.io/library/nginx@{D256}")
    assert parse(str(both)).tag is None


def test_reference_built_directly_gets_an_original() -> None:
    ref = Reference("quay.io", "org/app", tag="v1")
    assert ref.original == "quay.io/org/app:v1"
    assert ref.kubelet_image == "quay.io/org/app:v1"
    assert Reference("quay.io", "org/app").kubelet_image == "quay.io/org/app:latest"


@pytest.mark.parametrize(
    ("text", "hostname", "port"),
    [
        ("nginx", "docker.io", None),
        ("localhost/foo", "localhost", None),
        ("localhost:5000/foo", "localhost", 5000),
        ("plain.pullcheck.test:15000/pullcheck/good:1.0", "plain.pullcheck.test", 15000),
        ("[::1]:5000/foo", "::1", 5000),
        ("[2001:db8::1]/repo", "2001:db8::1", None),
        ("10.0.0.1:443/a", "10.0.0.1", 443),
        ("Foo/bar", "Foo", None),
    ],
)
def test_hostname_and_port(text: str, hostname: str, port: int | None) -> None:
    ref = parse(text)
    assert (ref.hostname, ref.port) == (hostname, port)


def test_docker_hub_properties() -> None:
    hub = parse("user/app")
    assert dockerhub.is_hub(hub.registry_host)
    assert hub.registry_host == "docker.io"
    assert [e.host for e in registry_endpoints(hub.registry_host, "")] == ["registry-1.docker.io"]
    other = parse("registry-1.docker.io/user/app")
    assert not dockerhub.is_hub(other.registry_host)
    assert other.name == "registry-1.docker.io/user/app"


# --- registries --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("quay.io", True),
        ("quay.io/", True),
        ("quay.io:443", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("localhost:5000", True),
        ("127.0.0.1", True),
        ("10.0.0.1:5000", True),
        ("[::1]", True),
        ("[::1]:5000", True),
        ("plain.pullcheck.test:15000", True),
        ("https://quay.io", True),
        ("http://localhost:5000/", True),
        ("https://index.docker.io/v1/", True),
        # images
        ("nginx", False),
        ("nginx:1.25", False),
        ("busybox:1.36", False),
        ("redis:7", False),
        ("myregistry:5000", False),  # distribution parses this as an image with tag 5000
        ("foo.bar:1.0", False),
        ("quay.io/org/app", False),
        ("localhost/foo", False),
        (f"nginx@{D256}", False),
        ("", False),
        ("/", False),
        ("-bad.host", False),
    ],
)
def test_is_registry_only(text: str, expected: bool) -> None:
    assert is_registry_only(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("quay.io", "quay.io"),
        ("quay.io/", "quay.io"),
        ("https://quay.io", "quay.io"),
        ("HTTPS://quay.io/", "quay.io"),
        ("http://localhost:5000", "localhost:5000"),
        ("docker.io", "docker.io"),
        ("index.docker.io", "docker.io"),
        ("Index.Docker.IO", "docker.io"),
        ("https://index.docker.io/v1/", "docker.io"),
        ("https://registry.example.com/v2/", "registry.example.com"),
        ("registry-1.docker.io", "registry-1.docker.io"),
        ("[::1]:5000", "[::1]:5000"),
        ("plain.pullcheck.test:15000", "plain.pullcheck.test:15000"),
    ],
)
def test_parse_registry(text: str, expected: str) -> None:
    assert parse_registry(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty registry host"),
        ("https://", "empty registry host"),
        ("ftp://quay.io", "unsupported scheme 'ftp' (use http or https)"),
        ("quay.io/org", "a registry is host[:port] without a path (got /org)"),
        ("https://quay.io/v3/", "a registry is host[:port] without a path (got /v3)"),
        ("-bad.host", "invalid registry host (-bad.host)"),
        ("quay.io:port", "invalid registry host (quay.io:port)"),
        ("quay .io", "invalid registry host (quay .io)"),
    ],
)
def test_parse_registry_invalid(text: str, reason: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_registry(text)
    assert info.value.reason == reason
    assert info.value.reference == text


@pytest.mark.parametrize(
    "text", ["https://user:S3cr3t-Pa55@quay.io", "user:S3cr3t-Pa55@quay.io", "https://u:S3/cr3t@x"]
)
def test_parse_registry_never_echoes_userinfo(text: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_registry(text)
    exc = info.value
    for shown in (str(exc), repr(exc), exc.reference, exc.reason, exc.kubelet_message):
        assert "S3cr3t" not in shown
        assert "cr3t" not in shown
    assert "<redacted>" in exc.reference


# --- properties ---------------------------------------------------------------------------------

_COMPONENT = st.from_regex(r"[a-z0-9]{1,6}(?:(?:[._]|__|-{1,3})[a-z0-9]{1,6}){0,2}", fullmatch=True)
_TAG = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_HEX = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
_DIGEST = _HEX.filter(lambda h: h != "0" * 64).map(lambda h: "sha256:" + h) | st.text(
    alphabet="0123456789abcdef", min_size=128, max_size=128
).map(lambda h: "sha512:" + h)
_LABEL = st.from_regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?", fullmatch=True)
# domains that splitDockerDomain recognises as such (a dot, a port, localhost, IPv6)
_DOMAIN = st.one_of(
    st.builds(lambda a, b: f"{a}.{b}", _LABEL, _LABEL),
    st.builds(lambda a, p: f"{a}:{p}", _LABEL, st.integers(1, 65535)),
    st.builds(lambda a, b, p: f"{a}.{b}:{p}", _LABEL, _LABEL, st.integers(1, 65535)),
    st.just("localhost"),
    st.just("[::1]:5000"),
    st.just("[2001:db8::1]"),
)
_PATH = st.lists(_COMPONENT, min_size=1, max_size=4).map("/".join)


@st.composite
def _references(draw: st.DrawFn) -> tuple[str, str, str, str | None, str | None]:
    """(text, domain, path, tag, digest) for a valid reference with an explicit domain."""
    domain = draw(_DOMAIN)
    path = draw(_PATH)
    tag = draw(st.none() | _TAG)
    digest = draw(st.none() | _DIGEST)
    assume(domain != "docker.io")  # the default domain would gain "library/"
    text = f"{domain}/{path}" + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    return text, domain, path, tag, digest


@st.composite
def _familiar(draw: st.DrawFn) -> tuple[str, str, str | None]:
    """(text, expected path, tag) for a Docker Hub name without a domain."""
    first = draw(_COMPONENT.filter(lambda c: "." not in c and c not in ("localhost", "library")))
    rest = draw(st.lists(_COMPONENT, max_size=2))
    tag = draw(st.none() | _TAG)
    path = "/".join([first, *rest])
    text = path + (f":{tag}" if tag else "")
    assume(not (len(text) == 64 and all(c in "0123456789abcdef" for c in text)))
    expected = path if rest else f"library/{path}"
    return text, expected, tag


def _assert_normalised(normalised: Reference, ref: Reference) -> None:
    """``normalised`` is ``ref`` in containerd's form: ``:latest`` added, the tag dropped when
    there is a digest."""
    assert (normalised.domain, normalised.path) == (ref.domain, ref.path)
    assert (normalised.tag, normalised.digest) == (
        None if ref.digest else ref.tag or "latest",
        ref.digest,
    )


@given(_references())
def test_property_explicit_domain_parses_as_written(
    case: tuple[str, str, str, str | None, str | None],
) -> None:
    text, domain, path, tag, digest = case
    ref = parse(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert ref.original == text


@given(_familiar())
def test_property_familiar_names_go_to_docker_hub(case: tuple[str, str, str | None]) -> None:
    text, path, tag = case
    ref = parse(text)
    assert (ref.domain, ref.path, ref.tag) == ("docker.io", path, tag)
    # the same image as its docker.io spelling, with or without "library/"
    assert parse("docker.io/" + text) == ref
    assert parse(f"docker.io/{path}" + (f":{tag}" if tag else "")) == ref


@given(_references() | _familiar().map(lambda c: (c[0], "", "", c[2], None)))
def test_property_round_trips(case: tuple[str, str, str, str | None, str | None]) -> None:
    ref = parse(case[0])
    # parse(str(ref)) is the normalised reference, and normalisation is idempotent
    normalised = parse(str(ref))
    _assert_normalised(normalised, ref)
    assert str(normalised) == str(ref)
    assert parse(str(normalised)) == normalised
    # every spelling of the same reference parses to the same thing
    assert parse(ref.name + Reference._suffix(ref.tag, ref.digest)) == ref
    assert parse(ref.name).name == ref.name
    # kubelet's defaulting parses back to the containerd form
    assert parse(ref.kubelet_image).normalized == ref.normalized
    # the registry API object is what the normalised reference points at
    assert ref.object == (ref.digest or ref.tag or "latest")
    assert ref.normalized.endswith(("@" + ref.object) if ref.digest else (":" + ref.object))


@given(st.text(max_size=80))
@example("\u0130.com/foo")
@example("[::1]:5000")
@example("a" * 64)
@settings(max_examples=500)
def test_property_arbitrary_text_only_raises_invalid_reference(text: str) -> None:
    try:
        ref = parse(text)
    except InvalidReference as exc:
        assert exc.reference == text
        assert exc.reason
        assert exc.upstream
    else:
        _assert_normalised(parse(ref.normalized), ref)


_GRAMMAR_CHARS = string.ascii_lowercase[:4] + "AB019:/@._-[]" + " "


@given(st.text(alphabet=_GRAMMAR_CHARS, max_size=40))
@settings(max_examples=1000)
def test_property_grammar_alphabet_only_raises_invalid_reference(text: str) -> None:
    try:
        ref = parse(text)
    except InvalidReference as exc:
        assert exc.reason
        return
    assert ref.path == ref.path.lower()
    assert " " not in text
    assert len(ref.path) <= 255


@given(_references(), st.data())
def test_property_uppercase_in_path_is_rejected(
    case: tuple[str, str, str, str | None, str | None], data: st.DataObject
) -> None:
    _, domain, path, tag, digest = case
    letters = [i for i, c in enumerate(path) if c.isalpha()]
    assume(letters)
    i = data.draw(st.sampled_from(letters))
    upper = path[:i] + path[i].upper() + path[i + 1 :]
    bad = f"{domain}/{upper}" + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    with pytest.raises(InvalidReference, match="must be lowercase") as info:
        parse(bad)
    assert f"({upper})" in info.value.reason


@given(_references(), st.sampled_from(["-", ".", "_", "__"]))
def test_property_leading_separator_is_rejected(
    case: tuple[str, str, str, str | None, str | None], sep: str
) -> None:
    _, domain, path, _, _ = case
    with pytest.raises(InvalidReference, match="invalid repository name component"):
        parse(f"{domain}/{sep}{path}")


@given(_HEX)
def test_property_bare_image_ids_are_rejected_but_qualified_ones_are_names(hex_id: str) -> None:
    with pytest.raises(InvalidReference, match="64-byte hexadecimal"):
        parse(hex_id)
    assert parse(f"docker.io/{hex_id}").path == f"library/{hex_id}"
    assert parse(f"x/{hex_id}").path == f"x/{hex_id}"


@given(st.integers(min_value=0, max_value=200), _TAG)
def test_property_tag_length_limit(extra: int, tag: str) -> None:
    long_tag = (tag + "a" * extra)[:200]
    if len(long_tag) <= 128:
        assert parse(f"quay.io/a:{long_tag}").tag == long_tag
    else:
        with pytest.raises(InvalidReference, match="invalid tag format"):
            parse(f"quay.io/a:{long_tag}")


@given(_DOMAIN, st.booleans())
def test_property_registry_only_domains_round_trip(domain: str, scheme: bool) -> None:
    text = ("https://" if scheme else "") + domain
    if scheme or "." in domain or domain.startswith(("[", "localhost")):
        assert is_registry_only(text)
    hub = domain.lower() in ("docker.io", "index.docker.io")
    assert parse_registry(text) == ("docker.io" if hub else domain)
