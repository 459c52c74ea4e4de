"""The stateless serving function: the registry's credit models behind TF Serving's REST API.

Endpoints (the request/response shapes of TF Serving, which Vertex AI endpoints share):

- ``POST /v1/models/<name>[/versions/<n> | /labels/<alias>]:predict`` with
  ``{"instances": [{field: value, ...}, ...]}`` (rows) or ``{"inputs": {field: [values]}}``
  (columns) -> ``{"predictions": [p_good, ...], "model": {"name", "version", "sha256"}}``.
  Without a version or label the ``production`` alias answers; ``<n>`` is ``2`` or ``v0002``.
- ``GET /v1/models/<name>[/versions/<n> | /labels/<alias>]``: version status.
- ``GET /v1/models/<name>[...]/metadata``: the serving signature and the input schema.

Each version is served from its SavedModel export (``exports.saved_model`` in the manifest;
every file checked against its sha256 when loaded) through the ``serving_default`` signature,
so preprocessing runs inside the model as in training. Inputs are validated against the
manifest's data set (400 naming the field), bodies over ``--max_body_bytes`` get 413 before
they are buffered, a Content-Type other than JSON 415, and with a token (``--token_file``,
``BEAMLINE_MODEL_TOKEN``, or ``--token``) requests without ``Authorization: Bearer <token>``
get 401. It binds 127.0.0.1 unless told otherwise; ``--workers`` starts several
processes. Nothing is kept between requests but the loaded models.

Usage::

    python -m services.model_server --registry registry --port 8501 --workers 2
"""

import argparse
import functools
import json
import logging
import os
import sys

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from models import registry as model_registry
from models.config import ConfigError
from models.credit.dataset import Dataset, dataset_from_manifest
from models.exit_codes import run_command
from models.provenance import sha256_file
from models.registry import PRODUCTION, RegistryError
from services.http import HttpError, TimedH11Protocol, bearer_ok, read_json_body, read_token
from transforms.credit.requests import RequestError, validate_field

LOGGER = logging.getLogger(__name__)
CONFIG_ENV = "BEAMLINE_MODEL_SERVER"
TOKEN_ENV = "BEAMLINE_MODEL_TOKEN"
DEFAULT_MAX_BODY_BYTES = 1 << 20
SIGNATURE = "serving_default"


class ServingError(Exception):
    """An answer other than 200: the HTTP status and a message in words."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def version_name(text: str) -> str:
    """TF Serving's integer versions and the registry's ``v0002`` names, as the latter."""
    # ASCII digits only ("²".isdigit() is true) and at most 9 (a version's width); anything
    # else goes on as a name, which the registry's pattern then refuses in words.
    if text.isascii() and text.isdigit() and len(text) <= 9:
        return model_registry.format_version(int(text))
    return text


def parse_path(path: str) -> tuple[str, str, str]:
    """``<name>[/versions/<n>|/labels/<alias>][:predict|/metadata]`` ->
    (name, version or alias, action: status | metadata | predict).

    Raises:
        ServingError: 404 for a path the API does not have.
    """
    action = "status"
    if path.endswith(":predict"):
        path, action = path[:-len(":predict")], "predict"
    elif path.endswith("/metadata"):
        path, action = path[:-len("/metadata")], "metadata"
    parts = path.strip("/").split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], PRODUCTION, action
    if len(parts) == 3 and parts[1] in ("versions", "labels") and parts[2]:
        return parts[0], version_name(parts[2]) if parts[1] == "versions" else parts[2], action
    raise ServingError(404, f"no such endpoint: /v1/models/{path}")


class ServedVersion:
    """One loaded version: its signature, its data set, its identity."""

    def __init__(self, ref: model_registry.ModelRef):
        import tensorflow as tf

        exports = ref.manifest.get("exports", {})
        if "saved_model" not in exports:
            raise ServingError(404, f"{ref.name} {ref.version} has no SavedModel export; "
                                    f"retrain it to serve it")
        folder = ref.export_folder("saved_model")  # resolve checked it stays in the version
        for name, digest in exports["saved_model"]["files"].items():
            if sha256_file(os.path.join(folder, name)) != digest:
                raise ServingError(500, f"{ref.name} {ref.version}: export file {name} does "
                                        f"not match its manifest")
        self.ref = ref
        self.dataset: Dataset = dataset_from_manifest(ref.manifest)
        self.signature = tf.saved_model.load(folder).signatures[SIGNATURE]

    @property
    def identity(self) -> dict:
        # The digest of the files that score (the SavedModel export), not the .keras file's.
        return {"name": self.ref.name, "version": self.ref.version,
                "sha256": self.ref.export_sha256("saved_model")}

    def rows(self, body: dict) -> list[dict]:
        """The instances of a predict body, validated against the data set.

        Raises:
            ServingError: 400 naming the instance and the field.
        """
        if isinstance(body.get("instances"), list):
            instances = body["instances"]
        elif isinstance(body.get("inputs"), dict):
            columns = body["inputs"]
            lengths = {len(v) for v in columns.values() if isinstance(v, list)}
            if len(lengths) != 1 or not all(isinstance(v, list) for v in columns.values()):
                raise ServingError(400, "\"inputs\" must map every field to a list of one "
                                        "length")
            instances = [dict(zip(columns, values)) for values in zip(*columns.values())]
        else:
            raise ServingError(400, "a predict body needs \"instances\" (a list of objects) or "
                                    "\"inputs\" (an object of lists)")
        if not instances:
            raise ServingError(400, "no instances to predict")
        fields = self.dataset.fields
        names = {f.name for f in fields}
        rows = []
        for index, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise ServingError(400, f"instance {index} is not an object")
            try:
                missing = [f.name for f in fields
                           if f.name not in instance and not f.may_be_missing]
                if missing:
                    raise RequestError("validate", f"missing fields: {', '.join(missing)}")
                extra = sorted(set(instance) - names)
                if extra:
                    raise RequestError("validate", f"unexpected fields: {', '.join(extra)}")
                rows.append({f.name: validate_field(f, instance.get(f.name)) for f in fields})
            except RequestError as error:
                raise ServingError(400, f"instance {index}: {error}") from None
        return rows

    def predict(self, rows: list[dict]) -> list[float]:
        from models.credit.model import to_model_inputs

        output = self.signature(**to_model_inputs(rows, self.dataset.kinds))
        return [float(x) for x in next(iter(output.values())).numpy().reshape(-1)]

    def metadata(self) -> dict:
        inputs = {name: {"dtype": spec.dtype.name, "tensor_shape": spec.shape.as_list()}
                  for name, spec in self.signature.structured_input_signature[1].items()}
        outputs = {name: {"dtype": spec.dtype.name, "tensor_shape": spec.shape.as_list()}
                   for name, spec in self.signature.structured_outputs.items()}
        return {"model_spec": {"name": self.ref.name, "version": self.ref.version,
                               "signature_name": SIGNATURE},
                "metadata": {"signature_def": {SIGNATURE: {"inputs": inputs,
                                                           "outputs": outputs}},
                             "input_schema": self.ref.manifest.get("input_schema"),
                             "sha256": self.ref.export_sha256("saved_model")}}


def create_app(registry: str, token: str | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Starlette:
    """The ASGI application (one per worker process)."""

    @functools.lru_cache(maxsize=16)
    def served(name: str, version: str) -> ServedVersion:
        return ServedVersion(model_registry.resolve(registry, name, version, verify=True))

    def lookup(name: str, version: str) -> ServedVersion:
        # An alias (one small file) and ``latest`` are re-read on every request, so a
        # promotion, rollback or new version is served at once; a version, once loaded and
        # verified, is kept.
        try:
            concrete = model_registry.concrete_version(registry, name, version)
        except RegistryError as error:  # a bad name, or no such model, version or alias
            raise ServingError(404, str(error)) from None
        try:
            return served(name, concrete)
        except RegistryError as error:  # no such model or version, or a file that changed
            raise ServingError(404, str(error)) from None
        except ConfigError as error:
            raise ServingError(500, f"{name} {concrete} cannot be served: {error}") from None

    def authorised(request: Request) -> bool:
        return bearer_ok(request, token)

    async def models_endpoint(request: Request):
        try:
            if not authorised(request):
                raise ServingError(401, "missing or wrong bearer token")
            name, version, action = parse_path(request.path_params["rest"])
            if request.method == "GET" and action == "predict":
                raise ServingError(405, "predict takes POST")
            if request.method == "POST" and action != "predict":
                raise ServingError(405, f"{action} takes GET")
            if action == "predict":
                try:
                    _, body = await read_json_body(request, max_body_bytes)
                except HttpError as error:
                    raise ServingError(error.status, str(error)) from None
                if not isinstance(body, dict):
                    raise ServingError(400, "body must be a JSON object")
                model = await run_in_threadpool(lookup, name, version)
                rows = model.rows(body)
                scores = await run_in_threadpool(model.predict, rows)
                return JSONResponse({"predictions": scores, "model": model.identity})
            model = await run_in_threadpool(lookup, name, version)
            if action == "metadata":
                return JSONResponse(model.metadata())
            return JSONResponse({"model_version_status": [{
                "version": str(int(model.ref.version[1:])), "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
                "model": model.identity,
                "aliases": [a for a, v in model_registry.list_aliases(registry, name).items()
                            if v == model.ref.version]}]})
        except ServingError as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)

    return Starlette(routes=[Route("/v1/models/{rest:path}", models_endpoint,
                                   methods=["GET", "POST"])])


def app_from_environment() -> Starlette:
    """The app of a worker process, configured by the parent through the environment."""
    config = json.loads(os.environ[CONFIG_ENV])
    return create_app(config["registry"], config.get("token"), config["max_body_bytes"])


def main(argv=None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--registry", default="registry")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--max_body_bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--token_file", default=None,
                        help="a file holding the bearer token clients must send")
    parser.add_argument("--token", default=None,
                        help=f"the token itself (default: ${TOKEN_ENV}; on the command line "
                             f"`ps` shows it to everyone: prefer the variable or the file)")
    args = parser.parse_args(argv)
    args.token = read_token("serving function", TOKEN_ENV, args.token_file, args.token)
    if not os.path.isdir(args.registry) and "://" not in args.registry:
        print(f"error: registry {args.registry} not found", file=sys.stderr)
        return 2
    os.environ[CONFIG_ENV] = json.dumps({"registry": args.registry, "token": args.token,
                                         "max_body_bytes": args.max_body_bytes})
    print(f"serving {args.registry} on http://{args.host}:{args.port}/v1/models/<name>",
          flush=True)
    uvicorn.run("services.model_server:app_from_environment", factory=True, host=args.host,
                port=args.port, workers=args.workers, log_level="warning",
                http=TimedH11Protocol)
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
