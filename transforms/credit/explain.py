"""Replaying sampled credit decisions: the stored raw fields through the exact model version
again, and the decision and bank re-derived under the offer rules in force."""

from models.credit.dataset import dataset_from_manifest
from transforms.credit.rules import (
    APPROVE,
    NO_RULES,
    archived_rules,
    choose_bank,
    decide,
    rules_for,
    rules_without_offers,
)

SCORE_TOLERANCE = 1e-6


def load_credit_model(path: str, manifest: dict | None = None):
    """A credit model file (its custom layers registered first); ``manifest`` is unused, the
    signature every capability's loader shares."""
    import keras

    import models.credit.model  # noqa: F401 - registers the model's layers for loading

    return keras.models.load_model(path, compile=False)


def replay_credit(rows: list[dict], model, manifest: dict, rules_path: str | None = None,
                  registry: str | None = None) -> list[dict]:
    """Re-score credit rows made by one model version; one comparison per row.

    Args:
        rows: sampled prediction rows of that version.
        model: the loaded model.
        manifest: its manifest (the data set it was trained on names the inputs).
        rules_path: the offer rules to re-derive decisions with. Without it each row uses
            the rules file archived under its own rules version in the registry (every run
            archives the file it starts with), else the model's current
            ``<config>/offer_rules/<model name>.json``. A row decided under another rules
            version than the one found has its score compared, not its decision.
        registry: where the archived rules files are.
    """
    from models.credit.model import predict_scores

    if not rows:
        return []
    dataset = dataset_from_manifest(manifest)
    current, _ = rules_for(dataset.model_name, dataset.decision_threshold, rules_path)
    archive: dict = {NO_RULES: rules_without_offers(dataset.decision_threshold)}

    def rules_of(row):
        version = row.get("rules_version")
        if rules_path or registry is None:
            return current
        if version not in archive:
            archive[version] = archived_rules(registry, dataset.model_name, version)
        return archive[version] or current

    records = [{f: r.get(f) for f in dataset.field_names} for r in rows]
    scores = predict_scores(model, records, dataset.kinds)
    out = []
    for row, fields, score in zip(rows, records, scores):
        score = float(score)
        rules = rules_of(row)
        same_rules = row.get("rules_version") == rules.version
        decision = decide(score, rules)
        bank = choose_bank(score, fields, rules) if decision == APPROVE else None
        difference = abs(score - row["score"])
        match = difference <= SCORE_TOLERANCE and (
            not same_rules or (decision == row["decision"] and bank == row["bank"]))
        out.append({
            "prediction_id": row["prediction_id"], "match": match,
            "stored": {"score": row["score"], "decision": row["decision"], "bank": row["bank"]},
            "replayed": {"score": score, "decision": decision, "bank": bank},
            "score_difference": difference,
            "rules": {"stored": row.get("rules_version"), "current": rules.version,
                      "decision_replayed": same_rules},
        })
    return out
