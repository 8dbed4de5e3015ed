"""dgm.runs.log: log.jsonl written a line at a time, read back skipping torn lines, truncated for a resume."""

import json

from dgm.runs.log import LOG, LogWriter, read_log, truncate_log


def test_writer_appends_flushed_lines(tmp_path):
    with LogWriter(tmp_path) as log:
        log.write({"step": 1, "loss": 0.5})
        assert (tmp_path / LOG).read_text() == '{"step": 1, "loss": 0.5}\n'  # flushed at once
    with LogWriter(tmp_path) as log:  # a resumed run appends
        log.write({"step": 2})
    assert [json.loads(line)["step"] for line in (tmp_path / LOG).read_text().splitlines()] == [1, 2]


def test_read_log_skips_torn_and_foreign_lines(tmp_path):
    assert read_log(tmp_path) == []
    (tmp_path / LOG).write_text('{"step": 1}\n[1, 2]\nnot json\n{"step": 2}\n{"ste')
    assert read_log(tmp_path) == [{"step": 1}, {"step": 2}]


def test_truncate_log_drops_later_and_torn_lines(tmp_path):
    log = tmp_path / LOG
    log.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"ste')
    truncate_log(tmp_path, 2)
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n'
    truncate_log(tmp_path / "nowhere", 2)  # no log yet: nothing to do
