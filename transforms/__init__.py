"""Beam transforms and the pure functions they wrap, one package per capability (credit, radar,
evaluation) plus the plumbing they share (common).
"""

from models.quiet import quiet_imports

quiet_imports()  # before any Beam or TensorFlow import of this package
