"""The credit model: raw applicant fields in, probability of a good credit risk out.

Preprocessing lives inside the model (the Transform pattern): numeric fields are normalised with
the training mean and variance, category codes go through a StringLookup with one
out-of-vocabulary bucket and are one-hot encoded. A field the data set lets be missing is
imputed inside too: a missing number (NaN) becomes the training mean plus a 0/1 "was missing"
input, a missing code (``MISSING_CODE``) is a category of its own. Serving therefore feeds the
raw fields exactly as a request carries them, and training/serving skew has nowhere to hide.
The inputs are named and typed by the data set configuration (``models.credit.dataset``).
"""

import keras
import numpy as np
import pyarrow as pa
import tensorflow as tf
from keras import ops

from models.credit.dataset import CATEGORICAL, MISSING_CODE, Dataset


@keras.saving.register_keras_serializable(package="beamline")
class ImputeMissing(keras.layers.Layer):
    """(n, 1) numbers with NaN -> (n, 2): the number with NaN replaced by ``fill_value``, and
    1.0 where it was missing."""

    def __init__(self, fill_value: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.fill_value = float(fill_value)

    def call(self, inputs):
        missing = ops.isnan(inputs)
        filled = ops.where(missing, ops.full_like(inputs, self.fill_value), inputs)
        return ops.concatenate([filled, ops.cast(missing, inputs.dtype)], axis=-1)

    def get_config(self):
        return {**super().get_config(), "fill_value": self.fill_value}


def _numeric_column(records: list[dict], name: str) -> np.ndarray:
    return np.asarray([np.nan if r[name] is None else r[name] for r in records],
                      dtype=np.float64)


def build_credit_model(records: list[dict], dataset: Dataset, hidden_units: int = 16,
                       dropout: float = 0.2, l2: float = 1e-3) -> keras.Model:
    """Build (untrained) the credit model with preprocessing fitted on ``records``.

    Args:
        records: training applicants (raw fields); vocabularies and normalisation come from them.
        dataset: the data set configuration (field names, kinds, which may be missing).
        hidden_units: width of the single hidden layer.
        dropout: dropout rate after the hidden layer.
        l2: L2 weight penalty of the hidden layer.
    """
    inputs, encoded = {}, []
    for field in dataset.fields:
        name = field.name
        if field.kind == CATEGORICAL:
            codes = {MISSING_CODE if r[name] is None else r[name] for r in records}
            inputs[name] = keras.Input(shape=(1,), name=name, dtype="string")
            lookup = keras.layers.StringLookup(
                vocabulary=sorted(codes), num_oov_indices=1, output_mode="one_hot",
                name=f"{name}_lookup")
            encoded.append(lookup(inputs[name]))
            continue
        values = _numeric_column(records, name)
        present = values[~np.isnan(values)]
        mean = float(present.mean()) if present.size else 0.0
        variance = float(max(present.var(), 1e-6)) if present.size else 1.0
        inputs[name] = keras.Input(shape=(1,), name=name, dtype="float32")
        x = inputs[name]
        if field.may_be_missing:
            imputed = ImputeMissing(mean, name=f"{name}_impute")(x)
            number = keras.layers.Normalization(mean=mean, variance=variance,
                                                name=f"{name}_norm")(imputed[:, :1])
            encoded.extend([number, imputed[:, 1:]])
        else:
            encoded.append(keras.layers.Normalization(mean=mean, variance=variance,
                                                      name=f"{name}_norm")(x))
    x = keras.layers.Concatenate(name="features")(encoded)
    x = keras.layers.Dense(hidden_units, activation="relu",
                           kernel_regularizer=keras.regularizers.L2(l2), name="hidden")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    score = keras.layers.Dense(1, activation="sigmoid", name="p_good")(x)
    model = keras.Model(inputs=inputs, outputs=score, name=dataset.model_name)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc")])
    return model


def to_model_inputs(records: list[dict] | pa.RecordBatch | pa.Table, kinds: dict[str, str]
                    ) -> dict:
    """Raw applicant fields -> the model's named input columns, each shaped (n, 1).

    Numbers become float32 tensors (missing: NaN), codes string tensors (missing:
    ``MISSING_CODE``): Keras rejects numpy object arrays and a call() whose inputs mix tensors
    with arrays.

    Args:
        records: applicant dicts, or an Arrow batch / table with one column per field (the
            pipeline's element type: columns go to the model without a Python loop).
        kinds: ``{field: "numeric" | "categorical"}`` (``Dataset.kinds``).
    """
    if isinstance(records, (pa.RecordBatch, pa.Table)):
        return _arrow_inputs(records, kinds)
    columns = {}
    for name, kind in kinds.items():
        if kind == CATEGORICAL:
            values = [MISSING_CODE if r.get(name) is None else r[name] for r in records]
            columns[name] = tf.reshape(tf.constant(values, tf.string), (-1, 1))
        else:
            values = [np.nan if r.get(name) is None else r[name] for r in records]
            columns[name] = tf.reshape(tf.constant(values, tf.float32), (-1, 1))
    return columns


def _arrow_inputs(data: pa.RecordBatch | pa.Table, kinds: dict[str, str]) -> dict:
    columns = {}
    for name, kind in kinds.items():
        column = data.column(name)
        if kind == CATEGORICAL:
            values = column.fill_null(MISSING_CODE).to_pylist()
            columns[name] = tf.reshape(tf.constant(values, tf.string), (-1, 1))
        else:
            values = column.to_numpy(zero_copy_only=False)  # nulls -> NaN
            columns[name] = tf.reshape(tf.constant(values, tf.float32), (-1, 1))
    return columns


def predict_scores(model: keras.Model, records: list[dict] | pa.RecordBatch | pa.Table,
                   kinds: dict[str, str]) -> np.ndarray:
    """Probability of a good credit risk for each applicant (dicts or an Arrow batch), as
    float32 (n,)."""
    if len(records) == 0:
        return np.zeros((0,), dtype=np.float32)
    output = model(to_model_inputs(records, kinds), training=False)
    return np.asarray(output, dtype=np.float32).reshape(-1)
