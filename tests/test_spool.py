"""The online services' spool: durable before append returns, a flush that a kill cannot
half-do or double, recovery at start, one writer per folder."""

import json
import os

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from services.spool import PLAN, Sink, Spool, SpoolError
from transforms.common.parquet_sink import write_table_atomically

SCHEMA = pa.schema([("id", pa.string()), ("dt", pa.string()), ("value", pa.int64())])


def _spool(tmp_path, tag="run-a"):
    return Spool(str(tmp_path / "spool"), {"rows": Sink(str(tmp_path / "out"), SCHEMA,
                                                        ("dt",))}, tag)


def _written(tmp_path) -> list[str]:
    if not (tmp_path / "out").exists():
        return []
    return sorted(ds.dataset(str(tmp_path / "out"), partitioning="hive").to_table()
                  .column("id").to_pylist())


def test_rows_are_on_disk_before_append_returns_and_become_parquet_at_flush(tmp_path):
    spool = _spool(tmp_path)
    for i in range(5):
        spool.append("rows", {"id": f"r{i}", "dt": f"2026-11-0{1 + i % 2}", "value": i})
    segments = [n for n in os.listdir(tmp_path / "spool") if n.endswith(".arrow")]
    assert segments and _written(tmp_path) == []
    assert spool.flush() == 5
    assert _written(tmp_path) == [f"r{i}" for i in range(5)]
    assert not [n for n in os.listdir(tmp_path / "spool") if n.endswith(".arrow")]
    spool.close()


def test_a_second_writer_on_one_spool_is_refused(tmp_path):
    spool = _spool(tmp_path)
    with pytest.raises(SpoolError, match="another service is writing to"):
        _spool(tmp_path, "run-b")
    spool.close()
    _spool(tmp_path, "run-b").close()  # free again once the first one closed


def _killed_mid_flush(tmp_path, deleted: int):
    """A spool whose flush wrote its plan and its files, then deleted ``deleted`` segments
    before the process died."""
    spool = _spool(tmp_path)
    for i in range(3):
        spool.append("rows", {"id": f"k{i}", "dt": "2026-11-01", "value": i})
    segments = sorted(n for n in os.listdir(tmp_path / "spool") if n.endswith(".arrow"))
    plan = {"segments": segments, "name": segments[0].split(".", 1)[0]}
    (tmp_path / "spool" / PLAN).write_text(json.dumps(plan))
    rows = pa.concat_tables([spool._read(n) for n in segments])
    write_table_atomically(rows.drop(["dt"]), str(tmp_path / "out" / "dt=2026-11-01"),
                           f"{plan['name']}.parquet")
    for name in segments[:deleted]:
        os.remove(tmp_path / "spool" / name)
    spool._lock_file.close()  # the process dies: its lock goes with it
    return segments


@pytest.mark.parametrize("deleted", [0, 1])
def test_a_flush_killed_before_or_while_deleting_is_finished_once_at_start(tmp_path, deleted):
    _killed_mid_flush(tmp_path, deleted)
    spool = _spool(tmp_path, "run-b")
    spool.recover()
    assert _written(tmp_path) == ["k0", "k1", "k2"]  # each row once, none lost
    assert not [n for n in os.listdir(tmp_path / "spool") if n.endswith(".arrow") or n == PLAN]
    spool.close()


def test_an_append_that_cannot_be_written_raises_and_releases_its_caller(tmp_path):
    spool = _spool(tmp_path)
    with pytest.raises(SpoolError, match="could not be written"):
        spool.append("rows", {"id": "bad", "dt": "2026-11-01", "value": "not a number"})
    spool.append("rows", {"id": "fine", "dt": "2026-11-01", "value": 1})
    spool.close()
    assert _written(tmp_path) == ["fine"]
