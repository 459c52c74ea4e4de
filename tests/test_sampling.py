import pytest

from transforms.common.sampling import keep_prediction, sample_fraction, validate_rate


def test_fraction_is_stable_and_in_unit_interval():
    assert sample_fraction("req-1") == sample_fraction("req-1")
    assert sample_fraction("req-1") != sample_fraction("req-2")
    assert all(0.0 <= sample_fraction(f"id-{i}") < 1.0 for i in range(1000))


def test_known_value_pins_the_hash_across_versions():
    # sha256("req-0000001")[:8] as a fraction of 2**64: changing the hash would silently
    # change which predictions every past and future run keeps.
    import hashlib
    expected = int(hashlib.sha256(b"req-0000001").hexdigest()[:16], 16) / 2**64
    assert sample_fraction("req-0000001") == pytest.approx(expected, abs=0)


def test_rate_bounds_keep_none_or_all():
    ids = [f"id-{i}" for i in range(500)]
    assert not any(keep_prediction(i, 0.0) for i in ids)
    assert all(keep_prediction(i, 1.0) for i in ids)


def test_kept_share_matches_rate_and_samples_nest():
    ids = [f"id-{i}" for i in range(20000)]
    at_10 = {i for i in ids if keep_prediction(i, 0.1)}
    at_20 = {i for i in ids if keep_prediction(i, 0.2)}
    assert abs(len(at_10) / len(ids) - 0.1) < 0.01
    assert abs(len(at_20) / len(ids) - 0.2) < 0.015
    # A higher rate keeps a superset: raising the rate never drops a sampled prediction.
    assert at_10 <= at_20


def test_invalid_rate_is_rejected():
    with pytest.raises(ValueError, match=r"sample rate must lie in \[0, 1\], got 1.5"):
        validate_rate(1.5)
