"""``dgm report``: a page built from tiny runs is self-contained, complete and renders."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dgm.cli import main as cli_main
from dgm.data import load_data
from dgm.models import build_model
from dgm.report import demo
from dgm.report.html import build_report
from dgm.report.run_figures import RunFigures, run_figures
from dgm.training.config import TrainConfig, merge_settings
from dgm.training.loop import fit
from dgm.training.recipes import recipe

SECTIONS = ("summary", "loss", "blur", "samples", "neighbours", "forward", "reverse", "nfe", "density")
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def _train(root: Path, kind: str, spec: str, steps: int, over: dict) -> Path:
    data = load_data(spec)
    model_cfg, train_cfg = recipe(kind, data.scaling)
    train_cfg |= {"steps": steps, "log_every": 2, "batch_size": 64, "warmup_steps": 2}
    torch.manual_seed(0)
    out = root / f"{spec}-{kind}"
    fit(build_model(merge_settings(model_cfg, over)), data, out, train_config=TrainConfig.from_dict(train_cfg),
        progress=False, data_spec={"spec": spec, "seed": 0, "heldout_fraction": 0.1})
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """A tiny digits DDPM (UNet, 20 levels), a tiny digits VAE and a tiny gmm2d DDPM, a few steps each."""
    root = tmp_path_factory.mktemp("runs")
    return [_train(root, "ddpm", "digits", 6, demo.TINY_DDPM),
            _train(root, "vae", "digits", 10, demo.TINY_VAE),
            _train(root, "ddpm", "gmm2d", 10, {"levels": 20, "net": {"hidden": 16, "depth": 1, "emb_dim": 16}})]


@pytest.fixture(scope="module")
def page(runs, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("page") / "report.html"
    assert build_report(runs, out, n_samples=48) == out
    return out, out.read_text()


def _images(text: str) -> list[str]:
    return re.findall(r'<img[^>]*\ssrc="([^"]*)"', text)


def test_page_is_self_contained(page):
    path, text = page
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    for attr, value in re.findall(r'\s(src|href)\s*=\s*["\']?([^"\'\s>]*)', text):
        ok = value.startswith("data:image/png;base64,") if attr == "src" else value.startswith("#")
        assert ok, f"{attr}={value[:60]!r} points outside the page"
    assert "<script" not in text and "<link" not in text and "url(" not in text
    assert not [p for p in path.parent.iterdir() if p.name != path.name]  # no temporary file left


def test_page_has_every_section(page, runs):
    _, text = page
    found = set(re.findall(r'data-section="([a-z]+)"', text))
    assert set(SECTIONS) <= found, f"missing sections: {set(SECTIONS) - found}"
    for run in runs:
        assert run.name in text
    for word in ("bits/dim", "fd floor", "sw floor", "cross_entropy", "blur_floor", "sharpness", "ancestral",
                 "ddim", "dpm++2m", "x0_hat"):
        assert word in text, word


def test_images_decode_and_are_not_blank(page):
    _, text = page
    srcs = _images(text)
    assert len(srcs) >= 12
    for src in srcs:
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        img = Image.open(io.BytesIO(png))
        assert img.format == "PNG" and min(img.size) >= 8
        assert np.asarray(img.convert("L"), dtype=np.float64).std() > 0


def test_given_evaluations_are_used(runs, tmp_path):
    out = tmp_path / "r.html"
    evals = {str(runs[1]): {"nll_nats": 123.456, "bits_per_dim": 2.5, "fd": 7.25, "fd_floor": 1.5,
                            "n_compared": 10, "sampled_with": "given"}}
    build_report([runs[1]], out, n_samples=16, evals=evals)
    text = out.read_text()
    assert "123.5" in text and "7.25" in text and "given" in text


@pytest.mark.parametrize("case", ["no runs", "not a run", "not html", "foreign file", "no folder", "a folder"])
def test_bad_input_is_one_value_error(case, runs, tmp_path):
    out, dirs = tmp_path / "r.html", [runs[1]]
    if case == "no runs":
        dirs = []
    elif case == "not a run":
        dirs = [tmp_path]
    elif case == "not html":
        out = tmp_path / "r.png"
    elif case == "foreign file":
        out.write_bytes(b"\x89PNG not a page")
    elif case == "no folder":
        out = tmp_path / "missing" / "r.html"
    else:
        out.mkdir()
    with pytest.raises(ValueError) as err:
        build_report(dirs, out, n_samples=16)
    assert "\n" not in str(err.value)
    if case == "foreign file":
        assert out.read_bytes() == b"\x89PNG not a page"


def test_cli_reports_errors_in_one_line(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dgm: error:") and "\n" not in err and "not a dgm run" in err


@pytest.fixture(scope="module")  # module scope: checked before the module's runs are trained
def chromium() -> str:
    """The Chromium executable. Missing, the test skips; but where .ci/run installed Chromium it exports
    DGM_REQUIRE_CHROMIUM=1, and there a missing Chromium is a failure, not a skip."""
    if CHROMIUM is None:
        if os.environ.get("DGM_REQUIRE_CHROMIUM") == "1":
            pytest.fail("DGM_REQUIRE_CHROMIUM=1 (.ci/run installed chromium) but no chromium executable was found "
                        "on PATH or at /usr/bin/chromium", pytrace=False)
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return CHROMIUM


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
                          capture_output=True, text=True, timeout=180)


@pytest.mark.slow
def test_page_renders_in_chromium(chromium, page, tmp_path):
    _, text = page
    probe = ("<script>addEventListener('load', () => { const im = [...document.images]; "
             "document.body.dataset.images = im.length; "
             "document.body.dataset.loaded = im.filter(i => i.complete && i.naturalWidth > 0).length; });"
             "</script></body>")
    probed = tmp_path / "probed.html"
    probed.write_text(text.replace("</body>", probe))
    done = _chromium(["--virtual-time-budget=10000", "--dump-dom", probed.as_uri()], tmp_path)
    counts = re.search(r'data-images="(\d+)" data-loaded="(\d+)"', done.stdout)
    assert counts, f"no probe result in the DOM (chromium said: {done.stderr[-500:]})"
    assert int(counts[1]) == len(_images(text)) and counts[1] == counts[2]
    shot = tmp_path / "shot.png"
    _chromium(["--window-size=1280,2000", f"--screenshot={shot}", page[0].as_uri()], tmp_path)
    grey = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert grey.std() > 10 and (grey < 128).mean() > 0.01  # text and figures, not a blank page


def test_run_figures_are_data(runs):
    from dgm.report.compute import load_runs

    ddpm, vae = load_runs([runs[2], runs[1]])
    found = run_figures(ddpm, n_samples=16)
    assert isinstance(found, RunFigures) and found.samples.shape == (16, 2)
    assert found.forward and found.reverse and found.density and found.neighbours.png is None
    assert found.nfe.metric == "sw" and [r["sampler"] for r in found.nfe.rows][-1] == "ancestral"
    found = run_figures(vae, n_samples=16)
    assert found.forward is found.reverse is found.nfe is found.density is None
    assert found.neighbours.png and found.samples.shape == (16, 1, 8, 8)
    with pytest.raises(ValueError, match="grids"):
        RunFigures(grids=(), grid_note="", samples=found.samples, neighbours=found.neighbours)


def test_likelihood_table(runs, tmp_path):
    """``likelihood="all"``: the DDPMs get the analytic bound and the ODE NLL in a likelihood table, with standard
    errors; the VAE row keeps only its bound. Catches the option not reaching ``compute.evaluate``, or the table
    not rendered."""
    out = build_report([runs[2], runs[1]], tmp_path / "r.html", n_samples=16, nll_examples=8, likelihood="all")
    text = out.read_text()
    assert "Likelihood (bits/dim" in text and "probability-flow ODE" in text
    table = text.split("Likelihood (bits/dim", 1)[1].split("</h3>", 1)[1].split("</table>", 1)[0]
    assert table.count("&plusmn;") == 3 + 1  # the gmm2d DDPM: three estimators; the VAE: its bound
    assert "Likelihood (bits/dim" not in build_report([runs[2]], tmp_path / "v.html", n_samples=16,
                                                     nll_examples=8).read_text()


def test_a_guided_run_reports_its_autoguided_samples(tmp_path):
    """A DDPM with its guide: the report's samples (FD, neighbours, density) are the ones its quick_sampling()
    names (SDE-DPM-Solver++ with autoguidance), not another sampler's from the NFE sweep."""
    from dgm.report.compute import draw, load_runs

    path = _train(tmp_path, "ddpm", "gmm2d", 6, {"levels": 20, "guide_step": 3,
                                                 "net": {"hidden": 16, "depth": 1, "emb_dim": 16}})
    (run,) = load_runs([path])
    how, label = run.model.quick_sampling()
    assert how == {"sampler": "sde-dpm++2m", "steps": 20, "autoguidance": 1.5} and "autoguidance" in label
    want, _ = draw(run.model, 16, seed=0, **how)
    assert torch.equal(run_figures(run, n_samples=16).samples, want)
