"""Credit offers: score each request with the credit model, pick a bank by rules, fetch its offer.

Three steps, one of them ML, each with its version recorded on every output:
model (registry version + sha256), rules (rules file version), offer API (rates version).

Usage::

    # batch, from JSON Lines files
    python -m pipelines.credit_scoring --input 'requests/*.jsonl' --output out \\
        --registry registry --offer_url http://127.0.0.1:8765

    # streaming, watching a landing directory (stops after 60 s here; omit to run forever)
    python -m pipelines.credit_scoring --streaming --input_dir landing --output out \\
        --offer_url http://127.0.0.1:8765 --stop_after_secs 60

    # streaming from Pub/Sub (production; needs the gcp extra)
    python -m pipelines.credit_scoring --streaming \\
        --input_topic projects/P/topics/credit-requests \\
        --runner DataflowRunner ...

    # another data set: its model (trained with models.credit.train --config) and rules
    python -m pipelines.credit_scoring --input 'crx/*.jsonl' --model_name credit_crx ...

The request fields, their validation and the Parquet columns come from the data set the served
model version was trained on (its manifest); the offer rules default to
``<config>/offer_rules/<model name>.json``.

Outputs under ``--output``: ``responses/`` (one row per request that got through),
``predictions/`` (the deterministic sample, with inputs and versions) and ``dead_letters/``
(every request that did not get through, with the stage and the reason).
"""

import functools
import logging
import os
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from models import registry as model_registry
from models.credit.event_times import EventTimeWindow, earliest_event_time
from models.credit.handler import RemoteCreditHandler, credit_batch_handler, endpoint_unavailable
from pipelines.launch import cli, pipeline_runner, run_outputs
from pipelines.options import (
    CreditScoringOptions,
    RunConfig,
    check_sources,
    resolve_run,
)
from transforms.common.dead_letters import DEAD_LETTERS
from transforms.common.file_sources import ReadLinesFromFiles, WatchDirectory
from transforms.common.inference import RunInferenceIsolatingFailures
from transforms.common.model_updates import FollowAlias
from transforms.common.outputs import PrimaryDataset, write_run_outputs
from transforms.common.parquet_sink import file_windows
from transforms.credit import rows as credit_rows
from transforms.credit.dedup import (
    DeduplicateBatches,
    DeduplicateStream,
)
from transforms.credit.dofns import (
    ASK,
    ParseRequestBatchFn,
    SplitForOffers,
    SplitOfferFailures,
)
from transforms.credit.offers import RequestOffers
from transforms.credit.privacy import privacy_for
from transforms.credit.setup import credit_setup
from transforms.credit.shadow import ShadowScores

LOGGER = logging.getLogger(__name__)
PIPELINE_NAME = "credit_scoring"
DEFAULT_MODEL = "credit_german"
RESPONSES = PrimaryDataset(
    name="responses", label="WriteResponses", schema=credit_rows.RESPONSE_SCHEMA,
    partitions=credit_rows.RESPONSE_PARTITIONS)


def resolve(options: PipelineOptions) -> RunConfig:
    """Check options once, with messages that name the flags (the options are not written).

    Raises:
        ValueError: no source or more than one, or a source that does not fit the mode.
    """
    config = resolve_run(options, PIPELINE_NAME, DEFAULT_MODEL, default_batch_size=2048)
    credit = config.view(CreditScoringOptions)
    check_sources(options, {"input": config.input},
                  {"input_dir": credit.input_dir, "input_topic": credit.input_topic})
    if credit.min_batch_size > config.max_batch_size:
        raise ValueError("--min_batch_size exceeds --max_batch_size")
    if credit.dedup_buckets < 1 or credit.dedup_horizon_secs <= 0:
        raise ValueError("--dedup_buckets must be at least 1 and --dedup_horizon_secs positive")
    return config


def prepare(options: PipelineOptions) -> RunConfig:
    """The launch step: checked options, then the credit set-up (the served version resolved
    and hashed, the key read, the rules checked and archived, the shadow chosen)."""
    config = resolve(options)
    credit = config.view(CreditScoringOptions)
    earliest_event_time(credit.earliest_event_time)  # a bad date is refused before any work
    # A backfill replays decisions with a pinned version: no shadow unless one is asked for.
    requested = credit.shadow_version or ("none" if config.run_mode == "backfill" else None)
    setup = credit_setup(config.registry, config.model_name, config.model_version,
                         credit.rules, requested)
    models = {"served": setup.model, **({"shadow": setup.shadow} if setup.shadow else {})}
    return config.launched(models, setup.notes(), setup)


def read_requests(pipeline, config: RunConfig):
    """The configured source as (origin, line) pairs; None when no source is configured."""
    credit = config.view(CreditScoringOptions)
    if config.input:
        return pipeline | "ReadRequestFiles" >> ReadLinesFromFiles(config.input)
    if credit.input_dir:
        pattern = os.path.join(credit.input_dir, "*.jsonl")
        return pipeline | "WatchLandingDir" >> WatchDirectory(
            pattern, config.poll_secs, config.stop_after_secs)
    if credit.input_topic:
        topic = credit.input_topic
        return (pipeline
                | "ReadPubSub" >> beam.io.ReadFromPubSub(
                    topic=topic, id_label=credit.pubsub_id_attribute)
                | "TagWithTopic" >> beam.Map(lambda data: (topic, data)))
    return None


def deduplicate(scored, config: RunConfig, dataset, schema):
    """(first arrivals, [dead letters of later arrivals]) of the scored batches."""
    credit = config.view(CreditScoringOptions)
    if credit.no_dedup:
        return scored, []
    if not config.streaming:
        deduped = scored | "Deduplicate" >> DeduplicateBatches(
            tuple(dataset.stored_kinds), PIPELINE_NAME, config.run_id, credit.dedup_buckets)
        return deduped["requests"], [deduped[DEAD_LETTERS]]
    deduped = scored | "Deduplicate" >> DeduplicateStream(
        tuple(dataset.stored_kinds), PIPELINE_NAME, config.run_id, schema,
        file_windows(config.window_secs), credit.dedup_horizon_secs)
    return deduped["requests"], [deduped[DEAD_LETTERS]]


def build(pipeline, config: RunConfig, requests=None, model_updates=None) -> dict:
    """Wire the credit offers graph.

    Args:
        pipeline: the Pipeline to add to.
        config: the launched run configuration (``prepare``).
        requests: optional PCollection of (origin, line) replacing the configured source
            (tests feed TestStream or Create here).
        model_updates: optional PCollection of ModelMetadata, one per window, replacing the
            alias watch in streaming (tests feed TestStream here).

    Returns:
        The PCollections: responses, predictions (the scored rows, before sampling),
        dead_letters, and the written file paths of each sink (``*_files``).
    """
    credit, setup = config.view(CreditScoringOptions), config.setup
    streaming = config.streaming
    if requests is None:
        requests = read_requests(pipeline, config)
    if requests is None:
        raise ValueError("no request source: give --input, --input_dir or --input_topic")
    model, dataset, rules, shadow = setup.model, setup.dataset, setup.rules, setup.shadow
    context = {**config.row_context(), "pii_key_id": setup.privacy.key_id}
    outputs = run_outputs(config)
    LOGGER.info("serving %s %s (%s, data set %s), rules %s", model.name, model.version,
                model.path, dataset.version, rules.version)

    if streaming:
        requests = requests | "WindowRequests" >> file_windows(outputs.window_secs)
    # Requests travel as Arrow record batches from here on: Beam's per-element cost is paid
    # once per batch, and rules, rows and sinks work column by column.
    parsed = (
        requests
        | "BatchRequests" >> beam.BatchElements(
            min_batch_size=credit.min_batch_size, max_batch_size=config.max_batch_size,
            max_batch_duration_secs=(config.max_batch_duration_secs or None) if streaming
            else None)
        | "ParseRequests" >> beam.ParDo(ParseRequestBatchFn(
            PIPELINE_NAME, config.run_id, credit.max_request_bytes, dataset.fields,
            privacy_for(dataset, load_key=False), dataset.privacy_key,
            setup.privacy.key_id, EventTimeWindow(
                earliest=earliest_event_time(credit.earliest_event_time)))).with_outputs(
            DEAD_LETTERS, main="requests"))
    if credit.model_endpoint:
        # The serving function resolves the version or alias itself, on every call.
        handler = RemoteCreditHandler(
            credit.model_endpoint, model.name, config.model_version,
            credit.model_endpoint_token, num_retries=credit.model_endpoint_retries,
            min_batch_size=1, max_batch_size=1,
            resolved={"name": model.name, "version": model.version, "sha256": model.sha256},
            fields=dataset.field_names)
    else:
        handler = credit_batch_handler(model.path, dataset.kinds)
    follow = (model_updates is None and streaming and credit.alias_poll_secs > 0
              and not credit.model_endpoint and model_registry.is_alias(config.model_version))
    if follow and config.max_batch_duration_secs and config.runner.endswith("DirectRunner"):
        # Beam's local runner cannot replace a splittable source (the alias poll) once a
        # real-time timer puts the graph on its bundle-based runner; Dataflow and Flink can.
        LOGGER.warning("the local DirectRunner cannot follow %s beside "
                       "--max_batch_duration_secs; this run keeps %s", config.model_version,
                       model.version)
        follow = False
    if follow:
        model_updates = pipeline | "FollowAlias" >> FollowAlias(
            config.registry, model.name, config.model_version, model, credit.alias_poll_secs,
            outputs.window_secs, config.stop_after_secs)
    # A batch the model fails on is scored again a request at a time, so only the request
    # that fails is dead-lettered; a serving function that is down fails the batch at once.
    scores, failed = parsed.requests | "ScoreCredit" >> RunInferenceIsolatingFailures(
        handler, functools.partial(credit_rows.chunks, size=1), model_updates,
        not_the_elements=endpoint_unavailable)
    inference_failed = failed | "InferenceDeadLetters" >> beam.FlatMap(
        credit_rows.inference_dead_letters, PIPELINE_NAME, config.run_id)

    schema = credit_rows.scored_schema(dataset.stored_kinds)
    scored = scores | "DecideAndChooseBank" >> beam.Map(
        lambda result: credit_rows.scored_batch(
            result.example, result.inference, result.model_id, context, rules, schema))
    scored, dedup_dead = deduplicate(scored, config, dataset, schema)
    if credit.offer_url:
        settled, to_ask = scored | "NeedsOffer" >> beam.ParDo(
            SplitForOffers(credit.offer_batch_size)).with_outputs(ASK, main="settled")
        answered = to_ask | "RequestOffers" >> RequestOffers(
            credit.offer_url, rules.fields, credit.offer_timeout_secs, credit.offer_retries,
            credit.offer_batch_size)
        scored = (settled, answered) | "AllOutcomes" >> beam.Flatten()
    # Stamped once, so a response and its sampled prediction row agree on processed_at.
    outcomes = scored | "StampProcessed" >> beam.Map(credit_rows.stamp_processed_batch)
    predictions = outcomes
    if shadow is not None:
        # Only the sampled rows carry the shadow's answer: responses and offers come from
        # ``outcomes``, which the shadow never touches.
        predictions = outcomes | "Shadow" >> ShadowScores(
            credit_batch_handler(shadow.path, dataset.kinds), (shadow.version, shadow.sha256),
            rules)
    split = outcomes | "SplitOfferOutcomes" >> beam.ParDo(
        SplitOfferFailures(tuple(dataset.stored_kinds))).with_outputs(
        DEAD_LETTERS, main="responses")
    responses = split.responses
    dead_letters = (parsed[DEAD_LETTERS], *dedup_dead, inference_failed, split[DEAD_LETTERS])
    dead_letters = dead_letters | "AllDeadLetters" >> beam.Flatten()
    return {
        "responses": responses,
        "predictions": predictions,
        "dead_letters": dead_letters,
        **write_run_outputs(outputs, RESPONSES, responses, predictions,
                            credit_rows.prediction_schema(dataset.stored_kinds), dead_letters),
    }


def output_folders(config: RunConfig) -> dict:
    """Where a run's outputs go, for its closing summary."""
    out, model = config.output.rstrip("/"), f"model_name={config.model_name}"
    return {"responses": f"{out}/{RESPONSES.name}/{model}/",
            "predictions": f"{out}/predictions/pipeline={PIPELINE_NAME}/{model}/",
            "dead letters": f"{out}/{DEAD_LETTERS}/pipeline={PIPELINE_NAME}/{model}/"}


run = pipeline_runner(__doc__, PIPELINE_NAME, prepare, build, output_folders)


def main(argv=None) -> int:
    """The command: run to the end; exit status 0 (errors raise, ``cli`` maps them)."""
    run(argv)
    return 0

if __name__ == "__main__":
    sys.exit(cli(main))
