"""Options and graph wiring of each runnable pipeline (credit_scoring, radar_qc, evaluate), the
explain CLI, and the capability table they look capabilities up in.
"""

from models.quiet import quiet_imports, starting_as_program

if starting_as_program():  # `python -m` of one of its modules: a program starts
    quiet_imports()
