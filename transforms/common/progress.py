"""Progress lines of long runs, at a steady rate: what is done (of how many, when known) and
how fast, on stderr beside the closing summary.

One ``Progress`` per worker DoFn instance; with several workers each reports its own share.
"""

import logging
import sys
import time

LOGGER = logging.getLogger("beamline.progress")
if not LOGGER.handlers:  # its own handler: shown whatever the runner did to the root logger
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("  progress %(asctime)s  %(message)s", "%H:%M:%S"))
    LOGGER.addHandler(_handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False


class Progress:
    """Counts units done and logs ``<what>: <done>[ of <total>] <unit>s (<rate>/s)`` at most
    every ``every_secs`` seconds (and on the last unit when the total is known).

    Args:
        what: the thing progressing ("responses written", "volumes QC'd").
        unit: its unit ("row", "volume").
        total: how many there will be, when known.
        every_secs: the least time between two lines.
        quiet_below: no line until this many are done (a small output is no long run).
    """

    def __init__(self, what: str, unit: str, total: int | None = None, every_secs: float = 10.0,
                 quiet_below: int = 0):
        self._what, self._unit, self._total = what, unit, total
        self._every = every_secs
        self._quiet_below = quiet_below
        self._done = 0
        # From creation (a DoFn's setup): the first unit's own time counts, so one volume
        # reads as its seconds, not as a rate over no time at all.
        self._started = self._last = time.monotonic()

    def add(self, count: int = 1, note: str = "") -> None:
        now = time.monotonic()
        self._done += count
        finished = self._total is not None and self._done >= self._total
        if (now - self._last < self._every and not finished) or self._done < self._quiet_below:
            return
        self._last = now
        rate = self._done / max(now - self._started, 1e-9)
        of = f" of {self._total:,}" if self._total is not None else ""
        # Below one a second, the time per unit reads better than "0.0 volume/s".
        speed = (f"{1 / rate:,.1f} s per {self._unit}" if rate < 1 else
                 f"{rate:,.1f} {self._unit}/s" if rate < 100 else f"{rate:,.0f} {self._unit}/s")
        LOGGER.info("%s: %s%s %s%s (%s)%s", self._what, f"{self._done:,}", of, self._unit,
                    "" if self._done == 1 and self._total is None else "s", speed,
                    f"  {note}" if note else "")
