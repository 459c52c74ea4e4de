"""A model registry that is just a folder (local path or gs://).

Layout: ``<registry>/<model_name>/<version>/`` holding the model file and ``manifest.json``.
Versions are ``v0001``, ``v0002``, ... so they sort both as text and as numbers; ``latest``
resolves to the highest complete version. A version is complete once its manifest exists: the
manifest is written last, so a crashed publish never shadows a good version. Nothing is ever
overwritten: publishing into an existing version fails.

Aliases (``production``, ``shadow``, any name) are small JSON files
``<registry>/<model_name>/aliases/<alias>.json`` naming a version; every move is first written
as a write-once, hash-chained audit record (``models.audit``), then the alias file is replaced.
``resolve`` accepts an alias wherever a version goes.

Names are checked against one pattern each before they touch the file system, and every path a
manifest names is a relative path inside its version folder (checked at publish and at load).
With trusted keys configured, a version must carry a valid signature (``models.signing``).

The version is part of the model file's path, so Beam's ``PredictionResult.model_id`` (the path)
names the version that produced each prediction.
"""

import dataclasses
import functools
import json
import re

from apache_beam.io.filesystems import FileSystems

from models import audit, signing
from models.provenance import sha256_file

MANIFEST = "manifest.json"
LATEST = "latest"
PRODUCTION = "production"
ALIASES = "aliases"
# One pattern each, checked before a name reaches the file system: ASCII only (``\d`` would
# take "²"), bounded (a 5,000-digit version is no version), and no "." (so no "..", no glob).
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", re.ASCII)
_VERSION_RE = re.compile(r"v([0-9]{4,9})", re.ASCII)
_ALIAS_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}", re.ASCII)


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

    def export_folder(self, export: str) -> str:
        """The folder of one export (``saved_model``, ``onnx``), inside the version folder."""
        return FileSystems.join(self.path.replace("\\", "/").rsplit("/", 1)[0],
                                self.manifest["exports"][export]["path"])

    def export_sha256(self, export: str) -> str:
        """The digest of an export's files: what an answer scored by that export reports."""
        return tree_sha256(self.manifest["exports"][export]["files"])

    def digests(self) -> set[str]:
        """The model file's sha256 and every export's digest: the ones a row may name."""
        return {self.sha256, *(tree_sha256(e["files"])
                               for e in (self.manifest.get("exports") or {}).values())}

    def resolved_note(self) -> str:
        """How a run's launch line names the version it resolved (``resolve`` checked its
        files' sha256)."""
        return (f"model {self.name} {self.version} resolved, its files' sha256 checked "
                f"({self.sha256[:12]}...)")


def format_version(number: int) -> str:
    return f"v{number:04d}"


def check_name(name) -> str:
    """A model name, refused unless it is letters, digits, _ and - (at most 64, first a letter
    or digit): no "..", no "/", no glob character reaches a path."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise RegistryError(f"{str(name)[:40]!r} is not a model name (letters, digits, _ and -, "
                            f"at most 64, starting with a letter or digit)")
    return name


def check_version(version) -> str:
    """``latest``, a version (``v0002``) or an alias name; anything else is refused."""
    if not isinstance(version, str) or not (
            version == LATEST or _VERSION_RE.fullmatch(version) or _ALIAS_RE.fullmatch(version)):
        raise RegistryError(f"{str(version)[:40]!r} is neither a version (v0001 ... up to 9 "
                            f"digits), latest, nor an alias name (lower-case letters, digits, _ "
                            f"and -)")
    return version


def tree_sha256(files: dict[str, str]) -> str:
    """One digest of a folder's files, from their sha256 by relative path."""
    import hashlib

    listing = "".join(f"{path}\0{digest}\n" for path, digest in sorted(files.items()))
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def _inside(path, what: str) -> str:
    """``path`` if it is a relative path that stays inside its folder; else RegistryError."""
    parts = path.split("/") if isinstance(path, str) else []
    if not parts or "\\" in path or path.startswith("/") or ":" in path or \
            any(p in ("", ".", "..") for p in parts):
        raise RegistryError(f"{what} {str(path)[:60]!r} is not a relative path inside the "
                            f"version folder")
    return path


def manifest_problem(manifest) -> str | None:
    """Why a manifest cannot be trusted to name its own files, or None."""
    try:
        _inside(manifest["model_file"], "model_file")
        if "/" in manifest["model_file"]:
            raise RegistryError(f"model_file {manifest['model_file']!r} is not a file name")
        if not isinstance(manifest["model_sha256"], str):
            raise RegistryError("model_sha256 is not a string")
        for name, export in (manifest.get("exports") or {}).items():
            _inside(export["path"], f"exports.{name}.path")
            for file in export["files"]:
                _inside(file, f"a file of exports.{name}")
    except RegistryError as error:
        return str(error)
    except (KeyError, TypeError, AttributeError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def list_versions(registry: str, name: str) -> list[str]:
    """Complete versions of a model (those with a manifest), oldest first."""
    pattern = FileSystems.join(registry, check_name(name), "*", MANIFEST)
    try:
        matches = FileSystems.match([pattern])[0].metadata_list
    except Exception:  # noqa: BLE001 - a missing folder matches nothing
        return []
    versions = []
    for metadata in matches:
        version = metadata.path.replace("\\", "/").rstrip("/").split("/")[-2]
        if _VERSION_RE.fullmatch(version):
            versions.append(version)
    return sorted(versions, key=lambda v: int(_VERSION_RE.fullmatch(v).group(1)))


def _version_numbers(registry: str, name: str) -> list[int]:
    try:
        pattern = FileSystems.join(registry, name, "v*", "*")
        matches = FileSystems.match([pattern])[0].metadata_list
    except Exception:  # noqa: BLE001 - a missing folder matches nothing
        return []
    names = (m.path.replace("\\", "/").rstrip("/").split("/")[-2] for m in matches)
    return [int(_VERSION_RE.fullmatch(n).group(1)) for n in names if _VERSION_RE.fullmatch(n)]


def concrete_version(registry: str, name: str, version: str = LATEST) -> str:
    """The version ``latest`` or an alias names now (a version names itself).

    Raises:
        RegistryError: no such model, version or alias.
    """
    versions = list_versions(registry, check_name(name))
    if not versions:
        raise RegistryError(f"no versions of model {name!r} in registry {registry!r}")
    if check_version(version) == LATEST:
        return versions[-1]
    if not _VERSION_RE.fullmatch(version):
        alias = read_alias(registry, name, version)
        if alias is None:
            raise RegistryError(
                f"model {name!r} has no alias {version!r} in {registry!r} (versions: "
                f"{', '.join(versions)}); promote a version with beamline models promote "
                f"(python -m models.promotion promote), or give "
                f"--model_version latest or a version")
        version = alias["version"]
    if version not in versions:
        raise RegistryError(
            f"model {name!r} has no complete version {version!r} in {registry!r}; "
            f"available: {', '.join(versions)}"
        )
    return version


def resolve(registry: str, name: str, version: str = LATEST, verify: bool = True) -> ModelRef:
    """Find a model version; ``latest`` means the highest complete one, any other name that is
    not a version is an alias (``production``, ``shadow`` ...).

    Args:
        registry: registry root folder.
        name: model name.
        version: "latest", a version such as "v0002", or an alias.
        verify: recompute the model file's sha256 and compare it with the manifest, and, with
            trusted keys configured, check the version's signature.

    Raises:
        RegistryError: the model, the version, the alias or the manifest is missing, a path
            in the manifest leaves its folder, the hash differs or the signature is refused.
    """
    version = concrete_version(registry, name, version)
    folder = FileSystems.join(registry, name, version)
    try:
        with FileSystems.open(FileSystems.join(folder, MANIFEST)) as f:
            manifest_bytes = f.read()
        manifest = json.loads(manifest_bytes.decode("utf-8"))
    except (OSError, ValueError) as error:
        raise RegistryError(f"model {name} {version}: its manifest {MANIFEST} is unreadable "
                            f"({type(error).__name__}: {error}); refusing to serve it") from error
    problem = manifest_problem(manifest)
    if problem:
        raise RegistryError(f"model {name} {version}: its manifest is refused ({problem}); "
                            f"refusing to serve it")
    path = FileSystems.join(folder, manifest["model_file"])
    if verify:
        _check_signature(folder, manifest_bytes, f"model {name} {version}")
        try:
            actual = sha256_file(path)
        except OSError as error:
            raise RegistryError(f"model {name} {version}: its model file {path} cannot be read "
                                f"({error.strerror or error}); refusing to serve it") from error
        if actual != manifest["model_sha256"]:
            raise RegistryError(
                f"model {name} {version}: {path} has sha256 {actual[:12]}..., its manifest "
                f"says {manifest['model_sha256'][:12]}...: the file is corrupt, truncated or "
                f"replaced; refusing to serve it")
    return ModelRef(name=name, version=version, path=path, manifest=manifest)


def _check_signature(folder: str, manifest_bytes: bytes, what: str) -> None:
    try:
        trusted = signing.trusted_keys()
    except ValueError as error:  # ConfigError: the trusted keys file itself
        raise RegistryError(str(error)) from None
    if trusted is None:
        return
    try:
        with FileSystems.open(FileSystems.join(folder, signing.SIGNATURE_FILE)) as f:
            signature_bytes = f.read()
    except OSError:
        signature_bytes = None
    problem = signing.problem(manifest_bytes, signature_bytes, trusted)
    if problem:
        raise RegistryError(f"{what} is refused: {problem} (trusted keys: "
                            f"{signing.trusted_keys_path()})")


def sign_version(registry: str, name: str, version: str) -> str:
    """(Re-)sign an existing version with the configured signing key, after checking its
    files against its manifest; returns the key id.

    Raises:
        RegistryError: no signing key, or the version's files fail their check.
    """
    try:
        key = signing.signing_key()
    except ValueError as error:
        raise RegistryError(str(error)) from None
    if key is None:
        raise RegistryError(f"no registry signing key: set {signing.SIGNING_KEY_ENV} or run "
                            f"beamline models keygen")
    ref = resolve(registry, name, version, verify=False)
    for problem in version_problems(ref):
        raise RegistryError(f"model {name} {ref.version} not signed: {problem}")
    folder = FileSystems.join(registry, name, ref.version)
    with FileSystems.open(FileSystems.join(folder, MANIFEST)) as f:
        manifest_bytes = f.read()
    with FileSystems.create(FileSystems.join(folder, signing.SIGNATURE_FILE)) as f:
        f.write(signing.signature(manifest_bytes, key))
    return signing.key_id(key.public_key())


def version_problems(ref: ModelRef) -> list[str]:
    """Every file of a version (model file and exports) checked against its manifest."""
    problems = []
    files = [(ref.path, ref.sha256)]
    for export, entry in (ref.manifest.get("exports") or {}).items():
        folder = ref.export_folder(export)
        files += [(FileSystems.join(folder, f), d) for f, d in entry["files"].items()]
    for path, digest in files:
        try:
            if sha256_file(path) != digest:
                problems.append(f"{path} does not match its manifest's sha256")
        except OSError as error:
            problems.append(f"{path} cannot be read ({error.strerror or error})")
    return problems


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
    """Copy a trained model into the next version folder and write its manifest (signed
    first when a signing key is configured).

    Args:
        registry: registry root folder.
        name: model name.
        model_file: the trained model file (its basename is kept, e.g. "model.keras").
        manifest: everything known about the model; name, version, model_file and
            model_sha256 are filled in here.
        exports: other forms of the same model, local folders by name (e.g. "saved_model"):
            copied beside the model file and listed in the manifest's ``exports`` with the
            sha256 of every file and their digest (``tree_sha256``).

    A version folder is never written twice: a folder that exists already (a concurrent or
    crashed publish) is skipped for the next number.

    Returns:
        The new version.

    Raises:
        RegistryError: a bad model or export name, or an unreadable signing key.
    """
    check_name(name)
    for export in exports or {}:
        _inside(export, "export name")
    try:
        key = signing.signing_key()
    except ValueError as error:
        raise RegistryError(str(error)) from None
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
        files = _local_tree_digests(source)
        listed[export] = {"path": export, "files": files, "sha256": tree_sha256(files)}
    manifest = dict(manifest, name=name, version=version, model_file=basename,
                    model_sha256=sha256_file(target))
    if listed:
        manifest["exports"] = listed
    problem = manifest_problem(manifest)
    if problem:
        raise RegistryError(f"model {name} {version} not published: {problem}")
    manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
    if key is not None:  # before the manifest: a complete version is always a signed one
        with FileSystems.create(FileSystems.join(folder, signing.SIGNATURE_FILE)) as f:
            f.write(signing.signature(manifest_bytes, key))
    with FileSystems.create(FileSystems.join(folder, MANIFEST)) as f:
        f.write(manifest_bytes)
    return ModelRef(name=name, version=version, path=target, manifest=manifest)


# --- aliases --------------------------------------------------------------------------------

def is_alias(name: str) -> bool:
    """Whether a --model_version value names an alias (not a version, not latest)."""
    return name != LATEST and not _VERSION_RE.fullmatch(name)


def _aliases_folder(registry: str, name: str) -> str:
    return FileSystems.join(registry, check_name(name), ALIASES)


def _alias_path(registry: str, name: str, alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS_RE.fullmatch(alias) or alias == LATEST:
        raise RegistryError(f"{str(alias)[:40]!r} is not an alias name (lower-case letters, "
                            f"digits, _ and -, not 'latest')")
    return FileSystems.join(_aliases_folder(registry, name), f"{alias}.json")


def _read_json(path: str):
    try:
        with FileSystems.open(path) as f:
            return json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError):  # a missing file reads as nothing
        return None


def read_alias(registry: str, name: str, alias: str) -> dict | None:
    """The alias record ({"alias", "version", "set_at", "by", "reason", "decision", "record",
    "record_sha256"}), or None when there is none or it names no version."""
    record = _read_json(_alias_path(registry, name, alias))
    if not isinstance(record, dict) or not isinstance(record.get("version"), str) or \
            not _VERSION_RE.fullmatch(record["version"]):
        return None
    return record


def _alias_files(registry: str, name: str) -> dict[str, dict]:
    pattern = FileSystems.join(_aliases_folder(registry, name), "*.json")
    try:
        paths = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    except Exception:  # noqa: BLE001 - a missing folder matches nothing
        return {}
    records = {}
    for path in sorted(paths):
        alias = path.replace("\\", "/").rsplit("/", 1)[-1][:-len(".json")]
        if _ALIAS_RE.fullmatch(alias):
            records[alias] = _read_json(path)
    return records


def list_aliases(registry: str, name: str) -> dict[str, str]:
    """Alias -> version of every alias of a model (an unreadable alias file is left out;
    ``audit_trail`` names it)."""
    return {alias: record["version"] for alias, record in _alias_files(registry, name).items()
            if isinstance(record, dict) and isinstance(record.get("version"), str)}


def audit_trail(registry: str, name: str) -> audit.Trail:
    """Every recorded alias move of a model, oldest first, and what is wrong with the trail
    (damaged, missing or edited records, aliases moved outside it), each by file name."""
    return audit.read_trail(_aliases_folder(registry, name), _alias_files(registry, name))


def aliases_at(registry: str, name: str, when) -> dict[str, dict]:
    """Where each alias of a model pointed at ``when`` (an aware datetime): alias -> the audit
    record of the move that put it there (``audit.aliases_at``)."""
    return audit.aliases_at(audit_log(registry, name), when)


def audit_log(registry: str, name: str) -> list[dict]:
    """Every readable alias move of a model, oldest first."""
    return audit_trail(registry, name).moves


def set_alias(registry: str, name: str, alias: str, version: str, by: str, reason: str,
              decision: str | None = None) -> dict:
    """Point an alias at a complete version: the audit record first, then the alias.

    Args:
        registry, name: the model.
        alias: e.g. "production".
        version: a complete version such as "v0002".
        by: who or which command moved it.
        reason: why, in words.
        decision: path of the decision record behind the move, if any.

    Returns:
        The audit record.

    Raises:
        RegistryError: the version is not a complete version of the model, or the move cannot
            be recorded (then nothing moved).
    """
    path = _alias_path(registry, name, alias)
    if version not in list_versions(registry, name):
        raise RegistryError(f"model {name!r} has no complete version {str(version)[:40]!r} "
                            f"in {registry!r}")
    try:
        return audit.move(path.replace("\\", "/").rsplit("/", 1)[0], alias, version, by,
                          reason, decision)
    except audit.AuditError as error:
        raise RegistryError(str(error)) from None
