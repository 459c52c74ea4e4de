"""The credit pipeline's DoFns over record batches of scored requests: thin wrappers that route
rows; the row logic lives in ``transforms.credit.rows``."""

import apache_beam as beam
import pyarrow.compute as pc

from transforms.common.dead_letters import DEAD_LETTERS
from transforms.credit import rows as credit_rows
from transforms.credit.offers import FAILED

# Output tag of the rows whose offer is asked for.
ASK = "ask"


class SplitForOffers(beam.DoFn):
    """Scored batch -> the rows needing an offer, cut to one offer call each (``ask`` output),
    and the other rows as one batch (main output)."""

    def __init__(self, call_size: int):
        self._call_size = call_size

    def process(self, batch):
        ask, settled = credit_rows.split_rows(batch, credit_rows.needs_offer_mask(batch))
        if settled.num_rows:
            yield settled
        for chunk in credit_rows.chunks(ask, self._call_size):
            yield beam.pvalue.TaggedOutput(ASK, chunk)


class SplitOfferFailures(beam.DoFn):
    """Stamped batch -> responses (main output) and, for each row whose offer call failed for
    good, a dead letter (``dead_letters`` output)."""

    def __init__(self, field_names: tuple[str, ...]):
        self._field_names = tuple(field_names)

    def process(self, batch):
        failed, ok = credit_rows.split_rows(batch, pc.equal(batch.column("offer_status"),
                                                            FAILED))
        if ok.num_rows:
            yield ok
        for row in failed.to_pylist():
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTERS, credit_rows.offer_dead_letter(row, self._field_names))
