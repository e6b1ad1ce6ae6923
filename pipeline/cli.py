"""onepass command line: run, query, export."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from onepass.operators.patchify import BUDGETS

from .config import RunConfig

_DEFAULTS = RunConfig(output=Path("out"))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """onepass: video folders and live streams -> queryable Parquet (captions, transcripts,
    speaker turns) with one encoder-free multimodal transformer (Gemma 4 Unified)."""


@main.command(epilog="""\b
Examples:
  onepass run examples/clips -o out
  onepass run 'footage/**/*.mp4' -o out --ask "list visible defects"
  onepass run clip.mp4 -o out --model /models/gemma-4-12B-it --tasks transcript,diarization
  onepass run tcp://127.0.0.1:9000 -o out          (a live stream: rows every window)
\b
Exit status: 0 all inputs succeeded, 1 some failed (see the sources table), 2 usage error,
130 stopped by Ctrl-C, 143 by SIGTERM (committed sources and a live stream's committed windows
stay; its row says 'stopped'; a rerun does the rest).""")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Output folder (Parquet tables).")
@click.option("--model", type=click.Path(path_type=Path), default=None, help="Local Hugging Face folder of a Gemma 4 Unified checkpoint (safetensors). Default: the bundled small model.")
@click.option("--tasks", default=_DEFAULTS.tasks, show_default=True, help="Comma list of captions, transcript, diarization.")
@click.option("--ask", "questions", multiple=True,
              help="A question answered for every window (repeatable). The bundled model answers only its documented "
                   "questions (README, `onepass.json`): which components show a condition, what needs attention, what "
                   "readings were taken, which shapes are visible; others get a warning and rows marked unsupported.")
@click.option("--fps", type=float, default=_DEFAULTS.fps, show_default=True, help="Frames kept per second.")
@click.option("--budget", type=click.Choice([str(b) for b in BUDGETS]), default=str(_DEFAULTS.budget), show_default=True, help="Soft tokens per frame.")
@click.option("--window-s", type=int, default=None,
              help="Window length in seconds (at most 30). Default: the model's own (the bundled model: 10; Gemma 4 weights: 30).")
@click.option("--decode-mode", type=click.Choice(["fast", "exact"]), default=_DEFAULTS.decode_mode, show_default=True, help="fast skips unreferenced frames (kept frame may lag by <= 250 ms).")
@click.option("--workers", type=int, default=_DEFAULTS.workers, show_default=True, help="Sources decoded at once.")
@click.option("--segment-minutes", type=float, default=_DEFAULTS.segment_s / 60, show_default=True,
              help="A file at least twice this long is decoded in segments of about this length by tasks side by side "
                   "(at most one per CPU of the cluster); the windows are exactly those of one pass. 0: never.")
@click.option("--batch", "batch_windows", type=int, default=_DEFAULTS.batch_windows, show_default=True, help="Windows per backbone batch.")
@click.option("--patch-actors", type=int, default=None, help="Patchify actor pool size (default: one per 4 CPUs of the cluster, at least 1).")
@click.option("--address", default=None, help="Join an existing Ray cluster instead of starting a local one.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available).")
@click.option("--quantize", type=click.Choice(["int8", "int4"]), default=None,
              help="Weight-only quantization of the decoder's linear layers (and on a CPU the token embedding), "
                   "layer by layer as the checkpoint is read. The 12B in int8 runs on a CPU within 16 GB, int4 within 10 GB "
                   "(README: the 16 GB mode). CUDA uses torchao: pip install 'onepass[quant]'.")
@click.option("--threads", type=int, default=None,
              help="CPU threads of the backbone when it runs on the CPU (default: every core of its node).")
@click.option("--max-new-tokens", type=int, default=_DEFAULTS.max_new_tokens, show_default=True,
              help="Most tokens the model writes per request (a caption, a transcript, an answer).")
@click.option("--voices", type=click.Path(exists=True, file_okay=False, path_type=str), default=None,
              help="Known voices: DIR/<name>.wav (or any audio/video file) or DIR/<name>/ with several recordings per person, "
                   "20-40 s of speech each. A speaker whose voice matches an enrolled person is named so in every table; "
                   "others stay S1, S2 ... Enrolment is cached in OUTPUT/voices.json.")
@click.option("--speakers", "num_speakers", type=int, default=None, help="Exactly this many speakers per source.")
@click.option("--min-speakers", type=int, default=None, help="At least this many speakers per source (a clustering hint).")
@click.option("--max-speakers", type=int, default=None, help="At most this many speakers per source (a clustering hint).")
@click.option("--telemetry", type=click.Path(exists=True, path_type=str), default=None,
              help="Positions for the rows (latitude, longitude, altitude_m): a telemetry sidecar for every file (a DJI-style "
                   ".SRT or a CSV time_ms,latitude,longitude[,altitude_m]), or a folder of <clip>.srt|.csv. "
                   "Default: <clip>.srt / <clip>.csv beside each video, if there is one.")
@click.option("--force", is_flag=True, help="Redo sources already committed.")
@click.option("--timeout-s", "source_timeout_s", type=float, default=_DEFAULTS.source_timeout_s, show_default=True,
              help="Give up on a (non-live) source after this many seconds; it gets an error row.")
@click.option("--stream-timeout-s", type=float, default=_DEFAULTS.stream_timeout_s, show_default=True,
              help="A live stream that delivers nothing for this long has ended (UDP has no end-of-stream).")
def run(inputs, output, model, tasks, questions, fps, budget, window_s, decode_mode, workers, segment_minutes, batch_windows, patch_actors, address,
        device, quantize, threads, max_new_tokens, voices, num_speakers, min_speakers, max_speakers, telemetry, force,
        source_timeout_s, stream_timeout_s):
    """Process INPUTS (files, folders, globs, stream URLs, - for stdin) into OUTPUT."""
    from .run import build_pipeline

    try:
        cfg = RunConfig(output=output, model=model, tasks=tasks, questions=tuple(questions), fps=fps, budget=int(budget),
                        window_s=window_s, decode_mode=decode_mode, workers=workers, segment_s=round(segment_minutes * 60),
                        batch_windows=batch_windows,
                        patch_actors=patch_actors, address=address, device=device, quantize=quantize, threads=threads,
                        max_new_tokens=max_new_tokens, force=force, source_timeout_s=source_timeout_s, stream_timeout_s=stream_timeout_s,
                        telemetry=telemetry, voices=voices, num_speakers=num_speakers, min_speakers=min_speakers,
                        max_speakers=max_speakers)
        if voices:  # enrol now: a recording that cannot be read stops the run before it starts
            from onepass.model.voices import enrol

            known = enrol(voices, Path(output) / "voices.json")
            click.echo("enrolled: " + ", ".join(f"{k.name} ({k.speech_s:.0f} s of speech)" for k in known))
        if quantize and (device or "").startswith("cuda"):  # on a CPU onepass's own int8 / int4 modules serve
            import importlib.util

            if importlib.util.find_spec("torchao") is None:
                raise ValueError(f"--quantize {quantize} on {device} needs torchao: pip install 'onepass[quant]'")
        if model is not None:
            from onepass.model.meta import check_folder  # no torch in the driver

            check_folder(Path(model))
        _warn_unsupported(model, questions)
    except Exception as exc:  # noqa: BLE001 - configuration errors stop before any worker starts
        raise click.UsageError(str(exc)) from exc
    progress = _Bars()
    try:
        summary = build_pipeline(cfg).run(list(inputs), progress=progress)
    finally:
        progress.close()
    click.echo(f"{'source':48s} status")
    for sid in summary.ok:
        click.echo(f"{sid:48s} ok")
    for sid in summary.skipped:
        click.echo(f"{sid:48s} skipped (already done; --force to redo)")
    for loc, why in summary.failed:
        click.echo(f"{str(loc)[:48]:48s} FAILED: {why}")
    for loc, why in summary.partial:
        click.echo(f"{str(loc)[:48]:48s} PARTIAL (rows up to where it broke off are kept): {why}")
    for loc, why in summary.warnings:
        click.echo(f"warning: {loc}: {why}")
    for sid in summary.stopped:
        click.echo(f"{sid:48s} stopped (live stream ended by Ctrl-C; its committed windows are kept)")
    if summary.interrupted:
        why = "terminated (SIGTERM)" if summary.terminated else "interrupted"
        click.echo(f"{why}: sources not listed above were not committed; rerun the same command to do them")
    if summary.throughput:
        click.echo(f"backbone: {summary.throughput}")
    if summary.live_latency_s:
        import statistics

        click.echo(f"live: median {statistics.median(summary.live_latency_s):.2f} s from a second decoded to its rows "
                   f"committed (max {max(summary.live_latency_s):.2f} s, {len(summary.live_latency_s)} seconds)")
    click.echo(f"results: {output}/sources/*/<table>.parquet  (query: onepass query {output} \"SELECT ...\")")
    sys.exit(summary.exit_code)


def _warn_unsupported(model, questions) -> None:
    """A checkpoint with a documented question set (the bundled model's) answers only those: say so
    for any other; its rows say "[unsupported question]" (supported = false), never a made-up answer."""
    from onepass.model.meta import match_question, model_questions

    documented = model_questions(model)
    odd = [q for q in questions if match_question(documented, q) is None]
    if odd:
        listed = "; ".join(f'"{q["text"]}"' for q in documented.values())
        for q in odd:
            click.echo(f'warning: the model answers only its documented questions ({listed}); "{q}" is answered '
                       f'as unsupported (answers.supported = false)', err=True)


class _Bars:
    """tqdm bars: the whole run (sources) and one per source being processed (windows)."""

    def __init__(self):
        from tqdm import tqdm

        self.tqdm = tqdm
        self.total = None
        self.bars: dict = {}

    def start(self, sources: int) -> None:
        self.total = self.tqdm(total=sources, desc="sources", unit="src", file=sys.stderr, disable=None, position=0)

    def source(self, source_id, location, duration_ms, window_s) -> None:
        n = -(-duration_ms // (window_s * 1000)) if duration_ms else None
        self.bars[source_id] = self.tqdm(total=n, desc=Path(location).name[:30], unit="win", file=sys.stderr,
                                         disable=None, leave=False, position=len(self.bars) + 1)

    def window(self, source_id) -> None:
        if source_id in self.bars:
            self.bars[source_id].update(1)

    def done(self, source_id, error) -> None:
        bar = self.bars.pop(source_id, None)
        if bar is not None:
            bar.close()
        if self.total is not None:
            self.total.update(1)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        if self.total is not None:
            self.total.close()


@main.command(epilog="""\b
Tables: sources, captions, transcripts, speakers, answers.
Example:
  onepass query out "SELECT source_id, start_ms, text FROM transcripts WHERE text LIKE '%corrosion%'"
  onepass query out "SELECT * FROM captions" -o captions.csv""")
@click.argument("output", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("sql")
@click.option("-o", "--out-file", type=click.Path(path_type=Path), default=None, help="Write .csv or .parquet instead of printing.")
def query(output, sql, out_file):
    """Run SQL (DuckDB) over the results in OUTPUT. The results are only read."""
    import duckdb

    from .writers import connect

    con = connect(output)
    try:
        kinds = [st.type for st in con.extract_statements(sql)]
    except duckdb.Error as exc:
        raise click.UsageError(f"query failed: {exc}") from exc
    if kinds != [duckdb.StatementType.SELECT]:
        # the results are only read: COPY, CREATE, ATTACH, INSERT ... could write beside them
        raise click.UsageError(f"onepass query runs one SELECT statement (got {', '.join(k.name for k in kinds) or 'none'})")
    try:
        rel = con.sql(sql)
    except Exception as exc:  # noqa: BLE001
        raise click.UsageError(f"query failed: {exc}") from exc
    if out_file is None:
        click.echo(_format_table(rel.columns, rel.fetchall()))
        return
    table = rel.to_arrow_table()  # written by onepass, not by SQL: the connection writes nowhere
    if out_file.suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, out_file)
    else:
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, out_file)


def _format_table(columns: list[str], rows: list[tuple], max_width: int = 60) -> str:
    cells = [[("" if v is None else str(v))[:max_width] for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    out = [line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


@main.command()
@click.argument("output", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["srt", "vtt", "rttm", "geojson"]), required=True,
              help="srt / vtt: transcripts; rttm: speaker turns; geojson: every caption, transcript and answer row "
                   "with a position (telemetry), as points, and the caption positions as the track.")
@click.option("--source", "source_id", default=None, help="Only this source id (default: every source, one file each).")
@click.option("-o", "--out-dir", type=click.Path(path_type=Path), default=None, help="Folder for the files (default: OUTPUT/export).")
def export(output, fmt, source_id, out_dir):
    """Subtitles (SRT, WebVTT with speaker voice tags) from transcripts, RTTM from speaker turns, or
    GeoJSON of every row with a position."""
    from .writers import WRITERS, connect

    con = connect(output)
    table = "speakers" if fmt == "rttm" else "transcripts"
    ids = [r[0] for r in con.execute("SELECT source_id FROM sources WHERE status = 'ok' ORDER BY source_id").fetchall()]
    if source_id is not None:
        if source_id not in ids:
            raise click.UsageError(f"no committed source {source_id!r}")
        ids = [source_id]
    out_dir = out_dir or output / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = ("captions", "transcripts", "answers") if fmt == "geojson" else (table,)
    for sid in ids:
        rows = []
        for t in tables:
            cur = con.execute(f"SELECT * FROM {t} WHERE source_id = ? ORDER BY start_ms", [sid])
            cols = [d[0] for d in cur.description]
            rows += [{**dict(zip(cols, r)), "table": t} for r in cur.fetchall()]
        path = out_dir / f"{sid}.{WRITERS[fmt].extension}"
        with open(path, "w", encoding="utf-8") as f:
            WRITERS[fmt].write(rows, f)
        click.echo(str(path))


@main.command(epilog="""\b
Example:
  onepass run examples/clips -o out && onepass report out -o out/report && chromium out/report/index.html""")
@click.argument("output", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--source", "source_id", default=None, help="Only this source id.")
@click.option("-o", "--out-dir", type=click.Path(path_type=Path), default=None, help="Folder for the pages (default: OUTPUT/report).")
@click.option("--fps", type=float, default=_DEFAULTS.fps, show_default=True, help="The run's --fps (which frames were kept).")
@click.option("--pdf", is_flag=True, help="Also report.pdf to hand over: a cover with the run's figures, every finding with its frame, "
                                          "time, position and remark, then a page per source. Printed offline by the system Chromium "
                                          "through Playwright (pip install 'onepass[pdf]'; apt-get install chromium).")
def report(output, source_id, out_dir, fps, pdf):
    """Offline pages to work in: per source a time scrubber over every kept frame with its caption, the
    transcript (each line plays its audio) and speaker turns under the cursor, answers with a filter for
    flagged windows; an index with per-source figures, a search over everything said, seen and answered,
    and every flagged moment; answers.csv for a work-order system."""
    from .report import write_reports

    try:
        pages = write_reports(output, out_dir or output / "report", source_id, fps=fps, pdf=pdf)
    except KeyError as exc:
        raise click.UsageError(f"no source {exc}") from exc
    click.echo(str(pages[0]))


@main.command(name="evaluate")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("runs/eval"), show_default=True)
@click.option("--model", type=click.Path(path_type=Path), default=None, help="Checkpoint folder (default: the bundled model).")
@click.option("--clips", "n_clips", type=int, default=20, show_default=True, help="Held-out clips to generate.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--sentences", type=click.Choice(["trained", "heldout", "random", "numbers"]), default="trained", show_default=True,
              help="Sentence forms of the clips: the training's forms, forms the training never draws, vocabulary in no "
                   "order, or number-dense reports.")
@click.option("--synths", type=click.Choice(["espeak", "trained", "heldout"]), default="espeak", show_default=True,
              help="Voices: the wheel's eSpeak NG, every training synthesizer (+ Debian espeak-ng, Flite), or the held-out "
                   "one (Festival, never in training).")
@click.option("--speech-dir", type=click.Path(path_type=Path), default=None,
              help="Also run real recordings (*.wav + *.txt): WER, and the share of rows marked [other speech].")
@click.option("--images-dir", type=click.Path(path_type=Path), default=None,
              help="Also run photographs (*.png, *.jpg) as 5 s still clips: the share of frames marked [other scene].")
@click.option("--window-s", type=int, default=None, help="Default: the model's own.")
def evaluate_cmd(output, model, n_clips, seed, sentences, synths, speech_dir, images_dir, window_s):
    """Measure the model on freshly generated held-out clips of the default model's domain:
    WER (with its substitution, deletion and insertion rates and the most frequent confusions),
    DER (0.25 s collar), exact-caption share, median boundary error, and the share of each
    documented question answered exactly."""
    import json

    from .evaluate import evaluate, make_heldout_clips

    clips = make_heldout_clips(output / "clips", n_clips, seed, sentences=sentences, synths=synths)
    cfg = RunConfig(output=output / "out", model=model, window_s=window_s, force=True)
    report = evaluate(cfg, clips, speech_dir, images_dir)
    (output / "report.json").write_text(json.dumps(report, indent=1, default=str))
    click.echo(json.dumps(report, indent=1, default=str))


@main.command(epilog="""\b
Examples:
  onepass run clips/ -o out                           # then correct out/sources/*/*.parquet
  onepass finetune out -o my-model                     # the bundled model, all weights
  onepass finetune out -o my-12b --model /models/gemma-4-12B-it --device cuda   # LoRA, merged on export
  onepass run new-clips/ -o out2 --model my-model
\b
A rerun with the same -o resumes from OUTPUT.state (checkpoints every --save-every-min).
Exit status: 0 done, 1 some sources were skipped, 2 usage error or nothing to train on.""")
@click.argument("labelled", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Folder of the new model (a Hugging Face folder --model accepts).")
@click.option("--model", "base", type=click.Path(path_type=Path), default=None, help="Checkpoint to start from (default: the bundled model).")
@click.option("--media", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Where to look for clips that are not at the sources table's path (by file name; repeatable).")
@click.option("--method", type=click.Choice(["auto", "full", "lora"]), default="auto", show_default=True,
              help="full: every weight; lora: PEFT adapters on the decoder's linear layers, merged on export; auto: lora above 1 B parameters.")
@click.option("--steps", type=int, default=200, show_default=True, help="Optimizer steps.")
@click.option("--batch", type=int, default=4, show_default=True, help="Labelled windows per step.")
@click.option("--lr", type=float, default=None, help="Peak learning rate (default: 1e-4; 2e-4 with --method lora).")
@click.option("--heldout", type=float, default=0.2, show_default=True, help="Share held out to measure (whole sources when there are two or more).")
@click.option("--window-s", type=int, default=None, help="Default: the base model's own.")
@click.option("--device", default=None, help="cpu, cuda ... (default: cuda if available).")
@click.option("--minutes", type=float, default=None, help="Stop (checkpoint and export) after this long; a rerun resumes.")
@click.option("--save-every-min", type=float, default=10.0, show_default=True)
@click.option("--eval-every", type=int, default=50, show_default=True, help="Held-out loss every this many steps (in OUTPUT.state/log.jsonl).")
def finetune(labelled, output, base, media, method, steps, batch, lr, heldout, window_s, device, minutes, save_every_min, eval_every):
    """Fine-tune a model on LABELLED: an output folder of `onepass run` whose captions and transcripts
    tables hold the truth (corrected by hand or written in the same format). One pass trains vision,
    audio and text together: the targets are the runner's own prompts and formats."""
    import json

    import torch

    from onepass.model.meta import DEFAULT_MODEL_DIR, model_window_s
    from onepass.model.training.finetune import FinetuneConfig
    from onepass.model.training.finetune import finetune as run_finetune

    from .finetune import labelled_windows, read_labelled, report, split_heldout

    base = Path(base) if base else DEFAULT_MODEL_DIR
    window = window_s or model_window_s(base)
    sources, problems = read_labelled(labelled, list(media))
    report(problems)
    per_source, bad = labelled_windows(sources, window)
    report(bad)
    train, held = split_heldout(per_source, heldout)
    if not train:
        raise click.UsageError(f"{labelled}: no labelled windows to train on")
    if lr is None:
        lr = 2e-4 if method == "lora" else 1e-4
    cfg = FinetuneConfig(steps=steps, batch=batch, lr=lr, method=method)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        result = run_finetune(train, held, base, output, output.with_name(output.name + ".state"), cfg, device=dev,
                              minutes=minutes, save_every_min=save_every_min, eval_every=eval_every, window_s=window)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(json.dumps(result, indent=1))
    if not result["done"]:
        click.echo(f"stopped at step {result['step']} of {steps}: rerun the same command to go on", err=True)
    sys.exit(1 if problems or bad else 0)


if __name__ == "__main__":  # after every command is defined
    main()
