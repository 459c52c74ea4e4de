"""Moving a registry alias (``production`` by default): promote a version, roll back, show.

A version is never promoted unless it passes its smoke checks: the model file's sha256 matches
its manifest, the file loads, and it reproduces the predictions it made on the manifest's smoke
inputs when it was trained (credit: scores within 1e-5 on a few hold-out applicants; radar: the
same classes on a seeded synthetic window). Every move is first written as an audit record
(``models.audit``: write-once, hash-chained) with who moved it, why, and the decision record
behind it; ``verify`` checks every version's files and the chain.

Usage::

    python -m models.promotion status --registry registry --model credit_german
    python -m models.promotion status --registry registry --model credit_german \\
        --at 2026-11-03T12:00:00+00:00   # which version each alias named then
    python -m models.promotion promote --registry registry --model credit_german --version v0002 \\
        --reason "challenger beat champion" --decision registry/credit_german/promotions/...json
    python -m models.promotion rollback --registry registry --model credit_german
    python -m models.promotion verify --registry registry --model credit_german
"""

import argparse
import datetime
import getpass
import json
import sys

import numpy as np

from models import audit
from models import registry as model_registry
from models.exit_codes import run_command
from models.registry import PRODUCTION, ModelRef, RegistryError

SCORE_TOLERANCE = 1e-5


class PromotionError(RegistryError):
    """A version that may not take the alias (failed smoke checks, nothing to roll back to)."""


def model_kind(manifest: dict) -> str:
    """"credit" for models trained on a configured data set, else "radar_qc"."""
    return manifest.get("model_kind") or ("credit" if "dataset" in manifest else "radar_qc")


def credit_smoke(model, kinds: dict, records: list[dict]) -> list[float]:
    """The credit model's scores on the smoke inputs."""
    from models.credit.model import predict_scores

    return [float(s) for s in predict_scores(model, records, kinds)]


def radar_smoke(model, seed: int, shape, channels=None) -> str:
    """sha256 of the radar model's classes on a seeded synthetic window of its channels
    (default: the dual-polarization model's)."""
    import hashlib

    from models.radar_qc.model import predict_classes
    from models.radar_qc.synthetic import synthetic_set
    from models.radar_qc.vocabulary import CHANNELS

    data, _ = synthetic_set(seed, 1, *shape, channels=tuple(channels or CHANNELS))
    return hashlib.sha256(np.ascontiguousarray(predict_classes(model, data)).tobytes()).hexdigest()


def smoke_problems(ref: ModelRef) -> list[str]:
    """What is wrong with a resolved (sha256-verified) version; empty when it passes."""
    import keras

    import models.credit.model  # noqa: F401 - registers the credit model's layers
    import models.radar_qc.model  # noqa: F401 - registers the radar preprocessing layer

    smoke = ref.manifest.get("smoke")
    if not smoke:
        return [f"{ref.name} {ref.version} has no smoke inputs in its manifest (retrain it)"]
    try:
        model = keras.models.load_model(ref.path, compile=False)
    except Exception as error:  # noqa: BLE001 - any load failure refuses the version
        return [f"{ref.path} does not load: {type(error).__name__}: {error}"]
    try:
        if model_kind(ref.manifest) == "credit":
            from models.credit.dataset import dataset_from_manifest

            kinds = dataset_from_manifest(ref.manifest).kinds
            scores = credit_smoke(model, kinds, smoke["inputs"])
            if not np.all(np.isfinite(scores)) or not np.all(np.isfinite(smoke["scores"])):
                return [f"the model scores {sum(not np.isfinite(x) for x in scores)} of "
                        f"{len(scores)} smoke inputs as NaN or infinite (training recorded "
                        f"{sum(not np.isfinite(x) for x in smoke['scores'])}): its training "
                        f"data or weights hold non-finite values"]
            worst = max(abs(a - b) for a, b in zip(scores, smoke["scores"]))
            if worst > SCORE_TOLERANCE:
                return [f"smoke scores differ from training's by up to {worst:.2e} "
                        f"(tolerance {SCORE_TOLERANCE:g})"]
        elif radar_smoke(model, smoke["seed"], smoke["shape"], ref.manifest.get(
                "input_schema", {}).get("moments", {}).get("channels")
                ) != smoke["classes_sha256"]:
            return ["smoke classes on the synthetic window differ from training's"]
    except Exception as error:  # noqa: BLE001 - a model that cannot predict is refused
        return [f"smoke prediction failed: {type(error).__name__}: {error}"]
    return []


def promote(registry: str, name: str, version: str, alias: str = PRODUCTION,
            by: str | None = None, reason: str = "promoted", decision: str | None = None
            ) -> dict:
    """Point ``alias`` at ``version`` after its smoke checks pass.

    Returns:
        The audit entry.

    Raises:
        RegistryError: the version is missing or its file's sha256 differs from its manifest.
        PromotionError: it fails a smoke check.
    """
    ref = model_registry.resolve(registry, name, version, verify=True)
    problems = smoke_problems(ref)
    if problems:
        raise PromotionError(f"{name} {ref.version} not promoted to {alias}: "
                             + "; ".join(problems))
    previous = model_registry.read_alias(registry, name, alias)
    entry = model_registry.set_alias(registry, name, alias, ref.version,
                                     by or _who("promote"), reason, decision)
    if previous and previous["version"] != ref.version:
        before = model_registry.resolve(registry, name, previous["version"], verify=False)
        if _schema(before.manifest) != _schema(ref.manifest):
            entry["note"] = (f"{ref.version} has another input schema than "
                             f"{previous['version']}: running streaming pipelines keep "
                             f"{previous['version']}; start new runs to serve {ref.version}")
    return entry


def _schema(manifest: dict) -> str:
    return json.dumps(manifest.get("input_schema"), sort_keys=True)


def rollback(registry: str, name: str, alias: str = PRODUCTION, by: str | None = None,
             reason: str = "rolled back") -> dict:
    """Move ``alias`` back to the version it pointed at before its last move.

    Raises:
        PromotionError: the alias was never moved from another version.
    """
    current = model_registry.read_alias(registry, name, alias)
    # The last readable move that put the alias where it is now: a damaged record elsewhere
    # in the trail does not block a rollback (status names it).
    moves = [e for e in model_registry.audit_log(registry, name)
             if current and e["alias"] == alias and e["to"] == current["version"]]
    if not moves or moves[-1]["from"] is None:
        raise PromotionError(f"{name} {alias} has no earlier version to roll back to")
    return promote(registry, name, moves[-1]["from"], alias, by or _who("rollback"),
                   f"{reason} (from {moves[-1]['to']})")


def verify(registry: str, name: str) -> list[str]:
    """Everything wrong with a model's registry entry: each version's files against its
    manifest (and its signature when trusted keys are configured), and the audit trail's
    chain. Empty when all holds."""
    problems = []
    for version in model_registry.list_versions(registry, name):
        try:
            ref = model_registry.resolve(registry, name, version, verify=True)
        except RegistryError as error:
            problems.append(str(error))
            continue
        problems += [f"model {name} {version}: {p}" for p in model_registry.version_problems(ref)]
    return problems + model_registry.audit_trail(registry, name).problems


def promote_first(registry: str, ref: ModelRef) -> dict | None:
    """The first published version of a model takes ``production`` once it passes its smoke
    checks; later versions wait for a promotion decision. Returns the audit entry, or None."""
    if model_registry.read_alias(registry, ref.name, PRODUCTION) is not None:
        return None
    return promote(registry, ref.name, ref.version, PRODUCTION, "training",
                   "first published version")


def _who(command: str) -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user} via models.promotion {command}"


COMMANDS = ("status", "promote", "rollback", "verify", "sign")


def moment(text: str) -> datetime.datetime:
    """An ISO-8601 time from the command line, aware (UTC when it has no offset)."""
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO-8601 time such as 2026-11-03T12:00:00+00:00") from None
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


def status_at(registry: str, name: str, when: datetime.datetime) -> dict:
    """Which version each alias named at ``when``, and since when, from the audit trail."""
    if not model_registry.list_versions(registry, name):
        raise RegistryError(f"no versions of model {name!r} in registry {registry!r}")
    trail = model_registry.audit_trail(registry, name)
    found = audit.aliases_at(trail.moves, when)
    return {"model": name, "at": when.isoformat(),
            "aliases": {alias: {"version": r["to"], "since": r["time"], "by": r["by"],
                                "reason": r["reason"], "record": audit.record_name(r["seq"])}
                        for alias, r in sorted(found.items())},
            "audit_problems": trail.problems}


def add_command_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """The options of one of ``COMMANDS``."""
    parser.add_argument("--registry", default="registry")
    parser.add_argument("--model", required=True, help="model name, e.g. credit_german")
    if command == "sign":
        parser.add_argument("--version", default=None,
                            help="one version (default: every version)")
    if command in ("verify", "sign"):
        return
    if command == "status":
        parser.add_argument("--at", default=None, type=moment, metavar="TIME",
                            help="where the aliases pointed at this time, from the audit trail "
                                 "(ISO-8601, e.g. 2026-11-03T12:00:00+00:00; UTC when no "
                                 "offset is given)")
        return
    parser.add_argument("--alias", default=PRODUCTION)
    parser.add_argument("--reason", default=f"{command} by hand")
    if command == "promote":
        parser.add_argument("--version", required=True, help="e.g. v0002")
        parser.add_argument("--decision", default=None,
                            help="the promotion decision record behind this move")


def status_main(argv=None) -> int:
    """``beamline models status``: ``main`` with its first word given."""
    return main(["status", *(argv or [])], prog_is_command=True)


def promote_main(argv=None) -> int:
    """``beamline models promote``."""
    return main(["promote", *(argv or [])], prog_is_command=True)


def rollback_main(argv=None) -> int:
    """``beamline models rollback``."""
    return main(["rollback", *(argv or [])], prog_is_command=True)


def verify_main(argv=None) -> int:
    """``beamline models verify``."""
    return main(["verify", *(argv or [])], prog_is_command=True)


def sign_main(argv=None) -> int:
    """``beamline models sign``."""
    return main(["sign", *(argv or [])], prog_is_command=True)


def keygen_main(argv=None) -> int:
    """``beamline models keygen``: a new registry signing key pair (rotation keeps the old
    public key trusted until it is removed by hand)."""
    from models import signing
    from models.config import default_key_file

    parser = argparse.ArgumentParser(
        description="A new registry signing key pair: versions published after it are signed, "
                    "and versions signed by no trusted key are refused.")
    parser.add_argument("--dir", default=str(default_key_file().parent),
                        help="where the key files go (default: the project's .secrets)")
    args = parser.parse_args(argv)
    import pathlib

    private, trusted, key_id = signing.generate(pathlib.Path(args.dir))
    print(f"registry signing key {key_id}: private key {private} (owner only; on the machine "
          f"that publishes), trusted public keys {trusted} (copy to the machines that serve); "
          f"sign the versions published before it: beamline models sign --model NAME")
    if pathlib.Path(args.dir).resolve() != default_key_file().parent.resolve():
        print(f"not the default folder: set {signing.SIGNING_KEY_ENV}={private} and "
              f"{signing.TRUSTED_KEYS_ENV}={trusted} where they are to be used")
    return 0


def main(argv=None, prog_is_command: bool = False) -> int:
    """``python -m models.promotion status|promote|rollback ...``.

    Args:
        prog_is_command: the program's name already names the command (``beamline models
            promote``): usage and help show it once.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if prog_is_command and argv and argv[0] in COMMANDS:
        parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
        add_command_arguments(parser, argv[0])
        args = parser.parse_args(argv[1:])
        args.command = argv[0]
    else:
        parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
        commands = parser.add_subparsers(dest="command", required=True)
        for command in COMMANDS:
            add_command_arguments(commands.add_parser(command), command)
        args = parser.parse_args(argv)
    try:
        if args.command == "status" and args.at:
            print(json.dumps(status_at(args.registry, args.model, args.at), indent=2))
            return 0
        if args.command == "status":
            trail = model_registry.audit_trail(args.registry, args.model)
            print(json.dumps({"versions": model_registry.list_versions(args.registry, args.model),
                              "aliases": model_registry.list_aliases(args.registry, args.model),
                              "moves": trail.moves[-5:], "audit_problems": trail.problems},
                             indent=2))
            return 0
        if args.command in ("verify", "sign") and not model_registry.list_versions(
                args.registry, args.model):
            raise RegistryError(f"no versions of model {args.model!r} in registry "
                                f"{args.registry!r}")
        if args.command == "verify":
            problems = verify(args.registry, args.model)
            versions = model_registry.list_versions(args.registry, args.model)
            moves = len(model_registry.audit_log(args.registry, args.model))
            for problem in problems:
                print(f"problem: {problem}")
            print(f"{args.model}: {len(versions)} versions, {moves} audit records, "
                  + (f"{len(problems)} problems" if problems else
                     "files, signatures and audit chain intact"))
            return 2 if problems else 0
        if args.command == "sign":
            versions = [args.version] if args.version else \
                model_registry.list_versions(args.registry, args.model)
            for version in versions:
                key = model_registry.sign_version(args.registry, args.model, version)
                print(f"{args.model} {version}: signed with key {key}")
            return 0
        if args.command == "promote":
            entry = promote(args.registry, args.model, args.version, args.alias,
                            reason=args.reason, decision=args.decision)
        else:
            entry = rollback(args.registry, args.model, args.alias, reason=args.reason)
    except RegistryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.model} {entry['alias']}: {entry['from']} -> {entry['to']} ({entry['reason']})"
          + (f"\n  note: {entry['note']}" if entry.get("note") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
