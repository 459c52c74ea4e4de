"""Start-up without noise: TensorFlow's and Beam's import-time notices kept off the console.

Importing TensorFlow 2.21 writes its oneDNN notice and CUDA probing ("Could not find cuda
drivers", "cuInit ... (303)") from C++ through absl before absl's logging is initialised, which
``TF_CPP_MIN_LOG_LEVEL`` does not reach; importing Beam logs that the optional GCS and BigQuery
clients are not installed. None of it is actionable for a user of a CPU machine, so the first
import of either happens with file descriptor 2 pointed at /dev/null, and everything after it
(real warnings, errors, tracebacks) reaches the console as usual. ``BEAMLINE_VERBOSE_STARTUP=1``
keeps the notices.
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def native_stderr_silenced():
    """File descriptor 2 (what C++ libraries and Python's stderr write to) to /dev/null."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_imports() -> None:
    """Import Beam and TensorFlow (and probe for GPUs once) with their start-up notices
    silenced; a no-op once they are imported or with BEAMLINE_VERBOSE_STARTUP=1."""
    if os.environ.get("BEAMLINE_VERBOSE_STARTUP") == "1" or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_silenced():
        import apache_beam  # noqa: F401 - optional-filesystem notices
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the CUDA probe prints its failure here
