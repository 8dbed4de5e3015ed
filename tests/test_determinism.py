"""Determinism on the CPU: the same seed gives the same samples and the same evaluation, bit for bit.

`dgm sample` and `dgm eval` run twice each on one tiny run, with the global torch and numpy random states
set differently before each call, so any draw that is not taken from dgm's seeded generators (an unseeded
``torch.randn``, ``np.random``) makes the two outputs differ.
"""

import json

import numpy as np
import pytest
import torch

from dgm.cli import main

TOML = ('[model]\nlevels = 20\n[model.net]\nhidden = 16\ndepth = 1\nemb_dim = 8\n'
        '[train]\nbatch_size = 32\nlog_every = 5\n')


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("determinism")
    (root / "tiny.toml").write_text(TOML)
    assert main(["train", "ddpm", "--data", "gmm2d", "--out", str(root / "run"), "--config", str(root / "tiny.toml"),
                 "--steps", "5", "--no-progress"]) == 0
    return root / "run"


def _disturbed(k: int) -> None:
    """Different global random states before each of the two calls."""
    torch.manual_seed(1000 + k)
    np.random.seed(2000 + k)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim", "dpm++2m"])
def test_dgm_sample_twice_is_bit_for_bit(run, tmp_path, capsys, sampler):
    """Catches an unseeded draw in a sampler or in sample_model (x_L, the ancestral noise, a chunk's seed)."""
    outputs = []
    for k in range(2):
        _disturbed(k)
        out = tmp_path / f"s{k}.npy"
        assert main(["sample", str(run), "-n", "50", "--out", str(out), "--seed", "3", "--sampler", sampler,
                     "--steps", "10"]) == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    _disturbed(0)
    assert main(["sample", str(run), "-n", "50", "--out", str(tmp_path / "other.npy"), "--seed", "4", "--sampler",
                 sampler, "--steps", "10"]) == 0
    assert (tmp_path / "other.npy").read_bytes() != outputs[0]  # the seed matters: not a constant output


def test_dgm_eval_twice_is_bit_for_bit(run, capsys):
    """The bound (one noise draw per level and example), the ODE NLL and every quality metric (the samples,
    the reference halves, KID's subsets, SW's directions) give the same JSON. Catches an unseeded draw in any."""
    printed = []
    for k in range(2):
        _disturbed(k)
        assert main(["eval", str(run), "--max-examples", "64", "--likelihood", "all", "--metrics",
                     "fd,kid,precision,recall,sw,mmd", "--n-samples", "64", "--sampler", "ddim", "--steps", "5",
                     "--seed", "7"]) == 0
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1]
    result = json.loads(printed[0])
    assert {"nll_nats", "ode_nll_nats", "fd", "kid", "sw", "mmd"} <= result.keys()
