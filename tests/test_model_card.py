"""The saved model card (README.md rendered from model_card.md): every paragraph and bullet once."""

import re
from collections import Counter

from comface_hf import ComFaceModel


def _blocks(markdown: str) -> list[str]:
    """Paragraphs and list items of a markdown text, each joined to one line (front matter and code excluded)."""
    body = markdown.split("\n---\n", 1)[-1]  # the YAML metadata block
    body = re.sub(r"```.*?```", "", body, flags=re.S)
    blocks, current = [], []
    for line in body.splitlines():
        starts_item = line.startswith("- ")
        if not line.strip() or line.startswith("#") or starts_item:
            if current:
                blocks.append(" ".join(current))
            current = [line.strip()] if starts_item else []
            continue
        current.append(line.strip())
    if current:
        blocks.append(" ".join(current))
    return [b for b in blocks if b]


def test_saved_card_states_each_limitation_once(tmp_path, tiny_config):
    ComFaceModel(tiny_config).save_pretrained(tmp_path, model_card={"model_id": "someone/comface-test"})
    card = (tmp_path / "README.md").read_text()
    limitations = card.split("## Limitations", 1)[1].split("\n## ", 1)[0]
    bullets = [b for b in _blocks(limitations) if b.startswith("- ")]
    assert len(bullets) >= 3, bullets  # the section is there and parsed
    assert any("what transfers is the representation" in b for b in bullets), bullets
    repeated = [b[:80] for b, n in Counter(_blocks(card)).items() if n > 1]
    assert not repeated, f"printed more than once in the saved card: {repeated}"
