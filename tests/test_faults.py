"""Fault injection: kill -9 the decode worker, the backbone actor, the driver; the results must
equal a clean run's, row by row, with nothing lost or duplicated."""

import os
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import duckdb
import pytest

from subproc import ctrl_c_reaches_it
from synth import tone, write_clip

TABLES = ("captions", "transcripts", "speakers", "answers")


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def ray_pids(pattern: str, driver: int) -> list[int]:
    """Processes descended from ``driver`` (a run_cli driver: its raylet and that raylet's
    workers) whose title shows ``pattern``: another Ray on the machine is never touched."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
                if pattern not in cmd:
                    continue
                up = int(pid)
                while up > 1 and up != driver:
                    up = _parent(up)
                if up == driver:
                    out.append(int(pid))
            except (OSError, IndexError, ValueError):
                continue
    return out


def committed(out: Path) -> list[Path]:
    return [p for p in (out / "sources").glob("*/source.parquet") if not p.parent.name.startswith(".")] if (out / "sources").exists() else []


def tables(out: Path) -> dict[str, list[tuple]]:
    if not committed(out):  # nothing committed yet: an empty result, not a broken one
        return {t: [] for t in (*TABLES, "sources")}
    con = duckdb.connect()
    got = {t: con.execute(f"SELECT * FROM read_parquet('{out}/sources/*/{t}.parquet') ORDER BY ALL").fetchall() for t in TABLES}
    got["sources"] = con.execute(f"SELECT source_id, status, windows FROM read_parquet('{out}/sources/*/source.parquet') ORDER BY ALL").fetchall()
    return got


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    speech = tone(12.0, start_s=1.0, freq_hz=300)
    for i in range(3):
        write_clip(root / f"clip{i}.mp4", [40 * k for k in range(300)], Fraction(1, 1000), audio=speech)
    return root


def run_cli(inputs: Path, out: Path, model: Path, *extra, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "onepass.pipeline.cli", "run", str(inputs), "-o", str(out), "--model", str(model),
                             "--window-s", "4", "--tasks", "captions,transcript,diarization", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True,  # its own process group: the local Ray it starts can be cleaned up alone
                            preexec_fn=ctrl_c_reaches_it)


@pytest.fixture(scope="module")
def clean(inputs, tmp_path_factory, tiny_model):
    out = tmp_path_factory.mktemp("clean")
    proc = run_cli(inputs, out, tiny_model)
    log = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, log
    return tables(out)


def kill_when(driver: subprocess.Popen, pattern: str, sig=signal.SIGKILL, timeout_s: float = 120, delay_s: float = 0.0) -> threading.Thread:
    """Kill the first process of ``driver``'s run whose title shows ``pattern``. Ray titles a worker
    ``ray::Actor.method`` only while it runs that method, so a method pattern (delay 0) kills it
    inside the call: the fault lands while the work is in flight."""
    def killer():
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            pids = ray_pids(pattern, driver.pid)
            if pids:
                time.sleep(delay_s)
                pids = [p for p in pids if p in ray_pids(pattern, driver.pid)] if delay_s else pids  # still at it
                if pids:
                    os.kill(pids[0], sig)
                    killer.killed = pids[:1]
                    return
            time.sleep(0.01)
    killer.killed = []
    t = threading.Thread(target=killer, daemon=True)
    t.killed_ref = killer
    t.start()
    return t


# an actor is restarted and its call retried; each of the three is killed once, in one run, while it
# works on a call (the backbone while it analyses a batch). One run, not three: each run of the CLI
# costs CI about 20 s, and the three restarts are independent (each has its own retries).
ACTORS = ("ray::BackboneActor.analyse", "ray::PatchifyActor.patchify", "ray::AudioFrameActor.frame")


def test_killing_each_actor_mid_call_changes_nothing(inputs, clean, tmp_path, tiny_model):
    out = tmp_path / "out"
    proc = run_cli(inputs, out, tiny_model)
    killers = {actor: kill_when(proc, actor) for actor in ACTORS}
    log = proc.communicate(timeout=600)[0]
    for t in killers.values():
        t.join()
    assert all(t.killed_ref.killed for t in killers.values()), {a: t.killed_ref.killed for a, t in killers.items()}  # each was seen and killed
    assert proc.returncode == 0, log
    assert tables(out) == clean  # row by row


# SIGSEGV: as if FFmpeg crashed; segmented: each 12-s clip decoded as 2 segments side by side (one
# of them killed: the whole file is decoded again), whose tables also equal the one-pass clean run's
@pytest.mark.parametrize("sig,segment_minutes", [(signal.SIGKILL, "0"), (signal.SIGSEGV, "0"), (signal.SIGKILL, "0.05")],
                         ids=["SIGKILL", "SIGSEGV", "SIGKILL-segmented"])
def test_a_decode_worker_killed_mid_source_is_retried_and_changes_nothing(inputs, clean, tmp_path, tiny_model, sig, segment_minutes):
    out = tmp_path / "out"
    proc = run_cli(inputs, out, tiny_model, "--workers", "1", "--segment-minutes", segment_minutes)
    t = kill_when(proc, "ray::decode_source", sig=sig)  # inside the decode task (it runs well under 1 s on these clips; the old 0.5 s wait hit an idle worker)
    log = proc.communicate(timeout=600)[0]
    t.join()
    assert t.killed_ref.killed
    assert proc.returncode == 0, log
    assert tables(out) == clean  # the killed source was decoded again from the start: row by row equal
    if segment_minutes != "0":
        segments = duckdb.connect().execute(f"SELECT decode_segments FROM read_parquet('{out}/sources/*/source.parquet')").fetchall()
        assert len(segments) == 3 and all(n >= 2 for (n,) in segments), segments


def test_interrupted_three_ways_then_rerun_equals_a_clean_run(inputs, clean, tmp_path, tiny_model):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) once a source is committed;
    then SIGTERM, then SIGKILL, each on a rerun while it decodes a source; then a rerun to the end.
    Each interrupted run exits with its signal's status, says what it committed, prints no
    traceback, and leaves only whole sources, each row by row a clean run's; nothing committed
    before is lost; the last rerun skips exactly what was committed and ends equal to a clean run.
    One chain, not three runs-and-reruns: each run of the CLI costs CI about 20 s."""
    from collections import Counter

    out = tmp_path / "out"
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        before = {p.parent.name for p in committed(out)}
        proc = run_cli(inputs, out, tiny_model, "--workers", "1")
        deadline = time.time() + 300
        if sig == signal.SIGINT:  # the first run: mid-run, after its first committed source
            while time.time() < deadline and not committed(out):
                time.sleep(0.05)
            assert committed(out)
            os.killpg(proc.pid, signal.SIGINT)  # the whole foreground group: driver, its Ray, its workers
        else:  # a rerun: while it decodes one of the sources left
            while time.time() < deadline and not ray_pids("ray::decode_source", proc.pid):
                time.sleep(0.01)
            assert ray_pids("ray::decode_source", proc.pid), f"the rerun before {sig.name} never decoded"
            os.kill(proc.pid, sig)
        log = proc.communicate(timeout=120)[0]
        if sig == signal.SIGKILL:  # the killed driver's own Ray (GCS, raylet) is left: stop it, and only it (not `ray stop`)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert proc.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -9}[sig], log
        assert "Traceback" not in log, log
        after = {p.parent.name for p in committed(out)}
        assert before <= after, (sig.name, before, after)  # nothing committed before is lost
        if sig != signal.SIGKILL:  # prompt and tidy: the summary says what this run committed, no signal dump
            assert ("terminated (SIGTERM)" if sig == signal.SIGTERM else "interrupted:") in log and "received" not in log, log
            assert sum(" ok" in line for line in log.splitlines()) == len(after - before), log
            assert log.count("skipped (already done") == len(before), log  # committed sources are not redone
        if sig == signal.SIGINT:
            assert 1 <= len(after) < 3, after  # this run committed some sources, not all
        # what this run leaves reads cleanly, and every row of it is a clean run's row
        partial = tables(out)
        assert all(s[1] == "ok" for s in partial["sources"]) and len(partial["sources"]) == len(after)
        for t, rows in partial.items():
            assert not Counter(rows) - Counter(clean[t]), (sig.name, t)
    rerun = run_cli(inputs, out, tiny_model)
    log = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0 and "Traceback" not in log, log
    assert log.count("skipped (already done") == len(after) and len(after) < 3, log
    assert tables(out) == clean  # no duplicate, no missing row
    assert not list((out / "sources").glob(".*.tmp"))  # no half-written folder left behind
