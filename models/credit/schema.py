"""The credit request schema: the 20 applicant fields of the UCI German credit set.

One table drives the training file parser, request validation, the model's inputs and the
Parquet columns, so they cannot drift apart.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    """One applicant field as the model sees it.

    Attributes:
        name: column / model input name.
        kind: "categorical" (a code such as "A11") or "numeric".
        description: what the field means (from the data set's documentation).
        min_value: smallest accepted value (numeric fields only).
        max_value: largest accepted value (numeric fields only).
    """

    name: str
    kind: str
    description: str
    min_value: float | None = None
    max_value: float | None = None


# Order is the column order of german.data (the 21st column is the label).
FIELDS: tuple[Field, ...] = (
    Field("checking_status", "categorical", "status of existing checking account"),
    Field("duration_months", "numeric", "duration of the credit in months", 1, 120),
    Field("credit_history", "categorical", "credit history"),
    Field("purpose", "categorical", "purpose of the credit"),
    Field("credit_amount", "numeric", "credit amount in DM", 1, 1_000_000),
    Field("savings", "categorical", "savings account / bonds"),
    Field("employment_since", "categorical", "present employment since"),
    Field("installment_rate", "numeric", "installment rate, % of disposable income", 1, 4),
    Field("personal_status_sex", "categorical", "personal status and sex"),
    Field("other_debtors", "categorical", "other debtors / guarantors"),
    Field("residence_since", "numeric", "present residence since, years", 1, 4),
    Field("property", "categorical", "property"),
    Field("age_years", "numeric", "age in years", 18, 120),
    Field("other_installment_plans", "categorical", "other installment plans"),
    Field("housing", "categorical", "housing"),
    Field("existing_credits", "numeric", "number of existing credits at this bank", 1, 10),
    Field("job", "categorical", "job"),
    Field("num_dependents", "numeric", "people liable to provide maintenance for", 0, 10),
    Field("telephone", "categorical", "telephone"),
    Field("foreign_worker", "categorical", "foreign worker"),
)

FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
NUMERIC_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.kind == "numeric")
CATEGORICAL_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.kind == "categorical")
FIELDS_BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}

# A category code longer than this is not a code (unknown but plausible codes are fine:
# the model maps them to its out-of-vocabulary bucket).
MAX_CODE_LENGTH = 16


def input_schema() -> list[dict]:
    """The schema written into the model manifest: name, kind, range of every input."""
    return [
        {
            "name": f.name,
            "kind": f.kind,
            "dtype": "string" if f.kind == "categorical" else "float32",
            "description": f.description,
            "min": f.min_value,
            "max": f.max_value,
        }
        for f in FIELDS
    ]
