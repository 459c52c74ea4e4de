"""The one exit-code table of every command, and the wrapper that applies it.

| code | meaning |
| --- | --- |
| 0 | done |
| 1 | an unexpected failure: a bug (the traceback is printed) |
| 2 | refused for a reason the user can fix (usage, configuration, input, unwritable output) |
| 3 | the evaluation decided that retraining is due |
| 4 | promotion refused by the rules |

Commands raise; they do not print their own errors. ``run_command`` turns what a user can fix
into one line on stderr and exit 2, so no user mistake ends in a traceback.
"""

import logging
import sys
import traceback
from collections.abc import Callable, Sequence

DONE = 0
UNEXPECTED = 1
REFUSED = 2
RETRAIN = 3
PROMOTION_REFUSED = 4

TABLE = {
    DONE: "done",
    UNEXPECTED: "an unexpected failure (a bug: the traceback is printed)",
    REFUSED: "refused for a reason you can fix: usage, configuration, input, an unwritable\n"
             "     output or registry (one line on stderr says which)",
    RETRAIN: "the evaluation decided that retraining is due",
    PROMOTION_REFUSED: "promotion refused by the rules (the reasons are printed and recorded)",
}


def epilog() -> str:
    """The table as ``--help`` shows it."""
    return "exit status:\n" + "\n".join(f"  {code}  {meaning}" for code, meaning in TABLE.items())


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception classes that mean "refused, fixable by the user".

    ValueError covers the project's configuration, data, request, rules and snapshot errors
    (all subclass it); OSError covers missing files, unwritable folders and full disks.
    Imported here, when a command fails, so the table costs nothing at start-up.
    """
    from models.registry import RegistryError

    return (ValueError, OSError, RegistryError)


def run_command(main: Callable[[Sequence[str] | None], int | None],
                argv: Sequence[str] | None = None) -> int:
    """Run a command's ``main(argv)`` and map its outcome onto the exit-code table.

    Returns:
        ``main``'s own status when it returns an int (None counts as 0); 2 for a user error
        (one line on stderr, no traceback); 1 with the traceback for anything else; argparse's
        own status for ``--help`` (0) and usage errors (2).
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        status = main(argv)
    except SystemExit as stop:  # argparse: --help (0) and usage errors (2)
        code = stop.code
        if code is None:
            return DONE
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return REFUSED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except user_errors() as error:
        print(f"error: {error}", file=sys.stderr)
        return REFUSED
    except Exception:  # noqa: BLE001 - the table's "unexpected": a bug, shown whole
        traceback.print_exc()
        print("error: an unexpected failure (exit status 1); the traceback above shows where",
              file=sys.stderr)
        return UNEXPECTED
    return status if isinstance(status, int) else DONE
