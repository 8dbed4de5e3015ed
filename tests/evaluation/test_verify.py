"""`dgm verify` passes every row on a small budget (the full run is `dgm verify`)."""

import pytest

from dgm.evaluation.verify import format_table, run_checks


def test_every_check_passes_small():
    rows = run_checks(n=3000, levels=1000, seed=0)
    table = format_table(rows)
    assert all(r.passed for r in rows), table
    assert any("erratum 25" in r.claim for r in rows) and any("E23" in r.claim for r in rows)


def test_rejects_a_tiny_budget():
    with pytest.raises(ValueError, match="n .* must be an integer >= 100, got 10"):
        run_checks(n=10)
    with pytest.raises(ValueError, match="levels must be an integer between 10 and 100000, got 5"):
        run_checks(levels=5)
