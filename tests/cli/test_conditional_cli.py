"""``dgm sample --class/--guidance/--unconditional`` and ``dgm inpaint`` end to end on tiny runs, with their
one-line refusals."""

import re

import numpy as np
import pytest

from dgm.cli import main


def train(out, data, *extra):
    assert main(["train", "ddpm", "--data", data, "--steps", "10", "--out", str(out), "--no-progress", *extra]) == 0


@pytest.mark.slow
def test_sample_by_class_with_guidance(tmp_path, one_line_error, capsys):
    """Mutation: --class ignored (same draws as the unconditional model), --guidance not reaching the sampler,
    or --unconditional not the null class."""
    run, plain = tmp_path / "cond", tmp_path / "plain"
    train(run, "gmm2d", "--conditional")
    train(plain, "moons")

    def draw(name, *flags):
        out = tmp_path / f"{name}.npy"
        assert main(["sample", str(run), "-n", "64", "--out", str(out), "--sampler", "ddim", "--steps", "5",
                     *flags]) == 0
        return np.load(out)

    none, uncond = draw("none"), draw("uncond", "--unconditional")
    c3, c3_name, c3_w = draw("c3", "--class", "3"), draw("c3n", "--class", "3"), draw("c3w", "--class", "3",
                                                                                       "--guidance", "2")
    assert np.array_equal(none, uncond) and np.array_equal(c3, c3_name)
    assert not np.allclose(c3, none) and not np.allclose(c3, c3_w)
    out = tmp_path / "x.npy"
    capsys.readouterr()  # what training and sampling printed
    cases = [
        (["--class", "8"], "unknown class '8'; the classes are 0, 1, 2, 3, 4, 5, 6, 7"),
        (["--guidance", "1"], "--guidance 1 needs --class C"),
        (["--class", "1", "--unconditional"], "exclude each other"),
        (["--class", "1", "--guidance", "-1"], "expected a number >= 0, got '-1'"),
    ]
    for flags, pattern in cases:
        line = one_line_error(["sample", str(run), "-n", "4", "--out", str(out), *flags])
        assert re.search(pattern, line), line
    plain_cases = [(["--class", "0"], "is not class-conditional"), (["--unconditional"], "unconditional already")]
    for flags, pattern in plain_cases:
        line = one_line_error(["sample", str(plain), "-n", "4", "--out", str(out), *flags])
        assert re.search(pattern, line), line
    assert not out.exists()


@pytest.mark.slow
def test_inpaint_end_to_end(tmp_path, one_line_error, capsys):
    """dgm inpaint on a digits run: K completions per input in data space, the grid beside them, the known
    pixels kept by "replace"; bad flags refused in one line, and an existing output survives them; without --out
    the completions go beside the input, never over a file. Mutation: a default output that overwrites."""
    from sklearn.datasets import load_digits

    run = tmp_path / "digits"
    train(run, "digits")
    x = load_digits().images[-2:]
    mask = np.zeros((8, 8), bool)
    mask[:, :4] = True
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "m.npy", mask)
    out = tmp_path / "done.npy"
    args = ["inpaint", str(run), "--input", str(tmp_path / "x.npy"), "--mask", str(tmp_path / "m.npy")]
    assert main([*args, "--method", "replace", "-n", "3", "--steps", "4", "--out", str(out)]) == 0
    done = np.load(out)
    assert done.shape == (2, 3, 1, 8, 8) and (tmp_path / "done.png").exists()
    assert np.array_equal(done[..., 0, :, :4], np.broadcast_to(x[:, None, :, :4], (2, 3, 8, 4)))
    before = out.read_bytes()
    np.save(tmp_path / "m4.npy", np.ones((4, 4), bool))
    capsys.readouterr()
    cases = [
        (["--method", "smc", "--jump", "2"], "--jump is an option of --method repaint, not smc"),
        (["--method", "nope"], "invalid choice: 'nope'"),
        (["--method", "smc", "--class", "1"], "is not class-conditional"),
        (["--method", "smc", "--noise", "-0.1"], "expected a number >= 0"),
    ]
    for flags, pattern in cases:
        line = one_line_error([*args, *flags, "--out", str(out)])
        assert re.search(pattern, line), line
    line = one_line_error(["inpaint", str(run), "--input", str(tmp_path / "x.npy"), "--mask",
                           str(tmp_path / "m4.npy"), "--method", "smc", "--out", str(out)])
    assert "has shape (4, 4)" in line
    assert out.read_bytes() == before
    # without --out (SPEC's synopsis): X_METHOD.npy beside X, once; a second run is refused and loses nothing
    assert main([*args, "--method", "replace", "--steps", "4"]) == 0
    default = tmp_path / "x_replace.npy"
    assert np.load(default).shape == (2, 1, 1, 8, 8) and (tmp_path / "x_replace.png").exists()
    first = default.read_bytes()
    capsys.readouterr()
    line = one_line_error([*args, "--method", "replace", "--steps", "4", "--seed", "1"])
    assert "x_replace.npy' exists" in line and "pass --out" in line, line
    assert default.read_bytes() == first
    (tmp_path / "x_dps.png").write_bytes(b"a grid the user keeps")  # an image run's default grid is checked too
    line = one_line_error([*args, "--method", "dps", "--steps", "4"])
    assert "x_dps.png' exists" in line and not (tmp_path / "x_dps.npy").exists(), line
    line = one_line_error(["inpaint", str(run), "--input", str(tmp_path / "nowhere" / "x.npy"), "--mask",
                           str(tmp_path / "m.npy"), "--method", "replace"])
    assert "the folder of --input" in line and "nowhere" in line, line
