"""`dgm verify` passes every row on a small budget (the full run is `dgm verify`)."""

from dgm.evaluation.verify import format_table, main, run_checks


def test_every_check_passes_small():
    rows = run_checks(n=3000, levels=1000, seed=0)
    table = format_table(rows)
    assert all(r.passed for r in rows), table
    assert any("erratum 25" in r.claim for r in rows) and any("E23" in r.claim for r in rows)


def test_rejects_tiny_n():
    import pytest

    with pytest.raises(ValueError, match="--n must be at least 100, got 10"):
        main(["--n", "10"])
