"""The interactive offers API: one answer per applicant with every version, the bank's failures
as 502 / 504 within the caller's deadline, idempotent retries, sampled rows and dead letters in
the pipelines' layout, and nothing answered lost on SIGTERM."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pyarrow.dataset as ds
import pytest
import requests

from models.credit.replay import client_value
from services.offers_api import OffersService
from tests.conftest import ROOT, free_port

MODEL = "credit_german"
JSON = {"Content-Type": "application/json"}


def _request(german_records, index: int, request_id: str) -> bytes:
    records, _ = german_records
    fields = {k: client_value(v) for k, v in records[index].items()}
    return json.dumps({"request_id": request_id,
                       "event_time": "2026-11-20T10:00:00+00:00", **fields}).encode()


@pytest.fixture
def service_factory(crx_registry, tmp_path, offer_service):
    made = []

    def make(bank=None, **kwargs):
        bank = bank or offer_service()
        # Each service its own output: one spool has one writer.
        output = tmp_path / ("out" if not made else f"out-{len(made) + 1}")
        service = OffersService(crx_registry, MODEL, "production", bank.url,
                                str(output), **{"sample_rate": 1.0, **kwargs})
        made.append(service)
        return service, bank

    yield make
    for service in made:
        service.writer.close()


def _approved_index(service, german_records) -> int:
    """A German applicant the model approves (so a bank is asked)."""
    records, _ = german_records
    for index, record in enumerate(records[:300]):
        if service.score(record)[0] >= service.rules.approve_min_score:
            return index
    pytest.skip("no approved applicant among the first 300")


def test_an_applicant_gets_a_decision_an_offer_and_every_version(service_factory,
                                                                 german_records, tmp_path):
    service, bank = service_factory()
    index = _approved_index(service, german_records)
    status, body = service.answer(_request(german_records, index, "on-1"), 2000)
    assert status == 200, body
    assert body["decision"] == "approve" and body["offer_status"] == "offered"
    assert body["offer"]["apr"] > 0 and body["offer"]["monthly_payment"] > 0
    assert body["versions"]["model"] == {"name": MODEL, "version": "v0001",
                                         "sha256": service.ref.export_sha256("saved_model")}
    assert body["versions"]["rules"] == service.rules.version
    # A retry with the same payload gets the same answer, without a second bank call.
    calls = bank.stats()["calls"]
    again_status, again = service.answer(_request(german_records, index, "on-1"), 2000)
    assert (again_status, again["offer"], again["replayed"]) == (200, body["offer"], True)
    assert bank.stats()["calls"] == calls
    # The same id with another payload is a conflict.
    status, conflict = service.answer(_request(german_records, index + 1, "on-1"), 2000)
    assert status == 409 and "another payload" in conflict["error"]
    # Sampled in the pipelines' layout, run_mode online.
    service.writer.flush()
    folder = tmp_path / "out" / "predictions" / "pipeline=credit_scoring" / f"model_name={MODEL}"
    [row] = ds.dataset(str(folder), partitioning="hive").to_table().to_pylist()
    assert (row["prediction_id"], row["run_mode"], row["offer_status"]) == \
        ("on-1", "online", "offered")


def test_bad_input_is_a_400_and_a_dead_letter(service_factory, tmp_path):
    service, _ = service_factory()
    status, body = service.answer(b'{"request_id": "on-bad", "age_years": "old"}', 2000)
    assert status == 400 and "missing fields" in body["error"] and body["stage"] == "validate"
    status, body = service.answer(b"{not json", 2000)
    assert status == 400 and body["stage"] == "parse"
    service.writer.flush()
    dead = ds.dataset(str(tmp_path / "out" / "dead_letters"), partitioning="hive").to_table()
    assert dead.num_rows == 2 and set(dead.column("model_name").to_pylist()) == {MODEL}


def test_a_bank_that_fails_is_a_502_and_a_slow_one_a_504_within_the_deadline(
        service_factory, german_records, offer_service):
    failing, _ = service_factory(bank=offer_service(fail_rate=1.0, fail_kinds=("500",)))
    index = _approved_index(failing, german_records)
    status, body = failing.answer(_request(german_records, index, "on-500"), 2000)
    assert status == 502 and "500" in body["error"] and body["decision"] == "approve"
    class Down:
        url = f"http://127.0.0.1:{free_port()}"

    down, _ = service_factory(bank=Down())
    status, body = down.answer(_request(german_records, index, "on-down"), 2000)
    assert status == 502 and "unreachable" in body["error"]
    slow, _ = service_factory(bank=offer_service(fail_rate=1.0, fail_kinds=("timeout",),
                                                 hang_secs=3.0))
    status, body = slow.answer(_request(german_records, index, "on-slow"), 300)
    # The bank hangs 3 s: the call got what was left of the caller's 300 ms as its timeout
    # (or, had scoring used it all, the bank was not asked).
    assert status == 504 and "deadline" in body["error"]
    given = re.search(r"within ([\d.]+)s", body["error"])
    assert given is None or 0 < float(given.group(1)) <= 0.3



def _start_offers_api(crx_registry, bank, out, port):
    process = subprocess.Popen(
        [sys.executable, "-m", "services.offers_api", "--registry", crx_registry,
         "--offer_url", bank.url, "--output", str(out), "--sample_rate", "1.0",
         "--flush_secs", "600", "--port", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    for _ in range(600):
        try:
            requests.post(f"http://127.0.0.1:{port}/v1/offers", json={}, timeout=1)
            return process
        except requests.ConnectionError:
            if process.poll() is not None:
                raise RuntimeError(f"the offers API exited with {process.returncode}") from None
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the offers API did not start")


@pytest.mark.slow
def test_sigterm_loses_nothing_answered_and_evaluation_reads_online_rows(
        crx_registry, german_records, offer_service, tmp_path):
    from pipelines import evaluate

    bank = offer_service()
    out = tmp_path / "out"
    port = free_port()
    server = _start_offers_api(crx_registry, bank, out, port)
    try:
        url = f"http://127.0.0.1:{port}/v1/offers"
        answered = []
        for i in range(25):
            answer = requests.post(url, data=_request(german_records, i, f"sig-{i:02d}"),
                                   headers=JSON, timeout=10)
            if answer.status_code == 200:
                answered.append(answer.json()["request_id"])
        assert len(answered) == 25
        assert not (out / "predictions").exists()  # nothing flushed yet (flush_secs 600)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    folder = out / "predictions" / "pipeline=credit_scoring" / f"model_name={MODEL}"
    rows = ds.dataset(str(folder), partitioning="hive").to_table().to_pylist()
    assert sorted(r["prediction_id"] for r in rows) == sorted(answered)
    # A batch run writes beside the online rows; evaluation joins both with their truth.
    from pipelines import credit_scoring
    from tests.conftest import write_jsonl

    batch = [json.loads(_request(german_records, i, f"batch-{i:02d}")) for i in range(25)]
    credit_scoring.run(["--input", write_jsonl(tmp_path / "batch.jsonl", batch), "--registry",
                        crx_registry, "--output", str(out), "--sample_rate", "1.0"])
    ids = answered + [b["request_id"] for b in batch]
    truth = tmp_path / "truth.jsonl"
    truth.write_text("".join(json.dumps({"prediction_id": pid, "label": 1,
                                         "label_time": "2026-12-20T00:00:00+00:00"}) + "\n"
                             for pid in ids))
    outcome = evaluate.run(["--predictions", str(out), "--truth", str(truth), "--registry",
                            crx_registry, "--output", str(tmp_path / "eval"), "--no_snapshot"])
    assert outcome["summary"]["join"]["matched"] == 50


def test_personal_data_is_dropped_or_pseudonymised_online(service_factory, german_records,
                                                         tmp_path):
    """The German data set declares applicant_name and phone (drop) and national_id
    (pseudonymise): the interactive path stores them as the pipeline does."""
    service, _ = service_factory()
    good = json.loads(_request(german_records, 0, "on-pii"))
    good.update(applicant_name="Greta Geheim", national_id="DE-ONLINE-1", phone="+49 555 01")
    status, body = service.answer(json.dumps(good).encode(), 2000)
    assert status == 200, body
    assert "Greta" not in json.dumps(body) and "DE-ONLINE-1" not in json.dumps(body)
    bad = dict(good, request_id="on-pii-bad", credit_amount=-1, national_id="DE-ONLINE-2")
    assert service.answer(json.dumps(bad).encode(), 2000)[0] == 400
    service.writer.flush()
    rows = ds.dataset(str(tmp_path / "out" / "predictions"), partitioning="hive").to_table()
    [row] = rows.to_pylist()
    assert row["national_id"] == service.privacy.pseudonym("DE-ONLINE-1")
    assert "applicant_name" not in row and "phone" not in row
    [dead] = ds.dataset(str(tmp_path / "out" / "dead_letters"),
                        partitioning="hive").to_table().to_pylist()
    stored = json.dumps([row, dead], default=str)
    for secret in ("Greta Geheim", "DE-ONLINE-1", "DE-ONLINE-2", "+49 555 01"):
        assert secret not in stored
    assert json.loads(dead["raw"])["national_id"] == service.privacy.pseudonym("DE-ONLINE-2")


def _declined_index(service, german_records) -> int:
    """A German applicant the model does not approve (no bank is asked)."""
    records, _ = german_records
    for index, record in enumerate(records[:300]):
        if service.score(record)[0] < service.rules.approve_min_score:
            return index
    pytest.skip("no declined applicant among the first 300")


def test_concurrent_duplicates_call_the_bank_once_and_a_restart_keeps_the_answer(
        service_factory, german_records, crx_registry, tmp_path, offer_service):
    import concurrent.futures

    bank = offer_service(latency_ms=300)  # slow enough for all ten to arrive while it prices
    service, _ = service_factory(bank=bank)
    index = _approved_index(service, german_records)
    body = _request(german_records, index, "dup-1")
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: service.answer(body, 5000), range(10)))
    assert [status for status, _ in answers] == [200] * 10
    assert len({json.dumps(b["offer"], sort_keys=True) for _, b in answers}) == 1
    assert sum(not b.get("replayed") for _, b in answers) == 1
    assert bank.stats()["calls"] == 1
    service.writer.flush()
    sampled = ds.dataset(str(tmp_path / "out" / "predictions"), partitioning="hive").to_table()
    assert sampled.column("prediction_id").to_pylist() == ["dup-1"]
    # A restart (a new process on the same output) keeps the claim and the answer.
    service.writer.close()
    again = OffersService(crx_registry, MODEL, "production", bank.url, str(tmp_path / "out"),
                          sample_rate=1.0)
    try:
        status, replayed = again.answer(body, 5000)
        assert (status, replayed["offer"], replayed["replayed"]) == (200, answers[0][1]["offer"],
                                                                     True)
        doubled = json.loads(body)
        doubled["credit_amount"] *= 2
        status, refused = again.answer(json.dumps(doubled).encode(), 5000)
        assert status == 409 and "already used for another payload" in refused["error"]
        assert bank.stats()["calls"] == 1
    finally:
        again.writer.close()


def test_a_504_is_not_final_for_a_retry_with_a_longer_deadline(service_factory, german_records,
                                                               offer_service):
    service, bank = service_factory(bank=offer_service(latency_ms=600))
    index = _approved_index(service, german_records)
    body = _request(german_records, index, "late-1")
    assert service.answer(body, 200)[0] == 504
    status, answer = service.answer(body, 5000)
    assert status == 200 and answer["offer_status"] == "offered" and not answer.get("replayed")


def _post_offer(url, body: bytes, **headers):
    return requests.post(f"{url}/v1/offers", data=body, timeout=30,
                         headers={**JSON, **headers})


@pytest.mark.parametrize("deadline", ["nan", "inf", "-inf", "1e309", "1e12", "0", "-5", "soon"])
def test_a_deadline_that_is_not_a_sane_number_is_a_400_and_a_dead_letter(
        service_factory, german_records, tmp_path, deadline):
    from services.offers_api import create_app
    from tests.conftest import serve_app

    service, _ = service_factory()
    with serve_app(create_app(service)) as url:
        answer = _post_offer(url, _request(german_records, 0, "dl-1"),
                             **{"X-Deadline-Ms": deadline})
    assert answer.status_code == 400, answer.text
    assert "X-Deadline-Ms must be a number of milliseconds above 0 and at most 30000" in \
        answer.json()["error"]
    service.writer.flush()
    [dead] = ds.dataset(str(tmp_path / "out" / "dead_letters"),
                        partitioning="hive").to_table().to_pylist()
    assert dead["stage"] == "validate" and "X-Deadline-Ms" in dead["message"]


def test_the_offers_api_refuses_at_its_edge_in_words(service_factory, german_records):
    from services.offers_api import create_app
    from tests.conftest import serve_app

    service, _ = service_factory()
    body = _request(german_records, 0, "edge-1")
    with serve_app(create_app(service, max_body_bytes=1024, token="offers-token")) as url:
        auth = {"Authorization": "Bearer offers-token"}
        assert _post_offer(url, body).status_code == 401
        assert _post_offer(url, body, Authorization="Bearer nope").status_code == 401
        plain = requests.post(f"{url}/v1/offers", data=body, timeout=30,
                              headers={**auth, "Content-Type": "text/plain"})
        assert plain.status_code == 415
        big = _post_offer(url, body + b" " * 2000, **auth)
        assert big.status_code == 413 and "exceeds the limit of 1024" in big.json()["error"]
        twice = _post_offer(url, b'{"request_id": "a", "request_id": "b"}', **auth)
        assert twice.status_code == 400 and "duplicate key" in twice.json()["error"]
        deep = _post_offer(url, b"[" * 500 + b"]" * 500, **auth)
        assert deep.status_code == 400
        assert _post_offer(url, body, **auth).status_code == 200


def test_a_hanging_bank_does_not_starve_an_unrelated_request(service_factory, german_records,
                                                             offer_service):
    import concurrent.futures

    from services.offers_api import create_app
    from tests.conftest import serve_app

    bank = offer_service(fail_rate=1.0, fail_kinds=("timeout",), hang_secs=15.0)
    service, _ = service_factory(bank=bank, bank_concurrency=4)
    approved = _approved_index(service, german_records)
    declined = _declined_index(service, german_records)
    with serve_app(create_app(service)) as url, \
            concurrent.futures.ThreadPoolExecutor(45) as pool:
        hanging = [pool.submit(_post_offer, url, _request(german_records, approved, f"h-{i}"),
                               **{"X-Deadline-Ms": "12000"}) for i in range(45)]
        time.sleep(1.0)  # every worker thread that can be taken is taken now
        started = time.monotonic()
        unrelated = _post_offer(url, _request(german_records, declined, "unrelated"),
                                **{"X-Deadline-Ms": "2000"})
        waited = time.monotonic() - started
        statuses = sorted(f.result().status_code for f in hanging)
    assert unrelated.status_code == 200 and unrelated.json()["decision"] != "approve"
    assert waited < 2.0, f"an unrelated request waited {waited:.1f} s behind a hanging bank"
    # Four calls waited for the bank (504 at their deadline); the rest were refused at once.
    assert statuses.count(504) == 4 and statuses.count(503) == 41
    print(f"unrelated request answered in {waited * 1000:.0f} ms while 45 waited on a bank "
          f"that hangs")


@pytest.mark.slow
def test_sigkill_under_load_loses_no_answered_row(crx_registry, german_records, offer_service,
                                                  tmp_path):
    import threading

    bank = offer_service()
    out, port = tmp_path / "out", free_port()
    url = f"http://127.0.0.1:{port}/v1/offers"
    server = _start_offers_api(crx_registry, bank, out, port)
    answered, refused, sent, stop = [], [], [], threading.Event()

    def client(number):
        for i in range(10_000):
            if stop.is_set():
                return
            request_id = f"kill-{number}-{i:05d}"
            body = _request(german_records, (number * 97 + i) % 500, request_id)
            if i % 7 == 3:  # a bad one now and then: its dead letter must survive too
                body = body.replace(b'"credit_amount": ', b'"credit_amount": -')
            sent.append(request_id)
            try:
                answer = requests.post(url, data=body, headers=JSON, timeout=10)
            except requests.RequestException:
                return  # killed while this one was in flight
            (answered if answer.status_code == 200 else refused).append(
                (request_id, answer.status_code))

    clients = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    try:
        for thread in clients:
            thread.start()
        while len(answered) < 150:
            time.sleep(0.05)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        stop.set()
        for thread in clients:
            thread.join(timeout=30)
        assert not (out / "predictions").exists()  # nothing was flushed before the kill
        # The next start writes what the killed one spooled; then it stops cleanly.
        server = _start_offers_api(crx_registry, bank, out, port)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    rows = ds.dataset(str(out / "predictions"), partitioning="hive").to_table()
    written = rows.column("prediction_id").to_pylist()
    dead = ds.dataset(str(out / "dead_letters"), partitioning="hive").to_table()
    ok = {request_id for request_id, _ in answered}
    assert len(written) == len(set(written))  # nothing doubled
    assert ok <= set(written) <= set(sent)  # nothing answered lost
    bad = {request_id for request_id, status in refused if status == 400}
    raw_ids = {json.loads(r).get("request_id") for r in dead.column("raw").to_pylist()
               if r and r.startswith("{")}
    assert bad and bad <= raw_ids
    # At most the requests in flight at the kill were written without their answer arriving.
    assert len(set(written) - ok) <= 8
    print(f"SIGKILL under load: {len(ok)} answered 200, {len(written)} rows written after the "
          f"restart ({len(set(written) - ok)} in flight at the kill), {len(bad)} answered 400, "
          f"all {len(bad)} in dead letters")


def test_the_offers_api_passes_its_token_to_a_protected_serving_function(
        service_factory, german_records, crx_registry):
    from services.model_server import create_app as serving_app
    from tests.conftest import serve_app

    with serve_app(serving_app(crx_registry, "model-token")) as endpoint:
        service, _ = service_factory(model_endpoint=endpoint, endpoint_token="model-token")
        status, body = service.answer(_request(german_records, 0, "tok-1"), 5000)
        assert status == 200 and body["versions"]["model"]["version"] == "v0001"
        without, _ = service_factory(model_endpoint=endpoint)
        with pytest.raises(Exception, match="serving function answered 401"):
            without.answer(_request(german_records, 0, "tok-2"), 5000)


def test_tokens_are_read_from_a_file_or_the_environment_and_argv_warns(tmp_path, monkeypatch,
                                                                       caplog):
    from services.http import read_token

    file = tmp_path / "token"
    file.write_text("from-file\n")
    monkeypatch.setenv("X_TOKEN", "from-env")
    assert read_token("test", "X_TOKEN", str(file), "from-argv") == "from-file"
    assert read_token("test", "X_TOKEN", None, "from-argv") == "from-env"
    monkeypatch.delenv("X_TOKEN")
    with caplog.at_level("WARNING"):
        assert read_token("test", "X_TOKEN", None, "from-argv") == "from-argv"
    assert "`ps` shows it" in caplog.text
    with pytest.raises(ValueError, match="token file .* cannot be read"):
        read_token("test", "X_TOKEN", str(tmp_path / "none"), None)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        read_token("test", "X_TOKEN", str(tmp_path / "empty"), None)


def test_a_name_in_the_wrong_field_is_in_neither_the_400_nor_the_dead_letter(
        service_factory, german_records, tmp_path):
    service, _ = service_factory()
    name = "Greta Geheim-Verborgen"
    for field in ("event_time", "purpose", "request_id"):
        body = dict(json.loads(_request(german_records, 0, f"wrong-{field}")), **{field: name})
        if field == "request_id":
            body[field] = name + "\u0007"  # control characters: refused
        status, answer = service.answer(json.dumps(body).encode(), 2000)
        assert status == 400 and "a string of" in answer["error"], answer
        assert "Greta" not in json.dumps(answer)
    service.writer.flush()
    dead = ds.dataset(str(tmp_path / "out" / "dead_letters"),
                      partitioning="hive").to_table().to_pylist()
    assert len(dead) == 3 and "Greta" not in json.dumps(dead, default=str)
    for letter in dead:
        kept = [v for v in json.loads(letter["raw"]).values()
                if isinstance(v, dict) and "characters" in v]
        assert len(kept) == 1 and "hmac" in kept[0]


@pytest.fixture
def redis_url(tmp_path):
    """A real redis-server on a free loopback port, for this test only."""
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; "
                    ".ci/run installs it)")
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_two_processes_sharing_redis_call_the_bank_once_for_concurrent_duplicates(
        service_factory, german_records, offer_service, redis_url):
    import concurrent.futures

    bank = offer_service(latency_ms=300)
    first, _ = service_factory(bank=bank, idempotency_store=redis_url)
    second, _ = service_factory(bank=bank, idempotency_store=redis_url)  # behind a balancer
    index = _approved_index(first, german_records)
    body = _request(german_records, index, "redis-dup")
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda i: (first, second)[i % 2].answer(body, 5000), range(10)))
    assert [status for status, _ in answers] == [200] * 10
    assert len({json.dumps(b["offer"], sort_keys=True) for _, b in answers}) == 1
    assert bank.stats()["calls"] == 1
    other = json.loads(body)
    other["credit_amount"] += 1
    assert second.answer(json.dumps(other).encode(), 5000)[0] == 409
    # A 504 releases the claim for a retry, in Redis as in SQLite.
    slow, _ = service_factory(bank=offer_service(latency_ms=600), idempotency_store=redis_url)
    late = _request(german_records, index, "redis-late")
    assert slow.answer(late, 200)[0] == 504
    assert slow.answer(late, 5000)[0] == 200
