"""The event times credit runs accept: requests and the training rows made of them.

A year 0001 or 9999 is a typo or an attack, and would make partitions (``dt=0001-01-01``) and
recency weights of it; the window refuses it in words.
"""

import dataclasses
import datetime


@dataclasses.dataclass(frozen=True)
class EventTimeWindow:
    """The event times a run accepts: not before ``earliest`` (a backfill of older requests
    widens it, ``--earliest_event_time``), not more than ``ahead`` after the request was read
    (clocks drift, but a year 9999 is a typo or an attack that would make partitions of it)."""

    earliest: datetime.datetime = datetime.datetime(1990, 1, 1, tzinfo=datetime.UTC)
    ahead: datetime.timedelta = datetime.timedelta(days=1)

    def problem(self, event_time: datetime.datetime, received_at: datetime.datetime
                ) -> str | None:
        if event_time < self.earliest:
            return (f"event_time {event_time.isoformat()} is before "
                    f"{self.earliest.isoformat()}, the earliest this run accepts (a backfill "
                    f"of older requests gives --earliest_event_time)")
        if event_time > received_at + self.ahead:
            return (f"event_time {event_time.isoformat()} is more than "
                    f"{self.ahead.total_seconds() / 3600:g} h after the request was received "
                    f"({received_at.isoformat(timespec='seconds')})")
        return None


def earliest_event_time(text: str) -> datetime.datetime:
    """``--earliest_event_time``: an ISO date or timestamp, UTC unless it names a zone.

    Raises:
        ValueError: not ISO-8601, in words naming the option.
    """
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"--earliest_event_time {text!r} is not an ISO date or timestamp "
                         f"(e.g. 1990-01-01)") from None
    return parsed.replace(tzinfo=parsed.tzinfo or datetime.UTC).astimezone(datetime.UTC)


DEFAULT_WINDOW = EventTimeWindow()
