"""The demo, reduced (small inputs, short trainings, the credit part): every step runs through
the commands' entry points and its summary holds what the full demo promises."""

import shutil
import signal
import time

import pytest

from beamline import demo as demo_module
from models import registry as model_registry
from tests.conftest import CHROMEDRIVER, CHROMIUM, DATA_DIR, check_operations_page

CREDIT_STEPS = ["credit model training, demo inputs", "credit scoring, batch",
                "credit scoring, streaming", "second data set (credit_crx)",
                "serving function + offers API", "evaluation, retraining loop",
                "backfill + explain"]


@pytest.mark.slow
def test_the_reduced_demo_runs_every_credit_step_and_sums_up(crx_registry, tmp_path, capsys):
    registry = tmp_path / "registry"
    shutil.copytree(crx_registry, registry)  # the loop promotes and rolls back: a copy
    demo = demo_module.Demo(data=str(DATA_DIR), registry=str(registry),
                            out=str(tmp_path / "out"), sizes=demo_module.SMALL)
    summary = demo_module.run_demo(demo, ("credit",))
    printed = capsys.readouterr().out

    assert [name for name, _ in summary["steps"]] == CREDIT_STEPS
    assert "== time per step" in printed
    sent, leaks, files = summary["personal_data"]
    assert sent > 0 and files > 0 and leaks == 0
    tables = {folder.split("/out/")[1]: rows for rows, folder in summary["counts"]}
    assert tables["responses/model_name=credit_german"] > 0
    assert tables["responses/model_name=credit_crx"] > 0
    german = summary["dead_letters"]["pipeline=credit_scoring/model_name=credit_german"]
    # The bad lines: malformed and not-an-object (parse), mistyped (validate), delivered twice.
    assert german["parse"] >= 3 and german["validate"] >= 2 and german["duplicate"] >= 1
    assert set(summary["decisions"]) == {"shifted", "unshifted"}
    assert summary["decisions"]["unshifted"] == "no retraining"
    assert summary["replay"] == "every replayed decision identical"
    if summary["decisions"]["shifted"].startswith("RETRAIN"):
        assert summary["loop"].endswith("then rolled back")
    assert demo.results["online_joined"] > 0
    assert sum(demo.results["online_statuses"].values()) == demo_module.SMALL.online_requests
    # Estimates before labels, then beside the late labels; every run on the operations page.
    assert "AUC estimate [95 %]" in printed and "no labels" in printed
    assert "realized AUC inside its estimate's interval in" in printed
    page = summary["operations_page"]
    assert page and page in printed
    if CHROMIUM and CHROMEDRIVER:
        moves = model_registry.audit_trail(str(registry), "credit_german").moves
        _, tables = check_operations_page(page, moves)
        runs = {row["cells"][1] for row in tables["runs"]}
        # online, shifted before and after the late labels, unshifted, the shadow's live week
        assert len(runs) == 5
        # The late labels stand beside the estimates made before them (an estimate does not
        # depend on labels: the same rows give the same figure in both runs).
        assert all(cells["cells"][6] != "no labels yet" for cells in tables["estimates"])


def test_the_demo_refuses_an_unknown_part(capsys):
    from beamline import cli

    assert cli.main(["demo", "--parts", "credit,weather"]) == 2
    assert "--parts takes credit, radar" in capsys.readouterr().err


def test_background_commands_report_a_failure_and_stop_with_the_demo(tmp_path):
    log = str(tmp_path / "background.log")
    failing = demo_module.BackgroundCommands([["json.tool", str(tmp_path / "missing.json")],
                                              ["timeit", "pass"]], log)
    failing.wait()
    assert failing.failed[0].startswith("json.tool ") and failing.failed[1] != 0
    text = open(log, encoding="utf-8").read()
    assert "missing.json" in text and "loop" not in text  # the second (timeit) never ran

    slow = demo_module.BackgroundCommands([["timeit", "-n1", "import time; time.sleep(120)"]],
                                          log)
    for _ in range(100):  # until its process runs
        if slow._process is not None:
            break
        time.sleep(0.05)
    slow.stop()  # the demo stopped early: the running command is stopped too
    slow.wait()
    assert slow._process.returncode == -signal.SIGTERM


def test_the_demo_radar_model_learns_from_every_shared_radar_but_klbb(tmp_path, monkeypatch):
    if not (DATA_DIR / "radar" / "network").exists():
        pytest.skip(f"real data not found at {DATA_DIR / 'radar' / 'network'}")
    started = []
    monkeypatch.setattr(demo_module, "BackgroundCommands",
                        lambda commands, log: started.append(commands) or "started")
    demo = demo_module.Demo(data=str(DATA_DIR), registry=str(tmp_path / "registry"),
                            out=str(tmp_path / "out"))
    assert demo_module.radar_training(demo) == "started"
    weak, single = started[0]
    assert weak[0] == "transforms.radar.weak_labels" and single[0] == "models.radar_qc.train"
    learnt = [weak[i + 1] for i, word in enumerate(weak) if word == "--weak_labels"]
    names = {p.rstrip("/").split("/")[-1] for p in learnt}
    assert "nexrad_chunks_KLOT" in names and "KTLX20190715_120037_V06" in names
    assert not any("KLBB" in name for name in names)
    assert len(learnt) == 1 + len([n for n in (DATA_DIR / "radar" / "network").iterdir()
                                   if not n.name.startswith("README")])


def test_the_streaming_step_says_how_many_sweeps_came_ahead_of_their_volume(tmp_path):
    import os

    from beamline.demo import sweeps_ahead

    out = tmp_path / "out"
    sweeps, volumes = out / "sweeps/radar=KLOT/dt=2026-03-28", out / "volumes/radar=KLOT/dt=x"
    sweeps.mkdir(parents=True)
    volumes.mkdir(parents=True)
    old = volumes / "KLOT-20260101T000000Z_qc.nc"  # an earlier run's: not counted
    old.write_text("")
    os.utime(old, (100, 100))
    assert sweeps_ahead(str(out), "KLOT", 1_000) == (
        f"no sweep written ahead of its volume in {out}/sweeps/")
    for n, at in ((0, 1_010), (2, 1_030)):
        path = sweeps / f"KLOT-20260328T201457Z-s{n:02d}_qc.nc"
        path.write_text("")
        os.utime(path, (at, at))
    volume = volumes / "KLOT-20260328T201457Z_qc.nc"
    volume.write_text("")
    os.utime(volume, (1_070, 1_070))
    assert sweeps_ahead(str(out), "KLOT", 1_000) == (
        f"2 dual-pol sweeps QC'd one by one as their chunks completed, in {out}/sweeps/ (the "
        f"first 60 s before the whole volume's file)")
