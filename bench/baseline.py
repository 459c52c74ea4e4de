"""What the benchmarks share: running the code of an older commit beside the current one, and
reading a child process's peak memory."""

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The commit before this round of performance work: what every "before" figure runs.
BASELINE = "8cb68cf"
# ``python -c MEASURE cmd...`` runs cmd as a child and prints its peak RSS (KiB) on the last
# line: a fresh wrapper per run, since RUSAGE_CHILDREN keeps the largest child ever waited for.
MEASURE = ("import resource, subprocess, sys; "
           "done = subprocess.run(sys.argv[1:]); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
           "sys.exit(done.returncode)")


def checkout(revision: str, folder: str) -> str:
    """The tracked files of ``revision`` in ``folder`` (git archive; no worktree left)."""
    os.makedirs(folder)
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    return folder
