"""A model registry that is just a folder (local path or gs://).

Layout: ``<registry>/<model_name>/<version>/`` holding the model file and ``manifest.json``.
Versions are ``v0001``, ``v0002``, ... so they sort both as text and as numbers; ``latest``
resolves to the highest complete version. A version is complete once its manifest exists: the
manifest is written last, so a crashed publish never shadows a good version. Nothing is ever
overwritten: publishing into an existing version fails.

The version is part of the model file's path, so Beam's ``PredictionResult.model_id`` (the path)
names the version that produced each prediction.
"""

import dataclasses
import json
import re

from apache_beam.io.filesystems import FileSystems

from models.provenance import sha256_file

MANIFEST = "manifest.json"
LATEST = "latest"
_VERSION_RE = re.compile(r"^v(\d{4,})$")


class RegistryError(Exception):
    """A model or version is missing, incomplete or fails its integrity check."""


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """A resolved model version.

    Attributes:
        name: model name, e.g. "credit".
        version: e.g. "v0003".
        path: full path of the model file (what RunInference loads).
        manifest: the parsed manifest.json.
    """

    name: str
    version: str
    path: str
    manifest: dict

    @property
    def sha256(self) -> str:
        return self.manifest["model_sha256"]


def format_version(number: int) -> str:
    return f"v{number:04d}"


def list_versions(registry: str, name: str) -> list[str]:
    """Complete versions of a model (those with a manifest), oldest first."""
    pattern = FileSystems.join(registry, name, "*", MANIFEST)
    try:
        matches = FileSystems.match([pattern])[0].metadata_list
    except Exception:  # noqa: BLE001 - a missing folder matches nothing
        return []
    versions = []
    for metadata in matches:
        version = metadata.path.replace("\\", "/").rstrip("/").split("/")[-2]
        if _VERSION_RE.match(version):
            versions.append(version)
    return sorted(versions, key=lambda v: int(_VERSION_RE.match(v).group(1)))


def _version_numbers(registry: str, name: str) -> list[int]:
    try:
        pattern = FileSystems.join(registry, name, "v*", "*")
        matches = FileSystems.match([pattern])[0].metadata_list
    except Exception:  # noqa: BLE001 - a missing folder matches nothing
        return []
    names = (m.path.replace("\\", "/").rstrip("/").split("/")[-2] for m in matches)
    return [int(_VERSION_RE.match(n).group(1)) for n in names if _VERSION_RE.match(n)]


def resolve(registry: str, name: str, version: str = LATEST, verify: bool = True) -> ModelRef:
    """Find a model version; ``latest`` means the highest complete one.

    Args:
        registry: registry root folder.
        name: model name.
        version: "latest" or a version such as "v0002".
        verify: recompute the model file's sha256 and compare it with the manifest.

    Raises:
        RegistryError: the model, the version or its manifest is missing, or the hash differs.
    """
    versions = list_versions(registry, name)
    if not versions:
        raise RegistryError(f"no versions of model {name!r} in registry {registry!r}")
    if version == LATEST:
        version = versions[-1]
    elif version not in versions:
        raise RegistryError(
            f"model {name!r} has no complete version {version!r} in {registry!r}; "
            f"available: {', '.join(versions)}"
        )
    folder = FileSystems.join(registry, name, version)
    with FileSystems.open(FileSystems.join(folder, MANIFEST)) as f:
        manifest = json.loads(f.read().decode("utf-8"))
    path = FileSystems.join(folder, manifest["model_file"])
    if verify:
        actual = sha256_file(path)
        if actual != manifest["model_sha256"]:
            raise RegistryError(
                f"{path} has sha256 {actual}, its manifest says {manifest['model_sha256']}"
            )
    return ModelRef(name=name, version=version, path=path, manifest=manifest)


def publish(registry: str, name: str, model_file: str, manifest: dict) -> ModelRef:
    """Copy a trained model into the next version folder and write its manifest.

    Args:
        registry: registry root folder.
        name: model name.
        model_file: the trained model file (its basename is kept, e.g. "model.keras").
        manifest: everything known about the model; name, version, model_file and
            model_sha256 are filled in here.

    A version folder is never written twice: a folder that exists already (a concurrent or
    crashed publish) is skipped for the next number.

    Returns:
        The new version.
    """
    # Number past every version folder, complete or not: a crashed publish leaves a folder
    # without manifest, which must neither be reused nor block later versions.
    number = max(_version_numbers(registry, name), default=0)
    while True:
        number += 1
        version = format_version(number)
        folder = FileSystems.join(registry, name, version)
        if FileSystems.exists(FileSystems.join(folder, MANIFEST)):
            continue
        try:
            FileSystems.mkdirs(folder)  # fails on a local folder that exists, even if empty
            break
        except OSError:
            continue
    basename = model_file.replace("\\", "/").rstrip("/").split("/")[-1]
    target = FileSystems.join(folder, basename)
    FileSystems.copy([model_file], [target])
    manifest = dict(manifest, name=name, version=version, model_file=basename,
                    model_sha256=sha256_file(target))
    with FileSystems.create(FileSystems.join(folder, MANIFEST)) as f:
        f.write(json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8"))
    return ModelRef(name=name, version=version, path=target, manifest=manifest)
