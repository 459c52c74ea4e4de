"""``beamline demo``: the whole system on the shared data, step by step.

Credit: train what the registry lacks, score replayed applicants (with personal data and bad
lines) in batch and streaming against a bank stand-in that fails 5 % of calls, a second data set
by configuration alone, the serving function and the offers API under load, six weeks of
shifted traffic evaluated into a retraining decision, the loop (retrain on the labels
production produced, the challenger as shadow, compare, promote, roll back), a backfill and the
replay of its decisions. Radar: the UNets trained in the background meanwhile, then QC of real
volumes in every output format, the comparison with reference algorithms, synthetic truth and
its evaluation, and the real-time chunks streamed.

Each step calls a command's Python entry point and keeps what it returns (a model reference, a
decision record, an evaluation outcome); services run through context managers. Long jobs that
run beside the demo (streaming pipelines, the radar trainings) run in their own processes, as in
production. The closing summary lists counts, decisions, the personal-data scan and each step's
time.
"""

import argparse
import contextlib
import dataclasses
import datetime
import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time

DEFAULT_DATA = os.environ.get("BEAMLINE_DATA", "../shared/data")
SHIFT = "young_no_history_surge,amounts_inflate,slice_outcomes_worsen,young_outcomes_worsen"
# The shifted scenario is first evaluated before the labels of its newest weeks have arrived.
LABEL_DELAY_WEEKS = 2
# The bad lines of the batch demo: malformed, mistyped, with personal data, not an object; the
# demo adds a line nested 5,000 levels deep and a request delivered twice.
BAD_LINES = [
    '{"request_id": "bad-json", "event_time": ',
    '{"request_id": "bad-type", "event_time": "2026-11-01T00:00:00+00:00", '
    '"duration_months": "twelve"}',
    '{"request_id": "bad-pii", "event_time": "2026-11-01T00:00:00+00:00", "applicant_name": '
    '"Erika Mustermann", "national_id": "DE-123456789", "duration_months": "twelve"}',
    '{"request_id": "bad-json-pii", "applicant_name": "Max Mustermann", "national_id": '
    '"DE-987654321",',
    '["not", "an", "object"]',
]
BAD_LINE_SECRETS = {"Erika Mustermann", "DE-123456789", "Max Mustermann", "DE-987654321"}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much the demo does; the defaults are the full demo, the test runs a smaller one."""

    requests: int = 5000
    stream_files: int = 3
    stream_rows: int = 300
    stream_secs: float = 30
    crx_requests: int = 690
    online_requests: int = 300
    weekly_requests: int = 1000
    credit_epochs: int = 60
    # The demo's radar UNets: shorter trainings than the defaults (docs/radar.md): fewer
    # synthetic windows rather than fewer epochs, the real labels need the epochs.
    radar_training: str = "--train_windows 400 --weak_windows 800 --epochs 6"
    radar_single_pol_training: str = "--train_windows 400 --epochs 3"
    radar_weak_weather_weight: float = 1.0


SMALL = Sizes(requests=400, stream_files=2, stream_rows=60, stream_secs=16, crx_requests=120,
              online_requests=60, weekly_requests=200, credit_epochs=15)


@dataclasses.dataclass
class Demo:
    """Where the demo reads and writes, and what its steps found."""

    data: str
    registry: str
    out: str
    sizes: Sizes = Sizes()
    steps: list = dataclasses.field(default_factory=list)
    results: dict = dataclasses.field(default_factory=dict)

    def path(self, *parts: str) -> str:
        return os.path.join(self.out, *parts)

    @contextlib.contextmanager
    def step(self, name: str):
        """Time one step; its time goes into the closing summary."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.steps.append((name, time.monotonic() - started))


def say(text: str) -> None:
    print(f"== {text}", flush=True)


def fresh(folder: str) -> str:
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    return folder


def succeed(status: int, what: str) -> None:
    """A command the demo ran must have done its job."""
    if status not in (0, None):
        raise RuntimeError(f"{what} ended with exit status {status}")


# --- credit ------------------------------------------------------------------------------

def train_credit_if_missing(demo: Demo, model: str, data: str) -> None:
    """Train a data set's model unless the registry serves one already (a first version takes
    production)."""
    from models import registry as model_registry
    from models.credit.train import train

    if model_registry.read_alias(demo.registry, model, model_registry.PRODUCTION):
        return
    say(f"training {model} from its data set configuration (the registry has none)")
    ref = train(model, demo.registry, data, epochs=demo.sizes.credit_epochs,
                command=shlex.join(["python", "-m", "models.credit.train", "--config", model,
                                    "--data", data, "--registry", demo.registry,
                                    "--epochs", str(demo.sizes.credit_epochs)]))
    print(f"   published {ref.name} {ref.version}: hold-out AUC "
          f"{ref.manifest['holdout_metrics']['auc']:.3f}")


def replay(config: str, data: str, path: str, count: int, id_prefix: str = "req",
           start: str = "2026-11-01T00:00:00+00:00", spacing_secs: float = 60.0,
           personal_data: bool = False) -> list:
    """Write ``count`` applicants of a data set as JSON Lines requests; returns them.

    With ``personal_data`` one in ten carries the name, national id and phone a bank's front
    end sends (the German data set's pass-through fields).
    """
    import datetime

    from models.credit.dataset import load_dataset, read_data
    from models.credit.replay import replay_requests, write_jsonl

    records = read_data(load_dataset(config), data).records
    requests = replay_requests(records, count, datetime.datetime.fromisoformat(start),
                               spacing_secs, id_prefix)
    for i, request in enumerate(requests):
        if personal_data and i % 10 == 0:
            request.update(applicant_name=f"Demo Applicant {i}",
                           national_id=f"DE-DEMO-{i:06d}", phone=f"+49 30 5550{i:04d}")
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    write_jsonl(requests, tmp)
    os.replace(tmp, path)  # a watched folder sees the file whole
    return requests


def credit_inputs(demo: Demo) -> None:
    german = os.path.join(demo.data, "credit", "german.data")
    train_credit_if_missing(demo, "credit_german", german)
    inputs = fresh(demo.path("demo_inputs"))
    say(f"demo requests: {demo.sizes.requests} replayed German credit applicants, one in ten "
        "with the name, national id and phone the bank's front end sends, + a few bad lines "
        "(malformed, mistyped, with personal data, not an object, nested 5,000 levels deep, "
        "one request delivered twice)")
    requests = replay("credit_german", german, os.path.join(inputs, "requests.jsonl"),
                      demo.sizes.requests, spacing_secs=300, personal_data=True)
    with open(os.path.join(inputs, "bad_requests.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in BAD_LINES)
        f.write('{"a":' * 5000 + "1" + "}" * 5000 + "\n")
        f.write(json.dumps(requests[0]) + "\n")  # at-least-once delivery: the same request


def score_credit(demo: Demo, *args: str) -> None:
    from pipelines import credit_scoring

    credit_scoring.run(["--registry", demo.registry, *args])


def credit_batch(demo: Demo, offer_url: str) -> None:
    say("credit scoring, batch")
    score_credit(demo, "--input", demo.path("demo_inputs", "*.jsonl"), "--output", demo.out,
                 "--offer_url", offer_url, "--offer_timeout_secs", "1", "--sample_rate", "0.2")


def streaming_runner() -> tuple[list[str], str]:
    """(the runner arguments of the demo's streaming jobs, its name): Prism when set-up built
    it (rows appear while the job runs), else the local DirectRunner (rows at drain)."""
    from runners.prism import prism_binary

    if prism_binary().exists():
        return ["--runner", "PrismRunner"], "Prism (rows are written while the job runs)"
    return [], ("the local DirectRunner (no Prism built: rows are written when the job "
                "drains; `beamline setup` builds Prism with Go)")


def credit_streaming(demo: Demo, offer_url: str) -> None:
    german = os.path.join(demo.data, "credit", "german.data")
    landing = fresh(demo.path("landing"))
    runner, runner_name = streaming_runner()
    say(f"credit scoring, streaming on {runner_name}: a landing directory receives "
        f"{demo.sizes.stream_files} files while it runs")
    with running_job(demo, "credit_streaming", "pipelines.credit_scoring", "--streaming",
                     "--input_dir", landing, "--registry", demo.registry, "--output", demo.out,
                     "--offer_url", offer_url, "--offer_timeout_secs", "1", "--sample_rate",
                     "0.2", "--stop_after_secs", str(demo.sizes.stream_secs), "--poll_secs",
                     "1", *runner) as job:
        responses = os.path.join(demo.out, "responses", "**", "*.parquet")
        before = set(glob.glob(responses, recursive=True))
        first_landed = first_written = None

        def watch(secs: float) -> None:  # notes when the stream's first responses are written
            nonlocal first_written
            until = time.monotonic() + secs
            while time.monotonic() < until and job[0].poll() is None:
                if (first_landed and not first_written
                        and set(glob.glob(responses, recursive=True)) != before):
                    first_written = time.monotonic()
                time.sleep(0.25)

        pause = demo.sizes.stream_secs / (demo.sizes.stream_files + 2)
        for part in range(1, demo.sizes.stream_files + 1):
            watch(pause)
            replay("credit_german", german, os.path.join(landing, f"part{part}.jsonl"),
                   demo.sizes.stream_rows, id_prefix=f"stream{part}",
                   start=f"2026-11-2{part}T00:00:00+00:00")
            first_landed = first_landed or time.monotonic()
            print(f"   landed {landing}/part{part}.jsonl", flush=True)
        watch(demo.sizes.stream_secs)
        if first_written:
            print(f"   responses in Parquet {first_written - first_landed:.1f} s after the "
                  "first file landed, the job still running", flush=True)
        finish(job, "credit streaming")


def crx(demo: Demo, offer_url: str) -> None:
    """A second data set, described by configuration alone: its own model, request fields,
    offer rules and output folders."""
    data = os.path.join(demo.data, "credit", "crx.data")
    train_credit_if_missing(demo, "credit_crx", data)
    say(f"credit scoring, batch: {demo.sizes.crx_requests} replayed Credit Approval applicants "
        "(model credit_crx)")
    os.makedirs(demo.path("demo_inputs", "crx"), exist_ok=True)
    path = demo.path("demo_inputs", "crx", "requests.jsonl")
    replay("credit_crx", data, path, demo.sizes.crx_requests, id_prefix="crx")
    score_credit(demo, "--input", path, "--model_name", "credit_crx", "--output", demo.out,
                 "--offer_url", offer_url, "--offer_timeout_secs", "1", "--sample_rate", "0.2")


def serving(demo: Demo, offer_url: str) -> None:
    """The serving function and the offers API in front of it, each in its own process on a
    free loopback port; applicants at 50/s; SIGTERM flushes the sampled online rows, which the
    scheduled evaluation then reads like any pipeline's."""
    from bench.serving import applicant_bodies, offers_load, percentiles
    from models.credit.dataset import load_dataset, read_data
    from pipelines import evaluate
    from services.processes import running_service

    online = fresh(demo.path("online"))
    german = os.path.join(demo.data, "credit", "german.data")
    count = demo.sizes.online_requests
    say("serving function (TF Serving REST) and the offers API in front of it, on loopback")
    with running_service("services.model_server", "--registry", demo.registry,
                         ready_path="/v1/models/credit_german",
                         log=demo.path("model_server.log")) as model_url, running_service(
            "services.offers_api", "--registry", demo.registry, "--model_endpoint", model_url,
            "--offer_url", offer_url, "--output", online, "--sample_rate", "0.5",
            log=demo.path("offers_api.log")) as offers_url:
        load = offers_load(f"{offers_url}/v1/offers", applicant_bodies(count, "online", german),
                           50)
    print(f"   offers API: {count} requests at 50/s: {percentiles(load['latencies'])}; "
          f"statuses {load['statuses']}")
    demo.results["online_statuses"] = load["statuses"]
    labels = read_data(load_dataset("credit_german"), german).labels
    with open(os.path.join(online, "truth.jsonl"), "w", encoding="utf-8") as f:
        for i in range(count):  # outcomes known later, for the evaluation of online rows
            f.write(json.dumps({"prediction_id": f"online-{i:07d}",
                                "label": int(labels[i % len(labels)]),
                                "label_time": "2026-12-20T00:00:00+00:00"}) + "\n")
    say("the scheduled evaluation reads the online rows like any pipeline's")
    outcome = evaluate.run(["--predictions", online, "--truth", f"{online}/truth.jsonl",
                            "--registry", demo.registry, "--output", online, "--no_snapshot"])
    demo.results["online_joined"] = outcome["summary"]["join"].get("matched", 0)


def decide(demo: Demo, pipeline: str, predictions: str, truth: str, *extra: str) -> dict:
    """Evaluate with the retraining rules; the outcome (report, decision record)."""
    from pipelines import evaluate

    outcome = evaluate.run(["--pipeline", pipeline, "--predictions", predictions, "--truth",
                            truth, "--registry", demo.registry, "--output", predictions,
                            "--decide", *extra])
    decision = outcome["decision"] or {}
    outcome["verdict"] = ("RETRAIN (exit status 3)" if decision.get("retrain")
                          else "no retraining")
    return outcome


def evaluation(demo: Demo) -> None:
    """Six weeks of applicants; from week 4 young applicants without credit history surge,
    amounts inflate 30 % and one slice's outcomes worsen. Streamed, sampled, evaluated against
    the outcomes that arrive later, decided; an unshifted replay of the same weeks is the
    control."""
    from models.credit import scenarios

    german = os.path.join(demo.data, "credit", "german.data")
    root = fresh(demo.path("evaluation_demo"))
    shifted, unshifted = (os.path.join(root, n) for n in ("shifted", "unshifted"))
    say(f"evaluation demo: six weeks of {demo.sizes.weekly_requests} requests from applicants "
        "the model never saw, shifted from week 4 (surge of young applicants without credit "
        "history, amounts +30 %, worse outcomes for young applicants and one slice)")
    for folder, scenario in ((shifted, SHIFT), (unshifted, "none")):
        os.makedirs(folder)
        succeed(scenarios.main(["--config", "credit_german", "--data", german, "--per_week",
                                str(demo.sizes.weekly_requests), "--holdout_only",
                                "--scenario", scenario, "--requests",
                                f"{folder}/requests.jsonl", "--truth",
                                f"{folder}/truth.jsonl"]), "scenarios")
    landing = fresh(demo.path("landing_evaluation"))
    say("streaming the shifted requests through credit scoring (daily output files)")
    with running_job(demo, "evaluation_streaming", "pipelines.credit_scoring", "--streaming",
                     "--input_dir", landing, "--registry", demo.registry, "--output", shifted,
                     "--sample_rate", "0.5", "--window_secs", "86400", "--stop_after_secs",
                     str(demo.sizes.stream_secs * 2 / 3), "--poll_secs", "1") as job:
        time.sleep(demo.sizes.stream_secs / 6)
        shutil.copyfile(f"{shifted}/requests.jsonl", f"{landing}/.requests.tmp")
        os.replace(f"{landing}/.requests.tmp", f"{landing}/requests.jsonl")
        finish(job, "streaming the shifted requests")
    say("the unshifted replay, batch")
    score_credit(demo, "--input", f"{unshifted}/requests.jsonl", "--output", unshifted,
                 "--sample_rate", "0.5")
    early, cutoff = withhold_newest_labels(f"{shifted}/truth.jsonl", LABEL_DELAY_WEEKS)
    say(f"evaluate before the labels of the newest {LABEL_DELAY_WEEKS} weeks exist (the labels "
        f"arrived by {cutoff[:10]}): figures estimated from the calibrated scores (CBPE)")
    before = decide(demo, "credit_scoring", shifted, early, "--no_snapshot")
    print_estimates(before["rows"])
    say("the late labels arrive: evaluate -> decide -> report: shifted, estimates beside the "
        "realized figures")
    demo.results["shifted"] = decide(demo, "credit_scoring", shifted, f"{shifted}/truth.jsonl")
    print_estimates(demo.results["shifted"]["rows"])
    say("evaluate -> decide -> report: unshifted (the control)")
    demo.results["unshifted"] = decide(demo, "credit_scoring", unshifted,
                                       f"{unshifted}/truth.jsonl")
    print_estimates(demo.results["unshifted"]["rows"])
    sql_evaluation(shifted)
    loop(demo, shifted, demo.results["shifted"]["decision"] or {})
    operations_page(demo, [shifted, unshifted, demo.path("shadow_demo"), demo.path("online")])


def operations_page(demo: Demo, roots: list[str]) -> None:
    """credit_german's life on one page: every evaluation run of the demo, the estimates and
    the realized figures, the decisions and the loop's alias moves."""
    from pipelines.operations import build_page

    roots = [r for r in roots if os.path.isdir(os.path.join(r, "evaluation", "metrics"))]
    page = build_page(roots, "credit_german", demo.registry,
                      demo.path("operations", "credit_german"))
    demo.results["operations_page"] = page["path"]
    print(f"   operations page of credit_german: {page['path']} ({len(page['runs'])} "
          f"evaluation runs of {len(roots)} outputs)")


def withhold_newest_labels(truth: str, weeks: int) -> tuple[str, str]:
    """The truth file as it stood ``weeks`` weeks before its newest label: the labels of the
    newest weeks have not arrived yet. Returns (the file written beside it, the cut-off)."""
    with open(truth, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    newest = max(datetime.datetime.fromisoformat(r["label_time"]) for r in records)
    cutoff = newest - datetime.timedelta(weeks=weeks)
    early = truth.replace(".jsonl", f"_as_of_{cutoff:%Y%m%d}.jsonl")
    with open(early, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records
                          if datetime.datetime.fromisoformat(r["label_time"]) <= cutoff)
    return early, cutoff.isoformat()


def print_estimates(rows: list[dict]) -> None:
    """Per week: the AUC and the cost per applicant estimated before labels with their 95 %
    interval, beside the realized figure once the labels are in."""
    from transforms.evaluation.history import latest_cells

    cells = latest_cells(rows)
    weeks = sorted({key[2] for key in cells if key[1] == "estimated"})
    version = max((key[0] for key in cells if key[1] == "estimated"), default=None)
    if version is None:
        return
    print(f"   {'week':<11}{'rows':>5}{'labels':>7}   {'AUC estimate [95 %]':<22}{'realized':>9}"
          f"   {'cost estimate [95 %]':<22}{'realized':>9}")
    inside = judged = 0
    for week in weeks:
        def cell(metric, detail=None, role="estimated", week=week, digits=3):
            row = cells.get((version, role, week, "all", "all", metric, detail))
            value = row and row["value"]
            return "n/a" if value is None else f"{value:.{digits}f}"
        line = (f"   {week:<11}{cell('predictions', role='served', digits=0):>5}"
                f"{cell('labelled', role='served', digits=0):>7}")
        for metric in ("auc", "expected_cost_per_applicant"):
            error = cells.get((version, "estimated", week, "all", "all", metric, "error"))
            estimate = (f"{cell(metric)} [{cell(metric, 'interval_low')}, "
                        f"{cell(metric, 'interval_high')}]")
            mark = "" if error and error["flag"] == "inside" else "!"
            realized = f"{cell(metric, role='served')}{mark}" if error else "no labels"
            line += f"   {estimate:<22}{realized:>9}"
            if error and metric == "auc":
                judged += 1
                inside += error["flag"] == "inside"
        print(line)
    if judged:
        print(f"   realized AUC inside its estimate's interval in {inside} of {judged} weeks "
              f"with labels ('!': outside)")


def sql_evaluation(run: str) -> None:
    """The evaluation as a warehouse user runs it: the data set's SQL on DuckDB over the run's
    Parquet folders and truth file (the same figures as the evaluation job)."""
    import duckdb

    from models.config import default_path, load_evaluation_config
    from transforms.evaluation.query import render_credit_query

    say("the same evaluation in SQL (DuckDB over the Parquet folders): AUC and approval rate "
        "per week, and the largest approval-rate gap")
    db = duckdb.connect()
    db.execute("SET TimeZone = 'UTC'")
    db.execute(f"""CREATE VIEW predictions AS SELECT * FROM read_parquet(
        '{run}/predictions/pipeline=credit_scoring/model_name=credit_german/**/*.parquet',
        hive_partitioning = true, union_by_name = true)""")
    db.execute(f"""CREATE VIEW truth AS SELECT prediction_id, TRY_CAST(label AS DOUBLE) AS
        label, TRY_CAST(label_time AS TIMESTAMPTZ) AS label_time FROM read_json_auto(
        '{run}/truth.jsonl', format = 'newline_delimited', ignore_errors = true)""")
    query = render_credit_query("credit_german", load_evaluation_config(
        default_path("evaluation", "credit_german")))
    db.execute("CREATE TABLE figures AS " + query)
    print(db.sql("""SELECT model_version, window_start AS week,
        MAX(CASE WHEN metric = 'labelled' THEN count END) AS labelled,
        ROUND(MAX(CASE WHEN metric = 'auc' THEN value END), 3) AS auc,
        ROUND(MAX(CASE WHEN metric = 'approval_rate' THEN value END), 3) AS approval_rate
      FROM figures WHERE "window" = 'week' AND slice = 'all'
      GROUP BY ALL ORDER BY ALL"""))
    gap = db.execute("""SELECT g.slice, g.slice_value, g.model_version, g.window_start,
        ROUND(g.value, 3), g.count
      FROM figures AS g JOIN figures AS t ON t.metric = 'labelled' AND t.slice = 'all'
        AND t.model_version = g.model_version AND t."window" = g."window"
        AND t.window_start = g.window_start
      WHERE g.metric = 'approval_rate_diff' AND g."window" = 'week' AND g.count >= 30
        AND t.count - g.count >= 30
      ORDER BY ABS(g.value) DESC LIMIT 1""").fetchone()
    if gap:
        print(f"   largest weekly approval-rate gap (group and rest of 30+ rows): "
              f"{gap[0]}={gap[1]} {gap[4]:+} against the rest ({gap[2]}, week of {gap[3]}, "
              f"{gap[5]} rows)")


def loop(demo: Demo, shifted: str, decision: dict) -> None:
    """After a RETRAIN: train on the snapshot the evaluation kept (its newest week held out),
    the challenger as shadow, compare with the champion on that week, promote if the rules
    accept (or after a person's review), score with production, roll back in one command."""
    from models import promotion
    from models import registry as model_registry
    from models.credit import compare
    from models.credit.train import train

    german = os.path.join(demo.data, "credit", "german.data")
    snapshot, until = decision.get("snapshot"), decision.get("window_start")
    if not snapshot:
        say("the loop: the evaluation kept no snapshot; nothing to retrain on")
        demo.results["loop"] = "no snapshot kept: nothing retrained"
        return
    say(f"the loop: retrain on base data + snapshot {snapshot}, holding out the week of {until}")
    ref = train("credit_german", demo.registry, german, epochs=demo.sizes.credit_epochs,
                snapshots=[snapshot], until=until,
                command=shlex.join(["python", "-m", "models.credit.train", "--config",
                                    "credit_german", "--data", german, "--registry",
                                    demo.registry, "--snapshot", snapshot, "--until", until,
                                    "--epochs", str(demo.sizes.credit_epochs)]))
    challenger = ref.version
    print(f"   published credit_german {challenger}")
    shadow(demo, shifted, challenger, until)
    say(f"challenger {challenger} against the champion (production) on the held-out week")
    record = compare.compare(demo.registry, "credit_german", challenger)
    path = compare.write_record(demo.registry, record)
    print(compare.describe(record) + f"\n  decision record: {path}")
    if record["accepted"]:
        promotion.promote(demo.registry, "credit_german", challenger,
                          reason="challenger accepted against champion", decision=path)
        result = f"challenger {challenger} accepted and promoted"
    else:
        say("refused by the rules; an operator who reviewed the evidence promotes it anyway, "
            "and the audit log keeps why and the decision record")
        promotion.promote(demo.registry, "credit_german", challenger, decision=path,
                          reason="reviewed: gaps follow the changed outcomes of young "
                                 "applicants")
        result = f"challenger {challenger} refused by the rules, promoted after review"
    say("the shifted requests scored again by whatever production is now")
    score_credit(demo, "--input", f"{shifted}/requests.jsonl", "--output",
                 demo.path("loop_demo"), "--sample_rate", "0.2", "--run_id", "loop-demo")
    print("   aliases:", json.dumps(model_registry.list_aliases(demo.registry, "credit_german")))
    say("rollback in one command: production back to the version it replaced")
    entry = promotion.rollback(demo.registry, "credit_german")
    print(f"   credit_german production: {entry['from']} -> {entry['to']}")
    demo.results["loop"] = result + ", then rolled back"


def shadow(demo: Demo, shifted: str, challenger: str, until: str) -> None:
    """The challenger as production's shadow on the held-out week's requests: both score
    every request, the shadow's answers go to the sampled rows only; the evaluation shows both
    on the same rows, and the comparison is judged once more on those live rows."""
    import pyarrow.dataset as ds

    from models import promotion
    from pipelines import compare as compare_job
    from pipelines import evaluate

    live = fresh(demo.path("shadow_demo"))
    say(f"{challenger} becomes the shadow of production before any decision; the held-out "
        "week's requests are scored by both (responses and offers: production's alone)")
    promotion.promote(demo.registry, "credit_german", challenger, alias="shadow",
                      reason="candidate scored beside production")
    with open(f"{shifted}/requests.jsonl", encoding="utf-8") as source, \
            open(f"{live}/requests.jsonl", "w", encoding="utf-8") as target:
        target.writelines(line for line in source
                          if json.loads(line)["event_time"][:10] >= until[:10])
    score_credit(demo, "--input", f"{live}/requests.jsonl", "--output", live, "--sample_rate",
                 "0.5", "--run_id", "shadow-demo")
    evaluate.run(["--pipeline", "credit_scoring", "--predictions", live, "--truth",
                  f"{shifted}/truth.jsonl", "--registry", demo.registry, "--output", live,
                  "--run_id", "shadow-demo-eval", "--window", "all"])
    rows = ds.dataset(f"{live}/evaluation/metrics", partitioning="hive").to_table().to_pylist()
    cells = {(r["model_version"], r["role"], r["metric"]): r for r in rows
             if r["window"] == "all" and r["slice"] == "all" and r["detail"] is None
             and r["role"] in ("served", "shadow")}
    print("   side by side on the same labelled rows (whole week):")
    print(f"   {'version':<8}{'role':<8}{'rows':>6}{'auc':>8}{'log_loss':>10}{'approval':>10}")
    for version, role in sorted({(v, r) for v, r, _ in cells}):
        def get(metric, version=version, role=role):
            value = cells.get((version, role, metric), {}).get("value")
            return float("nan") if value is None else value
        print(f"   {version:<8}{role:<8}{cells[(version, role, 'labelled')]['count']:>6}"
              f"{get('auc'):>8.3f}{get('log_loss'):>10.3f}{get('approval_rate'):>10.3f}")
    say(f"challenger {challenger} against production judged on the shadow's live rows")
    compare_job.run(["--registry", demo.registry, "--model_name", "credit_german",
                     "--challenger", challenger, "--shadow_evidence", live, "--shadow_truth",
                     f"{shifted}/truth.jsonl"])


def backfill_and_explain(demo: Demo) -> None:
    from pipelines import explain

    say("backfill: the demo requests re-scored with the pinned model v0001 (own folder)")
    run_id = "backfill-demo-credit-v0001"
    score_credit(demo, "--input", demo.path("demo_inputs", "requests.jsonl"), "--output",
                 demo.out, "--run_mode", "backfill", "--run_id", run_id, "--model_version",
                 "v0001", "--sample_rate", "1.0")
    backfill = demo.path("backfills", run_id)
    say("explain one old decision, then replay every prediction of the backfill")
    succeed(explain.main(["--prediction_id", "req-0000042", "--predictions", backfill,
                          "--registry", demo.registry]), "explain")
    status = explain.main(["--all", "--predictions", backfill, "--registry", demo.registry])
    demo.results["replay"] = "every replayed decision identical" if status == 0 else \
        "MISMATCHES in the replay"
    succeed(status, "replay of the backfill")


# --- radar -------------------------------------------------------------------------------

class BackgroundCommands:
    """Commands run one after the other in their own processes while the demo goes on; the
    process running when the demo stops, however it stops, is stopped with it."""

    def __init__(self, commands: list[list[str]], log: str):
        self._commands, self._log = commands, log
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._stopped = False
        self.failed: tuple[str, int] | None = None
        self._thread = threading.Thread(target=self._run, name="background", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with open(self._log, "ab") as out:
            for command in self._commands:
                with self._lock:
                    if self._stopped:
                        return
                    self._process = subprocess.Popen([sys.executable, "-m", *command],
                                                     stdout=out, stderr=subprocess.STDOUT)
                status = self._process.wait()
                if status:
                    self.failed = (shlex.join(command), status)
                    return

    def wait(self) -> None:
        self._thread.join()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait(timeout=60)


def radar_training(demo: Demo) -> BackgroundCommands | None:
    """The radar UNets train in their own processes while the credit steps run (those wait on
    services and streaming windows more than they compute); one after the other, since two
    trainings at once would share the same cores."""
    from models import registry as model_registry
    from transforms.radar.reading import volume_paths

    # Every shared volume but KLBB's: KLBB stays a radar the model has never seen, scored in
    # the reference step (volumes without dual-pol sweeps are left out by the training).
    klbb = os.path.join(demo.data, "radar", "KLBB20160601_150025_V06")
    learn_from = [p for p in volume_paths(os.path.join(demo.data, "radar"))
                  if os.path.abspath(p) != os.path.abspath(klbb)]
    commands = []
    if not model_registry.read_alias(demo.registry, "radar_qc", model_registry.PRODUCTION):
        commands.append(["transforms.radar.weak_labels", "--registry", demo.registry,
                         *[a for p in learn_from for a in ("--weak_labels", p)],
                         "--weak_weather_weight",
                         str(demo.sizes.radar_weak_weather_weight),
                         *shlex.split(demo.sizes.radar_training)])
    if not model_registry.read_alias(demo.registry, "radar_qc_single", model_registry.PRODUCTION):
        commands.append(["models.radar_qc.train", "--registry", demo.registry,
                         "--polarization", "single",
                         *shlex.split(demo.sizes.radar_single_pol_training)])
    if not commands:
        return None
    log = demo.path("radar_training.log")
    say(f"training the radar QC UNets in the background ({len(commands)} model(s)): the "
        f"dual-pol one on synthetic sweeps plus the sweeps of {len(learn_from)} real volumes "
        "of every shared radar but KLBB, labelled by the reference algorithms' consensus (so "
        "KLBB is a radar it has never seen when its real-data skill is measured), the "
        f"single-pol one on synthetic sweeps; log {log}")
    return BackgroundCommands(commands, log)


def wait_for_radar_training(demo: Demo, training: BackgroundCommands | None) -> None:
    from models import registry as model_registry

    if training is not None:
        say("waiting for the radar UNet training")
        training.wait()
        if training.failed:
            raise RuntimeError(f"radar training failed: {training.failed[0]} ended with exit "
                               f"status {training.failed[1]} (log "
                               f"{demo.path('radar_training.log')})")
    for name in ("radar_qc", "radar_qc_single"):
        ref = model_registry.resolve(demo.registry, name, model_registry.PRODUCTION,
                                     verify=False)
        unet = ref.manifest["holdout_metrics"]["unet"]
        print(f"   {name} {ref.version}: synthetic hold-out POD {unet['pod']:.3f}, FAR "
              f"{unet['far']:.3f}, CSI {unet['csi']:.3f}")


def radar_batch(demo: Demo) -> None:
    from pipelines import radar_qc
    from transforms.radar.synthetic_volumes import write_single_pol_copy

    klbb = os.path.join(demo.data, "radar", "KLBB20160601_150025_V06")
    say("radar QC, batch: the KLBB archive volume, the same volume as a single-polarization "
        "radar records it (ODIM_H5: DBZH, VRADH, WRADH; for the single-pol model), and one "
        "file that is not radar data; written as CF/Radial 2, CF/Radial 1.4 and ODIM_H5")
    folder = fresh(demo.path("demo_radar"))
    os.symlink(os.path.abspath(klbb), os.path.join(folder, os.path.basename(klbb)))
    with open(os.path.join(folder, "corrupt_V06"), "wb") as f:
        f.write(os.urandom(100_000))
    write_single_pol_copy(klbb, os.path.join(folder, "KLBB_single_pol.h5"))
    radar_qc.run(["--input", f"{folder}/*", "--registry", demo.registry, "--output", demo.out,
                  "--sample_rate", "1.0", "--output_formats", "cfradial2,cfradial1,odim"])


def radar_reference(demo: Demo) -> None:
    from pipelines import radar_reference as reference

    say("the UNet on the real KLBB and KLOT volumes against wradlib's fuzzy echo "
        "classification and the RHOHV rule (no per-gate truth exists for real volumes); KLOT "
        "is refused: the model was trained on its weak labels, as on every shared radar's "
        "but KLBB's")
    outcome = reference.run(["--registry", demo.registry, "--output", demo.out, "--input",
                             os.path.join(demo.data, "radar", "KLBB20160601_150025_V06"),
                             "--chunk_volumes",
                             os.path.join(demo.data, "radar", "nexrad_chunks_KLOT")])
    demo.results["radar_reference"] = outcome["report"]


def radar_synthetic(demo: Demo) -> None:
    from pipelines import radar_qc
    from transforms.radar.synthetic_volumes import write_synthetic_volumes

    say("radar QC of two synthetic volumes with known truth, then their evaluation")
    truth = demo.path("demo_inputs", "radar_truth.parquet")
    folder = fresh(demo.path("demo_radar_synthetic"))
    write_synthetic_volumes(os.path.join(demo.data, "radar", "KLBB20160601_150025_V06"),
                            folder, truth, count=2)
    radar_qc.run(["--input", f"{folder}/*.nc", "--registry", demo.registry, "--output",
                  demo.out, "--sample_rate", "1.0"])
    demo.results["radar"] = decide(demo, "radar_qc", demo.out, truth)


def radar_streaming(demo: Demo) -> None:
    from services.chunk_feed import chunk_files, feed_chunks

    runner, runner_name = streaming_runner()
    say(f"radar QC, streaming on {runner_name}: the KLOT real-time chunks land one by one, "
        "shuffled")
    landing = fresh(demo.path("landing_chunks"))
    shutil.rmtree(landing + ".staging", ignore_errors=True)
    started = time.time()
    with running_job(demo, "radar_streaming", "pipelines.radar_qc", "--streaming",
                     "--chunk_dir", landing, "--registry", demo.registry, "--output", demo.out,
                     "--sample_rate", "1.0", "--stop_after_secs", "40", "--poll_secs", "1",
                     "--chunk_timeout_secs", "30", *runner) as job:
        time.sleep(8)
        chunks = chunk_files(os.path.join(demo.data, "radar", "nexrad_chunks_KLOT"))
        delivered = feed_chunks(chunks, landing, "KLOT", delay_secs=0.1, shuffle_seed=1)
        print(f"   delivered {len(delivered)} chunks to {landing}/KLOT", flush=True)
        finish(job, "radar streaming")
    print(f"   {sweeps_ahead(demo.out, 'KLOT', started)}")


def sweeps_ahead(out: str, radar: str, since: float) -> str:
    """How many sweeps of the volume streamed since ``since`` were written on their own
    before it, and how much before its file the first of them was."""
    def written(pattern: str) -> list[str]:
        return [p for p in glob.glob(pattern, recursive=True) if os.path.getmtime(p) >= since]

    sweeps = written(f"{out}/sweeps/radar={radar}/**/*_qc.nc")
    volumes = written(f"{out}/volumes/radar={radar}/**/*_qc.nc")
    if not sweeps or not volumes:
        return f"no sweep written ahead of its volume in {out}/sweeps/"
    lead = max(map(os.path.getmtime, volumes)) - min(map(os.path.getmtime, sweeps))
    return (f"{len(sweeps)} dual-pol sweeps QC'd one by one as their chunks completed, in "
            f"{out}/sweeps/ (the first {lead:.0f} s before the whole volume's file)")


# --- jobs beside the demo, and the summary ----------------------------------------------

@contextlib.contextmanager
def running_job(demo: Demo, name: str, module: str, *args: str):
    """A streaming pipeline in its own process; its console goes to ``<out>/<name>.log``."""
    from services.processes import running_process

    log = demo.path(f"{name}.log")
    with open(log, "wb"):
        pass
    with running_process(module, *args, log=log) as process:
        yield process, log


def finish(job: tuple, what: str) -> None:
    """Wait for a job that stops by itself; echo its summary (its log's lines that are not
    INFO/WARNING records) and fail on a bad exit."""
    process, log = job
    status = process.wait()
    with open(log, encoding="utf-8", errors="replace") as f:
        lines = [line.rstrip() for line in f if not line.startswith(("INFO", "WARNING"))]
    print("\n".join(f"   {line}" for line in lines[-8:] if line))
    succeed(status, f"{what} (log {log})")


def output_counts(out: str) -> list[tuple[int, str]]:
    """Rows per output table: one folder per model, each of one schema."""
    import pyarrow.dataset as ds

    folders = sorted(glob.glob(f"{out}/responses/model_name=*")
                     + glob.glob(f"{out}/predictions/pipeline=*/model_name=*")
                     + glob.glob(f"{out}/qc_volumes"))
    return [(ds.dataset(f, partitioning="hive").count_rows(), f) for f in folders]


def dead_letter_stages(out: str) -> tuple[dict[str, dict[str, int]], dict[str, list]]:
    """(dead letters per stage of each pipeline and model, one (stage, message) of each kind
    of each, at most eight: the reasons a reader checks, e.g. the 5,000-level line)."""
    import pyarrow.dataset as ds

    stages, reasons = {}, {}
    for folder in sorted(glob.glob(f"{out}/dead_letters/pipeline=*/model_name=*")):
        table = ds.dataset(folder, partitioning="hive").to_table(columns=["stage", "message"])
        counts = table.group_by(["stage"]).aggregate([([], "count_all")]).to_pylist()
        name = folder.split("dead_letters/")[1]
        stages[name] = {r["stage"]: r["count_all"] for r in counts}
        kinds = {}
        for row in table.to_pylist():
            kinds.setdefault((row["stage"], row["message"][:24]), (row["stage"], row["message"]))
        reasons[name] = list(kinds.values())[:8]
    return stages, reasons


def personal_data_leaks(out: str) -> tuple[int, int, int]:
    """(personal values sent, how many of them appear in the credit outputs, files read).

    Every name, national id and phone the demo's requests carried is looked for in the
    decoded values of every credit output (not in bytes: Parquet pages are compressed).
    """
    import pyarrow.parquet as pq

    secrets = set(BAD_LINE_SECRETS)
    for path in glob.glob(f"{out}/demo_inputs/*.jsonl"):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    request = json.loads(line)
                except (ValueError, RecursionError):  # the bad lines
                    continue
                if isinstance(request, dict):
                    secrets |= {str(request[k]) for k in ("applicant_name", "national_id",
                                                          "phone") if k in request}
    files = [f for f in glob.glob(f"{out}/**/*.parquet", recursive=True)
             if "/model_name=credit_german" in f and "/evaluation/" not in f]
    leaks = 0
    for path in files:
        table = pq.read_table(path)
        for name, column in zip(table.column_names, table.columns):
            values = [v for v in column.to_pylist() if isinstance(v, str)]
            leaks += sum(v in secrets for v in values)
            if name in ("raw", "message"):
                leaks += sum(any(s in v for s in secrets) for v in values)
    return len(secrets), leaks, len(files)


def summary(demo: Demo, total_secs: float) -> dict:
    """Print where the outputs are, what they hold and how long each step took; return it."""
    out = demo.out
    counts = output_counts(out)
    stages, reasons = dead_letter_stages(out)
    sent, leaks, files = personal_data_leaks(out)
    print("\n== outputs")
    for label, folder in (("QC'd radar volumes", "volumes/"), ("radar quicklooks", "quicklooks/"),
                          ("radar volume index", "qc_volumes/"), ("responses", "responses/"),
                          ("sampled predictions", "predictions/"),
                          ("dead letters", "dead_letters/")):
        print(f"   {label + ':':<21}{out}/{folder}")
    print(f"   {'model registry:':<21}{demo.registry}/")
    for rows, folder in counts:
        print(f"   {rows:>6} rows  {folder}")
    for folder, by_stage in stages.items():
        print(f"   dead letters {folder}: "
              + ", ".join(f"{stage} {n}" for stage, n in sorted(by_stage.items())))
        for stage, message in reasons[folder]:
            print(f"      {stage:<10} {message[:88]}")
    print(f"   personal data: {sent} names, national ids and phones in the requests; {leaks} "
          f"found in the decoded values of {files} credit output files (names and phones "
          f"dropped, national ids stored as keyed HMAC pseudonyms, a line that is not JSON "
          f"kept as its length and keyed hash)")
    for path in sorted(glob.glob(f"{out}/quicklooks/*/*/*.png")):
        print(f"   quicklook: {path}")
    results = demo.results
    print("\n== evaluation reports (open in a browser)")
    for label, key in (("credit, shifted scenario", "shifted"),
                       ("credit, unshifted replay", "unshifted"),
                       ("radar QC, synthetic truth (and the real volumes' figures)", "radar")):
        if key in results:
            print(f"   {label}: {results[key]['report']}\n     decision: "
                  f"{results[key]['verdict']}")
    if "operations_page" in results:
        print(f"   credit_german, every run, decision and alias move on one page: "
              f"{results['operations_page']}")
    if "loop" in results:
        print(f"   the loop: {results['loop']} (decision records in "
              f"{demo.registry}/credit_german/promotions/)")
    if "radar_reference" in results:
        print(f"   radar QC, real volumes against reference algorithms: "
              f"{results['radar_reference']}")
    print(f"\n== time per step (demo total {total_secs:.0f} s after set-up)")
    for name, secs in demo.steps:
        print(f"   {secs:6.0f}s  {name}")
    return {"counts": counts, "dead_letters": stages, "personal_data": (sent, leaks, files),
            "steps": demo.steps, "decisions": {k: results[k]["verdict"] for k in
                                               ("shifted", "unshifted", "radar")
                                               if k in results},
            "loop": results.get("loop"), "replay": results.get("replay"),
            "operations_page": results.get("operations_page")}


PARTS = ("credit", "radar")


def run_demo(demo: Demo, parts: tuple[str, ...] = PARTS) -> dict:
    """Every step of the demo in order; returns the summary."""
    from beamline.setup import pseudonymisation_key
    from services.bank_offers import Faults, running_offer_service

    started = time.monotonic()
    german = os.path.join(demo.data, "credit", "german.data")
    if not os.path.exists(german):
        raise FileNotFoundError(f"missing {german} (give --data or set BEAMLINE_DATA to the "
                                f"shared data folder)")
    os.makedirs(demo.out, exist_ok=True)
    pseudonymisation_key()
    training = radar_training(demo) if "radar" in parts else None
    try:
        if "credit" in parts:
            with demo.step("credit model training, demo inputs"):
                credit_inputs(demo)
            say("bank offers service (5% of calls fail with 500/429/timeouts, 1% of applicants "
                "rejected)")
            faults = Faults(fail_rate=0.05, poison_fraction=0.01, latency_ms=2, hang_secs=3)
            with running_offer_service(faults) as bank:
                print(f"   listening on {bank.url}")
                with demo.step("credit scoring, batch"):
                    credit_batch(demo, bank.url)
                with demo.step("credit scoring, streaming"):
                    credit_streaming(demo, bank.url)
                with demo.step("second data set (credit_crx)"):
                    crx(demo, bank.url)
                with demo.step("serving function + offers API"):
                    serving(demo, bank.url)
            with demo.step("evaluation, retraining loop"):
                evaluation(demo)
            with demo.step("backfill + explain"):
                backfill_and_explain(demo)
        if "radar" in parts:
            with demo.step("radar UNet training (waited for)"):
                wait_for_radar_training(demo, training)
            with demo.step("radar QC, batch"):
                radar_batch(demo)
            with demo.step("radar QC against reference algorithms"):
                radar_reference(demo)
            with demo.step("radar QC, synthetic truth + evaluation"):
                radar_synthetic(demo)
            with demo.step("radar QC, streaming"):
                radar_streaming(demo)
    finally:
        if training is not None:
            training.stop()  # a demo that stopped early leaves no training behind
    return summary(demo, time.monotonic() - started)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help="the shared data folder (default: $BEAMLINE_DATA or "
                             "../shared/data)")
    parser.add_argument("--registry", default=os.environ.get("BEAMLINE_REGISTRY", "registry"),
                        help="model registry (default: $BEAMLINE_REGISTRY or registry)")
    parser.add_argument("--output", default=os.environ.get("BEAMLINE_OUT", "out"),
                        help="output root (default: $BEAMLINE_OUT or out)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts to run: {', '.join(PARTS)}")
    parser.add_argument("--small", action="store_true",
                        help="small inputs and short trainings (a check that every step runs, "
                             "not the demo's figures)")
    parser.add_argument("--radar_training", default=None,
                        help="options of the dual-pol weak-label training (default: "
                             f"{Sizes.radar_training!r})")
    parser.add_argument("--radar_single_pol_training", default=None,
                        help="options of the single-pol training (default: "
                             f"{Sizes.radar_single_pol_training!r})")
    args = parser.parse_args(argv)
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        parser.error(f"--parts takes {', '.join(PARTS)}; got {args.parts!r}")
    sizes = SMALL if args.small else Sizes()
    sizes = dataclasses.replace(
        sizes, radar_training=args.radar_training or sizes.radar_training,
        radar_single_pol_training=args.radar_single_pol_training
        or sizes.radar_single_pol_training)
    demo = Demo(data=args.data, registry=args.registry, out=args.output, sizes=sizes)
    run_demo(demo, parts)
    return 0
