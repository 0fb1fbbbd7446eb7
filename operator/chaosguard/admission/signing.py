"""The operator's HMAC key for author and approver stamps: only the operator holds it.

Kept in the Secret `chaosguard-signing-key` of the operator's own namespace (deploy/base ships it
empty; the operator fills it in on its first start, and after that reads it), or in a key file
(`chaosguard run --signing-key-file`, created with mode 0600 when missing). A new key voids every
stamp made with the old one: experiments and approvals must then be created again.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from kubernetes.client.exceptions import ApiException

from chaosguard.clients.kube import Cluster, api_message

SECRET_NAME = "chaosguard-signing-key"
SECRET_KEY = "hmac-key"
KEY_BYTES = 32


class SigningKeyError(RuntimeError):
    """The key cannot be read or created; the message says what to grant or fix."""


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def key_from_file(path: Path) -> bytes:
    """The key in `path`, created (0600, exclusively) when the file does not exist yet."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) < KEY_BYTES:
            raise SigningKeyError(f"{path} holds {len(key)} bytes; a signing key needs {KEY_BYTES}") from None
        return key
    except OSError as error:
        raise SigningKeyError(f"cannot create the signing key file {path}: {error.strerror}") from None
    key = new_key()
    with os.fdopen(descriptor, "wb") as file:
        file.write(key)
    return key


def key_from_secret(cluster: Cluster, namespace: str) -> bytes:
    """The key in Secret `chaosguard-signing-key` of `namespace`, generated on first use (race-safe)."""
    where = f"Secret {namespace}/{SECRET_NAME}"
    for _ in range(5):
        try:
            found = cluster.secret_data(namespace, SECRET_NAME)
            if found is None:
                key = new_key()
                cluster.create_secret(namespace, SECRET_NAME, {SECRET_KEY: key})
                return key
            data, resource_version = found
            if len(data.get(SECRET_KEY, b"")) >= KEY_BYTES:
                return data[SECRET_KEY]
            cluster.add_secret_data(namespace, SECRET_NAME, {SECRET_KEY: new_key()}, resource_version)
        except ApiException as error:
            if error.status == 409:
                continue  # someone else wrote it first: read theirs
            if error.status == 403:
                raise SigningKeyError(
                    f"may not read or write {where}: {api_message(error)}; grant get and patch on it "
                    "(deploy/base/rbac.yaml), or pass --signing-key-file"
                ) from None
            raise SigningKeyError(f"cannot read {where}: {api_message(error)}") from None
    raise SigningKeyError(f"{where} kept changing while the operator tried to read its key")
