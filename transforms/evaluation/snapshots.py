"""Joined, labelled rows as training snapshot rows (see ``models.credit.snapshots``)."""

from models.credit.snapshots import week_of


def snapshot_row(row: dict, field_names: tuple[str, ...]) -> dict:
    """A labelled joined row -> a snapshot row: identity, label, the input fields."""
    return {"prediction_id": row["prediction_id"], "event_time": row["event_time"],
            "model_version": row["model_version"], "label": int(row["label"]),
            "label_time": row["label_time"], "week": week_of(row["event_time"]),
            **{name: row.get(name) for name in field_names}}
