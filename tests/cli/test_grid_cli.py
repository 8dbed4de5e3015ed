"""``dgm sample --grid``: the optimized grid is derived from the run once, stored in the run directory and
reused; the grid sampled on is the stored one; quadratic and uniform pick the spacing; bad uses are one line."""

import importlib
import json

import numpy as np
import pytest
import torch

from dgm.cli import main
from dgm.data import Scaling
from dgm.runs import checkpoint as ckpt
from dgm.runs.samples import write_samples
from dgm.samplers import level_grid
from dgm.samplers.grid import grid_path, save_grid

# the module (the attribute dgm.samplers.optimized_grid is the function)
optimized_grid_module = importlib.import_module("dgm.samplers.optimized_grid")
sample_module = importlib.import_module("dgm.cli.sample")


@pytest.fixture(autouse=True)
def small_vector_search(monkeypatch):
    """The vector-data derivation at a test's size (the settings are read at call time)."""
    monkeypatch.setattr(sample_module, "GRID_EXAMPLES_VECTOR", 200)
    monkeypatch.setattr(sample_module, "GRID_SEARCH_VECTOR", {"sweeps": 1, "candidates": 3, "objective": "sw"})



@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_settings):
    """A tiny trained DDPM run on gmm2d (L = 50, 3 steps)."""
    out = tmp_path_factory.mktemp("grid_cli") / "run"
    assert main(["train", "ddpm", "--data", "gmm2d", "--out", str(out), "--config", str(tiny_settings),
                 "--steps", "3", "--no-progress"]) == 0
    return out


def _sample(run, out, *extra):
    return ["sample", str(run), "-n", "40", "--out", str(out), "--sampler", "dpm++2m", "--steps", "4", *extra]


def _expected(run, tmp_path, **kw) -> np.ndarray:
    """What write_samples draws from the run's EMA model with ``kw`` (seed 0), in data space."""
    model, config = ckpt.load_model(run)
    out = write_samples(model, 40, tmp_path / "expected.npy", Scaling.from_dict(config["scaling"]), seed=0,
                        sampler="dpm++2m", steps=4, **kw)
    return np.load(out)


def test_optimized_grid_is_derived_once_then_reused(capsys, run, tmp_path, monkeypatch):
    """Mutations caught: deriving the grid on every call (the second call would hit the patched search) or
    never storing it / ignoring the stored file."""
    path = grid_path(run, "dpm++2m", 4)
    path.unlink(missing_ok=True)
    assert main(_sample(run, tmp_path / "a.npy", "--grid", "optimized")) == 0
    err = capsys.readouterr().err
    assert "derived the optimized dpm++2m grid for 4 NFE with a Gaussian start from 200" in err and str(path) in err
    stored = json.loads(path.read_text())
    assert stored["sampler"] == "dpm++2m" and stored["nfe"] == 4 and stored["L"] == 50
    assert stored["start"] == "gaussian" and stored["objective"] == "sw"
    assert stored["examples"] > 1 and "error" in stored and stored["step"] == ckpt.checkpoint_step(run) == 3

    def no_search(*args, **kw):
        raise AssertionError("the stored grid was derived again")

    monkeypatch.setattr(optimized_grid_module, "optimized_grid", no_search)
    assert main(_sample(run, tmp_path / "b.npy", "--grid", "optimized")) == 0
    err = capsys.readouterr().err
    assert "derived the" not in err and f"using the optimized grid stored in {path}" in err
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_a_grid_from_another_checkpoint_is_derived_again(capsys, run, tmp_path, monkeypatch):
    """A grid stored at another training step (the run was resumed since) is stale: derived anew and restamped.
    Mutation caught: reusing the stored grid whatever checkpoint it came from."""
    path = grid_path(run, "dpm++2m", 4)
    model, _ = ckpt.load_model(run)
    old = [50, 31, 9, 2, 0]
    save_grid(run, model.schedule, "dpm++2m", old, step=1, method="derived at step 1")
    calls = []
    real = optimized_grid_module.optimized_grid

    def counted(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(optimized_grid_module, "optimized_grid", counted)
    assert main(_sample(run, tmp_path / "a.npy", "--grid", "optimized")) == 0
    err = capsys.readouterr().err
    assert "derived from another checkpoint than step 3's" in err and "derived the optimized" in err
    stored = json.loads(path.read_text())
    assert calls == [1] and stored["step"] == 3 and stored["method"] != "derived at step 1"
    path.unlink()


def test_the_stored_grid_is_the_one_sampled_on(capsys, run, tmp_path):
    """A hand-made grid stored in the run is what the samples use. Mutation caught: --grid optimized falling
    back to the quadratic grid (or another one) instead of the stored file."""
    model, _ = ckpt.load_model(run)
    mine = [50, 31, 9, 2, 0]
    assert mine != level_grid(model.schedule, 4)
    save_grid(run, model.schedule, "dpm++2m", mine, method="hand-made for the test")
    assert main(_sample(run, tmp_path / "s.npy", "--grid", "optimized")) == 0
    got = np.load(tmp_path / "s.npy")
    np.testing.assert_array_equal(got, _expected(run, tmp_path, grid=mine))
    assert not np.array_equal(got, _expected(run, tmp_path))  # the quadratic grid samples differently
    grid_path(run, "dpm++2m", 4).unlink()


def test_a_grid_derived_with_a_gaussian_start_is_sampled_with_it(capsys, run, tmp_path):
    """A stored grid marked start = gaussian is sampled from x_L carried to its first level by the Gaussian of
    the run's training data. Mutation caught: the start dropped when the stored grid is reused."""
    from dgm.data.spec import load_run_data
    from dgm.samplers.gaussian_start import GaussianStart

    model, config = ckpt.load_model(run)
    mine = [30, 12, 5, 2, 0]
    save_grid(run, model.schedule, "dpm++2m", mine, start="gaussian", method="hand-made for the test")
    assert main(_sample(run, tmp_path / "s.npy", "--grid", "optimized")) == 0
    got = np.load(tmp_path / "s.npy")
    start = GaussianStart.fit(load_run_data(config["data"]).train)
    np.testing.assert_array_equal(got, _expected(run, tmp_path, grid=mine, start=start))
    assert not np.array_equal(got, _expected(run, tmp_path, grid=mine))
    grid_path(run, "dpm++2m", 4).unlink()


@pytest.mark.parametrize("spacing", ["quadratic", "uniform"])
def test_spacing_grids(capsys, run, tmp_path, spacing):
    """--grid quadratic|uniform samples on level_grid's spacing. Mutation caught: the flag ignored (uniform
    would then equal the quadratic default) or passed as the wrong spacing."""
    model, _ = ckpt.load_model(run)
    assert main(_sample(run, tmp_path / "s.npy", "--grid", spacing)) == 0
    got = np.load(tmp_path / "s.npy")
    np.testing.assert_array_equal(got, _expected(run, tmp_path, grid=level_grid(model.schedule, 4, spacing)))
    if spacing == "uniform":
        assert not np.array_equal(got, _expected(run, tmp_path))


def test_grid_errors(capsys, run, tmp_path, one_line_error):
    """One line naming the bad value. Mutations caught: optimizing a grid for the ancestral sampler (the
    default), accepting an unknown grid, reading a corrupt stored grid (or one with a non-numeric step) as a
    grid, a VAE run taking --grid."""
    base = ["sample", str(run), "-n", "8", "--out", str(tmp_path / "x.npy")]
    line = one_line_error(base + ["--grid", "optimized"])
    assert "--grid optimized needs --sampler" in line and "'ancestral'" in line
    assert "'cubic'" in one_line_error(base + ["--grid", "cubic"])
    bad = grid_path(run, "ddim", 3)
    stamped = {"sampler": "ddim", "nfe": 3, "L": 50, "grid": [50, 20, 5, 0], "step": "three"}
    for text in ("not json", json.dumps(stamped)):  # a corrupt file; a grid with a step that is not a number
        bad.write_text(text)
        try:
            line = one_line_error(base + ["--sampler", "ddim", "--steps", "3", "--grid", "optimized"])
            assert str(bad) in line and "not a stored level grid" in line
            assert bad.read_text() == text  # left as it was, not overwritten by a new derivation
        finally:
            bad.unlink()
    assert "--steps 51" in one_line_error(base + ["--sampler", "ddim", "--steps", "51", "--grid", "optimized"])
    vae = tmp_path / "vae"
    assert main(["train", "vae", "--data", "gmm2d", "--out", str(vae), "--steps", "2", "--no-progress"]) == 0
    capsys.readouterr()
    line = one_line_error(["sample", str(vae), "-n", "8", "--out", str(tmp_path / "v.npy"), "--grid", "uniform"])
    assert "is a vae" in line and "--grid uniform" in line
    assert not (tmp_path / "x.npy").exists() and not (tmp_path / "v.npy").exists()


def test_help_names_the_grids(capsys):
    """Mutation caught: the --grid option missing from dgm sample --help."""
    assert main(["sample", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--grid {quadratic,uniform,optimized}" in out and "grid_SAMPLER_STEPS.json" in out


def test_conditional_run_derives_with_labels(capsys, tmp_path, tiny_settings):
    """On a class-conditional run the grid is derived with the training examples' labels. Mutation caught:
    calling the denoiser without labels (a net with label dropout 0 refuses the null class)."""
    out = tmp_path / "cond"
    assert main(["train", "ddpm", "--data", "gmm2d", "--out", str(out), "--config", str(tiny_settings),
                 "--steps", "2", "--no-progress", "--conditional", "--label-dropout", "0"]) == 0
    assert main(["sample", str(out), "-n", "8", "--out", str(tmp_path / "c.npy"), "--sampler", "ddim",
                 "--steps", "3", "--grid", "optimized", "--class", "1"]) == 0
    assert "derived the optimized ddim grid for 3 NFE" in capsys.readouterr().err
    assert torch.isfinite(torch.from_numpy(np.load(tmp_path / "c.npy"))).all()


def _eval(run, *extra):
    return ["eval", str(run), "--metrics", "fd", "--n-samples", "40", "--max-examples", "8", "--sampler", "dpm++2m",
            "--steps", "4", *extra]


def test_eval_samples_on_the_stored_grid(capsys, run):
    """dgm eval --grid: mutations caught: the flag ignored by the metrics' samples (uniform would equal the
    default quadratic), or optimized not reading the stored grid (a stored copy of the uniform grid must give
    exactly the uniform figures)."""
    s = ckpt.load_model(run)[0].schedule
    path = grid_path(run, "dpm++2m", 4)
    path.unlink(missing_ok=True)
    fd = {}
    for name in ("default", "uniform", "optimized"):
        if name == "optimized":
            save_grid(run, s, "dpm++2m", level_grid(s, 4, "uniform"), how="a test's copy of the uniform grid")
        capsys.readouterr()
        assert main(_eval(run, *(() if name == "default" else ("--grid", name)))) == 0
        fd[name] = json.loads(capsys.readouterr().out)["fd"]
    path.unlink()
    assert fd["uniform"] != fd["default"]
    assert fd["optimized"] == fd["uniform"]


def test_eval_grid_needs_metrics(run, one_line_error, capsys):
    capsys.readouterr()
    line = one_line_error(["eval", str(run), "--grid", "uniform"])
    assert "--grid uniform applies to the samples of --metrics" in line


def test_an_image_run_derives_a_start_grid_point_by_point(capsys, tmp_path, monkeypatch):
    """On images of an unconditional run the grid is derived with the Gaussian start and the paired objective
    from GRID_EXAMPLES images, and sampled with the start. Mutations caught: images left without the start,
    or given the vector settings."""
    from dgm.data.spec import load_run_data
    from dgm.samplers.gaussian_start import GaussianStart

    monkeypatch.setattr(sample_module, "GRID_SEARCH", {"sweeps": 1, "candidates": 3})
    run = tmp_path / "digits"
    assert main(["train", "ddpm", "--data", "digits", "--steps", "2", "--out", str(run), "--no-progress"]) == 0
    args = ["sample", str(run), "-n", "8", "--out", str(tmp_path / "s.npy"), "--sampler", "unipc", "--steps", "3",
            "--grid", "optimized"]
    assert main(args) == 0
    assert "grid for 3 NFE with a Gaussian start from 64 training examples" in capsys.readouterr().err
    stored = json.loads(grid_path(run, "unipc", 3).read_text())
    assert stored["start"] == "gaussian" and stored["objective"] == "mse" and stored["examples"] == 64
    model, config = ckpt.load_model(run)
    start = GaussianStart.fit(load_run_data(config["data"]).train)
    expected = write_samples(model, 8, tmp_path / "e.npy", Scaling.from_dict(config["scaling"]), seed=0,
                             sampler="unipc", steps=3, grid=stored["grid"], start=start)
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), np.load(expected))
