"""What a credit run needs before its first request, set up one way for batch, streaming and
the online offers API: the served version (resolved, its files hashed), the data set it was
trained on, the privacy treatment (its key read now), the offer rules (loaded, checked against
the data set, archived in the registry), and the shadow version if one is set."""

import dataclasses

from models import registry as model_registry
from models.config import search_note
from models.credit.dataset import Dataset, dataset_from_manifest
from models.credit.shadow import choose_shadow
from transforms.credit.privacy import Privacy, key_location, privacy_for
from transforms.credit.rules import (
    OfferRules,
    archive_rules,
    check_rules_fit,
    rules_for,
)


@dataclasses.dataclass(frozen=True)
class CreditSetup:
    """A credit run's launch: what scoring reads, fixed before the first request.

    Attributes:
        model: the served version.
        dataset: the data set configuration in its manifest (fields, privacy, costs).
        privacy: the redaction, with its key loaded.
        rules: the offer rules; ``rules_path`` the file, ``rules_archive`` its copy in the
            registry (under its version, so any decision made under it can be replayed); both
            None for a model without an offer rules file (decided at its data set's
            threshold, no offers asked).
        shadow: the version scored beside the served one for the sampled rows, or None;
            ``shadow_note`` says which and why.
    """

    model: model_registry.ModelRef
    dataset: Dataset
    privacy: Privacy
    rules: OfferRules
    rules_path: str | None
    rules_archive: str | None
    shadow: model_registry.ModelRef | None
    shadow_note: str

    def notes(self) -> list[str]:
        """What the launch did, in the words of a run's summary."""
        rules = (f"offer rules {self.rules.version} from {self.rules_path}, archived at "
                 f"{self.rules_archive}" if self.rules_path else
                 f"no offer rules (no {search_note('offer_rules', self.model.name)}): decided at "
                 f"the data set's threshold {self.rules.approve_min_score:.4g}, no offers "
                 f"asked")
        key = (f"; pseudonymisation key {self.privacy.key_id} (fingerprint; from "
               f"{key_location(self.dataset.privacy_key)})" if self.privacy.key_id else "")
        return [f"{self.model.resolved_note()}; data set {self.dataset.version}{key}",
                rules, self.shadow_note]


def credit_setup(registry: str, model_name: str, version: str, rules_path: str | None = None,
                 shadow_version: str | None = None, load_shadow: bool = True) -> CreditSetup:
    """Resolve and check everything a credit run reads, before it reads a request.

    Args:
        registry: the registry root.
        model_name: the credit model (one per data set).
        version: a version or an alias, resolved now.
        rules_path: the offer rules file (default ``<config>/offer_rules/<model name>.json``;
            a model without one decides at its data set's threshold and asks no bank).
        shadow_version: a version or alias, ``none``, or None for the registry's shadow alias.
        load_shadow: load the shadow's model once to check it (the online API loads it
            itself and skips this).

    Raises:
        RegistryError: the model or version is not there, or its files fail their sha256.
        ConfigError: the key cannot be read, or the rules do not fit the data set.
    """
    model = model_registry.resolve(registry, model_name, version)
    dataset = dataset_from_manifest(model.manifest)
    privacy = privacy_for(dataset)  # a configured key that cannot be read stops here
    rules, rules_path = rules_for(model_name, dataset.decision_threshold, rules_path)
    archive = None
    if rules_path:
        check_rules_fit(rules, dataset.kinds, rules_path)
        archive = archive_rules(registry, model_name, rules_path)
    shadow, note = choose_shadow(registry, model, shadow_version, load_check=load_shadow)
    return CreditSetup(model=model, dataset=dataset, privacy=privacy, rules=rules,
                       rules_path=rules_path, rules_archive=archive, shadow=shadow,
                       shadow_note=note)
