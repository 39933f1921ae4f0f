"""training/pretrain.py under real `accelerate launch`: tiny runs, two processes, kill and resume, NaN stop."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--backbone", "test_resnet", "--image_size", "32", "--num_identities", "40", "--attributes", "weight,age,smile",
    "--projection_hidden_size", "32", "--projection_dim", "16", "--global_batch_size", "16",
    "--samples_per_epoch", "64", "--num_epochs", "4", "--validation_pairs", "32", "--report_to", "none",
    "--logging_steps", "1",
]


def launch(args, processes=1, env=None, **kwargs):
    accelerate = [sys.executable, "-m", "accelerate.commands.launch"]
    if processes > 1:
        # Two real processes on CPUs: `--cpu --num_processes 2` runs ONE process, and `--multi_gpu` without a GPU
        # starts two that Accelerate does not see as distributed unless ACCELERATE_USE_CPU=true (gloo, MULTI_CPU).
        flags = ["--multi_gpu", "--num_processes", str(processes)]
        env = {"ACCELERATE_USE_CPU": "true", **(env or {})}
    else:
        flags = ["--num_processes", "1"]
    cmd = accelerate + flags + ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                                str(REPO / "training" / "pretrain.py"), *args]
    return cmd, script_env(env)


def script_env(extra=None):
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(extra or {})}


def run(args, processes=1, env=None, check=True):
    cmd, full_env = launch(args, processes, env)
    result = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=400, cwd=REPO)
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def test_tiny_run_trains_validates_and_saves(tmp_path):
    out = tmp_path / "run"
    result = run(TINY + ["--output_dir", str(out), "--num_epochs", "6", "--samples_per_epoch", "128"])
    metrics = json.loads((out / "metrics.json").read_text())
    losses = [entry["loss"] for entry in metrics["history"]]
    assert len(losses) == 48
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8  # the loss falls
    assert {"val_pearson", "val_mae", "val_retrieval_top1"} <= set(metrics)
    assert "ComFaceModel.from_pretrained" in result.stdout

    from comface_hf import ComFaceForChangeEstimation, ComFaceModel

    model = ComFaceModel.from_pretrained(out / "model")
    assert model.config.backbone == "test_resnet"
    ComFaceForChangeEstimation.from_pretrained(out / "model")
    card = (out / "model" / "README.md").read_text()
    assert "val_pearson" in card and "test_resnet" in card
    assert (out / "model" / "preprocessor_config.json").exists()
    assert not list(out.glob("*.tmp"))


def test_two_processes_split_pairs_and_agree_on_weights(tmp_path):
    out, dump = tmp_path / "ddp", tmp_path / "dump"
    # with the non-default pair options on (y cropped as x1, half the pairs sharing a capture, SimCLR-strength views
    # from 25% crops), which the card states
    run(TINY + ["--output_dir", str(out), "--num_epochs", "2", "--debug_dump_dir", str(dump),
                "--pair_geometry", "shared", "--shared_capture_p", "0.5", "--augmentation", "simclr",
                "--crop_scale_min", "0.25"], processes=2)
    card = (out / "model" / "README.md").read_text()
    assert "--pair_geometry shared" in card and "share one capture with probability 0.5" in card
    assert "--augmentation simclr --crop_scale_min 0.25" in card
    ranks = [json.loads((dump / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)
    assert ranks[0]["pairs"] != ranks[1]["pairs"]  # each process sees different pairs
    assert len(ranks[0]["pairs"][0][0]) == 8  # global batch 16 = 2 x 8
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]  # DDP keeps the replicas identical


def test_sigkill_and_resume_matches_uninterrupted_run(tmp_path):
    args = TINY + ["--checkpointing_steps", "2", "--num_epochs", "6", "--samples_per_epoch", "128"]
    reference = tmp_path / "reference"
    run(args + ["--output_dir", str(reference), "--debug_dump_dir", str(reference / "dump")])

    crashed = tmp_path / "crashed"
    cmd, env = launch(args + ["--output_dir", str(crashed), "--debug_dump_dir", str(crashed / "dump")])
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (crashed / "checkpoint-0000006").exists():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole launcher tree, mid-run
    proc.wait()
    assert not (crashed / "model").exists(), "the run finished before it could be killed"
    run(args + ["--output_dir", str(crashed), "--debug_dump_dir", str(crashed / "dump"),
                "--resume_from_checkpoint", "latest"])
    ref = json.loads((reference / "dump" / "rank0.json").read_text())
    got = json.loads((crashed / "dump" / "rank0.json").read_text())
    assert got["weights_sha256"] == ref["weights_sha256"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    out = tmp_path / "nan"
    result = run(TINY + ["--output_dir", str(out), "--checkpointing_steps", "2"],
                 env={"COMFACE_DEBUG_NAN_AT_STEP": "5"}, check=False)
    assert result.returncode != 0
    assert "NaN" in result.stderr and "checkpoint-0000004" in result.stderr
    assert (out / "checkpoint-0000004" / "trainer_state.json").exists()
    assert not (out / "model").exists()


def test_multi_process_launch_that_accelerate_cannot_see_is_refused(tmp_path):
    cmd, env = launch(TINY + ["--output_dir", str(tmp_path / "x")], processes=2)
    # --multi_gpu without a GPU and without ACCELERATE_USE_CPU: two processes that Accelerate treats as one each.
    result = subprocess.run(cmd, env={**env, "ACCELERATE_USE_CPU": "false"}, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode != 0 and "ACCELERATE_USE_CPU" in result.stderr


def run_direct(args):
    """The script without the launcher: option errors are the script's own, and this saves a second interpreter
    (and torch import) per case."""
    return subprocess.run([sys.executable, str(REPO / "training" / "pretrain.py"), *args], capture_output=True, text=True,
                          timeout=400, cwd=REPO, env=script_env())


def test_bad_options_fail_clearly_and_overwrite_nothing(tmp_path):
    result = run(["--preset", "huge", "--output_dir", str(tmp_path / "x")], check=False)  # once through the launcher
    assert result.returncode != 0 and "unknown preset 'huge'" in result.stderr and "embedded" in result.stderr
    result = run_direct(["--no_such_option", "1"])
    assert result.returncode != 0 and "no_such_option" in result.stderr
    not_a_checkpoint = tmp_path / "folder"
    not_a_checkpoint.mkdir()
    (not_a_checkpoint / "keep.txt").write_text("data")
    result = run_direct(TINY + ["--output_dir", str(tmp_path / "y"), "--resume_from_checkpoint", str(not_a_checkpoint)])
    assert result.returncode != 0 and "is not a training checkpoint" in result.stderr
    assert (not_a_checkpoint / "keep.txt").read_text() == "data" and not (tmp_path / "y" / "model").exists()
    result = run_direct(TINY + ["--output_dir", str(tmp_path / "z"), "--alpha_step", "5"])
    assert result.returncode != 0 and "grid step" in result.stderr
    result = run_direct(TINY + ["--output_dir", str(tmp_path / "w"), "--renderer_version", "1.1.0",
                                "--craniofacial_growth", "False"])
    assert result.returncode != 0 and "needs renderer 2" in result.stderr
    result = run_direct(TINY + ["--output_dir", str(tmp_path / "v"), "--pair_geometry", "same"])
    assert result.returncode != 0 and "--pair_geometry must be independent or shared" in result.stderr
    result = run_direct(TINY + ["--output_dir", str(tmp_path / "u"), "--shared_capture_p", "1.5"])
    assert result.returncode != 0 and "--shared_capture_p is a probability" in result.stderr
    result = run_direct(TINY + ["--output_dir", str(tmp_path / "t"), "--augmentation", "strong"])
    assert result.returncode != 0 and "--augmentation must be one of half, simclr" in result.stderr
    result = run_direct(TINY + ["--output_dir", str(tmp_path / "s"), "--crop_scale_min", "0"])
    assert result.returncode != 0 and "--crop_scale_min is the smallest crop's share" in result.stderr


def test_a_second_run_into_a_folder_in_use_stops_and_deletes_nothing(tmp_path):
    from training.checkpointing import LOCK_FILE, hold_output_dir, release_output_dir

    out = tmp_path / "busy"
    earlier = out / "checkpoint-0000004"
    earlier.mkdir(parents=True)
    (earlier / "trainer_state.json").write_text("{}")
    hold_output_dir(out)  # this test process stands for a run still writing there
    try:
        assert f"pid {os.getpid()}" in (out / LOCK_FILE).read_text()
        result = run_direct(TINY + ["--output_dir", str(out), "--overwrite_output_dir"])
        assert result.returncode != 0 and "is in use by another training run" in result.stderr
        assert f"pid {os.getpid()}" in result.stderr  # it names the holder
        assert (earlier / "trainer_state.json").exists() and not (out / "model").exists()
    finally:
        release_output_dir(out)
    hold_output_dir(out)  # released: free to take again (and a killed holder's lock goes with its process)
    release_output_dir(out)


def test_facecycle_pretrains_through_the_same_trainer(tmp_path):
    out = tmp_path / "facecycle"
    result = run(["--method", "facecycle", "--image_size", "32", "--facecycle_base_channels", "4",
                  "--num_identities", "20", "--attributes", "smile", "--global_batch_size", "8",
                  "--samples_per_epoch", "16", "--num_epochs", "1", "--validation_pairs", "8", "--report_to", "none",
                  "--output_dir", str(out)])
    assert "FaceCycleModel.from_pretrained" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_reconstruction_l1"] > 0 and metrics["history"]

    from comface_hf import FaceCycleModel
    from comface_hf.transfer import build_change_model

    model = FaceCycleModel.from_pretrained(out / "model")
    assert model.config.image_size == 32
    spec = build_change_model(str(out / "model"), "linear", None, "resnet18", False)
    assert type(spec.model).__name__ == "FaceCycleForChangeEstimation" and spec.image_std == [0.5, 0.5, 0.5]


def test_a_second_run_over_checkpoints_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "again"
    args = TINY + ["--output_dir", str(out), "--num_epochs", "1"]
    run(args)
    before = sorted(p.name for p in out.iterdir())
    result = run(args, check=False)
    assert result.returncode != 0 and "--resume_from_checkpoint latest" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == before
    run(args + ["--overwrite_output_dir"])


def test_pretraining_on_a_built_corpus(tmp_path):
    out = tmp_path / "corpus-run"
    result = run(["--data_source", "corpus", "--corpus_config", "tiny", "--corpus_cache_dir", str(tmp_path / "cache"),
                  "--backbone", "test_resnet", "--image_size", "32", "--projection_hidden_size", "32",
                  "--global_batch_size", "16", "--num_epochs", "2", "--validation_pairs", "32", "--report_to", "none",
                  "--output_dir", str(out), "--debug_dump_dir", str(tmp_path / "dump")])
    assert "ComFaceModel.from_pretrained" in result.stdout
    dump = json.loads((tmp_path / "dump" / "rank0.json").read_text())
    identities, alpha_x, alpha_y = dump["pairs"][0]
    assert len(identities) == 16 and all(a != b for a, b in zip(alpha_x, alpha_y))
    assert 0 < json.loads((out / "metrics.json").read_text())["global_step"]


def test_compiled_generator_trains_identically(tmp_path):
    """--compile_generator is a speed choice only: the same pixels, hence the same losses, as eager rendering."""
    short = TINY + ["--num_epochs", "1", "--samples_per_epoch", "48", "--validation_pairs", "16", "--num_workers", "0"]
    histories = []
    for flag in ("false", "true"):
        out = tmp_path / f"compile-{flag}"
        result = run(short + ["--output_dir", str(out), "--compile_generator", flag])
        assert "rendering eagerly" not in result.stderr  # compilation did not fall back
        histories.append([entry["loss"] for entry in json.loads((out / "metrics.json").read_text())["history"]])
    assert len(histories[0]) == 3 and histories[0] == histories[1]


def test_profile_steps_writes_where_a_step_spends_its_time(tmp_path):
    """--profile_steps N: after one warm-up step, N steps profiled by stage (data made in this process with
    --num_workers 0), the top operators and a Chrome trace; a window that would reach validation is refused."""
    out = tmp_path / "profiled"
    short = TINY + ["--num_epochs", "1", "--num_workers", "0", "--photographic", "1.0"]
    result = run_direct(short + ["--output_dir", str(out), "--profile_steps", "2"])
    assert result.returncode == 0, result.stderr[-3000:]
    table = (out / "profile" / "stages.md").read_text()
    rows = {line.split("|")[1].strip(): line.split("|")[2:] for line in table.splitlines() if line.startswith("| ") and "ms" not in line}
    assert list(rows) == ["draw_pairs", "render", "capture", "augment", "to_model_input", "model_step"], table
    assert all(float(cells[0]) > 0 and int(cells[2]) == 2 for cells in rows.values()), table  # 2 calls: the 2 steps
    assert float(rows["model_step"][0]) > float(rows["draw_pairs"][0])
    assert "aten::" in (out / "profile" / "ops.txt").read_text()
    assert json.loads((out / "profile" / "trace.json").read_text())["traceEvents"]
    result = run_direct(short + ["--output_dir", str(tmp_path / "too-long"), "--profile_steps", "4"])
    assert result.returncode != 0 and "--profile_steps 4 needs 5 steps" in result.stderr, result.stderr[-2000:]
