"""Start-up without noise: TensorFlow's and Beam's import-time notices kept off the console.

Importing TensorFlow 2.21 writes its oneDNN notice and CUDA probing ("Could not find cuda
drivers", "cuInit ... (303)") from C++ through absl before absl's logging is initialised, which
``TF_CPP_MIN_LOG_LEVEL`` does not reach; importing Beam logs that the optional GCS and BigQuery
clients are not installed. None of it is actionable for a user of a CPU machine, so the first
import of either happens with file descriptor 2 pointed at /dev/null, and everything after it
(real warnings, errors, tracebacks) reaches the console as usual. ``BEAMLINE_VERBOSE_STARTUP=1``
keeps the notices.

Beam is imported at once; TensorFlow only when something imports it (an import hook silences
that first import), so a process that never needs it (the radar pipeline on ONNX Runtime, the
offers API) does not carry its ~400 MB.

Only a program's start does this (``beamline``'s ``main``, or a package of the project while
``python -m`` locates one of its modules): importing a package of the project from a notebook,
a test or a worker unpickling a DoFn changes nothing in that process.
"""

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import sys

# Beam 2.77's RunInference imports ``resource`` together with its PyTorch-only model manager,
# so without torch it believes the module missing and warns at the end of every batch of
# every run; ``resource`` is there on Linux and macOS. Only this line is dropped.
_FALSE_WARNINGS = ("Resource module is not available for current platform",)


def _not_false_warning(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_FALSE_WARNINGS)


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


class _QuietTensorFlowLoader(importlib.abc.Loader):
    """Runs TensorFlow's own loader, and its GPU probe, with fd 2 silenced."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with native_stderr_silenced():
            self._loader.exec_module(module)
            module.config.list_physical_devices("GPU")  # the CUDA probe prints its failure


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` the usual way the first time, and wraps its loader."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once; and the lookup below must not come back here
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietTensorFlowLoader(spec.loader)
        return spec


def starting_as_program() -> bool:
    """True while ``python -m package.module`` is locating its module: Python sets
    ``sys.argv[0]`` to ``-m`` only then, so an import from a notebook or a worker is not."""
    return sys.argv[:1] == ["-m"]


def quiet_imports() -> None:
    """Import Beam with its start-up notices silenced, and arrange the same for TensorFlow's
    first import, whenever it comes; a no-op once done or with BEAMLINE_VERBOSE_STARTUP=1."""
    if os.environ.get("BEAMLINE_VERBOSE_STARTUP") == "1" or "tensorflow" in sys.modules or any(
            isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_silenced():
        import apache_beam  # noqa: F401 - optional-filesystem notices
    sys.meta_path.insert(0, _QuietTensorFlowFinder())
    logging.getLogger().addFilter(_not_false_warning)
