"""Ray's cluster token: made owner-only, really new when generated, checked before joining.

Ray (2.60) authenticates every gRPC call to a cluster with a shared token (``RAY_AUTH_MODE=
token``) read from ``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``, else
``~/.ray/auth_token``. Three things this module adds around it:

* :func:`generate_token` writes a *new* random token (``ray get-auth-token --generate``
  prints an existing one, so "generate to rotate" did not rotate), atomically and mode 0600;
* :func:`ensure_local_token` gives a local run a token file that is owner-only (Ray creates
  ``~/.ray/auth_token`` world-readable);
* :func:`check_access` asks a cluster's GCS for its id with this process's token before
  ``ray.init``: a refused or unreachable cluster is one clear error within seconds, where Ray
  itself retries for tens of seconds and then reports a generic connection failure.

Mutual TLS (``RAY_USE_TLS=1`` with ``RAY_TLS_SERVER_CERT``, ``RAY_TLS_SERVER_KEY`` and
``RAY_TLS_CA_CERT``) is honoured by the check as Ray honours it.
"""

from __future__ import annotations

import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc

#: Random bytes of a generated token (64 hexadecimal characters, as Ray's own).
TOKEN_BYTES = 32
#: How long :func:`check_access` waits for the cluster [s].
CHECK_TIMEOUT_S = 5.0


class ClusterAccessError(RuntimeError):
    """This process may not (or cannot) join the cluster; the message says why, in one line."""


def default_token_path() -> Path:
    """Ray's default token file."""
    return Path.home() / ".ray" / "auth_token"


def token_source() -> tuple[str | None, str]:
    """The token this process would present, and where it comes from (as Ray resolves it)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or default_token_path())
    try:
        return path.read_text().strip() or None, str(path)
    except OSError:
        return None, str(path)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def generate_token(path: str | os.PathLike[str]) -> Path:
    """Write a new random cluster token to ``path`` (mode 0600), replacing any old one."""
    path = Path(path)
    _write_private(path, secrets.token_hex(TOKEN_BYTES) + "\n")
    return path


def enable_token_mode() -> None:
    """Token authentication on for this process and the Ray processes it starts.

    Ray caches its configuration when it is imported; like Ray's own switch
    (``authentication_token_setup._enable_token_auth``) this refreshes the cache, so the mode
    holds whenever ``ray`` was imported.
    """
    os.environ["RAY_AUTH_MODE"] = "token"
    # Config is a Cython class of ray._raylet that Ray's _raylet.pyi does not declare.
    from ray._raylet import Config  # type: ignore[attr-defined]

    Config.initialize("")


def ensure_local_token() -> Path:
    """Token authentication for a local cluster, with an owner-only token file.

    Creates the token file Ray will read if there is none; an existing one readable by
    group or others is made owner-only. Sets ``RAY_AUTH_MODE=token`` for this process (and
    so for the cluster it starts).
    """
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or default_token_path())
    if not path.exists():
        generate_token(path)
    elif stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o600)
    enable_token_mode()
    return path


def _channel(target: str) -> grpc.Channel:
    import grpc

    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):

        def read(name: str) -> bytes | None:
            value = os.environ.get(name)
            return Path(value).read_bytes() if value else None

        credentials = grpc.ssl_channel_credentials(
            root_certificates=read("RAY_TLS_CA_CERT"),
            private_key=read("RAY_TLS_SERVER_KEY"),
            certificate_chain=read("RAY_TLS_SERVER_CERT"),
        )
        return grpc.secure_channel(target, credentials)
    return grpc.insecure_channel(target)


def check_access(address: str, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """Ask the GCS at ``address`` (``host:port``) for its cluster id with this token.

    Raises
    ------
    ClusterAccessError
        Refused (no token, wrong token, or a TLS handshake without a valid certificate),
        or not answering within ``timeout_s``.
    """
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    token, source = token_source()
    metadata = [] if token is None else [("authorization", f"Bearer {token}")]
    with _channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            # The message classes of a protobuf module are made at import time (protobuf's
            # builder fills its globals) and Ray ships no .pyi for gcs_service_pb2.
            request = gcs_service_pb2.GetClusterIdRequest()  # type: ignore[attr-defined]
            stub.GetClusterId(request, metadata=metadata, timeout=timeout_s)
        except grpc.RpcError as error:
            code = error.code()
            if code == grpc.StatusCode.UNAUTHENTICATED:
                fix = "set RAY_AUTH_TOKEN_PATH to the cluster's token file"
                if token is None:
                    raise ClusterAccessError(
                        f"the Ray cluster at {address} requires a token and this driver has "
                        f"none ({fix})"
                    ) from None
                raise ClusterAccessError(
                    f"the Ray cluster at {address} refused the token from {source}: it is not "
                    f"the cluster's ({fix})"
                ) from None
            tls = os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")
            hint = (
                "or it refused this driver's TLS certificate"
                if tls
                else "or it requires TLS (RAY_USE_TLS=1 with a certificate)"
            )
            raise ClusterAccessError(
                f"the Ray cluster at {address} cannot be reached ({code.name.lower()}, waited "
                f"at most {timeout_s:g} s): it is not running there, a firewall blocks the "
                f"port, {hint}"
            ) from None
