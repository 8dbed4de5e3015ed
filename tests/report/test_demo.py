"""``dgm demo``: it never overwrites what it should not, and a tiny demo runs end to end."""

import pytest

from dgm.cli import main
from dgm.report import demo


def test_demo_refuses_to_overwrite_a_finished_demo(tmp_path):
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text("{}")
    (tmp_path / "report.html").write_text("<!DOCTYPE html>")
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="finished demo.*--force"):
        demo.check_out(tmp_path, force=False)
    demo.check_out(tmp_path, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
    (tmp_path / "ddpm").mkdir()
    (tmp_path / "ddpm" / "weights.bin").write_text("not a run")
    with pytest.raises(ValueError, match="not a dgm run directory"):
        demo.check_out(tmp_path, force=True)


def test_the_command_refuses_in_one_line(tmp_path, capsys):
    (tmp_path / "report.html").write_text("<!DOCTYPE html>")
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dgm: error:") and "\n" not in err and "--force" in err
    with pytest.raises(ValueError, match="minutes"):
        demo.run_demo(tmp_path / "new", minutes=0)


@pytest.mark.slow
def test_demo_end_to_end_with_a_tiny_budget(tmp_path, capsys):
    out = tmp_path / "demo"
    summary = demo.run_demo(out, steps=4, tiny=True, progress=False)
    stdout = capsys.readouterr().out
    assert "FD" in stdout and "bits/dim" in stdout and str(out / "report.html") in stdout
    assert {p.name for p in out.iterdir()} == {"vae", "ddpm", "summary.json", "report.html"}
    assert summary["runs"]["ddpm"]["steps"] == 4 and summary["runs"]["vae"]["n_compared"] <= demo.TINY_SAMPLES
    text = (out / "report.html").read_text()
    assert 'data-section="blur"' in text and 'data-section="nfe"' in text
    with pytest.raises(ValueError, match="already holds a finished demo"):
        demo.run_demo(out, steps=4, tiny=True, progress=False)
