"""Processes that are not pipelines: the banks offer API stand-in and the real-time chunk feed."""

from models.quiet import quiet_imports

quiet_imports()  # before any Beam or TensorFlow import of this package
