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
