"""Processes that are not pipelines: the banks offer API stand-in and the real-time chunk feed."""

from models.quiet import quiet_imports, starting_as_program

if starting_as_program():  # `python -m` of one of its modules: a program starts
    quiet_imports()
