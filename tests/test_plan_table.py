"""bench/plan_table.py: the fewest fitting microbatches per model and slice, with the failed counts named."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("plan_table", REPO / "bench" / "plan_table.py")
plan_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plan_table)


def _report(microbatches: int, fits: bool) -> dict:
    report = {"topology": "v5e-64", "num_chips": 64, "mesh": {"data": 1, "fsdp": 64, "tensor": 1},
              "remat_policy": "full", "num_microbatches": microbatches, "fits": fits,
              "hbm_peak_bytes": 24 * 2**30 if not fits else 12 * 2**30, "hbm_capacity_bytes": 16 * 2**30,
              "compile_seconds": 61.4}
    if fits:
        report.update(predicted_step_seconds=1.5, predicted_tokens_per_second=1398101.3, predicted_mfu=0.4567,
                      bound="compute", wall_clock_seconds_for_steps={"125000": 187500.0})
    return report


def test_fewest_fitting_microbatches_with_failures_named(tmp_path):
    for microbatches, fits in ((2, False), (4, True), (8, True)):
        (tmp_path / f"albert_large_v5e-64_mb{microbatches}.json").write_text(json.dumps(_report(microbatches, fits)))
    (tmp_path / "albert_base_v5e-64_mb1.json").write_text("")  # an interrupted compile leaves an empty file
    lines = plan_table.table(plan_table.load(tmp_path)).splitlines()
    assert len(lines) == 3  # header, rule, one row: the empty report is skipped
    assert lines[2] == ("| albert_large | v5e-64 (64) | 1x64x1 | full | 4 (2: no) | yes | 12.0 / 16 | 1.500 | "
                        "1,398,101 | 45.7% | 52 h | compute | 61 s |")


def test_a_plan_that_never_fits_is_shown_as_such(tmp_path):
    (tmp_path / "bert_large_v5e-64_mb32.json").write_text(json.dumps(_report(32, False)))
    row = plan_table.table(plan_table.load(tmp_path)).splitlines()[2]
    assert row == "| bert_large | v5e-64 (64) | 1x64x1 | full | 32 | no | 24.0 / 16 |  |  |  |  |  | 61 s |"


def test_search_finds_the_fewest_microbatches_that_fit(tmp_path, monkeypatch):
    """Halving from a start that fits and doubling from one that does not both end at the threshold."""
    compiled = []

    def fake(model, topology, microbatches, out):
        compiled.append(microbatches)
        return microbatches >= 4

    monkeypatch.setattr(plan_table, "_compiled_fits", fake)
    monkeypatch.setitem(plan_table.START_MICROBATCHES["v5e-64"], "albert_large", 16)
    plan_table.compile_row("albert_large", "v5e-64", tmp_path)
    assert compiled == [16, 8, 4, 2]
    compiled.clear()
    monkeypatch.setitem(plan_table.START_MICROBATCHES["v5e-64"], "albert_large", 1)
    plan_table.compile_row("albert_large", "v5e-64", tmp_path)
    assert compiled == [1, 2, 4]
