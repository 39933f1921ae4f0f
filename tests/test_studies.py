"""Study machinery (benchmarks/studies.py): flags, cache keys, verdicts, and a micro end-to-end study.

The end-to-end test runs one real pretraining subprocess (timm ``test_resnet`` at 32 px, one optimiser step) and one
scratch row on one synthetic task, then reruns the study to check that the cached pretraining and transfers are reused.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

import pytest

from benchmarks import studies
from benchmarks.studies import Variant, claim_line, cpu_scale, mean_std, paper_scale, pretrain_flags, run_study


def micro_scale():
    return cpu_scale(backbone="test_resnet", image_size=32, num_identities=20, samples_per_epoch=32, num_epochs=1,
                     global_batch_size=32, validation_pairs=16, projection_hidden_size=16, transfer_subjects=8,
                     transfer_images_per_subject=3, pairs_per_subject=3, transfer_epochs=1, transfer_batch_size=16)


def test_pretrain_flags_encode_the_variant():
    scale = cpu_scale()
    flags = pretrain_flags(Variant("e", learning="intra", intra_target="signed", curriculum=False), scale, seed=3)
    assert "--learning=intra" in flags and "--intra_target=signed" in flags and "--no_curriculum" in flags
    assert "--seed=3" in flags and f"--image_size={scale.image_size}" in flags
    paper = pretrain_flags(Variant("p", num_identities=714, samples_per_epoch=90_000), paper_scale(), seed=0)
    assert "--preset=paper" in paper and "--num_identities=714" in paper
    assert not any(f.startswith("--image_size") for f in paper), "the paper preset sets the sizes itself"
    with pytest.raises(ValueError, match="scratch"):
        pretrain_flags(Variant("s", pretrain=False), scale, 0)


def test_transfer_cache_key_follows_the_fine_tuning_recipe(tmp_path, monkeypatch):
    """A fine-tuning result cached under one recipe is not reused after the library's defaults change."""
    import comface_hf.transfer as transfer

    scale = studies.cpu_scale()
    _, before = studies.transfer_cache_entry("init", scale, "synthetic_age", 0, tmp_path)
    assert before == studies.transfer_cache_entry("init", scale, "synthetic_age", 0, tmp_path)[1]
    monkeypatch.setitem(transfer.DEFAULT_LR, "finetune", transfer.DEFAULT_LR["finetune"] * 3)
    assert studies.transfer_cache_entry("init", scale, "synthetic_age", 0, tmp_path)[1] != before


def test_cache_key_is_stable_and_sensitive():
    a = studies.cache_key(["--seed=0", "--learning=both"])
    assert a == studies.cache_key(["--seed=0", "--learning=both"])
    assert a != studies.cache_key(["--seed=1", "--learning=both"])


def test_mean_std_over_seeds():
    stats = mean_std([0.2, 0.4])
    assert stats["mean"] == pytest.approx(0.3) and stats["std"] == pytest.approx(0.1414, abs=1e-3)
    assert mean_std([0.5])["std"] == 0.0
    assert mean_std([float("nan")])["n"] == 0


def _fake_study(better: list[float], worse: list[float]) -> dict:
    def row(values):
        per_seed = [{"tasks": {"t": {"pearson": v}}} for v in values]
        return {"per_seed": per_seed, "summary": {"t": {"pearson": mean_std(values)}}}

    return {"tasks": ["t"], "rows": {"A": row(better), "B": row(worse)}}


def test_claim_line_verdicts():
    assert "reproduced" in claim_line(_fake_study([0.8, 0.82], [0.5, 0.52]), "x", "A", "B")
    assert "NOT reproduced" in claim_line(_fake_study([0.5, 0.52], [0.8, 0.82]), "x", "A", "B")
    assert "not distinguishable" in claim_line(_fake_study([0.5, 0.7], [0.55, 0.6]), "x", "A", "B")
    assert "not assessed" in claim_line(_fake_study([0.9], [0.1]), "x", "A", "B")


def test_stale_lock_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    lock = tmp_path / "run.lock"
    lock.write_text("999999999")  # no such process
    with studies._run_lock(run_dir, log=lambda *_: None):
        assert lock.read_text() == str(os.getpid())
    assert not lock.exists()


def test_micro_study_table_and_cache_reuse(tmp_path, monkeypatch):
    scale = micro_scale()
    variants = [Variant("Both", info=(("Learning", "Both"),)), Variant("Scratch", pretrain=False)]
    logs: list[str] = []
    study = run_study(variants, scale, seeds=[0], tasks=["synthetic_smile"], cache_dir=tmp_path / "cache",
                      log=logs.append)
    md, csv_path = studies.write_study_table(study, tmp_path / "out", "micro", "Micro", info_columns=("Learning",))
    text = md.read_text()
    assert "| Both | Both |" in text and "| Scratch |" in text
    assert "Smile Corr.↑" in text and "Smile Acc.↑" in text and "Mean Corr." in text
    assert " ± " in text.split("| Both |")[1].splitlines()[0]
    header = csv_path.read_text().splitlines()[0].split(",")
    assert "synthetic_smile/pearson_mean" in header and "synthetic_smile/direction_accuracy_std" in header
    assert len(csv_path.read_text().splitlines()) == 3  # header + 2 rows
    assert any("pretraining 'Both'" in line for line in logs)

    # Rerun: nothing may be trained again (a subprocess call would fail the test).
    def no_subprocess(*args, **kwargs):
        raise AssertionError("the cached pretraining was not reused")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    logs.clear()
    again = run_study(variants, scale, seeds=[0], tasks=["synthetic_smile"], cache_dir=tmp_path / "cache",
                      log=logs.append)
    assert any("reuse pretraining 'Both'" in line for line in logs)
    assert again["rows"]["Both"]["summary"] == study["rows"]["Both"]["summary"]
    assert Path(again["rows"]["Both"]["per_seed"][0]["init"]).is_dir()

    # The study commands' driver (from the cache): the table gets the claims once every row is done.
    args = argparse.Namespace(output_dir=str(tmp_path / "cmd"), rows=None, seeds=[0], tasks=["synthetic_smile"],
                              cache_dir=str(tmp_path / "cache"))
    written = []
    md, _ = studies.run_and_write_study(args, variants, scale, "micro", "Micro", ("Learning",),
                                        claims=lambda s: [claim_line(s, "Both > scratch", "Both", "Scratch")],
                                        lead_notes=("", "Lead note"), on_write=lambda s: written.append(len(s["rows"])))
    text = md.read_text()
    assert "Lead note" in text and "**Claims**" in text and "- Both > scratch" in text
    assert written == [1, 2, 2]  # after each row, then the final table


def test_override_and_rows_flags():
    import torch

    threads = torch.get_num_threads()  # scale_from_args applies --threads; restore it for the other tests
    parser = studies.study_argument_parser("x", "x")
    args = parser.parse_args(["--override", "samples_per_epoch=1024", "transfer_epochs=6", "--rows", "(c)", "Scratch"])
    scale = studies.scale_from_args(args)
    assert scale.samples_per_epoch == 1024 and scale.transfer_epochs == 6
    assert scale.name.startswith("cpu+"), "an overridden scale must not be reported as the plain one"
    rows = studies.select_rows([Variant("(a) Inter"), Variant("(c) Both"), Variant("Scratch", pretrain=False)], args.rows)
    assert [v.name for v in rows] == ["(c) Both", "Scratch"]
    with pytest.raises(SystemExit, match="FIELD=VALUE"):
        studies.scale_from_args(parser.parse_args(["--override", "nonsense=1"]))
    with pytest.raises(SystemExit, match="no such row"):
        studies.select_rows([Variant("A")], ["B"])
    torch.set_num_threads(threads)
