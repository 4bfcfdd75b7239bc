"""Which CRI socket to use: explicit argument, ``$CONTAINER_RUNTIME_ENDPOINT``, or crictl's list.

Only unix sockets are accepted (as in cri-client on Linux). Accepted spellings:
``unix:///abs/path``, ``unix:/abs/path`` and a bare ``/abs/path``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from agent.cri.errors import InvalidEndpoint

ENV_VAR = "CONTAINER_RUNTIME_ENDPOINT"

# crictl >= v1.30 tries these, in this order, when no endpoint is configured.
DEFAULT_ENDPOINTS: tuple[str, ...] = (
    "unix:///run/containerd/containerd.sock",
    "unix:///run/crio/crio.sock",
    "unix:///var/run/cri-dockerd.sock",
)


def socket_path(endpoint: str) -> str:
    """The absolute socket path of ``endpoint``; raise :class:`InvalidEndpoint` otherwise."""
    text = endpoint.strip()
    if text.startswith("unix://"):
        path = text[len("unix://") :]
        if not path.startswith("/"):
            raise InvalidEndpoint(
                f"invalid CRI endpoint {endpoint!r}: unix:// must be followed by an absolute path "
                "(unix:///run/containerd/containerd.sock)"
            )
    elif text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path.startswith("/"):
            raise InvalidEndpoint(
                f"invalid CRI endpoint {endpoint!r}: the socket path must be absolute"
            )
    elif text.startswith("/"):
        path = text
    else:
        scheme = text.split("://", 1)[0] if "://" in text else ""
        why = f"scheme {scheme}:// is not supported" if scheme else "not a unix socket address"
        raise InvalidEndpoint(
            f"invalid CRI endpoint {endpoint!r}: {why}; use unix:///path/to/cri.sock "
            "or an absolute socket path"
        )
    if "\x00" in path or path.rstrip("/") == "":
        raise InvalidEndpoint(f"invalid CRI endpoint {endpoint!r}: empty or malformed socket path")
    return os.path.normpath(path)


def normalize(endpoint: str) -> str:
    """``endpoint`` in the canonical ``unix:///abs/path`` form (validated)."""
    return "unix://" + socket_path(endpoint)


def candidates(endpoint: str | None = None) -> list[str]:
    """Endpoints to try, in order, normalised; validates explicit and environment values."""
    if endpoint is not None and endpoint.strip():
        return [normalize(endpoint)]
    from_env = os.environ.get(ENV_VAR, "").strip()
    if from_env:
        return [normalize(from_env)]
    return list(DEFAULT_ENDPOINTS)


def path_problem(path: str) -> str | None:
    """Why the socket at ``path`` certainly cannot be used, or ``None`` if it may be connectable.

    This is the cheap on-disk check done before any gRPC connection attempt.
    """
    try:
        st = Path(path).stat()
    except FileNotFoundError:
        return "no such file"
    except PermissionError:
        return "permission denied"
    except NotADirectoryError:
        return "no such file (a parent is not a directory)"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    if not stat.S_ISSOCK(st.st_mode):
        if stat.S_ISDIR(st.st_mode):
            return "not a socket (a directory)"
        return "not a socket"
    # connect(2) on a unix socket needs write permission on the socket file.
    if not os.access(path, os.W_OK):
        return "permission denied"
    return None
