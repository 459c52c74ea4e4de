"""Every command-line tool starts without TensorFlow, CUDA or Beam start-up noise, and answers
--help with its own options."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

CLIS = ["pipelines.credit_scoring", "pipelines.radar_qc", "pipelines.evaluate",
        "pipelines.explain", "pipelines.compare", "models.credit.train", "models.credit.replay",
        "models.credit.scenarios", "models.credit.compare", "models.promotion",
        "models.radar_qc.train", "services.model_server", "services.offers_api",
        "services.bank_offers", "services.chunk_feed", "transforms.radar.synthetic_volumes",
        "bench.serving", "pipelines.radar_reference", "transforms.radar.weak_labels"]
NOISE = ("cuda", "cuInit", "oneDNN", "absl::InitializeLog", "GCSFileSystem", "apitools",
         "cpu_feature_guard")


@pytest.mark.slow
@pytest.mark.parametrize("module", CLIS)
def test_help_is_quiet(module):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "BEAMLINE_VERBOSE_STARTUP")}
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert "usage" in output.lower()
    noisy = [line for line in output.splitlines() if any(n in line for n in NOISE)]
    assert not noisy, noisy
