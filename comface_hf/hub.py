"""Publish a saved model folder to the Hugging Face Hub exactly as ``save_pretrained`` (and the trainer) wrote it.

transformers' own ``push_to_hub`` saves the model again into a temporary folder and uploads that: the custom
pipeline code, the same-person calibration and anything else added to the folder after ``save_pretrained`` stay
behind, and the model card names the temporary folder as the model id (or is replaced by a generic card). Here the
repository is created first, so its real id (with the namespace the Hub gives it) is known; the card in the folder is
set to that id; then the whole folder goes up in one commit with ``HfApi.upload_folder``.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Optional, Union

#: Where the card shows the id the model loads from (the template's ``from_pretrained("{{ model_id }}")`` snippet).
_CARD_MODEL_ID = re.compile(r'ComFaceModel\.from_pretrained\("([^"\n]+)"\)')
#: Never uploaded: half-written files of an interrupted atomic write (``.<name>.tmp``).
IGNORED = ["*.tmp"]
#: ``config.generator_spec`` fields that hold local paths (a latent-edit generator's network and boundaries): the
#: local copy keeps them so ``comface calibrate`` can rebuild the generator; a push publishes the file names only.
LOCAL_PATH_FIELDS = ("checkpoint", "directions_dir", "face_template")


def public_config(config: dict) -> Optional[dict]:
    """``config`` with the local paths in its ``generator_spec`` (one spec or a list) cut to their file names, or
    None when there is nothing to cut (the config goes up as it is)."""
    specs = config.get("generator_spec")
    items = specs if isinstance(specs, list) else [specs] if isinstance(specs, dict) else []
    changed = False
    public = []
    for spec in items:
        spec = dict(spec)
        for key in LOCAL_PATH_FIELDS:
            value = spec.get(key)
            if isinstance(value, str) and Path(value).name != value:
                spec[key] = Path(value).name
                changed = True
        public.append(spec)
    if not changed:
        return None
    return {**config, "generator_spec": public if isinstance(specs, list) else public[0]}


def set_card_model_id(folder: Union[str, os.PathLike], repo_id: str) -> bool:
    """Make the model card in ``folder`` name ``repo_id`` wherever it names the model's id; False when there is no
    ComFace card (FaceCycle folders have none). The card is rewritten through a temporary file and a rename."""
    card = Path(folder) / "README.md"
    if not card.is_file():
        return False
    text = card.read_text(encoding="utf-8")
    match = _CARD_MODEL_ID.search(text)
    if match is None:
        return False
    old = match.group(1)
    if old != repo_id:
        # Only whole ids: "comface-embedded" must not match inside "outputs/comface-embedded/model".
        text = re.sub(r"(?<![\w./-])" + re.escape(old) + r"(?![\w./-])", lambda _: repo_id, text)
        tmp = card.with_name(f".{card.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, card)
    return True


def create_hub_repo(repo_id: str, private: Optional[bool] = None, token: Union[str, bool, None] = None) -> str:
    """Create (or reuse) the model repository; returns its full id, e.g. ``name`` -> ``user/name``."""
    from huggingface_hub import HfApi

    if not repo_id or not str(repo_id).strip():
        raise ValueError("an empty Hub repository id; pass one like 'your-name/comface-embedded' (--hub_model_id)")
    return HfApi(token=token).create_repo(repo_id, private=private, exist_ok=True, repo_type="model").repo_id


def push_folder_to_hub(
    folder: Union[str, os.PathLike],
    repo_id: str,
    *,
    commit_message: Optional[str] = None,
    commit_description: Optional[str] = None,
    private: Optional[bool] = None,
    token: Union[str, bool, None] = None,
    revision: Optional[str] = None,
    create_pr: bool = False,
) -> str:
    """Upload a saved model folder as it is (weights, config, processor, card, remote and pipeline code,
    calibration) to ``repo_id``; returns the repository's full id. The folder's card is set to that id first."""
    from huggingface_hub import HfApi

    path = Path(folder)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{str(path)!r} has no config.json, so it is not a saved model folder; save the model with "
            "save_pretrained first and push that folder"
        )
    full_id = create_hub_repo(repo_id, private=private, token=token)
    set_card_model_id(path, full_id)
    with tempfile.TemporaryDirectory() as staging:
        upload_from = _without_local_paths(path, Path(staging))
        HfApi(token=token).upload_folder(
            repo_id=full_id,
            folder_path=str(upload_from),
            repo_type="model",
            commit_message=commit_message or f"Upload {path.name} (comface_hf)",
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
            ignore_patterns=IGNORED,
        )
    return full_id


def _without_local_paths(folder: Path, staging: Path) -> Path:
    """``folder`` itself, or a linked copy in ``staging`` whose config.json names files instead of local paths."""
    import json
    import shutil

    public = public_config(json.loads((folder / "config.json").read_text()))
    if public is None:
        return folder
    copy = staging / folder.name

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)  # no second copy of the weights on disk when the file system allows
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns(*IGNORED), copy_function=link_or_copy)
    (copy / "config.json").unlink()  # a link: write a new file, never through it into the local folder
    (copy / "config.json").write_text(json.dumps(public, indent=2, sort_keys=True) + "\n")
    return copy


__all__ = ["create_hub_repo", "public_config", "push_folder_to_hub", "set_card_model_id"]
