"""The fuzz campaign's fixed slice (benchmarks/fuzz_inputs.py, issue 29): 100 seeded mutations of
valid clips of ten containers through `onepass run` as a user runs it, twice. Every file a row,
ok / partial / error with a readable reason; no hang, no stray process, nothing written beside the
inputs; the rerun keeps every status and redoes no ok source; a file the ffmpeg command line
decodes is never an error row (beyond the README's stated limits). The >= 5,000-file run is in
the README with its command."""

import sys
from pathlib import Path

from conftest import ROOT, tool

sys.path.insert(0, str(ROOT / "benchmarks"))


def test_a_hundred_mutated_files_each_end_as_a_row(tmp_path):
    tool("ffmpeg")
    from fuzz_inputs import campaign

    report = campaign(100, 0, tmp_path / "fuzz", batch=100, timeout_s=20.0, workers=2, verbose=False)
    assert report.files == 100 and report.batches == 1
    assert not report.violations, report.violations
    assert sum(report.by_status.values()) == 100 and set(report.by_status) <= {"ok", "partial", "error"}
    # the slice exercises every outcome and every container (a mutation that broke nothing, or
    # broke everything, would not test the paths in between)
    assert all(report.by_status.get(s, 0) >= 3 for s in ("ok", "partial", "error")), report.by_status
    assert len(report.by_container) == 10
    print(f"fuzz slice: {report.by_status}, messages {report.messages}")
