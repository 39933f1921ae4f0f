"""push_to_hub uploads the folder save_pretrained (and the trainer) wrote, with the repository's real id in its card.

No network: huggingface_hub's HfApi.create_repo and upload_folder are replaced by fakes that answer as the Hub does
(a bare name gets the user's namespace) and copy what would be uploaded; any other way of uploading fails the test.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from comface_hf import ComFaceImageProcessor, ComFaceModel
from comface_hf.hub import push_folder_to_hub, set_card_model_id

REPO = Path(__file__).resolve().parents[1]

# The fake Hub, as source: the trainer test runs it in a subprocess (training/pretrain.py under its own Python).
FAKE_HUB = '''
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

from huggingface_hub import HfApi


def install(capture):
    capture = Path(capture)
    capture.mkdir(parents=True, exist_ok=True)
    uploads = []

    def create_repo(self, repo_id, **kwargs):
        full = repo_id if "/" in repo_id else "test-user/" + repo_id  # the Hub puts a bare name in your namespace
        with open(capture / "create_repo.jsonl", "a") as handle:
            handle.write(json.dumps({"repo_id": repo_id, "private": kwargs.get("private")}) + "\\n")
        return SimpleNamespace(repo_id=full)

    def upload_folder(self, *, repo_id, folder_path, ignore_patterns=None, **kwargs):
        target = capture / f"upload{len(uploads)}"
        ignore = shutil.ignore_patterns(*(ignore_patterns or []))
        shutil.copytree(folder_path, target, ignore=ignore)  # what upload_folder would send, as files
        record = {"repo_id": repo_id, "folder_path": str(folder_path), "copy": str(target),
                  "ignore_patterns": ignore_patterns, "commit_message": kwargs.get("commit_message")}
        uploads.append(record)
        (capture / "uploads.json").write_text(json.dumps(uploads))
        return SimpleNamespace(oid="0" * 40)

    def refuse(self, *args, **kwargs):
        raise AssertionError("uploaded by another route than HfApi.upload_folder (a partial push)")

    HfApi.create_repo, HfApi.upload_folder = create_repo, upload_folder
    HfApi.create_commit = HfApi.upload_file = HfApi.preupload_lfs_files = refuse
    return uploads
'''


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """The fake Hub in this process; returns the list of uploads (each a dict with the copy of the folder)."""
    namespace = {}
    exec(FAKE_HUB, namespace)
    for name in ("create_repo", "upload_folder", "create_commit", "upload_file", "preupload_lfs_files"):
        monkeypatch.setattr(HfApi, name, getattr(HfApi, name))  # restored after the test
    return namespace["install"](tmp_path / "hub")


def _card_ids(card: str) -> set:
    import re

    return set(re.findall(r'from_pretrained\("([^"]+)"', card)) | set(re.findall(r"--model ([\w./-]+)", card))


def test_model_push_to_hub_uploads_the_saved_folder_with_the_real_id(fake_hub, tiny_config):
    model = ComFaceModel(tiny_config)
    returned = model.push_to_hub("comface-small", commit_message="first")
    assert returned == "test-user/comface-small"
    assert len(fake_hub) == 1
    upload = fake_hub[0]
    assert upload["repo_id"] == "test-user/comface-small" and upload["commit_message"] == "first"
    files = {p.name for p in Path(upload["copy"]).iterdir()}
    assert {"config.json", "model.safetensors", "modeling_comface.py", "configuration_comface.py",
            "README.md"} <= files, files
    card = (Path(upload["copy"]) / "README.md").read_text()
    assert "A **ComFace** model" in card  # our card, not transformers' generic one
    assert _card_ids(card) == {"test-user/comface-small"}, _card_ids(card)
    assert Path(upload["folder_path"]).name not in card  # the temporary folder's name is nowhere in it
    reloaded = ComFaceModel.from_pretrained(upload["copy"])
    assert reloaded.config.to_dict()["projection_dim"] == tiny_config.projection_dim


def test_save_pretrained_with_push_to_hub_uploads_that_folder(fake_hub, tiny_config, tmp_path):
    folder = tmp_path / "local-name"
    ComFaceModel(tiny_config).save_pretrained(folder, push_to_hub=True, repo_id="my-org/comface-x", private=True)
    assert [u["repo_id"] for u in fake_hub] == ["my-org/comface-x"]
    assert Path(fake_hub[0]["folder_path"]) == folder
    uploaded = {p.name: p.read_bytes() for p in Path(fake_hub[0]["copy"]).iterdir()}
    assert uploaded == {p.name: p.read_bytes() for p in folder.iterdir()}  # the same folder, card included
    assert _card_ids(uploaded["README.md"].decode()) == {"my-org/comface-x"}
    created = [json.loads(line) for line in (tmp_path / "hub" / "create_repo.jsonl").read_text().splitlines()]
    assert created and all(c == {"repo_id": "my-org/comface-x", "private": True} for c in created)


def test_push_folder_to_hub_sets_the_card_id_and_refuses_a_non_model_folder(fake_hub, tiny_config, tmp_path):
    folder = tmp_path / "model"
    ComFaceModel(tiny_config).save_pretrained(folder, model_card={"model_id": "comface-embedded"})
    ComFaceImageProcessor(crop_size=32).save_pretrained(folder)
    (folder / ".config.json.tmp").write_text("a half-written file of an interrupted save")
    assert push_folder_to_hub(folder, "comface-embedded") == "test-user/comface-embedded"
    copy = Path(fake_hub[0]["copy"])
    assert (copy / "preprocessor_config.json").is_file() and not (copy / ".config.json.tmp").exists()
    card = (copy / "README.md").read_text()
    assert _card_ids(card) == {"test-user/comface-embedded"}
    assert (folder / "README.md").read_text() == card  # the local card says where the model now lives

    with pytest.raises(FileNotFoundError, match="no config.json.*save_pretrained"):
        push_folder_to_hub(tmp_path / "empty-folder", "x")
    assert len(fake_hub) == 1


def test_set_card_model_id_replaces_whole_ids_only(tmp_path):
    (tmp_path / "README.md").write_text(
        'model = ComFaceModel.from_pretrained("comface-embedded")\n'
        "`comface track photos/ --model comface-embedded`\n"
        "trained into outputs/comface-embedded/model and comface-embedded-v2\n"
    )
    assert set_card_model_id(tmp_path, "me/comface-embedded") is True
    text = (tmp_path / "README.md").read_text()
    assert text.count("me/comface-embedded") == 2
    assert "outputs/comface-embedded/model" in text and " comface-embedded-v2" in text
    assert set_card_model_id(tmp_path / "nowhere", "x") is False


def test_trainer_push_uploads_the_whole_trained_folder(tmp_path):
    """training/pretrain.py --push_to_hub: one upload of output_dir/model with processor, calibration, pipeline and
    remote code, and the Hub's id in the card (the model and processor pushes used to re-save their own parts)."""
    from tests.test_pretrain import TINY, script_env

    capture, out = tmp_path / "hub", tmp_path / "run"
    runner = tmp_path / "run_with_fake_hub.py"
    runner.write_text(FAKE_HUB + textwrap.dedent(f"""
        import runpy, sys
        install({str(capture)!r})
        sys.argv = ["pretrain.py", *sys.argv[1:]]
        runpy.run_path({str(REPO / "training" / "pretrain.py")!r}, run_name="__main__")
        """))
    args = TINY + ["--output_dir", str(out), "--num_epochs", "1", "--push_to_hub", "--hub_model_id", "comface-tiny"]
    result = subprocess.run([sys.executable, str(runner), *args], env=script_env(), cwd=REPO, capture_output=True,
                            text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    uploads = json.loads((capture / "uploads.json").read_text())
    assert [u["repo_id"] for u in uploads] == ["test-user/comface-tiny"]
    assert Path(uploads[0]["folder_path"]) == out / "model"
    copy = Path(uploads[0]["copy"])
    files = {p.name for p in copy.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "modeling_comface.py",
            "configuration_comface.py", "pipeline_comface.py", "face_comparison.py",
            "same_person_calibration.json"} <= files, files
    config = json.loads((copy / "config.json").read_text())
    assert "face-change-estimation" in config["custom_pipelines"] and "AutoModel" in config["auto_map"]
    assert config["same_person_threshold"] == json.loads((out / "model" / "config.json").read_text())[
        "same_person_threshold"]
    card = (copy / "README.md").read_text()
    assert _card_ids(card) == {"test-user/comface-tiny"}, _card_ids(card)
    assert "**Same-person check**" in card and "test_resnet" in card
    assert "https://huggingface.co/test-user/comface-tiny" in result.stdout


def test_push_publishes_generator_file_names_not_local_paths(fake_hub, tiny_config, tmp_path):
    # A latent-edit run records its network and boundaries by local path (calibration rebuilds the generator from
    # them); the pushed config names the files only, and the local folder keeps its paths.
    folder = tmp_path / "model"
    tiny_config.generator_spec = [{"generator": "latent-edit", "checkpoint": str(tmp_path / "nets" / "G.pkl"),
                                   "directions_dir": str(tmp_path / "dirs" / "ffhq"), "latent_space": "z",
                                   "face_template": str(tmp_path / "dirs" / "face_template.json")},
                                  {"generator": "embedded", "checkpoint": None}]
    ComFaceModel(tiny_config).save_pretrained(folder)
    push_folder_to_hub(folder, "comface-gan")
    pushed = json.loads((Path(fake_hub[0]["copy"]) / "config.json").read_text())
    assert pushed["generator_spec"][0]["checkpoint"] == "G.pkl"
    assert pushed["generator_spec"][0]["directions_dir"] == "ffhq"
    assert pushed["generator_spec"][0]["face_template"] == "face_template.json"
    assert pushed["generator_spec"][1] == {"generator": "embedded", "checkpoint": None}
    assert str(tmp_path) not in (Path(fake_hub[0]["copy"]) / "config.json").read_text()
    local = json.loads((folder / "config.json").read_text())
    assert local["generator_spec"][0]["checkpoint"] == str(tmp_path / "nets" / "G.pkl")
    assert {p.name for p in Path(fake_hub[0]["copy"]).iterdir()} == {p.name for p in folder.iterdir()}
