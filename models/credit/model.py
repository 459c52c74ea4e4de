"""The credit model: raw applicant fields in, probability of a good credit risk out.

Preprocessing lives inside the model (the Transform pattern): numeric fields are normalised with
the training mean and variance, category codes go through a StringLookup with one
out-of-vocabulary bucket and are one-hot encoded. Serving therefore feeds the raw fields exactly as
a request carries them, and training/serving skew has nowhere to hide.
"""

import keras
import numpy as np
import tensorflow as tf

from models.credit.schema import CATEGORICAL_FIELDS, FIELD_NAMES, NUMERIC_FIELDS


def build_credit_model(records: list[dict], hidden_units: int = 16, dropout: float = 0.2,
                       l2: float = 1e-3) -> keras.Model:
    """Build (untrained) the credit model with preprocessing fitted on ``records``.

    Args:
        records: training applicants (raw fields); vocabularies and normalisation come from them.
        hidden_units: width of the single hidden layer.
        dropout: dropout rate after the hidden layer.
        l2: L2 weight penalty of the hidden layer.
    """
    inputs, encoded = {}, []
    for name in FIELD_NAMES:
        if name in NUMERIC_FIELDS:
            values = np.asarray([r[name] for r in records], dtype=np.float64)
            inputs[name] = keras.Input(shape=(1,), name=name, dtype="float32")
            norm = keras.layers.Normalization(
                mean=float(values.mean()), variance=float(max(values.var(), 1e-6)),
                name=f"{name}_norm")
            encoded.append(norm(inputs[name]))
        else:
            vocabulary = sorted({r[name] for r in records})
            inputs[name] = keras.Input(shape=(1,), name=name, dtype="string")
            lookup = keras.layers.StringLookup(
                vocabulary=vocabulary, num_oov_indices=1, output_mode="one_hot",
                name=f"{name}_lookup")
            encoded.append(lookup(inputs[name]))
    x = keras.layers.Concatenate(name="features")(encoded)
    x = keras.layers.Dense(hidden_units, activation="relu",
                           kernel_regularizer=keras.regularizers.L2(l2), name="hidden")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    score = keras.layers.Dense(1, activation="sigmoid", name="p_good")(x)
    model = keras.Model(inputs=inputs, outputs=score, name="credit")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc")])
    return model


def to_model_inputs(records: list[dict]) -> dict:
    """Raw applicant dicts -> the model's named input columns, each shaped (n, 1).

    Numbers become float32 tensors, codes string tensors: Keras rejects numpy object arrays
    and a call() whose inputs mix tensors with arrays.
    """
    columns = {}
    for name in NUMERIC_FIELDS:
        columns[name] = tf.reshape(tf.constant([r[name] for r in records], tf.float32), (-1, 1))
    for name in CATEGORICAL_FIELDS:
        columns[name] = tf.reshape(tf.constant([r[name] for r in records], tf.string), (-1, 1))
    return columns


def predict_scores(model: keras.Model, records: list[dict]) -> np.ndarray:
    """Probability of a good credit risk for each raw applicant dict, as float32 (n,)."""
    if not records:
        return np.zeros((0,), dtype=np.float32)
    output = model(to_model_inputs(records), training=False)
    return np.asarray(output, dtype=np.float32).reshape(-1)
