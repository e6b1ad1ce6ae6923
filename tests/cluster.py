"""A real multi-node Ray cluster on this machine, for tests:
``python tests/cluster.py WORKERS [HEAD_CPUS [WORKER_CPUS]]``.

Ray's own ``ray.cluster_utils.Cluster`` starts a head and WORKERS worker nodes (each a GCS-less
raylet with its own object store and worker processes), all on 127.0.0.1, token authentication
on (the token comes from the environment; every node and every driver shares it). Runs in a
process of its own so that the test process's Ray settings cannot leak in.

Prints one JSON line: {"address", "head": {...}, "workers": [{"node_id", "raylet_pid"}]}; then
reads commands from stdin: ``kill N`` (worker N's raylet and every process of that node, at once:
a node that dies, not a process) answered by ``killed N``; ``quit`` (or EOF) shuts it all down.
"""

from __future__ import annotations

import json
import os
import sys


def _node(node) -> dict:
    from ray._private import ray_constants

    return {"node_id": node.node_id, "raylet_pid": node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid}


def main() -> None:
    if os.environ.get("RAY_AUTH_MODE") != "token" or not os.environ.get("RAY_AUTH_TOKEN"):
        sys.exit("tests/cluster.py needs RAY_AUTH_MODE=token and RAY_AUTH_TOKEN in its environment")
    from ray.cluster_utils import Cluster

    n, head_cpus, cpus = (list(map(int, sys.argv[1:4])) + [2, 1, 1][len(sys.argv) - 1:])[:3]
    store = 256 * 1024 * 1024  # each node's object store: small, they all share this machine's memory
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, "include_dashboard": False,
                                                            "node_ip_address": "127.0.0.1", "object_store_memory": store})
    workers = [cluster.add_node(num_cpus=cpus, node_ip_address="127.0.0.1", object_store_memory=store) for _ in range(n)]
    cluster.wait_for_nodes()
    print(json.dumps({"address": cluster.address, "head": _node(cluster.head_node), "workers": [_node(w) for w in workers]}), flush=True)
    try:
        for line in sys.stdin:
            cmd = line.split()
            if cmd[:1] == ["kill"]:
                cluster.remove_node(workers[int(cmd[1])], allow_graceful=False)
                print(f"killed {cmd[1]}", flush=True)
            elif cmd[:1] == ["quit"]:
                break
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
