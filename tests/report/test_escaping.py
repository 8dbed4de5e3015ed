"""The report cannot be hijacked: run names, paths and given evaluations that hold HTML are shown as text, in
the page source (every payload escaped) and in headless Chromium (no payload runs)."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from dgm.data import load_data
from dgm.models import build_model
from dgm.report import html as report_html
from dgm.report.html import build_report
from dgm.report.run_figures import Neighbours, RunFigures
from dgm.runs import checkpoint as ckpt
from dgm.runs.log import LogWriter
from dgm.runs.samples import grid_png

SCRIPT = "<script>document.title='pwned'</script>"  # a folder "<script>...<" holding a run "script>"
IMG = '<img src=x onerror="document.body.dataset.pwned=1">'  # a folder holding a run "script>" too
EVAL = "<script>document.body.dataset.pwned=2</script>"  # a string in a given evaluation
PAYLOADS = (SCRIPT, IMG, EVAL)
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _figures(run, *, n_samples, seed):
    """Stand-in for ``run_figures`` (seconds of sampling and matplotlib; tests/report/test_html.py covers it):
    its strings are the library's own, the user's strings come from the run, which is real here."""
    x = torch.zeros(n_samples, 2)
    return RunFigures(grids=(("samples", grid_png(torch.zeros(1, 1, 4, 4))),), grid_note="note", samples=x,
                      neighbours=Neighbours(png=None, median_sample=0.1, median_heldout=0.2))


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> str:
    """A tiny gmm2d DDPM (4 steps) copied under hostile names: two runs named "script>", so the report names
    them with their parents: "<script>...</script>" and "<img ...>/script>"; a given evaluation holds a
    third payload."""
    root = tmp_path_factory.mktemp("hostile")
    torch.manual_seed(0)
    model = build_model({"kind": "ddpm", "data_shape": [2], "levels": 8,
                         "net": {"kind": "mlp", "dim": 2, "hidden": 8, "depth": 1, "emb_dim": 8}})
    tiny = root / "tiny"
    tiny.mkdir()
    ckpt.write_config(tiny, {"model": model.config(), "data": {"spec": "gmm2d", "seed": 0},
                             "scaling": load_data("gmm2d").scaling.to_dict(), "train": {"steps": 4}})
    ckpt.save_checkpoint(tiny, model, model, step=4, state={})
    with LogWriter(tiny) as log:
        for step in (2, 4):
            log.write({"step": step, "loss": 1.0 / step, "elapsed_s": 0.1 * step})
    script_parent, script_tail = SCRIPT.split("/", 1)  # "<script>...<" and "script>"
    runs = [root / script_parent / script_tail, root / IMG / script_tail]
    for run in runs:
        shutil.copytree(tiny, run)
    evals = {str(run): {"nll_nats": 1.0, "bits_per_dim": 0.7, "sampled_with": EVAL} for run in runs}
    with pytest.MonkeyPatch.context() as m:
        m.setattr(report_html, "run_figures", _figures)
        out = build_report(runs, root / "report.html", n_samples=8, evals=evals)
    return out.read_text()


def test_every_payload_is_escaped_in_the_page(page):
    """Each payload appears only escaped (html.escape), never raw, in text and attributes alike. Catches an
    unescaped run name, path, header or table cell."""
    for payload in PAYLOADS:
        assert payload not in page
        assert html.escape(payload) in page, payload
    assert not re.search(r"<script|<img[^>]*onerror", page, re.IGNORECASE)  # no tag of a payload


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium executable; missing, the test skips, unless DGM_REQUIRE_CHROMIUM=1 (.ci/run installed
    it), where it fails (as in tests/report/test_html.py)."""
    if CHROMIUM is None:
        if os.environ.get("DGM_REQUIRE_CHROMIUM") == "1":
            pytest.fail("DGM_REQUIRE_CHROMIUM=1 but no chromium executable on PATH or at /usr/bin/chromium",
                        pytrace=False)
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return CHROMIUM


@pytest.mark.slow
def test_no_payload_runs_in_chromium(chromium, page, tmp_path):
    """Headless Chromium loads the page with JavaScript on (a probe of the test's own proves it runs) and
    dumps the DOM: the title is still "dgm report", no payload marked the body, and the payloads are text.
    Catches an injection that a source check could miss (e.g. markup assembled by the parser)."""
    probe = "<script>addEventListener('load', () => { document.body.dataset.js = 'ran'; });</script></body>"
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", probe))
    done = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                           "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
                          capture_output=True, text=True, timeout=180)
    dom = done.stdout
    assert 'data-js="ran"' in dom, f"the probe did not run (chromium said: {done.stderr[-500:]})"
    assert re.search(r"<title>dgm report</title>", dom) and "pwned" not in re.findall(r"<title>.*?</title>", dom)[0]
    assert "data-pwned" not in dom
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom  # shown as text
    assert "&lt;img src=x onerror=" in dom
