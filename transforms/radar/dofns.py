"""The radar QC pipeline's DoFns: decoding volumes, writing QC'd volumes, naming chunks.

Thin wrappers: the work is in ``reading``, ``volumes``, ``rows`` and ``quicklook``.
"""

import dataclasses
import datetime
import logging
import os

import apache_beam as beam

from models.radar_qc.vocabulary import class_counts
from transforms.common.dead_letters import DEAD_LETTERS, dead_letter
from transforms.common.inference import failure_reason
from transforms.common.outputs import is_output_failure
from transforms.common.parquet_sink import utc_date
from transforms.common.progress import Progress
from transforms.radar import rows as radar_rows
from transforms.radar.quicklook import quicklook_png, write_bytes
from transforms.radar.reading import (
    DUAL_POL,
    SINGLE_POL,
    RadarReadError,
    open_volume,
    parse_chunk_name,
)
from transforms.radar.reference import sweep_uncertainty
from transforms.radar.volumes import (
    CFRADIAL1_OUT,
    CFRADIAL2_OUT,
    ODIM_OUT,
    DecodedVolume,
    apply_qc,
    decode_volume,
    expected_sweeps,
    sweep_count,
    volume_id,
    write_cfradial1,
    write_cfradial2,
    write_odim,
)

LOGGER = logging.getLogger(__name__)
PIPELINE_NAME = "radar_qc"
VOLUMES, QUICKLOOKS, SWEEPS = "volumes", "quicklooks", "sweeps"
# Output tag of the sweeps' prediction rows.
PREDICTIONS = "predictions"
# Counter of volumes flagged "QC uncertain" (--check_uncertainty), for the run summary.
VOLUMES_QC_UNCERTAIN = "volumes_qc_uncertain"


class DecodeVolumeFn(beam.DoFn):
    """Source (archive path, or ordered chunk paths) -> DecodedVolume, the volume decoded
    once with each model's sweeps stacked; undecodable -> dead letter.

    Nothing of a bad file is copied into its dead letter: the origin names it.
    """

    def __init__(self, run_id: str, single_pol: bool = False, pipeline: str = PIPELINE_NAME):
        self._run_id = run_id
        self._single_pol = single_pol
        self._pipeline = pipeline

    def process(self, source: tuple[str, ...]):
        try:
            tree = open_volume(source[0] if len(source) == 1 else list(source))
            yield decode_volume(tree, source, self._single_pol)
        except RadarReadError as error:
            beam.metrics.Metrics.counter(self._pipeline, "volumes_rejected").inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                pipeline=self._pipeline, stage="decode", error=error, raw=None,
                origin=";".join(source), run_id=self._run_id))


class DecodeSweepFn(beam.DoFn):
    """(volume key, (the chunks so far, an elevation cut they end)) -> a DecodedVolume of
    that cut alone, when it is a dual-pol sweep (``chunk_assembly`` emits it).

    The sweep path is an early copy: the volume path QCs the same sweep again when the volume
    closes and keeps the record (index row, prediction rows, dead letters). So a cut that
    cannot be read alone, or a Doppler pass (no dual-pol moments: it takes its partner's
    classes in the volume), is counted and left to the volume, not dead-lettered twice.
    """

    def process(self, element):
        (_, start), (chunks, cut) = element
        try:
            tree = open_volume(list(chunks), only_cuts=frozenset({cut}))
            volume = decode_volume(tree, tuple(chunks))
        except RadarReadError as error:
            beam.metrics.Metrics.counter(PIPELINE_NAME, "sweeps_left_to_volume").inc()
            LOGGER.debug("cut %d of %s is left to its volume: %s", cut, chunks[0], error)
            return
        if volume.role_keys(SINGLE_POL) or len(volume.keys) != 1:
            beam.metrics.Metrics.counter(PIPELINE_NAME, "sweeps_left_to_volume").inc()
            volume.tree.close()
            return
        # The number the sweep has in its volume (cuts 1.. in order; the volume's file numbers
        # its sweeps the same way when no cut is lost).
        ds = tree["sweep_0"].to_dataset(inherit=False)
        tree["sweep_0"].dataset = ds.assign(sweep_number=ds["sweep_number"] * 0 + cut - 1)
        tree.attrs["nexrad_cut"] = cut
        # The volume's start, as its chunks are named (the tree of one cut starts with it).
        when = datetime.datetime.fromisoformat(start)
        yield dataclasses.replace(volume, keys=[
            dataclasses.replace(k, volume_time=when, volume_id=volume_id(k.radar, when))
            for k in volume.keys])


class WriteQcSweepFn(beam.DoFn):
    """DecodedVolume of one classified sweep (``DecodeSweepFn``) -> its QC'd CF/Radial 2
    file ``<output>/sweeps/radar=<R>/dt=<D>/<volume id>-s<NN>_qc.nc``; yields the path."""

    def __init__(self, output: str, context: dict):
        self._output = output
        self._context = context

    def process(self, volume: DecodedVolume):
        key = volume.first
        number = volume.tree.attrs["nexrad_cut"] - 1
        try:
            (_, model_id), = volume.classes.values()
            name, version, sha256 = self._context["models"][model_id]
            qc = apply_qc(volume.tree, volume.classes_by_sweep(), {
                "qc_model_name": name, "qc_model_version": version, "qc_model_sha256": sha256,
                "qc_run_id": self._context["run_id"]}, in_place=True,
                model_by_sweep={key.sweep_number: f"{name} {version}"})
            # The sweep classified itself: its number in the volume, as the volume's file says.
            qc["sweep_0"]["QC_CLASS"].attrs["qc_source_sweep"] = number
            path = write_cfradial2(qc, f"{self._output}/{SWEEPS}/radar={key.radar}/dt="
                                       f"{utc_date(key.volume_time)}/{key.volume_id}-s"
                                       f"{number:02d}_qc.nc")
        except Exception as error:  # noqa: BLE001 - the volume path writes this sweep anyway
            if is_output_failure(error):
                raise
            beam.metrics.Metrics.counter(PIPELINE_NAME, "sweeps_left_to_volume").inc()
            LOGGER.warning("sweep %d of %s not written ahead of its volume: %s", number,
                           key.volume_id, error)
            return
        finally:
            volume.tree.close()
        beam.metrics.Metrics.counter(PIPELINE_NAME, "sweeps_written_early").inc()
        LOGGER.info("%s sweep %d (%.1f deg) QC'd ahead of its volume: %s", key.volume_id,
                    number, key.elevation, path)
        yield path


def model_input(volume: DecodedVolume, role: str) -> list:
    """A volume as RunInference's batch of one for ``role``'s model (``with_no_batching``):
    Beam's BatchElements hands a batch on only when the next element arrives, which would
    hold a second decoded volume (~0.4 GB) in memory for nothing."""
    return [(volume, volume.stacks[role])]


def record_classes(element, role: str) -> DecodedVolume:
    """(volume, RunInference's PredictionResult for ``role``) -> the volume with its classes."""
    volume, result = element
    return volume.classified(role, result.inference, result.model_id)


class WriteQcVolumeFn(beam.DoFn):
    """DecodedVolume with every role classified -> its sweeps' prediction rows
    (``predictions`` output), then the masked volume, quicklook and index row (main output).

    The volume is masked in place (it was decoded for this element alone) and dropped when the
    element is done, so a worker holds one volume at a time. A failure while writing goes to
    dead letters with stage "write".
    """

    def __init__(self, output: str, context: dict, total_volumes: int | None = None,
                 output_formats=(CFRADIAL2_OUT,), uncertainty_params=None):
        self._output = output
        self._context = context
        self._total = total_volumes
        self._formats = tuple(output_formats)
        # ReferenceParameters when the references check each volume (--check_uncertainty).
        self._uncertainty = uncertainty_params

    def setup(self):
        # A volume takes seconds: every one is worth a line.
        self._progress = Progress("volumes QC'd", "volume", self._total, every_secs=0)

    def process(self, volume: DecodedVolume):
        # Before the moments are masked; per sweep into its sampled row, summed for the index.
        uncertain = (sweep_uncertainty(volume, self._uncertainty)
                     if self._uncertainty is not None else {})
        for role, (classes, model_id) in volume.classes.items():
            for i, key in enumerate(volume.role_keys(role)):
                gates, echo = uncertain.get(key.sweep_number, (None, 0))
                yield beam.pvalue.TaggedOutput(PREDICTIONS, radar_rows.sweep_row(
                    key, volume.stacks[role][i], classes[i], model_id, self._context,
                    uncertain_share=gates / echo if gates is not None and echo else None))
        try:
            yield self._write(volume, uncertain)
        except Exception as error:  # noqa: BLE001 - any write failure is this volume's alone
            if is_output_failure(error):
                raise  # a full disk or a read-only folder stops the run (see pipelines.options)
            LOGGER.exception("writing %s failed", volume.first.volume_id)
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, radar_rows.volume_dead_letter(
                volume.first, "write", error, self._context))
        finally:
            self._progress.add(1, volume.first.volume_id)
            # The volume is done: release the reader's file handles now, not at garbage
            # collection (memory itself plateaus either way; see README, Benchmarks).
            volume.tree.close()

    def _write(self, volume: DecodedVolume, uncertain: dict) -> dict:
        models = self._context["models"]
        classes_by_sweep = volume.classes_by_sweep()
        model_by_sweep = {n: " ".join(models[m][:2]) for n, m in volume.model_by_sweep().items()}
        # The index row names the dual-pol model when it classified any sweep.
        main_role = DUAL_POL if volume.role_keys(DUAL_POL) else SINGLE_POL
        name, version, sha256 = models[volume.classes[main_role][1]]
        single = volume.role_keys(SINGLE_POL)
        key, tree = volume.first, volume.tree
        lowest = min(classes_by_sweep, key=lambda n: (
            float(tree[f"sweep_{n}"].ds["sweep_fixed_angle"].values), n))
        raw_lowest = tree[f"sweep_{lowest}"].to_dataset(inherit=False).copy(deep=True)
        sweeps_in_volume, expected = sweep_count(tree), expected_sweeps(tree)
        if expected is not None and sweeps_in_volume < expected:
            beam.metrics.Metrics.counter(PIPELINE_NAME, "volumes_incomplete").inc()
            LOGGER.warning("%s: %d of the %d sweeps of its coverage pattern arrived whole; "
                           "those are QC'd and its index row says complete=false",
                           key.volume_id, sweeps_in_volume, expected)
        uncertainty = self._volume_uncertainty(volume, uncertain)
        qc = apply_qc(tree, classes_by_sweep, {
            "qc_model_name": name, "qc_model_version": version, "qc_model_sha256": sha256,
            "qc_run_id": self._context["run_id"]}, in_place=True, model_by_sweep=model_by_sweep)
        folder = f"radar={key.radar}/dt={utc_date(key.volume_time)}"
        base = f"{self._output}/{VOLUMES}/{folder}/{key.volume_id}_qc"
        paths = {"quicklook": f"{self._output}/{QUICKLOOKS}/{folder}/{key.volume_id}.png"}
        if CFRADIAL1_OUT in self._formats:  # first: it refuses some volumes before writing
            paths["cfradial1"] = write_cfradial1(qc, f"{base}.cfradial1.nc")
        if CFRADIAL2_OUT in self._formats:
            paths["netcdf"] = write_cfradial2(qc, f"{base}.nc")
        if ODIM_OUT in self._formats:
            paths["odim_h5"] = write_odim(qc, f"{base}.h5", key.radar)
        title = (f"{key.radar} {key.volume_time:%Y-%m-%d %H:%M:%S} UTC - "
                 f"QC model {name} {version}")
        write_bytes(paths["quicklook"], quicklook_png(
            raw_lowest, qc[f"sweep_{lowest}"].ds, title))
        counts = [class_counts(c) for c in classes_by_sweep.values()]
        echo = sum(c["echo"] for c in counts)
        removed_share = (sum(c["fraction_removed"] * c["echo"] for c in counts) / echo
                         if echo else 0.0)
        beam.metrics.Metrics.counter(PIPELINE_NAME, "volumes_written").inc()
        return radar_rows.volume_row(
            key, paths, sweeps_in_volume, removed_share, (name, version, sha256),
            self._context, sweeps_expected=expected, sweeps_single_pol=len(single),
            single_pol_model=model_by_sweep[single[0].sweep_number] if single else None,
            damaged_cuts=tree.attrs.get("damaged_cuts"),
            radar_id_from=tree.attrs.get("radar_id_from"), uncertainty=uncertainty)

    def _volume_uncertainty(self, volume: DecodedVolume, per_sweep: dict
                            ) -> tuple[float, bool] | None:
        if self._uncertainty is None:
            return None
        uncertain = sum(gates for gates, _ in per_sweep.values())
        echo = sum(echo for _, echo in per_sweep.values())
        if not echo:
            return None
        share = uncertain / echo
        flagged = share > self._uncertainty.uncertain_share
        if flagged:
            beam.metrics.Metrics.counter(PIPELINE_NAME, VOLUMES_QC_UNCERTAIN).inc()
            LOGGER.warning("%s: QC uncertain: the UNet's call differs from both reference "
                           "algorithms' on %.1f %% of its dual-pol echo (above %.0f %%)",
                           volume.first.volume_id, 100 * share,
                           100 * self._uncertainty.uncertain_share)
        return share, flagged


def inference_dead_letters(failure, context: dict) -> list[dict]:
    """One dead letter per volume of a RunInference call that failed."""
    batch, error = failure
    error_class, message = failure_reason(error)
    return [radar_rows.volume_dead_letter(
        volume.first, "inference", f"{volume.first.volume_id}: sweeps not classified: "
                                   f"{error_class}: {message}",
        context, "InferenceFailed") for volume, _ in batch]


class ReferenceAgreementFn(beam.DoFn):
    """Classified volume -> agreement rows of the UNet and the reference algorithms
    (``transforms.radar.reference``), and a figure of its lowest sweep's three masks in
    ``figures_dir``. A volume whose weak labels the model was trained on is not scored: it
    goes to dead letters (stage ``reference``), so no model grades its own homework."""

    def __init__(self, params, bands_km, model: tuple[str, str], run_id: str,
                 figures_dir: str, trained_on=()):
        self._params, self._bands = params, list(bands_km)
        self._model, self._run_id, self._figures = model, run_id, figures_dir
        self._trained_on = frozenset(trained_on)

    def process(self, volume: DecodedVolume):
        from transforms.radar.quicklook import mask_comparison_png
        from transforms.radar.reference import volume_agreement

        if volume.first.volume_id in self._trained_on:
            name, version = self._model
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                pipeline="radar_reference", stage="reference", raw=None,
                origin=volume.first.origin, run_id=self._run_id,
                error=ValueError(f"{volume.first.volume_id} is not scored by {name} {version}: "
                                 f"the model was trained on its weak labels")))
            volume.tree.close()
            return
        rows, lowest = volume_agreement(volume, self._params, self._bands)
        figure = None
        if lowest:
            key = volume.first
            figure = f"{key.volume_id}_s{lowest['sweep_number']:02d}.png"
            write_bytes(f"{self._figures}/{figure}", mask_comparison_png(
                lowest, volume.tree, f"{key.radar} {key.volume_time:%Y-%m-%d %H:%M} UTC, "
                f"sweep {lowest['sweep_number']}"))
        name, version = self._model
        for row in rows:
            yield {**row, "model_name": name, "model_version": version, "run_id": self._run_id,
                   "source": volume.first.origin, "figure": figure}
        volume.tree.close()


class ChunkPathFn(beam.DoFn):
    """Landing path -> (radar, path) for AssembleVolumes; a misnamed file -> dead letter."""

    def __init__(self, run_id: str):
        self._run_id = run_id

    def process(self, path: str):
        try:
            parse_chunk_name(path)
        except RadarReadError as error:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                pipeline=PIPELINE_NAME, stage="assemble", error=error, raw=None, origin=path,
                run_id=self._run_id))
            return
        yield os.path.basename(os.path.dirname(path)), path
