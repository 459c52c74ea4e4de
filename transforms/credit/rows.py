"""The rows of the credit pipeline: from a model prediction to a response, a sampled
prediction or a dead letter. Pure functions; the pipeline module only wires them."""

import datetime
import json

import pyarrow as pa

from models.config import ConfigError
from models.credit.dataset import NUMERIC
from models.registry import identity_from_path
from transforms.common.dead_letters import dead_letter
from transforms.common.parquet_sink import utc_date
from transforms.common.predictions import COMMON_FIELDS, predictions_schema
from transforms.credit.requests import CreditRequest
from transforms.credit.rules import APPROVE, OfferRules, choose_bank, decide

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
)


def prediction_schema(kinds: dict[str, str]) -> pa.Schema:
    """Sampled predictions: common columns, every raw input as the model saw it (the served
    data set's fields, ``{name: kind}``), every output.

    Raises:
        ConfigError: a data set field takes the name of a column the row already has.
    """
    taken = {f.name for f in COMMON_FIELDS} | {f.name for f in _OUTPUT_FIELDS} | {
        "request_id", "received_at"}
    clashing = sorted(set(kinds) & taken)
    if clashing:
        raise ConfigError(f"data set fields {', '.join(clashing)} clash with prediction "
                          f"columns; rename them in the data set configuration")
    raw = (pa.field(name, pa.float64() if kind == NUMERIC else pa.string())
           for name, kind in kinds.items())
    return predictions_schema(*raw, *_OUTPUT_FIELDS)


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
        context: run constants: pipeline, run_mode, run_id, code_version, and ``models``
            mapping each model path to (name, version, sha256).
        rules: the offer rules in force.
    """
    request_id, event_time, received_at, _ = key
    model_name, model_version, model_sha256 = model_identity(model_id, context)
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
        **fields,
        "score": float(score),
        "decision": decision,
        "bank": bank,
        "offer_status": NO_BANK if decision == APPROVE and bank is None else NOT_REQUESTED,
        "dt": utc_date(event_time),
    }


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
    """One dead letter per request of a batch the model could not score."""
    batch, error = failed
    return [dead_letter(pipeline=pipeline, stage="inference", error=error,
                        raw=request_json(key, fields), origin=key[3], run_id=run_id)
            for key, fields in batch]
