"""Options and graph wiring of each runnable pipeline (credit_scoring, radar_qc, evaluate), the
explain CLI, and the capability table they look capabilities up in.
"""

from models.quiet import quiet_imports

quiet_imports()  # before any Beam or TensorFlow import of this package
