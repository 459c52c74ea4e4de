#!/usr/bin/env bash
# ./run_local.sh        set up (.venv, install), train what the registry lacks, run the demo
# ./run_local.sh test   same set-up, then the whole pytest suite (extra args go to pytest)
set -euo pipefail
cd "$(dirname "$0")"

DATA_DIR=${BEAMLINE_DATA:-../shared/data}
REGISTRY=${BEAMLINE_REGISTRY:-registry}
OUT=${BEAMLINE_OUT:-out}
VENV=.venv
# The demo's radar UNets: shorter trainings than the defaults (dual-pol with weak labels: 1200
# synthetic + 2400 real windows, 8 epochs), done beside the credit steps; hold-out skills are
# printed. Fewer synthetic windows rather than fewer epochs: the real labels need the epochs
# (README, "Radar QC on real volumes").
RADAR_DEMO_TRAINING=${BEAMLINE_RADAR_TRAINING:---train_windows 400 --weak_windows 1600 --epochs 8}
RADAR_SINGLE_POL_DEMO_TRAINING=${BEAMLINE_RADAR_SINGLE_POL_TRAINING:---train_windows 400 --epochs 3}
# Loss weight of a real gate both reference algorithms call weather (README, "Radar QC on real
# volumes": higher removes less weather and less of everything else).
RADAR_WEAK_WEATHER_WEIGHT=${BEAMLINE_RADAR_WEAK_WEATHER_WEIGHT:-1}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
export PYTHONUNBUFFERED=1

# step NAME: the previous step ends and NAME begins; the closing summary lists every step's time.
STEP_NAME="" STEP_START=0 STEP_TIMES=""
step() {
  if [ -n "$STEP_NAME" ]; then
    STEP_TIMES="$STEP_TIMES$(printf '   %5ds  %s' $((SECONDS - STEP_START)) "$STEP_NAME")\n"
  fi
  STEP_NAME=$1 STEP_START=$SECONDS
}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    PY=$(command -v python3.11 || command -v python3)
    "$PY" -m venv "$VENV"
  fi
  # Reinstall only when setup.py changed since the last install.
  local stamp="$VENV/.installed-$(sha256sum setup.py | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e '.[test]'
    rm -f "$VENV"/.installed-* && touch "$stamp"
  fi
}

start_offer_service() {
  local port_file
  port_file=$(mktemp)
  rm -f "$port_file"
  "$VENV/bin/python" -m services.bank_offers --port 0 --port_file "$port_file" "$@" \
    > "$OUT/offer_service.log" 2>&1 &
  SERVICE_PIDS="${SERVICE_PIDS:-} $!"
  # Services this script started stop with it, whatever way it ends.
  trap 'kill $SERVICE_PIDS 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do [ -s "$port_file" ] && break; sleep 0.1; done
  OFFER_URL="http://127.0.0.1:$(cat "$port_file")"
  rm -f "$port_file"
}

# The serving function and the interactive offers API, started for real on free 127.0.0.1
# ports; a few hundred applicants at 50/s; SIGTERM flushes the sampled online rows, which the
# scheduled evaluation then reads like any pipeline's.
serving_demo() {
  local online="$OUT/online" port server_pid api_pid port_file
  rm -rf "$online" && mkdir -p "$online"
  port=$("$VENV/bin/python" -c 'import socket; s = socket.socket()
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  echo "== serving function (TF Serving REST) on 127.0.0.1:$port, offers API in front of it"
  "$VENV/bin/python" -m services.model_server --registry "$REGISTRY" --port "$port" \
    > "$OUT/model_server.log" 2>&1 &
  server_pid=$! && SERVICE_PIDS="$SERVICE_PIDS $server_pid"
  port_file=$(mktemp) && rm -f "$port_file"
  "$VENV/bin/python" -m services.offers_api --registry "$REGISTRY" --port 0 \
    --port_file "$port_file" --model_endpoint "http://127.0.0.1:$port" \
    --offer_url "$OFFER_URL" --output "$online" --sample_rate 0.5 > "$OUT/offers_api.log" 2>&1 &
  api_pid=$! && SERVICE_PIDS="$SERVICE_PIDS $api_pid"
  for _ in $(seq 1 300); do [ -s "$port_file" ] && break; sleep 0.1; done
  "$VENV/bin/python" - "http://127.0.0.1:$port/v1/models/credit_german" <<'PY'
import sys, time, requests
for _ in range(600):  # the serving function is up once it answers its status
    try:
        requests.get(sys.argv[1], timeout=60)  # the first status loads the version
        break
    except requests.RequestException:
        time.sleep(0.1)
PY
  "$VENV/bin/python" -m bench.serving --offers_url "http://127.0.0.1:$(cat "$port_file")" \
    --rate 50 --count 300 --data "$DATA_DIR/credit/german.data"
  kill -TERM "$api_pid" && wait "$api_pid" || true
  kill -TERM "$server_pid" && wait "$server_pid" || true
  rm -f "$port_file"
  "$VENV/bin/python" - "$DATA_DIR/credit/german.data" "$online/truth.jsonl" <<'PY'
import json, sys
from models.credit.dataset import load_dataset, read_data
labels = read_data(load_dataset("credit_german"), sys.argv[1]).labels
with open(sys.argv[2], "w") as f:  # outcomes known later, for the evaluation of online rows
    for i in range(300):
        label = int(labels[i % len(labels)])
        f.write(json.dumps({"prediction_id": f"online-{i:07d}", "label": label,
                            "label_time": "2026-12-20T00:00:00+00:00"}) + "\n")
PY
  echo "== the scheduled evaluation reads the online rows like any pipeline's"
  "$VENV/bin/python" -m pipelines.evaluate --predictions "$online" --truth "$online/truth.jsonl" \
    --registry "$REGISTRY" --output "$online" --no_snapshot 2>/dev/null | grep "joined\|report"
}

# decide PIPELINE PREDICTIONS_ROOT TRUTH: evaluate with --decide; sets REPORT and DECISION.
# Exit status 3 means "retrain"; anything else but 0 is an error and stops the demo.
decide() {
  local status=0 log
  log=$(mktemp)
  "$VENV/bin/python" -m pipelines.evaluate --pipeline "$1" --predictions "$2" --truth "$3" \
    --registry "$REGISTRY" --output "$2" --decide > "$log" 2>&1 || status=$?
  grep -v "^WARNING\|^INFO\|GCSFileSystem" "$log" || true
  REPORT=$(sed -n 's/^  report:  //p' "$log")
  rm -f "$log"
  case $status in
    0) DECISION="no retraining" ;;
    3) DECISION="RETRAIN (exit status 3)" ;;
    *) echo "evaluation failed with exit status $status" >&2; exit "$status" ;;
  esac
}

# Six weeks of applicants; from week 4 young applicants without credit history surge, amounts
# inflate 30 % and one slice's outcomes worsen. Requests are streamed, sampled, evaluated
# against the outcomes that arrive later, and a retraining decision is taken; an unshifted
# replay of the same six weeks is the control.
evaluation_demo() {
  local eval_out="$OUT/evaluation_demo" landing="$OUT/landing_evaluation"
  rm -rf "$eval_out" "$landing" && mkdir -p "$eval_out/shifted" "$eval_out/unshifted" "$landing"
  echo "== evaluation demo: six weeks of 1000 requests from applicants the model never saw,"
  echo "   shifted from week 4 (surge of young applicants without credit history, amounts +30 %,"
  echo "   worse outcomes for young applicants and one slice); truth arrives later"
  "$VENV/bin/python" -m models.credit.scenarios --config credit_german \
    --data "$DATA_DIR/credit/german.data" --per_week 1000 --holdout_only \
    --scenario young_no_history_surge,amounts_inflate,slice_outcomes_worsen,young_outcomes_worsen \
    --requests "$eval_out/shifted/requests.jsonl" --truth "$eval_out/shifted/truth.jsonl"
  "$VENV/bin/python" -m models.credit.scenarios --config credit_german \
    --data "$DATA_DIR/credit/german.data" --per_week 1000 --holdout_only --scenario none \
    --requests "$eval_out/unshifted/requests.jsonl" \
    --truth "$eval_out/unshifted/truth.jsonl"

  echo "== streaming the shifted requests through credit scoring (daily output files)"
  "$VENV/bin/python" -m pipelines.credit_scoring --streaming --input_dir "$landing" \
    --registry "$REGISTRY" --output "$eval_out/shifted" --sample_rate 0.5 --window_secs 86400 \
    --stop_after_secs 20 --poll_secs 1 &
  local pipeline_pid=$!
  sleep 5
  cp "$eval_out/shifted/requests.jsonl" "$landing/.requests.tmp"
  mv "$landing/.requests.tmp" "$landing/requests.jsonl"
  wait "$pipeline_pid"
  echo "== the unshifted replay, batch"
  "$VENV/bin/python" -m pipelines.credit_scoring --input "$eval_out/unshifted/requests.jsonl" \
    --registry "$REGISTRY" --output "$eval_out/unshifted" --sample_rate 0.5

  echo "== evaluate -> decide -> report: shifted"
  decide credit_scoring "$eval_out/shifted" "$eval_out/shifted/truth.jsonl"
  SHIFTED_REPORT=$REPORT SHIFTED_DECISION=$DECISION
  echo "== evaluate -> decide -> report: unshifted"
  decide credit_scoring "$eval_out/unshifted" "$eval_out/unshifted/truth.jsonl"
  sql_evaluation "$eval_out/shifted"
  UNSHIFTED_REPORT=$REPORT UNSHIFTED_DECISION=$DECISION
  loop_demo "$eval_out/shifted"
}

# The loop after a RETRAIN: train on the snapshot the evaluation kept (its newest week held
# out), compare challenger and champion on that week, promote if the rules accept, score the
# newest week with production, and roll back in one command.
loop_demo() {
  local shifted=$1 latest="$1/evaluation/latest_credit_scoring_credit_german.json"
  local snapshot until challenger status=0
  read -r snapshot until < <("$VENV/bin/python" -c '
import json, sys
decision = json.load(open(sys.argv[1]))["decision"] or {}
print(decision.get("snapshot") or "-", decision.get("window_start") or "-")' "$latest")
  if [ "$snapshot" = "-" ]; then
    echo "== the loop: the evaluation kept no snapshot; nothing to retrain on"
    return
  fi
  echo "== the loop: retrain on base data + snapshot $snapshot, holding out the week of $until"
  "$VENV/bin/python" -m models.credit.train --config credit_german \
    --data "$DATA_DIR/credit/german.data" --registry "$REGISTRY" --snapshot "$snapshot" \
    --until "$until" | tee "$OUT/demo_inputs/retrain.log"
  challenger=$(sed -n 's/^published credit_german \(v[0-9]*\) .*/\1/p' \
    "$OUT/demo_inputs/retrain.log")
  shadow_demo "$shifted" "$challenger" "$until"
  echo "== challenger $challenger against the champion (production) on the held-out week"
  "$VENV/bin/python" -m models.credit.compare --registry "$REGISTRY" --model credit_german \
    --challenger "$challenger" --promote || status=$?
  local record
  record=$(ls "$REGISTRY"/credit_german/promotions/*-"$challenger"-vs-*.json | tail -1)
  case $status in
    0) LOOP_RESULT="challenger $challenger accepted and promoted" ;;
    4) echo "== refused by the rules; an operator who reviewed the evidence promotes it anyway,"
       echo "   and the audit log keeps why and the decision record"
       "$VENV/bin/python" -m models.promotion promote --registry "$REGISTRY" \
         --model credit_german --version "$challenger" --decision "$record" \
         --reason "reviewed: gaps follow the changed outcomes of young applicants"
       LOOP_RESULT="challenger $challenger refused by the rules, promoted after review" ;;
    *) echo "comparison failed with exit status $status" >&2; exit "$status" ;;
  esac
  echo "== the shifted requests scored again by whatever production is now"
  "$VENV/bin/python" -m pipelines.credit_scoring --input "$shifted/requests.jsonl" \
    --registry "$REGISTRY" --output "$OUT/loop_demo" --sample_rate 0.2 --run_id loop-demo
  "$VENV/bin/python" -m models.promotion status --registry "$REGISTRY" --model credit_german \
    | sed -n '/"aliases"/,/}/p'
  echo "== rollback in one command: production back to the version it replaced"
  "$VENV/bin/python" -m models.promotion rollback --registry "$REGISTRY" --model credit_german
  LOOP_RESULT="$LOOP_RESULT, then rolled back"
}

# shadow_demo SHIFTED CHALLENGER UNTIL: the challenger as production's shadow on the requests
# of the held-out week (which it never trained on): both score every request, the shadow's
# answers go to the sampled rows only, the evaluation shows both on the same rows, and the
# comparison is judged once more on those live rows.
shadow_demo() {
  local shifted=$1 challenger=$2 until=$3 live="$OUT/shadow_demo"
  rm -rf "$live" && mkdir -p "$live"
  echo "== $challenger becomes the shadow of production before any decision; the held-out"
  echo "   week's requests are scored by both (responses and offers: production's alone)"
  "$VENV/bin/python" -m models.promotion promote --registry "$REGISTRY" --model credit_german \
    --version "$challenger" --alias shadow --reason "candidate scored beside production"
  "$VENV/bin/python" - "$shifted/requests.jsonl" "$until" "$live/requests.jsonl" <<'PY'
import json, sys
source, until, target = sys.argv[1:]
with open(source) as f, open(target, "w") as out:
    for line in f:
        if json.loads(line)["event_time"][:10] >= until[:10]:
            out.write(line)
PY
  "$VENV/bin/python" -m pipelines.credit_scoring --input "$live/requests.jsonl" \
    --registry "$REGISTRY" --output "$live" --sample_rate 0.5 --run_id shadow-demo
  "$VENV/bin/python" -m pipelines.evaluate --pipeline credit_scoring --predictions "$live" \
    --truth "$shifted/truth.jsonl" --registry "$REGISTRY" --output "$live" \
    --run_id shadow-demo-eval --window all | grep -E "joined|report:" || true
  "$VENV/bin/python" - "$live" <<'PY'
import sys
import pyarrow.dataset as ds
rows = ds.dataset(f"{sys.argv[1]}/evaluation/metrics", partitioning="hive").to_table().to_pylist()
cells = {(r["model_version"], r["role"], r["metric"]): r for r in rows
         if r["window"] == "all" and r["slice"] == "all" and r["detail"] is None}
print("   side by side on the same labelled rows (whole week):")
print(f"   {'version':<8}{'role':<8}{'rows':>6}{'auc':>8}{'log_loss':>10}{'approval':>10}")
for (version, role) in sorted({(v, r) for v, r, _ in cells}):
    get = lambda m: cells.get((version, role, m), {}).get("value")
    print(f"   {version:<8}{role:<8}{cells[(version, role, 'labelled')]['count']:>6}"
          f"{get('auc'):>8.3f}{get('log_loss'):>10.3f}{get('approval_rate'):>10.3f}")
PY
  echo "== challenger $challenger against production judged on the shadow's live rows"
  "$VENV/bin/python" -m pipelines.compare --registry "$REGISTRY" --model_name credit_german \
    --challenger "$challenger" --shadow_evidence "$live" \
    --shadow_truth "$shifted/truth.jsonl" | grep -v "^  decision record" || true
}

# train_credit_if_missing MODEL DATA: train config/datasets/MODEL.json on DATA unless the
# registry has a production version of MODEL already (a first version takes production).
train_credit_if_missing() {
  if [ ! -f "$REGISTRY/$1/aliases/production.json" ]; then
    echo "== training $1 from config/datasets/$1.json (registry $REGISTRY has none)"
    "$VENV/bin/python" -m models.credit.train --config "$1" --data "$2" --registry "$REGISTRY"
  fi
}

# A second data set, described by configuration alone (config/datasets/credit_crx.json):
# its own model, request fields, offer rules and output folders.
crx_demo() {
  train_credit_if_missing credit_crx "$DATA_DIR/credit/crx.data"
  echo "== credit scoring, batch: 690 replayed Credit Approval applicants (model credit_crx)"
  "$VENV/bin/python" -m models.credit.replay --config credit_crx \
    --data "$DATA_DIR/credit/crx.data" --out "$OUT/demo_inputs/crx/requests.jsonl" \
    --count 690 --id_prefix crx
  "$VENV/bin/python" -m pipelines.credit_scoring --input "$OUT/demo_inputs/crx/requests.jsonl" \
    --model_name credit_crx --registry "$REGISTRY" --output "$OUT" --offer_url "$OFFER_URL" \
    --offer_timeout_secs 1 --sample_rate 0.2
}

# The radar UNet trains in the background while the credit steps run (they wait on services
# and streaming windows more than they compute); the radar steps wait for it.
start_radar_training() {
  RADAR_TRAIN_PID=""
  local missing=""
  for polarization in dual single; do
    local name=radar_qc
    [ "$polarization" = single ] && name=radar_qc_single
    [ -f "$REGISTRY/$name/aliases/production.json" ] || missing="$missing $polarization"
  done
  if [ -n "$missing" ]; then
    echo "== training the radar QC UNets ($missing ) in the background: the dual-pol one on"
    echo "   synthetic sweeps plus the KLOT volume's sweeps labelled by the reference algorithms'"
    echo "   consensus (so KLBB is the radar its real-data skill is measured on), the single-pol"
    echo "   one on synthetic sweeps ($RADAR_DEMO_TRAINING; $RADAR_SINGLE_POL_DEMO_TRAINING;"
    echo "   log $OUT/radar_training.log)"
    # One after the other: two trainings at once would share the same cores.
    (
      for polarization in $missing; do
        if [ "$polarization" = dual ]; then
          # shellcheck disable=SC2086 - the training options are words
          "$VENV/bin/python" -m transforms.radar.weak_labels --registry "$REGISTRY" \
            --weak_labels "$DATA_DIR/radar/nexrad_chunks_KLOT" \
            --weak_weather_weight "$RADAR_WEAK_WEATHER_WEIGHT" $RADAR_DEMO_TRAINING || exit 1
        else
          # shellcheck disable=SC2086 - the training options are words
          "$VENV/bin/python" -m models.radar_qc.train --registry "$REGISTRY" \
            --polarization single $RADAR_SINGLE_POL_DEMO_TRAINING || exit 1
        fi
      done
    ) > "$OUT/radar_training.log" 2>&1 &
    RADAR_TRAIN_PID=$!
    SERVICE_PIDS="${SERVICE_PIDS:-} $RADAR_TRAIN_PID"  # stopped with the script, however it ends
    trap 'kill $SERVICE_PIDS 2>/dev/null || true' EXIT
  fi
}

wait_for_radar_training() {
  if [ -n "$RADAR_TRAIN_PID" ]; then
    step "radar UNet training (waited for)"
    echo "== waiting for the radar UNet training"
    if ! wait "$RADAR_TRAIN_PID"; then
      tail -20 "$OUT/radar_training.log" >&2
      echo "radar training failed (log $OUT/radar_training.log)" >&2
      exit 1
    fi
    grep -A2 "^published" "$OUT/radar_training.log" | sed 's/^/   /'
  fi
}

# The evaluation as a warehouse user runs it: sql/credit_german_evaluation.sql on DuckDB over
# the shifted run's Parquet folders and truth file (the same figures as pipelines.evaluate).
sql_evaluation() {
  echo "== the same evaluation in SQL (DuckDB over the Parquet folders): AUC and approval rate"
  echo "   per week, and the largest approval-rate gap, from sql/credit_german_evaluation.sql"
  "$VENV/bin/python" - "$1" <<'PY'
import sys
import duckdb
run = sys.argv[1]
db = duckdb.connect()
db.execute("SET TimeZone = 'UTC'")
db.execute(f"""CREATE VIEW predictions AS SELECT * FROM read_parquet(
    '{run}/predictions/pipeline=credit_scoring/model_name=credit_german/**/*.parquet',
    hive_partitioning = true, union_by_name = true)""")
db.execute(f"""CREATE VIEW truth AS SELECT prediction_id, TRY_CAST(label AS DOUBLE) AS label,
    TRY_CAST(label_time AS TIMESTAMPTZ) AS label_time FROM read_json_auto('{run}/truth.jsonl',
    format = 'newline_delimited', ignore_errors = true)""")
db.execute("CREATE TABLE figures AS " + open("sql/credit_german_evaluation.sql").read())
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
print(f"   largest weekly approval-rate gap (group and rest of 30+ rows): {gap[0]}={gap[1]} "
      f"{gap[4]:+} against the rest ({gap[2]}, week of {gap[3]}, {gap[5]} rows)")
PY
}

# The key of the national-id pseudonyms (config/datasets/credit_german.json reads it from
# BEAMLINE_PII_KEY): given, or generated once into .secrets/ (ignored by git, readable by the
# owner only). The same key must be used by every run whose pseudonyms are to be joined.
pii_key() {
  if [ -z "${BEAMLINE_PII_KEY:-}" ]; then
    if [ ! -s .secrets/pii.key ]; then
      (umask 077 && mkdir -p .secrets && "$VENV/bin/python" -c \
        'import secrets; print(secrets.token_hex(32))' > .secrets/pii.key)
      echo "== generated the pseudonymisation key .secrets/pii.key (keep it; back it up)"
    fi
    BEAMLINE_PII_KEY=$(cat .secrets/pii.key)
    export BEAMLINE_PII_KEY
  fi
}

demo() {
  pii_key
  if [ ! -f "$DATA_DIR/credit/german.data" ]; then
    echo "missing $DATA_DIR/credit/german.data (set BEAMLINE_DATA to the shared data folder)" >&2
    exit 1
  fi
  mkdir -p "$OUT/demo_inputs/crx"
  start_radar_training
  step "credit model training, demo inputs"
  train_credit_if_missing credit_german "$DATA_DIR/credit/german.data"

  echo "== demo requests: 5000 replayed German credit applicants, one in ten with the name,"
  echo "   national id and phone the bank's front end sends, + a few bad lines (malformed,"
  echo "   mistyped, with personal data, not an object, nested 5,000 levels deep, one request"
  echo "   delivered twice)"
  "$VENV/bin/python" -m models.credit.replay --config credit_german \
    --data "$DATA_DIR/credit/german.data" --out "$OUT/demo_inputs/requests.jsonl" --count 5000 \
    --spacing_secs 300
  "$VENV/bin/python" - "$OUT/demo_inputs/requests.jsonl" <<'PY'
import json, sys
path = sys.argv[1]
requests = [json.loads(line) for line in open(path)]
with open(path, "w") as f:
    for i, request in enumerate(requests):
        if i % 10 == 0:  # pass-through personal data (config/datasets/credit_german.json)
            request.update(applicant_name=f"Demo Applicant {i}", national_id=f"DE-DEMO-{i:06d}",
                           phone=f"+49 30 5550{i:04d}")
        f.write(json.dumps(request) + "\n")
PY
  cat > "$OUT/demo_inputs/bad_requests.jsonl" <<'JSONL'
{"request_id": "bad-json", "event_time": 
{"request_id": "bad-type", "event_time": "2026-11-01T00:00:00+00:00", "duration_months": "twelve"}
{"request_id": "bad-pii", "event_time": "2026-11-01T00:00:00+00:00", "applicant_name": "Erika Mustermann", "national_id": "DE-123456789", "duration_months": "twelve"}
{"request_id": "bad-json-pii", "applicant_name": "Max Mustermann", "national_id": "DE-987654321",
["not", "an", "object"]
JSONL
  # A line nested 5,000 levels deep (once enough to fail a whole job) and a request delivered
  # twice (at-least-once delivery): each must end as one dead letter, nothing else lost.
  "$VENV/bin/python" -c 'print("{\"a\":" * 5000 + "1" + "}" * 5000)' \
    >> "$OUT/demo_inputs/bad_requests.jsonl"
  head -1 "$OUT/demo_inputs/requests.jsonl" >> "$OUT/demo_inputs/bad_requests.jsonl"

  echo "== bank offers service (5% of calls fail with 500/429/timeouts, 1% of applicants rejected)"
  start_offer_service --fail_rate 0.05 --poison_fraction 0.01 --latency_ms 2 --hang_secs 3
  echo "   listening on $OFFER_URL"

  step "credit scoring, batch"
  echo "== credit scoring, batch"
  "$VENV/bin/python" -m pipelines.credit_scoring --input "$OUT/demo_inputs/*.jsonl" \
    --registry "$REGISTRY" --output "$OUT" --offer_url "$OFFER_URL" --offer_timeout_secs 1 \
    --sample_rate 0.2

  step "credit scoring, streaming"
  echo "== credit scoring, streaming: a landing directory receives three files while it runs"
  local landing="$OUT/landing"
  rm -rf "$landing" && mkdir -p "$landing"
  "$VENV/bin/python" -m pipelines.credit_scoring --streaming --input_dir "$landing" \
    --registry "$REGISTRY" --output "$OUT" --offer_url "$OFFER_URL" --offer_timeout_secs 1 \
    --sample_rate 0.2 --stop_after_secs 30 --poll_secs 1 &
  local pipeline_pid=$!
  for part in 1 2 3; do
    sleep 6
    "$VENV/bin/python" -m models.credit.replay --config credit_german \
      --data "$DATA_DIR/credit/german.data" --out "$landing/.part$part.tmp" --count 300 \
      --id_prefix "stream$part" \
      --start "2026-11-2${part}T00:00:00+00:00" > /dev/null
    mv "$landing/.part$part.tmp" "$landing/part$part.jsonl"  # appear complete, atomically
    echo "   landed $landing/part$part.jsonl"
  done
  wait "$pipeline_pid"

  step "second data set (credit_crx)"
  crx_demo
  step "serving function + offers API"
  serving_demo
  step "evaluation, retraining loop"
  evaluation_demo

  step "backfill + explain"
  echo "== backfill: the demo requests re-scored with the pinned model v0001 (own folder)"
  local backfill="$OUT/backfills/backfill-demo-credit-v0001"
  "$VENV/bin/python" -m pipelines.credit_scoring --input "$OUT/demo_inputs/requests.jsonl" \
    --registry "$REGISTRY" --output "$OUT" --run_mode backfill \
    --run_id backfill-demo-credit-v0001 --model_version v0001 --sample_rate 1.0
  echo "== explain one old decision, then replay every prediction of the backfill"
  "$VENV/bin/python" -m pipelines.explain --prediction_id req-0000042 \
    --predictions "$backfill" --registry "$REGISTRY"
  "$VENV/bin/python" -m pipelines.explain --all --predictions "$backfill" --registry "$REGISTRY"

  wait_for_radar_training
  step "radar QC, batch"
  echo "== radar QC, batch: the KLBB archive volume, the same volume as a single-polarization"
  echo "   radar records it (ODIM_H5: DBZH, VRADH, WRADH; for the single-pol model), and one"
  echo "   file that is not radar data; written as CF/Radial 2, CF/Radial 1.4 and ODIM_H5"
  mkdir -p "$OUT/demo_radar"
  ln -sf "$(cd "$DATA_DIR/radar" && pwd)/KLBB20160601_150025_V06" "$OUT/demo_radar/"
  head -c 100000 /dev/urandom > "$OUT/demo_radar/corrupt_V06"
  "$VENV/bin/python" -m transforms.radar.synthetic_volumes \
    --template "$DATA_DIR/radar/KLBB20160601_150025_V06" \
    --single_pol_copy "$OUT/demo_radar/KLBB_single_pol.h5"
  "$VENV/bin/python" -m pipelines.radar_qc --input "$OUT/demo_radar/*" \
    --registry "$REGISTRY" --output "$OUT" --sample_rate 1.0 \
    --output_formats cfradial2,cfradial1,odim

  step "radar QC against reference algorithms"
  echo "== the UNet on the real KLBB and KLOT volumes against wradlib's fuzzy echo"
  echo "   classification and the RHOHV rule (no per-gate truth exists for real volumes); KLOT"
  echo "   is refused: the model was trained on its weak labels"
  "$VENV/bin/python" -m pipelines.radar_reference --registry "$REGISTRY" --output "$OUT" \
    --input "$DATA_DIR/radar/KLBB20160601_150025_V06" \
    --chunk_volumes "$DATA_DIR/radar/nexrad_chunks_KLOT" | tee "$OUT/radar_reference.log"
  RADAR_REFERENCE_REPORT=$(sed -n 's/^  report:  //p' "$OUT/radar_reference.log")

  step "radar QC, synthetic truth + evaluation"
  echo "== radar QC of two synthetic volumes with known truth, then their evaluation"
  "$VENV/bin/python" -m transforms.radar.synthetic_volumes \
    --template "$DATA_DIR/radar/KLBB20160601_150025_V06" --out_dir "$OUT/demo_radar_synthetic" \
    --truth "$OUT/demo_inputs/radar_truth.parquet" --count 2
  "$VENV/bin/python" -m pipelines.radar_qc --input "$OUT/demo_radar_synthetic/*.nc" \
    --registry "$REGISTRY" --output "$OUT" --sample_rate 1.0
  decide radar_qc "$OUT" "$OUT/demo_inputs/radar_truth.parquet"
  RADAR_REPORT=$REPORT RADAR_DECISION=$DECISION

  step "radar QC, streaming"
  echo "== radar QC, streaming: the KLOT real-time chunks land one by one, shuffled"
  local chunk_landing="$OUT/landing_chunks"
  rm -rf "$chunk_landing" "$chunk_landing.staging" && mkdir -p "$chunk_landing"
  "$VENV/bin/python" -m pipelines.radar_qc --streaming --chunk_dir "$chunk_landing" \
    --registry "$REGISTRY" --output "$OUT" --sample_rate 1.0 --stop_after_secs 40 \
    --poll_secs 1 --chunk_timeout_secs 30 &
  pipeline_pid=$!
  sleep 8
  "$VENV/bin/python" -m services.chunk_feed --chunks "$DATA_DIR/radar/nexrad_chunks_KLOT" \
    --landing "$chunk_landing" --radar KLOT --delay_secs 0.1 --shuffle_seed 1
  wait "$pipeline_pid"

  step ""

  echo
  echo "== outputs"
  echo "   QC'd radar volumes:  $OUT/volumes/ (CF/Radial 2 NetCDF; CF/Radial 1.4, ODIM_H5)"
  echo "   radar quicklooks:    $OUT/quicklooks/"
  echo "   radar volume index:  $OUT/qc_volumes/"
  echo "   responses:           $OUT/responses/"
  echo "   sampled predictions: $OUT/predictions/"
  echo "   dead letters:        $OUT/dead_letters/"
  echo "   model registry:      $REGISTRY/"
  "$VENV/bin/python" - "$OUT" <<'PY'
import sys
import pyarrow.dataset as ds
import glob
out = sys.argv[1]
# One folder per model: each holds one schema and reads as one table.
folders = sorted(glob.glob(f"{out}/responses/model_name=*")
                 + glob.glob(f"{out}/predictions/pipeline=*/model_name=*")
                 + [f"{out}/qc_volumes"])
for folder in folders:
    rows = ds.dataset(folder, partitioning="hive").count_rows()
    print(f"   {rows:>6} rows  {folder}")
for folder in sorted(glob.glob(f"{out}/dead_letters/pipeline=*/model_name=*")):
    dead = ds.dataset(folder, partitioning="hive").to_table(columns=["stage", "message"])
    counts = dead.group_by(["stage"]).aggregate([([], "count_all")])
    stages = ", ".join(f"{r['stage']} {r['count_all']}" for r in counts.to_pylist())
    print(f"   dead letters {folder.split('dead_letters/')[1]}: {stages}")
    shown = set()
    for row in dead.to_pylist():  # one reason per kind, e.g. the 5,000-level line
        kind = (row["stage"], row["message"][:24])
        if kind not in shown and len(shown) < 8:
            shown.add(kind)
            print(f"      {row['stage']:<10} {row['message'][:88]}")

# Personal data: every name, national id and phone the demo's requests carried, looked for in
# the decoded values of every credit output (not in bytes: Parquet pages are compressed).
import json
import pyarrow.parquet as pq
secrets = set()
for path in glob.glob(f"{out}/demo_inputs/*.jsonl"):
    for line in open(path):
        try:
            request = json.loads(line)
        except (ValueError, RecursionError):  # the bad lines, one nested 5,000 levels
            request = {}
        if isinstance(request, dict):
            secrets |= {str(request[k]) for k in ("applicant_name", "national_id", "phone")
                        if k in request}
# The bad lines' own (one of them is not JSON, so it is not read above).
secrets |= {"Erika Mustermann", "DE-123456789", "Max Mustermann", "DE-987654321"}
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
print(f"   personal data: {len(secrets)} names, national ids and phones in the requests; "
      f"{leaks} found in the decoded values of {len(files)} credit output files (names and "
      f"phones dropped, national ids stored as keyed HMAC pseudonyms, a line that is not JSON "
      f"kept as its length and keyed hash)")
for path in sorted(__import__("glob").glob(f"{out}/quicklooks/*/*/*.png")):
    print(f"   quicklook: {path}")
PY
  echo
  echo "== evaluation reports (open in a browser)"
  echo "   credit, shifted scenario:   $SHIFTED_REPORT"
  echo "     decision: $SHIFTED_DECISION"
  echo "   credit, unshifted replay:   $UNSHIFTED_REPORT"
  echo "     decision: $UNSHIFTED_DECISION"
  echo "   the loop: $LOOP_RESULT (decision records in $REGISTRY/credit_german/promotions/)"
  echo "   radar QC, synthetic truth (and the real volumes' figures):  $RADAR_REPORT"
  echo "     decision: $RADAR_DECISION"
  echo "   radar QC, real volumes against reference algorithms: $RADAR_REFERENCE_REPORT"
  echo
  echo "== time per step (demo total $((SECONDS - DEMO_START)) s after set-up)"
  printf "%b" "$STEP_TIMES"
}

setup
DEMO_START=$SECONDS
case "${1:-demo}" in
  test) shift; exec "$VENV/bin/python" -m pytest "$@" ;;
  demo) demo ;;
  *) echo "usage: $0 [test [pytest args]]" >&2; exit 2 ;;
esac
