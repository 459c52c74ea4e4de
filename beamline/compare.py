"""``beamline credit compare``: the one challenger-against-champion command.

In process by default (``models.credit.compare``: the window is read and scored in this
process); ``--on_beam`` runs the same decision as a Beam job (``pipelines.compare``: any runner,
for windows too large for one process), and judging on a shadow's live rows
(``--shadow_evidence``) is that job's. Both write the same decision record and share the exit
status: 0 accepted, 4 refused.
"""

import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--on_beam" in argv or any(a.startswith("--shadow_evidence") for a in argv):
        if "-h" in argv or "--help" in argv:
            from pipelines.options import help_parser  # the job's options, not its graph

            help_parser("compare", "challenger against champion as a Beam job",
                        prog="beamline credit compare --on_beam").print_help()
            return 0
        from pipelines import compare as beam_job

        return beam_job.run([a for a in argv if a != "--on_beam"])
    from models.credit import compare

    return compare.main(argv)
