"""A model registry that is just a folder (local path or gs://).

Layout: ``<registry>/<model_name>/<version>/`` holding the model file and ``manifest.json``.
Versions are ``v0001``, ``v0002``, ... so they sort both as text and as numbers; ``latest``
resolves to the highest complete version. A version is complete once its manifest exists: the
manifest is written last, so a crashed publish never shadows a good version. Nothing is ever
overwritten: publishing into an existing version fails.

Aliases (``production``, ``shadow``, any name) are small JSON files
``<registry>/<model_name>/aliases/<alias>.json`` naming a version, written under a temporary
name and renamed into place; every move is appended to ``aliases/audit.jsonl`` (time, alias,
from, to, by, reason, decision record). ``resolve`` accepts an alias wherever a version goes.

The version is part of the model file's path, so Beam's ``PredictionResult.model_id`` (the path)
names the version that produced each prediction.
"""

import dataclasses
import datetime
import functools
import json
import re

from apache_beam.io.filesystems import FileSystems

from models.files import write_file
from models.provenance import sha256_file

MANIFEST = "manifest.json"
LATEST = "latest"
PRODUCTION = "production"
ALIASES = "aliases"
AUDIT_LOG = "audit.jsonl"
_VERSION_RE = re.compile(r"^v(\d{4,})$")
_ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


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

    def resolved_note(self) -> str:
        """How a run's launch line names the version it resolved (``resolve`` checked its
        files' sha256)."""
        return (f"model {self.name} {self.version} resolved, its files' sha256 checked "
                f"({self.sha256[:12]}...)")


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
    """Find a model version; ``latest`` means the highest complete one, any other name that is
    not a version is an alias (``production``, ``shadow`` ...).

    Args:
        registry: registry root folder.
        name: model name.
        version: "latest", a version such as "v0002", or an alias.
        verify: recompute the model file's sha256 and compare it with the manifest.

    Raises:
        RegistryError: the model, the version, the alias or the manifest is missing, or the
            hash differs.
    """
    versions = list_versions(registry, name)
    if not versions:
        raise RegistryError(f"no versions of model {name!r} in registry {registry!r}")
    if version == LATEST:
        version = versions[-1]
    elif not _VERSION_RE.match(version):
        alias = read_alias(registry, name, version)
        if alias is None:
            raise RegistryError(
                f"model {name!r} has no alias {version!r} in {registry!r} (versions: "
                f"{', '.join(versions)}); promote a version with beamline models promote "
                f"(python -m models.promotion promote), or give "
                f"--model_version latest or a version")
        version = alias["version"]
    elif version not in versions:
        raise RegistryError(
            f"model {name!r} has no complete version {version!r} in {registry!r}; "
            f"available: {', '.join(versions)}"
        )
    folder = FileSystems.join(registry, name, version)
    try:
        with FileSystems.open(FileSystems.join(folder, MANIFEST)) as f:
            manifest = json.loads(f.read().decode("utf-8"))
        path = FileSystems.join(folder, manifest["model_file"])
        expected = manifest["model_sha256"]
    except (ValueError, KeyError, TypeError) as error:
        raise RegistryError(f"model {name} {version}: its manifest {MANIFEST} is unreadable "
                            f"({type(error).__name__}: {error}); refusing to serve it") from error
    if verify:
        try:
            actual = sha256_file(path)
        except OSError as error:
            raise RegistryError(f"model {name} {version}: its model file {path} cannot be read "
                                f"({error.strerror or error}); refusing to serve it") from error
        if actual != expected:
            raise RegistryError(
                f"model {name} {version}: {path} has sha256 {actual[:12]}..., its manifest "
                f"says {expected[:12]}...: the file is corrupt, truncated or replaced; "
                f"refusing to serve it")
    return ModelRef(name=name, version=version, path=path, manifest=manifest)


@functools.lru_cache(maxsize=64)
def identity_from_path(path: str) -> tuple[str, str, str]:
    """(name, version, sha256) of a registry model file, from the manifest beside it: how a
    row names a version that was swapped in after the run started."""
    folder = path.replace("\\", "/").rsplit("/", 1)[0]
    with FileSystems.open(FileSystems.join(folder, MANIFEST)) as f:
        manifest = json.loads(f.read().decode("utf-8"))
    return manifest["name"], manifest["version"], manifest["model_sha256"]


def _local_tree_digests(path: str) -> dict[str, str]:
    """sha256 of every file below a local folder, by path relative to it."""
    import os

    digests = {}
    for directory, _, files in os.walk(path):
        for file in files:
            full = os.path.join(directory, file)
            digests[os.path.relpath(full, path).replace(os.sep, "/")] = sha256_file(full)
    return dict(sorted(digests.items()))


def remote_model_id(model: dict) -> str:
    """How a prediction scored by the serving function names the version that answered
    (``{"name", "version", "sha256"}`` of its answer); a local model's path plays this part
    in-process."""
    return f"remote:{model['name']}:{model['version']}:{model['sha256']}"


def publish(registry: str, name: str, model_file: str, manifest: dict,
            exports: dict[str, str] | None = None) -> ModelRef:
    """Copy a trained model into the next version folder and write its manifest.

    Args:
        registry: registry root folder.
        name: model name.
        model_file: the trained model file (its basename is kept, e.g. "model.keras").
        manifest: everything known about the model; name, version, model_file and
            model_sha256 are filled in here.
        exports: other forms of the same model, local folders by name (e.g. "saved_model"):
            copied beside the model file and listed in the manifest's ``exports`` with the
            sha256 of every file.

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
    listed = {}
    for export, source in (exports or {}).items():
        FileSystems.copy([source], [FileSystems.join(folder, export)])
        listed[export] = {"path": export, "files": _local_tree_digests(source)}
    manifest = dict(manifest, name=name, version=version, model_file=basename,
                    model_sha256=sha256_file(target))
    if listed:
        manifest["exports"] = listed
    with FileSystems.create(FileSystems.join(folder, MANIFEST)) as f:
        f.write(json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8"))
    return ModelRef(name=name, version=version, path=target, manifest=manifest)


# --- aliases --------------------------------------------------------------------------------

def is_alias(name: str) -> bool:
    """Whether a --model_version value names an alias (not a version, not latest)."""
    return name != LATEST and not _VERSION_RE.match(name)


def _alias_path(registry: str, name: str, alias: str) -> str:
    if not _ALIAS_RE.match(alias) or alias == LATEST:
        raise RegistryError(f"{alias!r} is not an alias name (lower-case letters, digits, _ and "
                            f"-, not 'latest')")
    return FileSystems.join(registry, name, ALIASES, f"{alias}.json")


def _read_json(path: str):
    try:
        with FileSystems.open(path) as f:
            return json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError):  # a missing file reads as nothing
        return None


def read_alias(registry: str, name: str, alias: str) -> dict | None:
    """The alias record ({"alias", "version", "set_at", "by", "reason", "decision"}), or None."""
    return _read_json(_alias_path(registry, name, alias))


def list_aliases(registry: str, name: str) -> dict[str, str]:
    """Alias -> version of every alias of a model."""
    pattern = FileSystems.join(registry, name, ALIASES, "*.json")
    try:
        paths = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    except Exception:  # noqa: BLE001 - a missing folder matches nothing
        return {}
    aliases = {}
    for path in sorted(paths):
        record = _read_json(path)
        if record and "alias" in record:
            aliases[record["alias"]] = record["version"]
    return aliases


def audit_log(registry: str, name: str) -> list[dict]:
    """Every alias move of a model, oldest first."""
    path = FileSystems.join(registry, name, ALIASES, AUDIT_LOG)
    try:
        with FileSystems.open(path) as f:
            text = f.read().decode("utf-8")
    except OSError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def set_alias(registry: str, name: str, alias: str, version: str, by: str, reason: str,
              decision: str | None = None) -> dict:
    """Point an alias at a complete version and append the move to the audit log.

    Args:
        registry, name: the model.
        alias: e.g. "production".
        version: a complete version such as "v0002".
        by: who or which command moved it.
        reason: why, in words.
        decision: path of the decision record behind the move, if any.

    Returns:
        The audit entry.

    Raises:
        RegistryError: the version is not a complete version of the model.
    """
    if version not in list_versions(registry, name):
        raise RegistryError(f"model {name!r} has no complete version {version!r} in "
                            f"{registry!r}")
    path = _alias_path(registry, name, alias)
    previous = _read_json(path)
    now = datetime.datetime.now(datetime.UTC).isoformat()
    record = {"alias": alias, "version": version, "set_at": now, "by": by, "reason": reason,
              "decision": decision}
    write_file(path, json.dumps(record, indent=2).encode("utf-8"))
    entry = {"time": now, "alias": alias, "from": previous["version"] if previous else None,
             "to": version, "by": by, "reason": reason, "decision": decision}
    log = FileSystems.join(registry, name, ALIASES, AUDIT_LOG)
    lines = [json.dumps(e, sort_keys=True) for e in audit_log(registry, name)]
    write_file(log, ("\n".join([*lines, json.dumps(entry, sort_keys=True)]) + "\n")
                      .encode("utf-8"))
    return entry
