"""minitune.io: run folders claimed for one set of settings, imagefolder sets, Markdown tables."""

import json

import numpy as np
import pytest

from minitune.finetune import load_finetune_set
from minitune.io import changed_settings, claim, markdown_table, png_bytes, write_imagefolder


def refuse(changes):
    return f"The folder holds a run with other settings ({changes}); use a new one."


def test_claim_records_new_settings_and_resumes_only_with_the_same_ones(tmp_path):
    path = tmp_path / "run" / "config.json"
    assert claim(path, {"lr": 0.1, "steps": 10, "channels": (8, 16)}, refuse) is None  # a new folder, created
    assert json.loads(path.read_text()) == {"lr": 0.1, "steps": 10, "channels": [8, 16]}
    saved = claim(path, {"lr": 0.1, "steps": 10, "channels": [8, 16]}, refuse)  # a tuple equals the list saved
    assert saved == {"lr": 0.1, "steps": 10, "channels": [8, 16]}
    with pytest.raises(ValueError, match=r"^The folder holds a run with other settings \(lr 0.1 \(now 0.2\), steps 10 "
                                         r"\(now 20\)\); use a new one\.$"):
        claim(path, {"lr": 0.2, "steps": 20, "channels": [8, 16]}, refuse)
    assert json.loads(path.read_text())["lr"] == 0.1  # a refused claim writes nothing

    def view(s):  # the step count may change; a setting added since counts as its default
        return {k: v for k, v in {"seed": 0, **s}.items() if k != "steps"}
    claim(path, {"lr": 0.1, "steps": 30, "channels": [8, 16], "seed": 0}, refuse, view=view)
    assert json.loads(path.read_text())["steps"] == 30  # what may change is updated
    with pytest.raises(ValueError, match=r"\(seed 0 \(now 1\)\)"):
        claim(path, {"lr": 0.1, "steps": 30, "channels": [8, 16], "seed": 1}, refuse, view=view, check_only=True)


def test_check_only_writes_nothing_and_a_corrupt_file_is_refused(tmp_path):
    path = tmp_path / "run" / "settings.json"
    assert claim(path, {"a": 1}, refuse, check_only=True) is None and not (tmp_path / "run").exists()
    path.parent.mkdir()
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON object of settings"):
        claim(path, {"a": 1}, refuse)


def test_changed_settings_names_long_values_without_them():
    assert changed_settings({"a": 1, "b": [1, 2]}, {"a": 1, "b": (1, 2)}) == ""
    prompts = [f"prompt number {i}" for i in range(9)]
    assert changed_settings({"k": 2, "prompts": prompts}, {"k": 1, "prompts": prompts[:3], "new": True}) == \
        "k 2 (now 1), prompts, new None (now True)"


def test_markdown_table_from_dicts_or_sequences():
    assert markdown_table([{"a": 1, "s": 0.123456}, {"b": "x"}]).splitlines() == [
        "| a | s | b |", "|---|---|---|", "| 1 | 0.1235 |  |", "|  |  | x |"]
    table = markdown_table([["base", "12.5", 3], ["lora", "–", float("nan")]], ["model", "strict %", "n"], align="lr")
    assert table == "| model | strict % | n |\n|---|---:|---|\n| base | 12.5 | 3 |\n| lora | – | nan |"
    assert markdown_table([], ["model", "n"], align="lrrr") == "| model | n |\n|---|---:|"  # no rows: the head only
    with pytest.raises(ValueError, match="No rows"):
        markdown_table([])


def test_imagefolder_round_trips_through_the_fine_tuning_loader(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    records = [{"file_name": f"{i:03d}.png", "text": f"prompt {i}", "mi": float(i)} for i in range(3)]
    folder = write_imagefolder(tmp_path / "set", records, [images[0], images[1], png_bytes(images[2])])  # arrays or PNG bytes
    assert sorted(p.name for p in folder.iterdir()) == ["000.png", "001.png", "002.png", "metadata.jsonl"]
    assert (folder / "metadata.jsonl").read_text() == "".join(json.dumps(r) + "\n" for r in records)
    assert (folder / "002.png").read_bytes() == png_bytes(images[2]) == png_bytes(images[2].copy())  # no timestamps
    data = load_finetune_set(folder)
    assert data.prompts == ["prompt 0", "prompt 1", "prompt 2"] and data.records == records
    assert np.array_equal(((data.images.permute(0, 2, 3, 1) + 1) * 127.5).round().numpy().astype(np.uint8), images)
    with pytest.raises(ValueError):
        write_imagefolder(tmp_path / "short", records, images[:2])  # one image per record
