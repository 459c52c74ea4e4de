"""The shadow version: a candidate scored on live traffic beside the version in service, whose
answers go only to the sampled prediction rows. Choosing it never stops serving: a shadow that
cannot be used is reported and left out."""

import logging

from models import registry as model_registry
from models.credit.dataset import dataset_from_manifest

LOGGER = logging.getLogger(__name__)
SHADOW_ALIAS = "shadow"
NONE = "none"


def choose_shadow(registry: str, champion: model_registry.ModelRef, requested: str | None,
                  load_check: bool = True) -> tuple[model_registry.ModelRef | None, str]:
    """(the shadow version to score with, or None; a sentence saying which and why).

    Args:
        registry: the registry root.
        champion: the version in service.
        requested: a version or alias (``--shadow_version``), "none", or None for the
            registry's ``shadow`` alias when it is set.

    Nothing raises: a shadow that is missing, fails its sha256, was trained on another
    schema, cannot be loaded or is the champion itself is left out with the reason.
    """
    if requested == NONE:
        return None, "no shadow (--shadow_version none)"
    name = champion.name
    if requested is None:
        if model_registry.read_alias(registry, name, SHADOW_ALIAS) is None:
            return None, "no shadow (the registry has no shadow alias)"
        requested = SHADOW_ALIAS
    try:
        shadow = model_registry.resolve(registry, name, requested)
        if shadow.version == champion.version:
            return None, f"no shadow: {requested} is {shadow.version}, the version in service"
        if dataset_from_manifest(shadow.manifest).kinds != \
                dataset_from_manifest(champion.manifest).kinds:
            return None, (f"shadow {shadow.version} left out: trained on other fields than "
                          f"{champion.version}")
        if load_check:
            _load(shadow.path)
    except Exception as error:  # noqa: BLE001 - whatever is wrong, serving goes on
        LOGGER.warning("shadow %s of %s left out: %s", requested, name, error)
        return None, f"shadow {requested} left out: {type(error).__name__}: {error}"
    return shadow, f"shadow {shadow.version} ({requested}) scores every request beside " \
                   f"{champion.version}; its answers go to the sampled rows only"


def _load(path: str) -> None:
    """Load the model once here, so a file that cannot be loaded never reaches a worker."""
    import keras

    import models.credit.model  # noqa: F401 - registers the layers the file names

    keras.models.load_model(path)
