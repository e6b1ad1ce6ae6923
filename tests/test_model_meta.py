"""A checkpoint's own window length (onepass.json beside config.json) is the run's default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onepass.model.meta import DEFAULT_MODEL_DIR, model_window_s
from onepass.pipeline.config import RunConfig


def test_window_follows_the_model_unless_given(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    assert RunConfig(output=tmp_path, model=model).window_s == 30  # no onepass.json: Gemma 4's 30 s
    (model / "onepass.json").write_text(json.dumps({"window_s": 10}))
    assert RunConfig(output=tmp_path, model=model).window_s == 10
    assert RunConfig(output=tmp_path, model=model, window_s=20).window_s == 20
    assert RunConfig(output=tmp_path, model=model).fingerprint() != RunConfig(output=tmp_path, model=model, window_s=20).fingerprint()


@pytest.mark.parametrize("text", ["{}", "[10]", '{"window_s": "10"}', '{"window_s": true}', "not json"])
def test_a_bad_meta_file_is_named(tmp_path, text):
    (tmp_path / "onepass.json").write_text(text)
    with pytest.raises(ValueError, match="onepass.json"):
        model_window_s(tmp_path)


def test_bundled_model_runs_at_its_own_window_and_units(tmp_path):
    from onepass.model.meta import model_units

    meta = json.loads((Path(DEFAULT_MODEL_DIR) / "onepass.json").read_text())
    assert model_window_s() == meta["window_s"] == 30
    assert RunConfig(output=tmp_path).window_s == 30  # `onepass run` with no flags
    assert model_units() == meta["units"] == {"captions": "frame", "transcript": "speech"}


def test_tasks_are_parsed_once_in_the_config(tmp_path):
    cfg = RunConfig(output=tmp_path, tasks="Diarization, CAPTIONS")
    assert cfg.task_set.diarization and cfg.task_set.captions and not cfg.task_set.transcript
    assert cfg.tasks == "captions,diarization"  # one spelling, one fingerprint
    assert cfg.fingerprint() == RunConfig(output=tmp_path, tasks="captions,diarization").fingerprint()
    with pytest.raises(ValueError, match="dance"):
        RunConfig(output=tmp_path, tasks="captions,dance")


def test_noise_floor_is_the_checkpoints_and_the_runner_adds_it(tmp_path):
    """A checkpoint trained with a noise floor under its audio (onepass.json ``noise_floor``) gets
    the same floor from the runner: a silent frame then embeds to a non-zero vector, the same one
    every time; without the key (real Gemma weights) audio goes in as decoded."""
    import dataclasses

    import numpy as np
    import torch

    from onepass.model.load import load_backbone
    from onepass.model.meta import model_noise_floor
    from onepass.model.prompt import AUDIO
    from onepass.model.runner import Runner

    model = tmp_path / "m"
    model.mkdir()
    assert model_noise_floor(model) == 0.0
    (model / "onepass.json").write_text(json.dumps({"window_s": 10, "noise_floor": 0.001}))
    assert model_noise_floor(model) == 0.001
    for bad in ('{"window_s": 10, "noise_floor": "a"}', '{"window_s": 10, "noise_floor": 0.5}', '{"window_s": 10, "noise_floor": -1}'):
        (model / "onepass.json").write_text(bad)
        with pytest.raises(ValueError, match="noise_floor"):
            model_noise_floor(model)
    bb = load_backbone(None, device="cpu")
    silent = np.zeros((5, 640), np.float32)
    runner = Runner(dataclasses.replace(bb, noise_floor=0.0))  # audio as decoded (the bundled model has a floor)
    layout = runner.prompts.prefix([], [], 5)
    plain = runner.embed(layout, [], silent)[torch.as_tensor(layout.types) == AUDIO]
    assert torch.all(plain == 0)  # the architecture: an all-zero frame embeds to zero
    floored = Runner(dataclasses.replace(bb, noise_floor=0.001))
    a = floored.embed(layout, [], silent)[torch.as_tensor(layout.types) == AUDIO]
    b = floored.embed(layout, [], silent)[torch.as_tensor(layout.types) == AUDIO]
    assert a.abs().sum() > 0 and torch.equal(a, b)


def test_the_driver_checks_a_model_folder_without_importing_torch(tmp_path):
    """`onepass run` validates --model and plans its inputs in the driver, which never runs the
    model: importing torch there cost every run about 2 s before Ray started."""
    import subprocess
    import sys

    code = ("import sys\nfrom onepass.pipeline.cli import main\nfrom onepass.model.meta import DEFAULT_MODEL_DIR\n"
            f"try:\n    main(['run', {str(tmp_path / 'missing.mp4')!r}, '-o', {str(tmp_path / 'out')!r}, '--model', str(DEFAULT_MODEL_DIR)])\n"
            "except SystemExit as exc:\n    print('exit', exc.code)\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('transformers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.strip().splitlines()[-2:] == ["exit 1", "[]"], out  # the missing input is an error row, no torch
