"""The capabilities beamline runs, each one object that evaluation, explain and the report look
up by pipeline name: no ``if pipeline == "..."`` anywhere else.

A capability says which model it serves by default, how one (model version, window) group of
its joined rows becomes metric rows, which metrics its report charts over time, whether its
models carry a tabular data set (slices and drift are checked against its fields), how a
model file is loaded and how its sampled predictions are replayed.
"""

import dataclasses
from collections.abc import Callable

from transforms.credit.explain import load_credit_model, replay_credit
from transforms.evaluation.metrics import credit_group_metrics, radar_group_metrics
from transforms.evaluation.radar_monitoring import monitored_fields, radar_monitoring
from transforms.radar.explain import load_radar_model, replay_radar


@dataclasses.dataclass(frozen=True)
class Capability:
    """One capability (see the module docstring).

    Attributes:
        pipeline: the pipeline's name, as in the ``pipeline=`` partition of its outputs.
        default_model: the registry model it serves unless told otherwise.
        group_metrics: ``(joined rows, evaluation config, training statistics) -> metric rows``.
        history_metrics: headline metrics charted over time in the report.
        tabular: models carry a data set in their manifest (slices, drift, costs).
        mask_examples: the report shows truth vs predicted masks.
        load_model: ``(model file path, manifest) -> loaded model`` (on the engine its runs
            use by default, so a replay is bit-exact).
        replay: ``(rows of one version, model, manifest, rules path, registry) ->
            comparisons``.
        monitor_by: the row field whose values are watched one by one without truth (radar:
            each radar against its own reference period), or None.
        monitoring: ``(rows of one version and monitored value, evaluation config, window)
            -> (window, window start, metric row)`` triples, or None.
        monitored_fields: a joined row -> the part of it ``monitoring`` reads (grouped per
            monitored value over the whole period, so kept small).
    """

    pipeline: str
    default_model: str
    group_metrics: Callable
    history_metrics: tuple[str, ...]
    tabular: bool
    mask_examples: bool
    load_model: Callable
    replay: Callable
    monitor_by: str | None = None
    monitoring: Callable | None = None
    monitored_fields: Callable | None = None


CAPABILITIES = {
    "credit_scoring": Capability(
        pipeline="credit_scoring", default_model="credit_german",
        group_metrics=credit_group_metrics,
        history_metrics=("auc", "expected_cost_per_applicant", "approval_rate"),
        tabular=True, mask_examples=False, load_model=load_credit_model, replay=replay_credit),
    "radar_qc": Capability(
        pipeline="radar_qc", default_model="radar_qc", group_metrics=radar_group_metrics,
        history_metrics=("csi", "pod", "far"), tabular=False, mask_examples=True,
        load_model=load_radar_model, replay=replay_radar, monitor_by="radar",
        monitoring=radar_monitoring, monitored_fields=monitored_fields),
}


def capability(pipeline: str) -> Capability:
    """The capability of a pipeline name.

    Raises:
        ValueError: an unknown pipeline, naming the known ones.
    """
    try:
        return CAPABILITIES[pipeline]
    except KeyError:
        raise ValueError(f"unknown pipeline {pipeline!r}; known: "
                         f"{', '.join(sorted(CAPABILITIES))}") from None
