"""Beam transforms and the pure functions they wrap, one package per capability (credit, radar,
evaluation) plus the plumbing they share (common).
"""

from models.quiet import quiet_imports, starting_as_program

if starting_as_program():  # `python -m` of one of its modules: a program starts
    quiet_imports()
