"""Models and what is below every pipeline: the registry, configuration loaders, metrics, slices,
training statistics, and one package per model (credit, radar_qc) with its builder, training and
RunInference handler. Imports nothing from transforms or pipelines.
"""

from models.quiet import quiet_imports, starting_as_program

if starting_as_program():  # `python -m` of one of its modules: a program starts
    quiet_imports()
