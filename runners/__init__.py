"""Runners beyond Beam's own: a DaskRunner with its data losses fixed."""

from models.quiet import quiet_imports

quiet_imports()  # before any Beam or TensorFlow import of this package
