"""The rows of the credit pipeline: from a model prediction to a response, a sampled
prediction or a dead letter. Pure functions; the pipeline module only wires them.

Two shapes of the same rows: a dict per request (the interactive offers API) and an Arrow
record batch of many requests (the Beam pipeline's element type). The batch functions compute
the same values column by column; tests hold them to the dict functions.
"""

import datetime
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.config import ConfigError
from models.credit.dataset import NUMERIC
from models.registry import identity_from_path
from transforms.common.dead_letters import dead_letter
from transforms.common.inference import failure_reason
from transforms.common.parquet_sink import utc_date
from transforms.common.predictions import COMMON_FIELDS, TIMESTAMP, predictions_schema
from transforms.credit.requests import CreditRequest
from transforms.credit.rules import (
    APPROVE,
    OfferRules,
    choose_bank,
    choose_banks,
    decide,
    decide_many,
)

NOT_REQUESTED, NO_BANK = "not_requested", "no_bank"

_OUTPUT_FIELDS = (
    pa.field("score", pa.float64()),
    pa.field("decision", pa.string()),
    pa.field("bank", pa.string()),
    pa.field("offer_status", pa.string()),
    pa.field("offer_id", pa.string()),
    pa.field("offer_apr", pa.float64()),
    pa.field("offer_monthly_payment", pa.float64()),
    pa.field("offer_rates_version", pa.string()),
    pa.field("offer_error_class", pa.string()),
    pa.field("offer_error", pa.string()),
    pa.field("rules_version", pa.string()),
    # The pseudonymisation key's fingerprint (transforms.credit.privacy.key_fingerprint), null
    # for a data set without one: pseudonyms join only within one key.
    pa.field("pii_key_id", pa.string()),
)


# A shadow version's answer for the same request: only ever in the sampled prediction row,
# never in a response, an offer call or a decision (null when no shadow is set or it failed).
SHADOW_FIELDS = (
    pa.field("shadow_model_version", pa.string()),
    pa.field("shadow_model_sha256", pa.string()),
    pa.field("shadow_score", pa.float64()),
    pa.field("shadow_decision", pa.string()),
)


def prediction_schema(kinds: dict[str, str]) -> pa.Schema:
    """Sampled predictions: common columns, every raw input as the model saw it (the served
    data set's fields, ``{name: kind}``), every output.

    Raises:
        ConfigError: a data set field takes the name of a column the row already has.
    """
    taken = {f.name for f in (*COMMON_FIELDS, *_OUTPUT_FIELDS, *SHADOW_FIELDS)} | {
        "request_id", "received_at"}
    clashing = sorted(set(kinds) & taken)
    if clashing:
        raise ConfigError(f"data set fields {', '.join(clashing)} clash with prediction "
                          f"columns; rename them in the data set configuration")
    raw = (pa.field(name, pa.float64() if kind == NUMERIC else pa.string())
           for name, kind in kinds.items())
    return predictions_schema(*raw, *_OUTPUT_FIELDS, *SHADOW_FIELDS)


def scored_schema(kinds: dict[str, str]) -> pa.Schema:
    """A scored request batch: the sampled-prediction columns plus what responses and dead
    letters need beside them (request id, when it was read, where it came from)."""
    extra = [pa.field("request_id", pa.string(), nullable=False),
             pa.field("received_at", TIMESTAMP), pa.field("origin", pa.string())]
    return pa.schema([*prediction_schema(kinds), *extra])


# Responses: one per request that got through, partitioned by event date.
_COMMON = {f.name: f for f in COMMON_FIELDS}
RESPONSE_SCHEMA = pa.schema([
    pa.field("request_id", pa.string(), nullable=False),
    _COMMON["event_time"], _COMMON["processed_at"],
    *_OUTPUT_FIELDS,
    *(_COMMON[name] for name in ("model_name", "model_version", "model_sha256", "code_version",
                                 "run_mode", "run_id", "latency_ms", "dt")),
])
# One folder per model (data set): every folder holds one schema.
RESPONSE_PARTITIONS = ("model_name", "dt")


def request_key(request: CreditRequest) -> tuple:
    """What travels beside the features through RunInference (the keyed handler's key)."""
    return (request.request_id, request.event_time, request.received_at, request.origin)


def request_json(key: tuple, fields: dict) -> str:
    """The request re-serialised as the JSON a client would send (for dead letters)."""
    request_id, event_time = key[0], key[1]
    return json.dumps({"request_id": request_id, "event_time": event_time.isoformat(),
                       **fields}, sort_keys=True)


def scored_row(key: tuple, fields: dict, score: float, model_id: str, context: dict,
               rules: OfferRules) -> dict:
    """A prediction with its decision and chosen bank, plus everything to evaluate it later.

    Args:
        key: ``request_key`` of the request.
        fields: the raw applicant fields the model saw.
        score: the model's probability of a good credit risk.
        model_id: the model path reported by RunInference (it carries the version).
        context: run constants: pipeline, run_mode, run_id, code_version, ``models``
            mapping each model path to (name, version, sha256), and ``pii_key_id`` (the
            pseudonymisation key's fingerprint, or None).
        rules: the offer rules in force.
    """
    request_id, event_time, received_at, _ = key
    model_name, model_version, model_sha256 = model_identity(model_id, context)
    # Decided on the score as stored (float64): a float32 compared with a Python float is
    # compared in float32 by NumPy, which could approve a stored score below the threshold.
    score = float(score)
    decision = decide(score, rules)
    bank = choose_bank(score, fields, rules) if decision == APPROVE else None
    return {
        "prediction_id": request_id,
        "request_id": request_id,
        "event_time": event_time,
        "received_at": received_at,
        "pipeline": context["pipeline"],
        "run_mode": context["run_mode"],
        "run_id": context["run_id"],
        "model_name": model_name,
        "model_version": model_version,
        "model_sha256": model_sha256,
        "code_version": context["code_version"],
        "rules_version": rules.version,
        "pii_key_id": context.get("pii_key_id"),
        **fields,
        "score": score,
        "decision": decision,
        "bank": bank,
        # Rules without banks (no offer rules file) ask none: nothing was requested.
        "offer_status": (NO_BANK if decision == APPROVE and bank is None and rules.banks
                         else NOT_REQUESTED),
        "dt": utc_date(event_time),
    }


def scored_batch(requests: pa.RecordBatch, scores: np.ndarray, model_id: str, context: dict,
                 rules: OfferRules, schema: pa.Schema) -> pa.RecordBatch:
    """``scored_row`` for a record batch of requests (``request_batch_schema``) at once.

    Args:
        requests: the validated requests.
        scores: the model's probability of a good credit risk, one per row.
        model_id, context, rules: as ``scored_row``.
        schema: ``scored_schema`` of the served data set.
    """
    n = requests.num_rows
    scores = np.asarray(scores, dtype=np.float32).astype(np.float64)
    model_name, model_version, model_sha256 = model_identity(model_id, context)
    decisions = decide_many(scores, rules)
    quote = {q: requests.column(name).to_pylist() for q, name in rules.fields.items()}
    banks = choose_banks(scores, quote, rules)
    banks[decisions != APPROVE] = None
    no_bank = (decisions == APPROVE) & np.equal(banks, None) & bool(rules.banks)
    constants = {
        "pipeline": context["pipeline"], "run_mode": context["run_mode"],
        "run_id": context["run_id"], "model_name": model_name, "model_version": model_version,
        "model_sha256": model_sha256, "code_version": context["code_version"],
        "rules_version": rules.version, "pii_key_id": context.get("pii_key_id"),
    }
    event_time = requests.column("event_time")
    columns = {
        "prediction_id": requests.column("request_id"),
        "score": pa.array(scores),
        "decision": pa.array(decisions, pa.string()),
        "bank": pa.array(banks, pa.string()),
        "offer_status": pa.array(np.where(no_bank, NO_BANK, NOT_REQUESTED), pa.string()),
        "dt": pc.strftime(event_time, format="%Y-%m-%d"),
    }
    names = set(requests.schema.names)
    arrays = []
    for field in schema:
        if field.name in columns:
            arrays.append(columns[field.name].cast(field.type))
        elif field.name in names:
            arrays.append(requests.column(field.name).cast(field.type))
        elif field.name in constants:
            arrays.append(pa.array([constants[field.name]] * n, field.type))
        else:
            arrays.append(pa.nulls(n, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def with_shadow(batch: pa.RecordBatch, scores: np.ndarray, shadow: tuple[str, str],
                rules: OfferRules) -> pa.RecordBatch:
    """The batch with the shadow version's score and the decision the rules would take on it
    (the row's own decision, bank and offer stay the champion's).

    Args:
        batch: scored rows (``scored_schema``).
        scores: the shadow version's probability of a good risk, one per row.
        shadow: (version, sha256) of the shadow version.
        rules: the offer rules in force.
    """
    n = batch.num_rows
    scores = np.asarray(scores, dtype=np.float32).astype(np.float64)
    version, sha256 = shadow
    return with_columns(batch, {
        "shadow_model_version": pa.array([version] * n, pa.string()),
        "shadow_model_sha256": pa.array([sha256] * n, pa.string()),
        "shadow_score": pa.array(scores),
        "shadow_decision": pa.array(decide_many(scores, rules), pa.string()),
    })


def with_columns(batch: pa.RecordBatch, values: dict) -> pa.RecordBatch:
    """The batch with some columns replaced (same schema)."""
    arrays = [values[f.name].cast(f.type) if f.name in values else batch.column(f.name)
              for f in batch.schema]
    return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)


def stamp_processed_batch(batch: pa.RecordBatch, now: datetime.datetime | None = None
                          ) -> pa.RecordBatch:
    """``stamp_processed`` for every row of a batch: one processed_at for all of them."""
    now = now or datetime.datetime.now(datetime.UTC)
    received = batch.column("received_at").cast(pa.int64()).to_numpy(zero_copy_only=False)
    now_us = int(now.timestamp() * 1_000_000)
    return with_columns(batch, {
        "processed_at": pa.array([now] * batch.num_rows, TIMESTAMP),
        "latency_ms": pa.array((now_us - received) / 1000.0),
    })


def needs_offer_mask(batch: pa.RecordBatch) -> pa.Array:
    """Rows approved with a bank: those whose offer is asked for."""
    return pc.and_(pc.equal(batch.column("decision"), APPROVE),
                   pc.is_valid(batch.column("bank")))


def split_rows(batch: pa.RecordBatch, mask: pa.Array) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """(rows where mask holds, the other rows)."""
    return batch.filter(mask), batch.filter(pc.invert(mask))


def chunks(batch: pa.RecordBatch, size: int):
    """The batch in consecutive slices of at most ``size`` rows."""
    for start in range(0, batch.num_rows, size):
        yield batch.slice(start, size)


def model_identity(model_id: str, context: dict) -> tuple[str, str, str]:
    """(name, version, sha256) of the model that made a prediction: the run's own, one swapped
    in after it started (a moved alias: its manifest names it), or the serving function's
    answer (``remote:<name>:<version>:<sha256>``)."""
    if model_id in context["models"]:
        return context["models"][model_id]
    if model_id.startswith("remote:"):
        _, name, version, sha256 = model_id.split(":", 3)
        return name, version, sha256
    return identity_from_path(model_id)


def needs_offer(row: dict) -> bool:
    return row["decision"] == APPROVE and row["bank"] is not None


def stamp_processed(row: dict, now: datetime.datetime | None = None) -> dict:
    """Set processed_at and the latency since the request was read."""
    now = now or datetime.datetime.now(datetime.UTC)
    return dict(row, processed_at=now,
                latency_ms=(now - row["received_at"]).total_seconds() * 1000.0)


def offer_dead_letter(row: dict, field_names: tuple[str, ...]) -> dict:
    """A request whose offer call failed for good, as a dead letter (stage "offer")."""
    key = (row["request_id"], row["event_time"])
    return dead_letter(
        pipeline=row["pipeline"], stage="offer", error=row["offer_error"],
        error_class=row["offer_error_class"],
        raw=request_json(key, {name: row[name] for name in field_names}),
        origin=row["request_id"], run_id=row["run_id"])


def inference_dead_letters(failed, pipeline: str, run_id: str) -> list[dict]:
    """One dead letter per request of a batch the model could not score (elements are record
    batches of requests)."""
    batch, error = failed
    error_class, message = failure_reason(error)
    letters = []
    for requests in batch:
        for row in requests.to_pylist():
            request_id, event_time, origin = (row.pop("request_id"), row.pop("event_time"),
                                              row.pop("origin"))
            row.pop("received_at")
            letters.append(dead_letter(
                pipeline=pipeline, stage="inference", error=f"the model could not score "
                f"this request: {message}", error_class=error_class,
                raw=request_json((request_id, event_time), row), origin=origin,
                run_id=run_id))
    return letters
