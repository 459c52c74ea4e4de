import json
import os

import pytest

from models import registry


def _publish(tmp_path, reg, payload=b"model bytes"):
    source = tmp_path / "model.keras"
    source.write_bytes(payload)
    return registry.publish(str(reg), "toy", str(source), {"note": payload.decode()})


def test_versions_increase_and_latest_resolves_to_highest(tmp_path):
    reg = tmp_path / "reg"
    first = _publish(tmp_path, reg, b"one")
    second = _publish(tmp_path, reg, b"two")
    assert (first.version, second.version) == ("v0001", "v0002")
    assert registry.list_versions(str(reg), "toy") == ["v0001", "v0002"]
    latest = registry.resolve(str(reg), "toy")
    assert latest.version == "v0002" and latest.manifest["note"] == "two"
    pinned = registry.resolve(str(reg), "toy", "v0001")
    assert pinned.manifest["note"] == "one"
    # The version is part of the path, which Beam reports as PredictionResult.model_id.
    assert "/toy/v0001/" in pinned.path.replace(os.sep, "/")


def test_manifest_records_hash_and_name(tmp_path):
    ref = _publish(tmp_path, tmp_path / "reg")
    manifest = json.loads((tmp_path / "reg" / "toy" / "v0001" / "manifest.json").read_text())
    assert manifest["name"] == "toy" and manifest["version"] == "v0001"
    assert manifest["model_sha256"] == ref.sha256
    assert len(ref.sha256) == 64


def test_unknown_model_and_version_are_clear_errors(tmp_path):
    reg = tmp_path / "reg"
    _publish(tmp_path, reg)
    with pytest.raises(registry.RegistryError, match="no versions of model 'other'"):
        registry.resolve(str(reg), "other")
    with pytest.raises(registry.RegistryError, match="no complete version 'v0009'.*v0001"):
        registry.resolve(str(reg), "toy", "v0009")


def test_tampered_model_fails_its_hash_check(tmp_path):
    reg = tmp_path / "reg"
    ref = _publish(tmp_path, reg)
    with open(ref.path, "ab") as f:
        f.write(b"tampered")
    with pytest.raises(registry.RegistryError, match="sha256"):
        registry.resolve(str(reg), "toy")


def test_incomplete_version_is_ignored_and_never_overwritten(tmp_path):
    reg = tmp_path / "reg"
    _publish(tmp_path, reg)
    # A crashed publish: folder and model but no manifest.
    (reg / "toy" / "v0002").mkdir()
    assert registry.resolve(str(reg), "toy").version == "v0001"
    # The next publish neither reuses the half-written folder nor is blocked by it.
    assert _publish(tmp_path, reg, b"three").version == "v0003"
    assert registry.resolve(str(reg), "toy").manifest["note"] == "three"
    assert not (reg / "toy" / "v0002" / "manifest.json").exists()


# --- names and paths ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["..", "*", "a/b", "", "toy*", "x" * 65, "ünï"])
def test_a_model_name_that_could_leave_the_registry_or_glob_is_refused(tmp_path, name):
    reg = tmp_path / "reg"
    _publish(tmp_path, reg)
    with pytest.raises(registry.RegistryError, match="is not a model name"):
        registry.resolve(str(reg), name)
    with pytest.raises(registry.RegistryError, match="is not a model name"):
        registry.list_versions(str(reg), name)


@pytest.mark.parametrize("version", ["v²²²²", "v" + "1" * 5000, "v0001/../v0002", "*", "V0001"])
def test_a_version_that_is_no_version_nor_alias_is_refused(tmp_path, version):
    reg = tmp_path / "reg"
    _publish(tmp_path, reg)
    with pytest.raises(registry.RegistryError, match="neither a version"):
        registry.resolve(str(reg), "toy", version)


def test_an_alias_file_whose_version_is_not_a_version_reads_as_no_alias(tmp_path):
    reg = tmp_path / "reg"
    _publish(tmp_path, reg)
    (reg / "toy" / "aliases").mkdir()
    (reg / "toy" / "aliases" / "production.json").write_text('{"version": 7}')
    assert registry.read_alias(str(reg), "toy", "production") is None
    with pytest.raises(registry.RegistryError, match="no alias 'production'"):
        registry.resolve(str(reg), "toy", "production")


def _rewrite_manifest(reg, version, **changes):
    path = reg / "toy" / version / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("changes, named", [
    ({"model_file": "../../../../etc/passwd"}, "model_file"),
    ({"model_file": "/etc/passwd"}, "model_file"),
    ({"exports": {"saved_model": {"path": "../v0001/saved_model", "files": {}}}},
     "exports.saved_model.path"),
    ({"exports": {"saved_model": {"path": "saved_model", "files": {"../../x": "0" * 64}}}},
     "a file of exports.saved_model"),
])
def test_a_manifest_path_outside_its_version_folder_is_refused_at_load(tmp_path, changes,
                                                                       named):
    reg = tmp_path / "reg"
    _publish(tmp_path, reg)
    _publish(tmp_path, reg, b"two")
    _rewrite_manifest(reg, "v0002", **changes)
    for verify in (True, False):  # refused before any file it names is opened or hashed
        with pytest.raises(registry.RegistryError, match=f"manifest is refused.*{named}"):
            registry.resolve(str(reg), "toy", "v0002", verify=verify)


def test_an_export_named_outside_the_version_folder_is_refused_at_publish(tmp_path):
    source = tmp_path / "export"
    source.mkdir()
    (source / "f").write_bytes(b"x")
    with pytest.raises(registry.RegistryError, match="export name"):
        registry.publish(str(tmp_path / "reg"), "toy", str(source / "f"), {},
                         exports={"../escape": str(source)})
    assert not (tmp_path / "escape").exists()


def test_an_export_has_one_digest_of_its_files_in_the_manifest(tmp_path):
    source = tmp_path / "export"
    (source / "variables").mkdir(parents=True)
    (source / "saved_model.pb").write_bytes(b"graph")
    (source / "variables" / "v").write_bytes(b"weights")
    model = tmp_path / "model.keras"
    model.write_bytes(b"keras")
    ref = registry.publish(str(tmp_path / "reg"), "toy", str(model), {},
                           exports={"saved_model": str(source)})
    entry = ref.manifest["exports"]["saved_model"]
    assert set(entry["files"]) == {"saved_model.pb", "variables/v"}
    assert ref.export_sha256("saved_model") == entry["sha256"] == registry.tree_sha256(
        entry["files"])
    assert ref.digests() == {ref.sha256, entry["sha256"]}
    # Another weight file gives another digest.
    assert registry.tree_sha256({**entry["files"], "variables/v": "0" * 64}) != entry["sha256"]


# --- the audit trail -------------------------------------------------------------------------

_MOVER = """
import sys
from models import registry
reg, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(count):
    registry.set_alias(reg, "toy", "production", ("v0001", "v0002")[i % 2], tag, f"move {i}")
"""


def test_two_processes_moving_an_alias_lose_no_record_and_keep_the_chain(tmp_path):
    import subprocess
    import sys

    reg = tmp_path / "reg"
    _publish(tmp_path, reg)
    _publish(tmp_path, reg, b"two")
    registry.set_alias(str(reg), "toy", "production", "v0001", "t", "first")
    registry.set_alias(str(reg), "toy", "production", "v0002", "t", "second")
    records = reg / "toy" / "aliases" / "audit"
    earlier = {p.name: p.read_bytes() for p in records.iterdir()}
    movers = [subprocess.Popen([sys.executable, "-c", _MOVER, str(reg), tag, "200"])
              for tag in ("a", "b")]
    assert [m.wait(timeout=300) for m in movers] == [0, 0]
    moves = registry.audit_log(str(reg), "toy")
    assert len(moves) == 402 == len(list(records.iterdir()))
    assert [m["seq"] for m in moves] == list(range(1, 403))
    assert sorted(m["by"] for m in moves[2:]).count("a") == 200
    assert {p: (records / p).read_bytes() for p in earlier} == earlier
    trail = registry.audit_trail(str(reg), "toy")
    assert trail.problems == []
    # Each record's "from" is the version the previous move left.
    assert all(b["from"] == a["to"] for a, b in zip(moves, moves[1:]))
    assert registry.read_alias(str(reg), "toy", "production")["version"] == moves[-1]["to"]


def _moved_three_times(tmp_path):
    reg = tmp_path / "reg"
    _publish(tmp_path, reg)
    _publish(tmp_path, reg, b"two")
    for version in ("v0001", "v0002", "v0001"):
        registry.set_alias(str(reg), "toy", "production", version, "t", f"to {version}")
    return reg, reg / "toy" / "aliases" / "audit"


def test_an_unwritable_audit_trail_moves_nothing(tmp_path):
    reg, records = _moved_three_times(tmp_path)
    # A file where the records go: no record can be written (even by root).
    for path in records.iterdir():
        path.chmod(0o644)
        path.unlink()
    records.rmdir()
    records.write_text("not a folder")
    with pytest.raises(registry.RegistryError, match="audit record .* cannot be written.*"
                                                     "production was not moved"):
        registry.set_alias(str(reg), "toy", "production", "v0002", "t", "blocked")
    assert registry.read_alias(str(reg), "toy", "production")["version"] == "v0001"


def test_an_edited_deleted_or_damaged_record_is_named_and_blocks_nothing(tmp_path):
    from models.promotion import rollback

    reg, records = _moved_three_times(tmp_path)
    second = records / "00000002.json"
    second.chmod(0o644)
    second.write_text(second.read_text().replace('"to": "v0002"', '"to": "v0009"'))
    problems = registry.audit_trail(str(reg), "toy").problems
    assert problems == ["audit record 00000003.json does not chain to 00000002.json: "
                        "00000002.json was edited or replaced, or 00000003.json was"]
    second.write_text("{junk")
    assert "audit record 00000002.json is damaged (not a move record)" in \
        registry.audit_trail(str(reg), "toy").problems
    # Status still reads; rollback uses the readable record that made the alias what it is.
    assert registry.list_aliases(str(reg), "toy") == {"production": "v0001"}
    with pytest.raises(Exception, match="smoke"):  # a toy model fails promotion's smoke check
        rollback(str(reg), "toy")
    second.unlink()
    assert registry.audit_trail(str(reg), "toy").problems == [
        "audit record 00000002.json missing (deleted?): the chain jumps from 00000001.json to "
        "00000003.json"]
    (records / "00000003.json").unlink()
    assert "alias production was moved by audit record 00000003.json, which is missing " \
           "(deleted?)" in registry.audit_trail(str(reg), "toy").problems


def test_an_alias_moved_outside_the_trail_is_named(tmp_path):
    reg, _ = _moved_three_times(tmp_path)
    path = reg / "toy" / "aliases" / "production.json"
    path.write_text(json.dumps({"alias": "production", "version": "v0002"}))
    assert registry.audit_trail(str(reg), "toy").problems == [
        "alias production names no audit record: it was moved outside the audit trail"]


def test_alias_moves_on_object_storage_are_refused_in_words(tmp_path):
    from tests import object_store

    reg = tmp_path / "reg"
    _publish(tmp_path, reg)
    import shutil
    import uuid

    remote = object_store.PREFIX + "reg-" + uuid.uuid4().hex
    shutil.copytree(reg, object_store.local(remote))
    try:
        with pytest.raises(registry.RegistryError, match="localtest:// does not offer"):
            registry.set_alias(remote, "toy", "production", "v0001", "t", "t")
        assert registry.list_versions(remote, "toy") == ["v0001"]  # reading works there
        assert registry.resolve(remote, "toy").version == "v0001"
    finally:
        shutil.rmtree(object_store.local(remote))


# --- signatures ------------------------------------------------------------------------------

def test_signed_versions_are_required_once_keys_are_trusted_and_survive_rotation(
        tmp_path, monkeypatch):
    from models import signing

    monkeypatch.setenv("BEAMLINE_HOME", str(tmp_path / "home"))  # no key files of the project
    reg = tmp_path / "reg"
    unsigned = _publish(tmp_path, reg)
    keys = tmp_path / "keys"
    private, trusted, first_key = signing.generate(keys)
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    monkeypatch.setenv(signing.SIGNING_KEY_ENV, str(private))
    monkeypatch.setenv(signing.TRUSTED_KEYS_ENV, str(trusted))
    signed = _publish(tmp_path, reg, b"two")
    assert registry.resolve(str(reg), "toy", signed.version).version == "v0002"
    with pytest.raises(registry.RegistryError, match="v0001 is refused: it is not signed"):
        registry.resolve(str(reg), "toy", unsigned.version)
    assert registry.sign_version(str(reg), "toy", "v0001") == first_key
    registry.resolve(str(reg), "toy", "v0001")
    # A manifest edited after signing (its hashes still right) is refused.
    _rewrite_manifest(reg, "v0002", note="edited")
    with pytest.raises(registry.RegistryError, match="signature does not match its manifest"):
        registry.resolve(str(reg), "toy", "v0002")
    _rewrite_manifest(reg, "v0002", note="two")  # not byte-identical: still refused
    with pytest.raises(registry.RegistryError, match="signature does not match"):
        registry.resolve(str(reg), "toy", "v0002")
    # Rotation: a new key; the old public key stays trusted until removed.
    private, trusted, second_key = signing.generate(keys)
    assert second_key != first_key and (keys / f"registry-signing.{first_key}.pem").exists()
    registry.resolve(str(reg), "toy", "v0001")
    only_new = tmp_path / "only-new.pem"
    only_new.write_bytes(trusted.read_bytes().split(b"-----END PUBLIC KEY-----\n")[1])
    monkeypatch.setenv(signing.TRUSTED_KEYS_ENV, str(only_new))
    with pytest.raises(registry.RegistryError, match=f"signed by key {first_key}, which is not "
                                                     f"among the trusted keys"):
        registry.resolve(str(reg), "toy", "v0001")
    assert registry.sign_version(str(reg), "toy", "v0001") == second_key
    registry.resolve(str(reg), "toy", "v0001")
    # Signing refuses a version whose files no longer match.
    (reg / "toy" / "v0001" / "model.keras").write_bytes(b"swapped")
    with pytest.raises(registry.RegistryError, match="not signed: .*does not match"):
        registry.sign_version(str(reg), "toy", "v0001")


def test_models_verify_prints_each_problem_and_exits_2(tmp_path, capsys):
    from models.promotion import main

    reg, records = _moved_three_times(tmp_path)
    assert main(["verify", "--registry", str(reg), "--model", "toy"]) == 0
    assert "toy: 2 versions, 3 audit records, files, signatures and audit chain intact" in \
        capsys.readouterr().out
    (records / "00000002.json").chmod(0o644)
    (records / "00000002.json").write_text("{junk")
    (reg / "toy" / "v0001" / "model.keras").write_bytes(b"swapped")
    assert main(["verify", "--registry", str(reg), "--model", "toy"]) == 2
    out = capsys.readouterr().out
    assert "problem: model toy v0001: " in out and "has sha256" in out
    assert "problem: audit record 00000002.json is damaged" in out
    # The junk record also breaks the chain to the next one: both are named.
    assert "problem: audit record 00000003.json does not chain to 00000002.json" in out
    assert out.splitlines()[-1] == "toy: 2 versions, 2 audit records, 3 problems"
    assert main(["verify", "--registry", str(reg), "--model", "nobody"]) == 2


def test_status_at_a_time_answers_from_the_audit_trail_which_version_each_alias_named(
        tmp_path, capsys):
    import datetime

    from models.promotion import main

    reg, _ = _moved_three_times(tmp_path)
    registry.set_alias(str(reg), "toy", "shadow", "v0002", "t", "shadow it")
    moves = registry.audit_log(str(reg), "toy")
    times = [datetime.datetime.fromisoformat(m["time"]) for m in moves]
    tick = datetime.timedelta(microseconds=1)

    def at(when):
        assert main(["status", "--registry", str(reg), "--model", "toy", "--at",
                     when.isoformat()]) == 0
        answer = json.loads(capsys.readouterr().out)
        return {alias: entry["version"] for alias, entry in answer["aliases"].items()}

    assert at(times[0] - tick) == {}
    assert at(times[0]) == {"production": "v0001"}
    assert at(times[1] + tick) == {"production": "v0002"}
    assert at(times[2]) == {"production": "v0001"}
    assert at(times[3] + datetime.timedelta(days=1)) == {"production": "v0001",
                                                         "shadow": "v0002"}
    # Without an offset the time is UTC.
    naive = (times[1] + tick).astimezone(datetime.UTC).replace(tzinfo=None).isoformat()
    assert main(["status", "--registry", str(reg), "--model", "toy", "--at", naive]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["aliases"]["production"]["version"] == "v0002"
    assert answer["aliases"]["production"]["record"] == "00000002.json"
    with pytest.raises(SystemExit) as refused:
        main(["status", "--registry", str(reg), "--model", "toy", "--at", "last tuesday"])
    assert refused.value.code == 2
    assert "--at: 'last tuesday' is not an ISO-8601 time" in capsys.readouterr().err
