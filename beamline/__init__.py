"""The ``beamline`` command (``cli``), its demo (``demo``) and set-up steps (``setup``): the
program layer above pipelines, services, models and benches. Nothing below imports it."""
