"""Personal data in credit requests, handled as the data set configures it.

Pass-through fields (not model inputs) are dropped or replaced by a keyed pseudonym before any
output holds them: sampled predictions, responses and dead letters. The pseudonym is
HMAC-SHA256 under a secret key read from an environment variable or a file, so the same value
always gives the same pseudonym (joins and slices still work) and nobody without the key can
test a guess. A dead letter's raw line is redacted field by field when it is a JSON object;
one that is not keeps only its length and a keyed hash when the data set says so.
"""

import dataclasses
import hashlib
import hmac
import json
import os

from models.config import KEY_ENV, ConfigError, default_key_file
from models.credit.dataset import DROP, HASH, PSEUDONYMISE, Dataset
from transforms.credit.requests import ID_FIELDS, RequestError, load_json

# Shorter keys make the pseudonyms guessable by brute force over the key.
MIN_KEY_BYTES = 16
PSEUDONYM_HEX = 32  # 128 bits of the HMAC: collisions are out of reach at any volume


def key_location(source: str) -> str:
    """Where ``read_key`` reads ``source`` from: ``env:BEAMLINE_PII_KEY`` unset means the key
    file ``beamline setup`` writes (``file:<default_key_file()>``) when it exists."""
    kind, _, name = source.partition(":")
    if kind == "env" and name == KEY_ENV and os.environ.get(name) is None \
            and default_key_file().exists():
        return f"file:{default_key_file()}"
    return source


def read_key(source: str) -> bytes:
    """The pseudonymisation key from ``env:VARIABLE`` or ``file:/path``; ``env:BEAMLINE_PII_KEY``
    unset falls back to the key file ``beamline setup`` writes (``default_key_file``).

    Raises:
        ConfigError: the variable or file is missing, or the key is shorter than 16 bytes;
            the message never contains the key.
    """
    kind, _, name = key_location(source).partition(":")
    if kind == "env":
        value = os.environ.get(name)
        if value is None:
            raise ConfigError(f"the pseudonymisation key is read from the environment "
                              f"variable {name}, which is not set"
                              + (f", and there is no key file {default_key_file()} (`beamline "
                                 f"setup` makes one)" if name == KEY_ENV else ""))
        key = value.encode("utf-8")
    else:
        try:
            with open(name, "rb") as f:
                key = f.read().strip()
        except OSError as error:
            raise ConfigError(f"the pseudonymisation key file {name} cannot be read: "
                              f"{error.strerror or error}") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"the pseudonymisation key from {source} is {len(key)} bytes; it "
                          f"needs at least {MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)")
    return key


def key_fingerprint(key: bytes) -> str:
    """What outputs record of the key that pseudonymised them: 16 hex digits of an HMAC under
    the key of a fixed text, so rows pseudonymised under different keys (before and after a
    rotation) are told apart, and nothing about the key can be learnt from it."""
    return hmac.new(key, b"beamline pseudonymisation key fingerprint",
                    hashlib.sha256).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Privacy:
    """How one data set's requests are redacted; ``key`` is None when nothing needs it.

    Attributes:
        treatments: pass-through field -> "drop" or "pseudonymise".
        declared: every key a valid request may have (ids, model inputs, pass-through).
        hash_unparsed: keep only length + keyed hash of a dead letter that is not an object.
        key: the HMAC key.
    """

    treatments: dict
    declared: frozenset
    hash_unparsed: bool = False
    key: bytes | None = dataclasses.field(default=None, repr=False)

    @property
    def pseudonymised(self) -> tuple[str, ...]:
        return tuple(n for n, t in self.treatments.items() if t == PSEUDONYMISE)

    @property
    def key_id(self) -> str | None:
        """``key_fingerprint`` of the key, None when no key is loaded."""
        return key_fingerprint(self.key) if self.key else None

    @property
    def active(self) -> bool:
        return bool(self.treatments) or self.hash_unparsed

    def pseudonym(self, value) -> str | None:
        """Keyed pseudonym of one value (None stays None); text and numbers alike."""
        if value is None:
            return None
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        return hmac.new(self.key, text.encode("utf-8"), hashlib.sha256).hexdigest()[
            :PSEUDONYM_HEX]

    def check_values(self, body: dict) -> None:
        """A pass-through value must be one value (text, number, true/false or null).

        Raises:
            RequestError: stage "validate", naming the field but never its value.
        """
        for name in self.treatments:
            value = body.get(name)
            if isinstance(value, (dict, list)):
                kind = "object" if isinstance(value, dict) else "array"
                raise RequestError("validate", f"{name} must be a single value (text or "
                                               f"number), got a JSON {kind}")

    def redact_body(self, body: dict) -> dict:
        """A request object as it may be stored: pass-through fields dropped or pseudonymised;
        with ``hash_unparsed``, the values of keys no request may have are pseudonymised too
        (an unexpected field may be personal data nobody declared)."""
        redacted = {}
        for name, value in body.items():
            treatment = self.treatments.get(name)
            if treatment == DROP:
                continue
            if treatment == PSEUDONYMISE or (self.hash_unparsed and name not in self.declared):
                redacted[name] = self.pseudonym(value)
            else:
                redacted[name] = value
        return redacted

    def redact_raw(self, text: str | None, misfit_field: str | None = None
                   ) -> tuple[str | None, str | None]:
        """(raw text as a dead letter may keep it, keyed hash of the original or None).

        ``misfit_field``: the field whose value was refused (``RequestError.field``); a text
        value there is kept as its length and keyed hash only (a name typed into event_time
        is personal data nobody declared)."""
        text = mask_misfit(text, misfit_field, self.key)
        if text is None or not self.active:
            return text, None
        try:
            body = load_json(text)
        except RequestError:
            body = None
        if isinstance(body, dict):
            return json.dumps(self.redact_body(body)), None
        if self.hash_unparsed:
            return None, self.pseudonym(text)
        return text, None


def mask_misfit(text: str | None, field: str | None, key: bytes | None) -> str | None:
    """The raw body with the text value of ``field`` replaced by its length (and keyed hash
    when a key is loaded); anything else unchanged."""
    if text is None or field is None:
        return text
    try:
        body = load_json(text)
    except RequestError:
        return text
    if not isinstance(body, dict) or not isinstance(body.get(field), str):
        return text
    value = body[field]
    body[field] = {"redacted": "a value that does not fit the field", "characters": len(value),
                   **({"hmac": hmac.new(key, value.encode("utf-8"), hashlib.sha256)
                       .hexdigest()[:PSEUDONYM_HEX]} if key else {})}
    return json.dumps(body)


def privacy_for(dataset: Dataset, load_key: bool = True) -> Privacy:
    """The data set's redaction, with its key read now when one is configured.

    Raises:
        ConfigError: the key is configured but cannot be read or is too short.
    """
    key = read_key(dataset.privacy_key) if load_key and dataset.privacy_key else None
    return Privacy(treatments=dict(dataset.pass_through),
                   declared=frozenset(ID_FIELDS) | set(dataset.field_names)
                   | {n for n, _ in dataset.pass_through},
                   hash_unparsed=dataset.unparsed_dead_letters == HASH, key=key)
