"""Beam's DaskRunner, corrected for pipelines with several outputs per step and several sinks.

Use it as ``--runner runners.dask_runner.DaskRunner --dask_client_address tcp://host:8786``
(batch only: the Dask runner has no state, timers or streaming).

Notes:
    apache-beam 2.77's ``apache_beam.runners.dask`` loses data in three ways, all hit by the
    pipelines here:

    - every output of a multi-output ParDo (``with_outputs``, ``Partition``, RunInference's
      exception handling) reaches every consumer, because a consumer reads its producer's
      whole bag whatever output tag it asked for;
    - elements emitted in ``finish_bundle`` are dropped (the bundle's outputs are collected
      before it is called), which loses the last batch of ``BatchElements`` and so of
      RunInference;
    - only the last transform's bag is computed, so a pipeline with several sinks writes one.

    This runner keeps Beam's translation (Create, ParDo, GroupByKey, Flatten on Dask bags) and
    fixes those: a ParDo's bag holds (tag, value) pairs and each consumer keeps its tag; the
    bundle's outputs are collected after ``finish_bundle``; every leaf is computed. Values in
    bags stay unwindowed, as in Beam's runner (global window, batch).
"""

import dataclasses

import apache_beam
from apache_beam import pvalue
from apache_beam.pipeline import PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, _OutputHandler
from apache_beam.runners.dask import dask_runner as beam_dask
from apache_beam.runners.dask import transform_evaluator as evaluator
from apache_beam.runners.dask.overrides import dask_overrides
from apache_beam.transforms.core import DoFn
from apache_beam.transforms.sideinputs import SideInputMap


def _run_bundle(items, fn, window_fn, args, kwargs, label, side_inputs):
    """One Dask partition as one bundle of a DoFn: every output, with its tag."""
    receivers = evaluator.OneReceiver()
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(fn),
        _OutputHandler(window_fn=window_fn, main_receivers=receivers[None],
                       tagged_receivers=receivers, per_element_output_counter=None,
                       output_batch_converter=None, process_yields_batches=False,
                       process_batch_yields_elements=False),
        context=DoFnContext(label, state=None), side_inputs=side_inputs, input_args=args,
        input_kwargs=kwargs, user_state_context=None,
        bundle_finalizer_param=DoFn.BundleFinalizerParam())
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for item in items:
        invoker.invoke_process(item)
    invoker.invoke_finish_bundle()  # before collecting: it may emit (BatchElements does)
    invoker.invoke_teardown()
    return [(value.tag, value.value.value) if isinstance(value, pvalue.TaggedOutput)
            else (None, value.value) for value in receivers.values]


class _TaggedParDo(evaluator.DaskBagOp):
    """A ParDo whose bag holds (output tag, value) pairs."""

    def apply(self, input_bag, side_inputs=None):
        transform = self.transform
        args, kwargs = transform.raw_side_inputs
        main_input = next(iter(self.applied.main_inputs.values()))
        window_fn = main_input.windowing.windowfn if hasattr(main_input, "windowing") else None
        return input_bag.map(evaluator.get_windowed_value, window_fn).map_partitions(
            _run_bundle, transform.fn, window_fn, list(args), kwargs, transform.label,
            side_inputs)


TRANSLATIONS = {**evaluator.TRANSLATIONS, apache_beam.ParDo: _TaggedParDo}


def _select(bag, tag):
    """The values of one output tag of a ParDo's bag."""
    return bag.filter(lambda pair, wanted=tag: pair[0] == wanted).map(lambda pair: pair[1])


class DaskRunner(beam_dask.DaskRunner):
    """Beam's DaskRunner with tagged outputs, finish_bundle outputs and every sink computed."""

    @staticmethod
    def to_dask_bag_visitor(bag_kwargs=None) -> PipelineVisitor:
        bag_kwargs = bag_kwargs or {}

        @dataclasses.dataclass
        class Visitor(PipelineVisitor):
            bags: dict = dataclasses.field(default_factory=dict)
            tagged: set = dataclasses.field(default_factory=set)
            consumed: set = dataclasses.field(default_factory=set)

            def _input_bag(self, value):
                producer = value.producer
                self.consumed.add(producer)
                bag = self.bags.get(producer)
                if bag is not None and producer in self.tagged:
                    bag = _select(bag, value.tag)
                return bag

            def visit_transform(self, node) -> None:
                op_class = TRANSLATIONS.get(node.transform.__class__, evaluator.NoOp)
                op = op_class(node, bag_kwargs=bag_kwargs)
                inputs = [self._input_bag(v) for v in node.inputs
                          if not isinstance(v, pvalue.PBegin)]
                kwargs = {"input_bag": None, "side_inputs": None}
                if inputs:
                    single = len(inputs) == 1 and not isinstance(op, evaluator.Flatten)
                    kwargs["input_bag"] = inputs[0] if single else inputs
                if node.side_inputs:
                    kwargs["side_inputs"] = [
                        SideInputMap(type(si), si._view_options(),
                                     evaluator.DaskBagWindowedIterator(
                                         self._input_bag(si.pvalue), si._window_mapping_fn))
                        for si in node.side_inputs]
                self.bags[node] = op.apply(**kwargs)
                if isinstance(op, _TaggedParDo):
                    self.tagged.add(node)

            def leaves(self) -> list:
                return [bag for node, bag in self.bags.items()
                        if node not in self.consumed and bag is not None]

        return Visitor()

    def run_pipeline(self, pipeline, options):
        import dask
        import dask.distributed as ddist

        dask_options = options.view_as(beam_dask.DaskOptions).get_all_options(
            drop_default=True, current_only=True)
        bag_kwargs = beam_dask.DaskOptions._extract_bag_kwargs(dask_options)
        client = ddist.Client(**dask_options)
        pipeline.replace_all(dask_overrides())
        visitor = self.to_dask_bag_visitor(bag_kwargs)
        pipeline.visit(visitor)
        leaves = dask.optimize(*visitor.leaves())
        return _Result(client, client.compute(list(leaves)))


class _Result(beam_dask.DaskRunnerResult):
    """Closes its client once the pipeline is done, so no client outlives its cluster."""

    def wait_until_finish(self, duration=None) -> str:
        try:
            return super().wait_until_finish(duration)
        finally:
            if self._state in (beam_dask.PipelineState.DONE, beam_dask.PipelineState.FAILED):
                self.client.close()
