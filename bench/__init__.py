"""Benchmarks (not tests): ratios measured side by side in one run."""

import os
import secrets

from models.quiet import quiet_imports, starting_as_program

if starting_as_program():  # `python -m bench.<name>`: a program starts
    quiet_imports()
# The German data set pseudonymises national ids under this key; benches use a throwaway one
# (subprocesses they start inherit it).
os.environ.setdefault("BEAMLINE_PII_KEY", secrets.token_hex(32))
