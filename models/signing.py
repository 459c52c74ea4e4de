"""Optional signatures of registry versions (Ed25519, from ``cryptography``).

With a signing key, ``publish`` writes ``manifest.sig`` beside each manifest: an Ed25519
signature over the manifest's bytes, which list the sha256 of every file of the version, so
one signature covers all of it. With trusted keys, ``resolve`` (serving, pipelines, promotion)
refuses a version that is unsigned or signed by no trusted key.

Ed25519 rather than an HMAC: the machines that check (serving, workers) hold only public keys
and cannot sign; only the one that publishes holds the private key.

Keys are read like the pseudonymisation key, never from configuration:

- ``BEAMLINE_REGISTRY_SIGNING_KEY``: a PEM file of the private key (default
  ``<BEAMLINE_HOME>/.secrets/registry-signing.pem`` when it exists).
- ``BEAMLINE_REGISTRY_TRUSTED_KEYS``: a file of one or more PEM public keys (default
  ``<BEAMLINE_HOME>/.secrets/registry-trusted.pem`` when it exists). Rotation: add the new
  public key, sign with the new private key (``beamline models sign`` re-signs old versions),
  then drop the old public key; until then versions under either key are accepted.
"""

import base64
import hashlib
import json
import os
import pathlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from models.config import ConfigError, default_key_file

SIGNATURE_FILE = "manifest.sig"
SIGNING_KEY_ENV = "BEAMLINE_REGISTRY_SIGNING_KEY"
TRUSTED_KEYS_ENV = "BEAMLINE_REGISTRY_TRUSTED_KEYS"
_PEM_END = b"-----END PUBLIC KEY-----"


def _default(name: str) -> pathlib.Path:
    return default_key_file().parent / name


def signing_key_path() -> str | None:
    """Where the private key is read from, or None when no signing is configured."""
    path = os.environ.get(SIGNING_KEY_ENV) or str(_default("registry-signing.pem"))
    return path if os.environ.get(SIGNING_KEY_ENV) or os.path.exists(path) else None


def trusted_keys_path() -> str | None:
    path = os.environ.get(TRUSTED_KEYS_ENV) or str(_default("registry-trusted.pem"))
    return path if os.environ.get(TRUSTED_KEYS_ENV) or os.path.exists(path) else None


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as error:
        raise ConfigError(f"the registry {what} file {path} cannot be read: "
                          f"{error.strerror or error}") from None


def key_id(public: Ed25519PublicKey) -> str:
    """16 hex digits naming a public key (in signatures, messages and the docs)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def signing_key() -> Ed25519PrivateKey | None:
    """The private key publish signs with, or None (versions are published unsigned).

    Raises:
        ConfigError: the file named is missing or holds no Ed25519 private key.
    """
    path = signing_key_path()
    if path is None:
        return None
    try:
        key = serialization.load_pem_private_key(_read(path, "signing key"), password=None)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"the registry signing key {path} is not a PEM private key "
                          f"({error})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"the registry signing key {path} is not an Ed25519 key (make one "
                          f"with `beamline models keygen`)")
    return key


def trusted_keys() -> dict[str, Ed25519PublicKey] | None:
    """key id -> public key of every trusted key, or None (signatures are not required).

    Raises:
        ConfigError: the file named is missing, or a key in it is not an Ed25519 public key.
    """
    path = trusted_keys_path()
    if path is None:
        return None
    keys = {}
    for block in _read(path, "trusted keys").split(_PEM_END):
        if not block.strip():
            continue
        try:
            key = serialization.load_pem_public_key(block.strip() + b"\n" + _PEM_END + b"\n")
        except (ValueError, TypeError):
            raise ConfigError(f"{path}: a block is not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{path}: a key is not an Ed25519 public key")
        keys[key_id(key)] = key
    if not keys:
        raise ConfigError(f"{path} holds no public key")
    return keys


def signature(manifest_bytes: bytes, key: Ed25519PrivateKey) -> bytes:
    """The content of ``manifest.sig`` for a manifest's bytes."""
    return json.dumps({"algorithm": "ed25519", "key_id": key_id(key.public_key()),
                       "signature": base64.b64encode(key.sign(manifest_bytes)).decode()},
                      indent=2).encode("utf-8")


def problem(manifest_bytes: bytes, signature_bytes: bytes | None,
            trusted: dict[str, Ed25519PublicKey]) -> str | None:
    """Why a manifest's signature is not acceptable, or None when a trusted key signed it."""
    if signature_bytes is None:
        return "it is not signed"
    try:
        record = json.loads(signature_bytes.decode("utf-8"))
        given = record["key_id"]
        raw = base64.b64decode(record["signature"], validate=True)
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"its {SIGNATURE_FILE} is damaged"
    if given not in trusted:
        return (f"it is signed by key {str(given)[:16]}, which is not among the trusted keys "
                f"({', '.join(sorted(trusted))})")
    try:
        trusted[given].verify(raw, manifest_bytes)
    except InvalidSignature:
        return f"its signature does not match its manifest (key {given})"
    return None


def generate(directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, str]:
    """A new key pair: the private key written to ``registry-signing.pem`` (owner only; an
    existing one is kept as ``registry-signing.<key id>.pem``), the public key appended to
    ``registry-trusted.pem`` (older trusted keys stay until removed by hand).

    Returns:
        (private key file, trusted keys file, new key id).
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    private, trusted = directory / "registry-signing.pem", directory / "registry-trusted.pem"
    if private.exists():
        old = serialization.load_pem_private_key(private.read_bytes(), password=None)
        private.rename(directory / f"registry-signing.{key_id(old.public_key())}.pem")
    key = Ed25519PrivateKey.generate()
    descriptor = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(trusted, "ab") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, trusted, key_id(key.public_key())
