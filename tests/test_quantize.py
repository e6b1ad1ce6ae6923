"""``--quantize``: weight-only int8 / int4 of the decoder (torchao) agrees with the unquantized model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from onepass.model.training.metrics import row_agreement

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "clips"


def _rows(quantize):
    from onepass.model.analyse import analyse
    from onepass.model.load import load_backbone
    from onepass.model.runner import Runner
    from onepass.model.tasks import TaskSet
    from onepass.operators.decode import MediaReader
    from onepass.pipeline.windows import iter_windows

    runner = Runner(load_backbone(None, device="cpu", quantize=quantize))
    caps, segs = [], []
    for clip in sorted(EXAMPLES.glob("*.mp4")):
        with MediaReader(clip) as media:
            windows = list(iter_windows(media, clip.stem, window_s=10))
        for res in analyse(runner, windows, TaskSet(True, True, False)):
            caps += [(clip.stem, c.frame_ms, c.text) for c in res.captions]
            segs += [(clip.stem, s.span.start_ms, s.span.end_ms, s.text) for s in res.segments]
    return runner, caps, segs


def test_int8_agrees_with_the_unquantized_model_on_the_bundled_clips():
    _, caps, segs = _rows(None)
    runner, qcaps, qsegs = _rows("int8")
    layers = runner.model.model.language_model.layers
    assert type(layers[0].mlp.gate_proj.weight).__name__ == "Int8Tensor"  # the decoder's linears are int8
    assert isinstance(runner.model.model.embed_audio.embedding_projection.weight, torch.nn.Parameter)  # embedders are not
    assert len(caps) >= 20 and len(segs) >= 2
    share = row_agreement(caps + segs, qcaps + qsegs)
    assert share >= 0.9, (share, caps, qcaps, segs, qsegs)


def test_int4_runs_on_cpu_and_the_switch_is_checked():
    from onepass.model.load import load_backbone, quantize_decoder
    from onepass.pipeline.config import RunConfig

    bb = load_backbone(None, device="cpu", quantize="int4")
    w = bb.model.model.language_model.layers[0].self_attn.q_proj.weight
    assert "Int" in type(w).__name__
    ids = torch.arange(10)[None]
    assert bb.model.model.language_model(input_ids=ids).last_hidden_state.isfinite().all()
    model = load_backbone(None, device="cpu").model
    decoder_linears = sum(isinstance(m, torch.nn.Linear) for m in model.model.language_model.layers.modules())
    assert quantize_decoder(model, "int8", torch.device("cpu")) == decoder_linears  # the layers' projections, nothing else
    assert type(model.lm_head.weight).__name__ != "Int8Tensor"
    with pytest.raises(ValueError, match="quantize"):
        load_backbone(None, device="cpu", quantize="int3")
    with pytest.raises(ValueError, match="--quantize"):
        RunConfig(output=Path("out"), quantize="fp2")
    plain, q8 = RunConfig(output=Path("out")), RunConfig(output=Path("out"), quantize="int8")
    assert plain.fingerprint() != q8.fingerprint()  # quantized rows never pass for unquantized ones


def test_run_with_quantize_end_to_end(tmp_path):
    import duckdb
    from click.testing import CliRunner

    from onepass.pipeline.cli import main

    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", str(EXAMPLES / "inspection_2.mp4"), "-o", str(out), "--quantize", "int8", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    n = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{out}/sources/*/captions.parquet')").fetchall()[0][0]
    assert n > 0
