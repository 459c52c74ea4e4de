"""``beamline setup``: the set-up steps beyond the venv and ``pip install``.

Today: the pseudonymisation key of national ids (generated once into
``<BEAMLINE_HOME>/.secrets/pii.key``, the project's folder unless ``BEAMLINE_HOME`` names
another, readable by its owner only, unless ``BEAMLINE_PII_KEY`` gives one; every run then
finds it there without exporting anything), Beam's Prism runner built from source with Go
(``runners.prism``; without Go, one line says so), Beam's Flink job server fetched with Maven
(``runners.flink``; without Java or Maven, one line says so), and a check that the shared
data folder is where the demo looks. Each step says in one line what it did or what is missing.
"""

import argparse
import os
import secrets

from models.config import KEY_ENV, default_key_file


def pseudonymisation_key() -> str:
    """Make sure runs have a key: the environment's, or the key file's (``default_key_file``,
    written once with a fresh random key, where every run finds it). The same key must be used
    by every run whose pseudonyms are to be joined: keep the file, back it up.

    Returns:
        Where the key came from, in words.
    """
    if os.environ.get(KEY_ENV):
        return f"the pseudonymisation key from ${KEY_ENV}"
    path = str(default_key_file())
    made = ""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        made = "generated "
    return f"{made}the pseudonymisation key {path} (keep it; back it up)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.environ.get("BEAMLINE_DATA", "../shared/data"),
                        help="the shared data folder the demo reads")
    args = parser.parse_args(argv)
    print(f"setup: {pseudonymisation_key()}")
    from runners.prism import build

    print(f"setup: {build()[1]}", flush=True)
    from runners.flink import fetch

    print(f"setup: {fetch()[1]}", flush=True)
    german = os.path.join(args.data, "credit", "german.data")
    if os.path.exists(german):
        print(f"setup: data folder {args.data} found")
    else:
        print(f"setup: no {german}: give the demo --data, or set BEAMLINE_DATA to the shared "
              f"data folder")
        return 2
    return 0
