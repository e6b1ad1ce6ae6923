"""onepass on a real multi-node Ray cluster (tests/cluster.py: a head with no CPU for tasks and
three 1-CPU worker nodes, token authentication on): the same rows as a local run, decode spread
over the nodes, and a worker NODE killed mid-run loses nothing."""

import json
import os
import secrets
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import duckdb
import pytest

from synth import tone, write_clip

HERE = Path(__file__).parent
TABLES = ("captions", "transcripts", "speakers", "answers")


def tables(out: Path) -> dict:
    con = duckdb.connect()
    got = {t: con.execute(f"SELECT * FROM read_parquet('{out}/sources/*/{t}.parquet') ORDER BY ALL").fetchall() for t in TABLES}
    got["sources"] = con.execute(f"SELECT source_id, path, status, error, windows, duration_ms, corrupt_packets "
                                 f"FROM read_parquet('{out}/sources/*/source.parquet') ORDER BY ALL").fetchall()
    return got


def nodes(out: Path) -> list[str]:
    return [r[0] for r in duckdb.connect().execute(f"SELECT decode_node FROM read_parquet('{out}/sources/*/source.parquet')").fetchall()]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster_in")
    for i in range(4):
        write_clip(root / f"clip{i}.mp4", [40 * k for k in range(750)], Fraction(1, 1000),  # 30 s each
                   audio=tone(30.0, start_s=1.0 + i, freq_hz=250 + 40 * i))
    return root


def onepass(inputs: Path, out: Path, model: Path, *extra, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "onepass.pipeline.cli", "run", str(inputs), "-o", str(out), "--model", str(model),
                             "--window-s", "5", "--workers", "2", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)




class Cluster:
    def __init__(self, workers: int):
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0")
        self.proc = subprocess.Popen([sys.executable, str(HERE / "cluster.py"), str(workers), "0", "1"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=self.env, start_new_session=True)
        line = self.proc.stdout.readline()
        assert line, "tests/cluster.py did not start a cluster"
        info = json.loads(line)
        self.address, self.head, self.workers = info["address"], info["head"], info["workers"]

    def kill(self, k: int) -> None:
        self.proc.stdin.write(f"kill {k}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == f"killed {k}"

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)
        except Exception:  # noqa: BLE001
            pass
        finally:
            try:
                os.killpg(self.proc.pid, 9)  # whatever of the cluster is left
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def cluster():
    """One cluster for the module (each start costs CI seconds); the test that kills a node of it
    comes last."""
    c = Cluster(workers=3)
    yield c
    c.close()


@pytest.fixture(scope="module")
def local(inputs, tmp_path_factory, tiny_model, cluster):
    """The reference: a local run, made while the cluster is up on this machine (so that it also
    shows a local run does not join it, below)."""
    out = tmp_path_factory.mktemp("local")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = onepass(inputs, out, tiny_model, env=env)
    log = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, log
    return out


def children(pid: int) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p))
            except (OSError, IndexError, ValueError):
                continue
    return out


def title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="ignore")
    except OSError:
        return ""


def test_cluster_run_equals_a_local_run_and_spreads_decode(inputs, local, cluster, tmp_path, tiny_model):
    out = tmp_path / "out"
    proc = onepass(inputs, out, tiny_model, "--address", cluster.address, env=cluster.env)
    log = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, log
    assert tables(out) == tables(local)  # row by row
    used = set(nodes(out))
    workers = {w["node_id"] for w in cluster.workers}
    assert used <= workers and len(used) >= 2, (used, workers)  # the head has no CPU for tasks: decode ran on >= 2 worker nodes


def test_a_local_run_does_not_join_a_cluster_on_the_machine(local, cluster):
    """Without --address, onepass starts its own private Ray even while a `ray start` cluster is up
    here (Ray's own default would join the latest cluster it finds in /tmp/ray): the reference
    run was made so, and none of its sources names a node of the cluster."""
    cluster_nodes = {cluster.head["node_id"], *(w["node_id"] for w in cluster.workers)}
    assert nodes(local) and not set(nodes(local)) & cluster_nodes


ACTORS = ("ray::AudioFrameActor", "ray::PatchifyActor", "ray::BackboneActor")


def test_a_worker_node_killed_mid_run_loses_nothing(inputs, local, cluster, tmp_path, tiny_model):
    """Last of the tests on the shared cluster: it kills one of its nodes, mid-run (a source is
    being decoded), and the node killed hosts an operator pool or the backbone actor: its actor
    must be restarted elsewhere (calls to an actor on a node that died but is not yet declared
    dead fail at once, over and over: they must wait for its restart). Of such nodes, one that
    also decodes at that moment if there is one within 3 s."""
    out = tmp_path / "out"
    proc = onepass(inputs, out, tiny_model, "--address", cluster.address, env=cluster.env)
    deadline, victim, first_seen = time.time() + 300, None, None
    while time.time() < deadline and proc.poll() is None:
        runs = [[title(c) for c in children(w["raylet_pid"])] for w in cluster.workers]
        decoding = [k for k, r in enumerate(runs) if "ray::decode_source" in r]
        hosting = [k for k, r in enumerate(runs) if any(t.startswith(ACTORS) for t in r)]
        both = [k for k in hosting if k in decoding]
        if decoding and first_seen is None:
            first_seen = time.time()
        if both or (hosting and decoding and time.time() - first_seen > 3):
            victim = (both or hosting)[0]
            break
        time.sleep(0.01)
    assert victim is not None, "no worker node hosted an actor while a source was decoded"
    on_it = sorted(t for t in runs[victim] if t.startswith(("ray::decode", *ACTORS)))
    assert any(t.startswith(ACTORS) for t in on_it), on_it  # an actor dies with the node
    cluster.kill(victim)  # the node's raylet and every worker process on it, at once, while it decodes
    log = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, f"killed node {victim} running {on_it}\n{log}"
    assert tables(out) == tables(local)  # its source was decoded again elsewhere: row by row equal
    assert cluster.workers[victim]["node_id"] not in nodes(out)  # no committed source names the dead node


def test_an_input_a_node_cannot_see_is_an_error_naming_the_node_and_the_path(tmp_path):
    """Inputs are read where they are decoded: a path the decoding node does not have fails that
    source with the path and the node named (the decode task's own code, run in this process)."""
    from onepass.pipeline.ray_env import local_ray_env

    local_ray_env()  # before ray_stages imports Ray: later in-process tests start a local Ray with token authentication
    from onepass.pipeline.config import RunConfig
    from onepass.pipeline.messages import Failed
    from onepass.pipeline.ray_stages import decode_source
    from onepass.pipeline.sources import Source

    missing = str(tmp_path / "on-the-driver-only.mp4")
    (msg,) = list(decode_source._function(Source(id="x", location=missing), RunConfig(output=tmp_path)))
    assert isinstance(msg, Failed) and missing in msg.reason and "does not exist on" in msg.reason and "same path" in msg.reason
