"""Our performance estimates before labels (models.estimation) beside NannyML's CBPE on the same
rows, week by week: an optional cross-check, outside the default install and CI.

NannyML pulls heavy dependencies and sends usage telemetry unless NML_DISABLE_USAGE_LOGGING is
set; this script sets it before the import. Run it with an interpreter that has nannyml and
pyarrow, the project on the path::

    python3.11 -m venv /tmp/nml && /tmp/nml/bin/pip install nannyml statsmodels pyarrow
    PYTHONPATH=. /tmp/nml/bin/python bench/cbpe_against_nannyml.py \\
        --predictions out/evaluation_demo/unshifted --registry registry

It reads the credit model's sampled predictions (one model version), calibrates the scores with
the version's calibrator (its manifest), and prints per week: rows, distinct applicants, the
expected AUC by NannyML's ``estimate_roc_auc`` and by ours with every row its own applicant
(the same estimator up to NannyML counting each row paired with itself) and with repeated
applicants as one (ours as the evaluation runs it), and the expected accuracy by both.
"""

import argparse
import datetime
import glob
import json
import os
import sys

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # before nannyml is imported

import numpy as np  # noqa: E402
import pyarrow.dataset as ds  # noqa: E402

from models.calibration import apply_calibration  # noqa: E402
from models.estimation import estimate  # noqa: E402


def main(argv=None) -> int:
    from nannyml.performance_estimation.confidence_based.metrics import (
        estimate_accuracy,
        estimate_roc_auc,
    )

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--predictions", required=True, help="output root with predictions/")
    parser.add_argument("--registry", default="registry")
    parser.add_argument("--model", default="credit_german")
    parser.add_argument("--approve", default="approve", help="the approving decision")
    args = parser.parse_args(argv)
    folder = os.path.join(args.predictions, "predictions", "pipeline=credit_scoring",
                          f"model_name={args.model}")
    if not os.path.isdir(folder):
        parser.error(f"no sampled predictions of {args.model} under {folder}")
    rows = ds.dataset(folder, partitioning="hive").to_table().to_pylist()
    version = max(r["model_version"] for r in rows)
    rows = [r for r in rows if r["model_version"] == version]
    [manifest_path] = glob.glob(os.path.join(args.registry, args.model, version,
                                             "manifest.json"))
    with open(manifest_path, encoding="utf-8") as handle:
        manifest = json.load(handle)
    fields = [f["name"] for f in manifest["input_schema"]]
    print(f"{args.model} {version}: calibrator {manifest.get('calibration', {}).get('method')} "
          f"(used: {manifest.get('calibration', {}).get('used')}); {len(rows)} sampled rows")
    print(f"{'week':<11}{'rows':>5}{'appl.':>6}{'AUC nannyml':>13}{'ours rows':>11}"
          f"{'ours appl.':>12}{'acc nannyml':>13}{'ours':>8}")
    weeks = {}
    for r in rows:
        day = r["event_time"].date()
        monday = day - datetime.timedelta(days=day.weekday())
        weeks.setdefault(monday.isoformat(), []).append(r)
    for week, members in sorted(weeks.items()):
        scores = np.asarray([r["score"] for r in members], dtype=float)
        p = apply_calibration(manifest.get("calibration"), scores)
        approved = np.asarray([r["decision"] == args.approve for r in members])
        applicants = [json.dumps([r.get(f) for f in fields], default=str) for r in members]
        theirs_auc = estimate_roc_auc(p, scores)
        theirs_acc = estimate_accuracy(approved.astype(int), p)
        rows_only = estimate(p, scores, approved)
        grouped = estimate(p, scores, approved, applicants)
        print(f"{week:<11}{len(members):>5}{len(set(applicants)):>6}{theirs_auc:>13.4f}"
              f"{rows_only['auc']:>11.4f}{grouped['auc']:>12.4f}{theirs_acc:>13.4f}"
              f"{grouped['accuracy']:>8.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
