"""Run directories written by dgm 0.1.0 (before the subpackage layout) load, sample and evaluate with the
output they gave then, under the same seed (tests/fixtures/legacy_0_1_0/make.sh made them).

Catches a renamed parameter or buffer (the weights no longer load), a changed noise order in a sampler or
the bound, a changed default (sampler, steps, grid, reverse variance), or a changed data split.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dgm.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "legacy_0_1_0"
CASES = [(run, sampler) for run in ("ddpm_gmm2d", "ddpm_digits") for sampler in ("ancestral", "ddim", "dpm++2m")]
CASES += [("vae_digits", "sample"), ("hvae_moons", "sample")]


@pytest.fixture
def runs(tmp_path):
    """A copy of the fixtures, so that nothing a test does can change them."""
    shutil.copytree(FIXTURES, tmp_path / "legacy")
    return tmp_path / "legacy"


@pytest.mark.parametrize("run,sampler", CASES)
def test_legacy_run_samples_as_before(runs, tmp_path, run, sampler):
    out = tmp_path / "x.npy"
    argv = ["sample", str(runs / run), "-n", "6", "--out", str(out), "--seed", "3", "--device", "cpu"]
    if sampler != "sample":
        argv += ["--sampler", sampler] + ([] if sampler == "ancestral" else ["--steps", "8"])
    assert main(argv) == 0
    got, want = np.load(out), np.load(runs / "expected" / f"{run}_{sampler}.npy")
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("run", ["ddpm_gmm2d", "ddpm_digits", "vae_digits", "hvae_moons"])
def test_legacy_run_evaluates_as_before(runs, capsys, run):
    assert main(["eval", str(runs / run), "--max-examples", "12", "--seed", "1", "--device", "cpu"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = json.loads((runs / "expected" / f"{run}_eval.json").read_text())
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
        else:
            assert got[key] == value, key
