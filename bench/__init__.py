"""Benchmarks (not tests): ratios measured side by side in one run."""

from models.quiet import quiet_imports

quiet_imports()  # before any Beam or TensorFlow import of this package
