"""``onepass finetune``: targets from the run's tables, one loop with the recipe, LoRA, resume, export."""

from __future__ import annotations

import difflib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from onepass.model.records import Window
from onepass.operators.spans import Span

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "clips"


def _window(start, end, frames, n_audio=0):
    return Window("s", Span(start, end), tuple(frames), (), np.zeros((n_audio, 640), np.float32), start)


def test_targets_from_table_rows():
    from onepass.model.training.finetune import caption_target, transcript_target

    w = _window(10_000, 15_000, [10_040, 11_040, 12_040, 13_040, 14_040])
    caps = [(0, 12_000, 0, "red circle"), (12_000, 20_000, 12_040, "blue square above red circle")]
    # frame 10_040 and 11_040 are covered by the first row's span; 12_040 has its own row; runs merge
    assert caption_target(w, caps) == "00:00 00:01 red circle\n00:02 00:04 blue square above red circle"
    assert caption_target(w, []) is None
    utts = [(9_000, 10_500, "seal four"),  # middle before the window: belongs to the previous one
            (14_000, 16_500, "reading fifty   two"),  # middle 15_250: next window
            (10_200, 12_300, "filter nine"), (13_000, 14_800, "valve one")]
    assert transcript_target(w, utts) == "00:00.2 00:02.3 filter nine\n00:03.0 00:04.8 valve one"
    assert transcript_target(_window(14_000, 19_000, []), utts) == "00:00.0 00:02.5 reading fifty two"


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A tiny random checkpoint of the default model's kind (its word tokenizer; trained windows 5 s)."""
    from onepass.model.training.recipe import Recipe, build_model, export

    root = tmp_path_factory.mktemp("base")
    recipe = Recipe(hidden=64, layers=2, intermediate=128, window_s=5)
    _, model = build_model(recipe, root / "src")
    return export(model, root / "src", root / "model", recipe)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    from onepass.pipeline.finetune import write_truth_tables

    lab = tmp_path_factory.mktemp("labelled")
    for clip in sorted(EXAMPLES.glob("*.mp4")):
        write_truth_tables(clip, json.loads(clip.with_suffix(".json").read_text()), lab)
    return lab


def _windows(labelled, window_s=5):
    from onepass.pipeline.finetune import labelled_windows, read_labelled, split_heldout

    sources, problems = read_labelled(labelled)
    assert not problems and len(sources) == 2
    per_source, bad = labelled_windows(sources, window_s)
    assert not bad
    return split_heldout(per_source, 0.5)


def _greedy_similarity(model_dir, items) -> float:
    from onepass.model.load import load_backbone
    from onepass.model.runner import Runner
    from onepass.model.tasks import Prompts

    runner = Runner(load_backbone(model_dir, device="cpu"), max_new_tokens=40)
    prompt = {"captions": Prompts().caption, "transcript": Prompts().transcript}
    scores = []
    for lw in items:
        (text,), _ = runner.generate([lw.window], [prompt[lw.task]])
        scores.append(difflib.SequenceMatcher(None, text[0], lw.target).ratio())
    return float(np.mean(scores))


def test_full_finetune_lowers_heldout_loss_moves_outputs_and_resumes_exactly(tiny_base, labelled, tmp_path):
    from safetensors.torch import load_file

    from onepass.model.training.finetune import FinetuneConfig, finetune

    train, held = _windows(labelled)
    assert train and held and {w.task for w in train} == {"captions", "transcript"}
    assert {w.window.source_id for w in train}.isdisjoint({w.window.source_id for w in held})  # whole clips held out
    cfg = FinetuneConfig(steps=60, batch=4, lr=3e-3, warmup=2, method="full")
    straight = finetune(train, held, tiny_base, tmp_path / "a", tmp_path / "a.state", cfg, eval_every=30)
    assert straight["done"] and straight["method"] == "full"
    assert straight["after"]["loss"] < 0.8 * straight["before"]["loss"], straight
    log = [json.loads(line) for line in (tmp_path / "a.state" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "eval" in r] == [0, 30, 60] and any("v_lm" in r or "a_lm" in r for r in log)
    # the outputs on the training clips moved toward their labels
    sample = [w for w in train if w.task == "captions"][:2] + [w for w in train if w.task == "transcript"][:2]
    before, after = _greedy_similarity(tiny_base, sample), _greedy_similarity(tmp_path / "a", sample)
    assert after > before + 0.15, (before, after)
    # stopped at step 4 and run again: the same weights as a straight run (step-seeded draws, optimizer restored)
    short = FinetuneConfig(steps=8, batch=4, lr=3e-3, warmup=2, method="full")
    finetune(train, held, tiny_base, tmp_path / "s", tmp_path / "s.state", short, eval_every=0)
    part = finetune(train, held, tiny_base, tmp_path / "b", tmp_path / "b.state", short, max_steps=4, eval_every=0)
    assert part["step"] == 4 and not part["done"]
    assert json.loads((tmp_path / "b.state" / "state.json").read_text())["step"] == 4
    resumed = finetune(train, held, tiny_base, tmp_path / "b", tmp_path / "b.state", short, eval_every=0)
    assert resumed["step"] == 8 and resumed["done"]
    a, b = load_file(tmp_path / "s.state" / "trained.safetensors"), load_file(tmp_path / "b.state" / "trained.safetensors")
    # float32 weights equal to rounding (a split run differs by ~1e-7; a wrong draw or a fresh
    # optimizer moves weights by ~lr = 3e-3 a step)
    assert a.keys() == b.keys() and max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4
    state = torch.load(tmp_path / "b.state" / "optimizer.pt", weights_only=True)["opt"]["state"]
    assert {int(v["step"]) for v in state.values()} == {8}
    # the export is what --model accepts, with the window it was trained for and its provenance
    meta = json.loads((tmp_path / "a" / "onepass.json").read_text())
    from onepass.model.meta import model_units, model_window_s

    # the base's window and units (a recipe export: 30 s, asked per frame and per speech region)
    assert meta["window_s"] == model_window_s(tiny_base) == 30 and meta["units"] == model_units(tiny_base)
    assert meta["finetune_method"] == "full" and meta["finetune_step"] == 60
    # another base or other settings in the same state folder: a clear error, nothing overwritten
    with pytest.raises(ValueError, match="another base or settings"):
        finetune(train, held, tiny_base, tmp_path / "b", tmp_path / "b.state", FinetuneConfig(steps=30, method="full"))


def test_lora_trains_adapters_only_and_exports_merged_weights(tiny_base, labelled, tmp_path):
    from safetensors import safe_open

    from onepass.model.load import load_backbone
    from onepass.model.training.finetune import FinetuneConfig, finetune

    train, held = _windows(labelled)
    out = finetune(train, held, tiny_base, tmp_path / "m", tmp_path / "m.state",
                   FinetuneConfig(steps=16, batch=4, lr=1e-2, warmup=2, method="lora", lora_rank=8), eval_every=8)
    assert out["method"] == "lora" and out["after"]["loss"] < out["before"]["loss"], out
    with safe_open(str(tmp_path / "m.state" / "trained.safetensors"), "pt") as f:
        names = list(f.keys())
    assert names and all("lora_" in n for n in names)  # only the adapters are trained and checkpointed
    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as f, safe_open(str(tiny_base / "model.safetensors"), "pt") as g:
        merged, base = set(f.keys()), set(g.keys())
        assert not any("lora" in k for k in merged) and merged <= base
        moved = [k for k in merged if "q_proj" in k and not torch.equal(f.get_tensor(k), g.get_tensor(k))]
        assert moved  # the adapters were merged into the decoder's weights
        assert all(torch.equal(f.get_tensor(k), g.get_tensor(k)) for k in merged if "embed" in k)
    assert load_backbone(tmp_path / "m", device="cpu").config.text_config.hidden_size == 64


def test_cli_skips_a_missing_clip_and_says_so(tiny_base, labelled, tmp_path):
    from click.testing import CliRunner

    from onepass.pipeline.cli import main

    lab = tmp_path / "lab"
    shutil.copytree(labelled, lab)
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = lab / "sources" / "inspection_2" / "source.parquet"
    rows = pq.read_table(src).to_pylist()
    rows[0]["path"] = str(tmp_path / "moved" / "inspection_2.mp4")
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(src)), src)
    res = CliRunner().invoke(main, ["finetune", str(lab), "-o", str(tmp_path / "new"), "--model", str(tiny_base),
                                    "--steps", "2", "--batch", "2", "--heldout", "0", "--device", "cpu"])
    assert res.exit_code == 1, res.output
    assert "moved/inspection_2.mp4 not found" in res.output and "--media" in res.output
    assert json.loads((tmp_path / "new" / "onepass.json").read_text())["finetune_step"] == 2
    res = CliRunner().invoke(main, ["finetune", str(lab), "-o", str(tmp_path / "new2"), "--model", str(tiny_base), "--steps", "1",
                                    "--media", str(EXAMPLES), "--heldout", "0", "--device", "cpu"])
    assert res.exit_code == 0, res.output  # found by its name in --media
