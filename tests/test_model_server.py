"""The serving function: SavedModel export parity, TF Serving's REST API on a real loopback
server, validation, limits and authentication."""

import concurrent.futures
import os
import select
import shutil
import socket

import numpy as np
import pytest
import requests

from models import registry as model_registry
from tests.conftest import free_port, serve_app

TOKEN = "test-token"



def _serve(registry: str):
    """services.model_server on a free 127.0.0.1 port, with a token, in a thread."""
    from services.model_server import create_app

    return serve_app(create_app(registry, TOKEN, max_body_bytes=64 * 1024))


@pytest.fixture(scope="module")
def server(crx_registry):
    with _serve(crx_registry) as url:
        yield url


def _post(url, body, token=TOKEN, **kwargs):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(url, json=body, headers=headers, timeout=30, **kwargs)


def _instances(german_records, n=5):
    records, _ = german_records
    return [{k: (int(v) if isinstance(v, float) and v.is_integer() else v)
             for k, v in r.items()} for r in records[:n]]


def test_the_export_scores_like_the_keras_model(credit_model_ref, german_records):
    import keras
    import tensorflow as tf

    from models.credit.model import predict_scores, to_model_inputs
    from tests.conftest import german_dataset

    kinds = german_dataset().kinds
    records, _ = german_records
    exports = credit_model_ref.manifest["exports"]["saved_model"]
    assert exports["files"] and all(len(d) == 64 for d in exports["files"].values())
    folder = credit_model_ref.path.rsplit("/", 1)[0] + "/" + exports["path"]
    signature = tf.saved_model.load(folder).signatures["serving_default"]
    exported = next(iter(signature(**to_model_inputs(records[:200], kinds)).values()))
    model = keras.models.load_model(credit_model_ref.path, compile=False)
    np.testing.assert_allclose(exported.numpy().reshape(-1),
                               predict_scores(model, records[:200], kinds), atol=1e-6)


def test_predict_by_alias_version_and_label_with_the_version_that_answered(
        server, german_records, credit_model_ref):
    from models.credit.model import predict_scores
    from tests.conftest import german_dataset
    from transforms.credit.explain import load_credit_model

    instances = _instances(german_records)
    expected = predict_scores(load_credit_model(credit_model_ref.path),
                              german_records[0][:5], german_dataset().kinds)
    for path in ("credit_german", "credit_german/versions/1", "credit_german/versions/v0001",
                 "credit_german/labels/production"):
        answer = _post(f"{server}/v1/models/{path}:predict", {"instances": instances})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        np.testing.assert_allclose(body["predictions"], expected, atol=1e-6)
        # The sha256 of what scored: the SavedModel export's files.
        assert body["model"] == {"name": "credit_german", "version": "v0001",
                                 "sha256": credit_model_ref.export_sha256("saved_model")}
    columns = {k: [i[k] for i in instances] for k in instances[0]}
    answer = _post(f"{server}/v1/models/credit_german:predict", {"inputs": columns})
    np.testing.assert_allclose(answer.json()["predictions"], expected, atol=1e-6)


def test_each_data_set_is_served_with_its_own_schema(server):
    instance = {"A1": None, "A2": 30.83, "A3": 0, "A4": "u", "A5": "g", "A6": "w", "A7": "v",
                "A8": 1.25, "A9": "t", "A10": "t", "A11": 1, "A12": "f", "A13": "g",
                "A15": 0}
    answer = _post(f"{server}/v1/models/credit_crx:predict", {"instances": [instance]})
    assert answer.status_code == 200, answer.text
    assert 0 < answer.json()["predictions"][0] < 1
    assert answer.json()["model"]["name"] == "credit_crx"


@pytest.mark.parametrize("body, status, message", [
    ({"instances": [{"duration_months": 12}]}, 400, "instance 0: missing fields"),
    ({"rows": []}, 400, "needs \"instances\""),
    ({"instances": []}, 400, "no instances"),
    ({"instances": ["x"]}, 400, "instance 0 is not an object"),
    ({"inputs": {"a": [1, 2], "b": [1]}}, 400, "one length"),
])
def test_bad_bodies_are_refused_with_the_reason(server, german_records, body, status,
                                                message):
    answer = _post(f"{server}/v1/models/credit_german:predict", body)
    assert answer.status_code == status and message in answer.json()["error"]


def test_a_bad_field_value_names_the_field(server, german_records):
    instance = dict(_instances(german_records, 1)[0], age_years=500)
    answer = _post(f"{server}/v1/models/credit_german:predict", {"instances": [instance]})
    assert answer.status_code == 400
    assert "instance 0: age_years=500 is out of range" in answer.json()["error"]


def test_limits_authentication_and_unknown_models(server, german_records):
    url = f"{server}/v1/models/credit_german:predict"
    instances = _instances(german_records, 1) * 2000
    assert _post(url, {"instances": instances}).status_code == 413
    assert _post(url, {"instances": instances[:1]}, token=None).status_code == 401
    assert _post(url, {"instances": instances[:1]}, token="wrong").status_code == 401
    missing = _post(f"{server}/v1/models/credit_nobody:predict", {"instances": instances[:1]})
    assert missing.status_code == 404 and "no versions of model" in missing.json()["error"]
    assert _post(f"{server}/v1/models/credit_german/versions/9:predict",
                 {"instances": instances[:1]}).status_code == 404
    assert requests.get(f"{server}/v1/models/credit_german:predict", timeout=10,
                        headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 405


def _raw_post(url, data, content_type="application/json"):
    return requests.post(url, data=data, timeout=30, headers={
        "Authorization": f"Bearer {TOKEN}", **({"Content-Type": content_type}
                                               if content_type else {})})


@pytest.mark.parametrize("data, content_type, status, message", [
    (b'{"instances": [], "instances": []}', "application/json", 400, "duplicate key"),
    (b"[" * 5000 + b"]" * 5000, "application/json", 400, "nested too deeply"),
    (b'{"instances": [' + b"1" * 5000 + b"]}", "application/json", 400, "malformed JSON"),
    (b"\xff\xfe", "application/json", 400, "not UTF-8"),
    (b'{"instances": []}', "text/plain", 415, "Content-Type must be application/json"),
    (b'{"instances": []}', None, 415, "Content-Type must be application/json"),
])
def test_hostile_bodies_are_4xx_in_words_never_500(server, data, content_type, status,
                                                   message):
    answer = _raw_post(f"{server}/v1/models/credit_german:predict", data, content_type)
    assert answer.status_code == status and message in answer.json()["error"], answer.text


@pytest.mark.parametrize("path", ["credit_german/versions/²²", "credit_german/versions/"
                                  + "9" * 5000, "credit_*/versions/1", "cre[dit/labels/x",
                                  "credit_german/labels/" + "x" * 300])
def test_hostile_model_paths_are_404_in_words(server, path):
    answer = _raw_post(f"{server}/v1/models/{path}:predict", b'{"instances": [{}]}')
    assert answer.status_code == 404 and answer.json()["error"], answer.text


def _predict_head(length: str) -> bytes:
    """The head of a predict request with the token, and ``length`` (a Content-Length or a
    Transfer-Encoding line) for a raw socket."""
    return (f"POST /v1/models/credit_german:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            f"{length}\r\n\r\n").encode()


def _answer_of(connection) -> str:
    """One HTTP answer read off a raw socket: head and body."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
            data.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0]):
        chunk = connection.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode()


def test_a_body_over_the_limit_is_refused_before_it_is_read(server, german_records):
    # Declared 100 MiB, none sent: the answer comes without waiting for the body.
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(_predict_head(f"Content-Length: {100 << 20}"))
        head = _answer_of(connection)
    assert head.startswith("HTTP/1.1 413") and "exceeds the limit" in head
    # A chunked body of up to 100 MiB (no length to check up front), sent a MiB at a time:
    # the 413 must come while it is still being sent.
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(_predict_head("Transfer-Encoding: chunked"))
        sent, head = 0, ""
        while sent < 100 and not head:
            try:
                connection.sendall(b"100000\r\n" + b" " * (1 << 20) + b"\r\n")
            except OSError:
                pass  # closed by the server after its answer
            sent += 1
            if select.select([connection], [], [], 0.2)[0]:
                head = _answer_of(connection)
    assert head.startswith("HTTP/1.1 413") and "exceeds the limit" in head
    assert sent < 10  # the limit is 64 KiB: refused within the first MiB or two, not 100


def test_status_and_metadata(server, credit_model_ref):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    status = requests.get(f"{server}/v1/models/credit_german", headers=headers, timeout=10)
    [version] = status.json()["model_version_status"]
    assert (version["version"], version["state"]) == ("1", "AVAILABLE")
    assert "production" in version["aliases"]
    metadata = requests.get(f"{server}/v1/models/credit_german/metadata", headers=headers,
                            timeout=10).json()
    inputs = metadata["metadata"]["signature_def"]["serving_default"]["inputs"]
    assert set(inputs) == {f["name"] for f in credit_model_ref.manifest["input_schema"]}
    assert inputs["age_years"]["dtype"] == "float32"
    assert inputs["purpose"]["dtype"] == "string"


def test_concurrent_requests_each_get_their_own_answer(server, german_records):
    instances = _instances(german_records, 40)
    single = {i: _post(f"{server}/v1/models/credit_german:predict",
                       {"instances": [instances[i]]}).json()["predictions"][0]
              for i in range(0, 40, 5)}
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: (i, _post(
            f"{server}/v1/models/credit_german:predict",
            {"instances": [instances[i]]}).json()["predictions"][0]), range(40)))
    for i, score in answers:
        if i in single:
            assert score == pytest.approx(single[i], abs=1e-7)
    assert len({round(s, 6) for _, s in answers}) > 10


def test_a_moved_alias_is_served_at_once(crx_registry, german_records, tmp_path):
    # A copy of the registry (aliases move here), with a second version beside v0001.
    registry = str(tmp_path / "registry")
    shutil.copytree(crx_registry, registry)
    first = model_registry.resolve(registry, "credit_german", "v0001")
    second = model_registry.publish(registry, "credit_german", first.path, first.manifest,
                                    exports={"saved_model": os.path.join(
                                        os.path.dirname(first.path), "saved_model")})
    model_registry.set_alias(registry, "credit_german", "canary", "v0001", "test", "t")
    with _serve(registry) as url:
        predict = f"{url}/v1/models/credit_german/labels/canary:predict"
        body = {"instances": _instances(german_records, 1)}
        assert _post(predict, body).json()["model"]["version"] == "v0001"
        model_registry.set_alias(registry, "credit_german", "canary", second.version, "test",
                                 "t")
        answer = _post(predict, body).json()["model"]
        assert answer["version"] == second.version
        # The digest of the files that scored (the SavedModel export), not the .keras file's.
        assert answer["sha256"] == second.export_sha256("saved_model") != second.sha256
        # latest is re-read per request: a version published while serving answers at once.
        latest = f"{url}/v1/models/credit_german/labels/latest:predict"
        assert _post(latest, body).json()["model"]["version"] == second.version
        third = model_registry.publish(registry, "credit_german", first.path, first.manifest,
                                       exports={"saved_model": second.export_folder(
                                           "saved_model")})
        assert _post(latest, body).json()["model"]["version"] == third.version
        # A name that could leave the registry or glob is a 404 in words, not a walk.
        for name in ("..", "*"):
            answer = _post(f"{url}/v1/models/{name}:predict", body)
            assert answer.status_code == 404 and "is not a model name" in answer.text


def _scored(out):
    import pyarrow.dataset as ds

    return {r["prediction_id"]: r for r in ds.dataset(
        os.path.join(out, "predictions"), partitioning="hive").to_table().to_pylist()}


@pytest.mark.slow
def test_the_pipeline_scores_through_the_serving_function_like_in_process(
        server, crx_registry, make_requests, tmp_path):
    from pipelines import credit_scoring
    from tests.conftest import write_jsonl

    requests_path = write_jsonl(tmp_path / "requests.jsonl", make_requests(60, "remote"))
    common = ["--input", requests_path, "--registry", crx_registry, "--sample_rate", "1.0"]
    credit_scoring.run([*common, "--output", str(tmp_path / "local")])
    credit_scoring.run([*common, "--output", str(tmp_path / "remote"), "--model_endpoint",
                        server, "--model_endpoint_token", TOKEN, "--min_batch_size", "8"])
    local, remote = _scored(str(tmp_path / "local")), _scored(str(tmp_path / "remote"))
    assert set(local) == set(remote) and len(local) == 60
    for pid, row in local.items():
        assert remote[pid]["score"] == pytest.approx(row["score"], abs=1e-6)
        assert remote[pid]["decision"] == row["decision"]
        # Each row names the files that scored it: the .keras file in process, the
        # SavedModel export behind the serving function; both are the version's.
        ref = model_registry.resolve(crx_registry, row["model_name"], row["model_version"])
        assert remote[pid]["model_version"] == row["model_version"]
        assert (row["model_sha256"], remote[pid]["model_sha256"]) == \
            (ref.sha256, ref.export_sha256("saved_model"))


@pytest.mark.slow
def test_an_endpoint_that_is_down_sends_its_requests_to_dead_letters(
        crx_registry, make_requests, tmp_path):
    import pyarrow.dataset as ds

    from pipelines import credit_scoring
    from tests.conftest import write_jsonl

    requests_path = write_jsonl(tmp_path / "requests.jsonl", make_requests(20, "down"))
    out = str(tmp_path / "out")
    credit_scoring.run(["--input", requests_path, "--registry", crx_registry, "--output", out,
                        "--model_endpoint", f"http://127.0.0.1:{free_port()}",
                        "--model_endpoint_retries", "1"])
    dead = ds.dataset(os.path.join(out, "dead_letters"), partitioning="hive").to_table()
    assert dead.num_rows == 20 and set(dead.column("stage").to_pylist()) == {"inference"}
    assert all("unreachable" in m for m in dead.column("message").to_pylist())
    assert not os.path.exists(os.path.join(out, "responses"))


def test_slow_headers_and_slow_bodies_do_not_hold_a_connection(crx_registry, monkeypatch):
    import time

    from services import http
    from services.model_server import create_app

    class QuickHeaders(http.TimedH11Protocol):
        header_secs = 1.0

    monkeypatch.setattr(http, "BODY_SECS", 1.0)
    with serve_app(create_app(crx_registry, TOKEN), http=QuickHeaders) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            started = time.monotonic()
            connection.sendall(b"POST /v1/models/credit_german:predict HTTP/1.1\r\nHost: x\r\n")
            assert connection.recv(4096) == b""  # closed: the headers never finished
            assert time.monotonic() - started < 5
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            started = time.monotonic()
            connection.sendall(_predict_head("Content-Length: 100") + b'{"instances"')
            answer = _answer_of(connection)
            assert answer.startswith("HTTP/1.1 408") and "took over 1 s" in answer
            assert time.monotonic() - started < 5
        # A request that is neither slow is served on the same server.
        fine = requests.get(f"{url}/v1/models/credit_german", timeout=10,
                            headers={"Authorization": f"Bearer {TOKEN}"})
        assert fine.status_code == 200
