"""Local Ray: node address 127.0.0.1, no dashboard, every port it opens bound to loopback only, and
each of them refuses a caller without the token (other users of the same machine)."""

import http.client
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc  # grpcio is a test dependency
from conftest import tool

# one real method per Ray gRPC service: the token is checked before the method runs
PROBES = [
    "/ray.rpc.NodeInfoGcsService/GetAllNodeInfo",
    "/ray.rpc.NodeManagerService/GetNodeStats",
    "/ray.rpc.CoreWorkerService/NumPendingTasks",
    "/ray.rpc.ObjectManagerService/Pull",
    "/ray.rpc.ObjectManagerService/Push",
    "/ray.rpc.ObjectManagerService/FreeObjects",
]


def grpc_code(host: str, port: int, method: str, token: str | None) -> str:
    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        call = channel.unary_unary(method, request_serializer=lambda x: x, response_deserializer=lambda x: x)
        call(b"", metadata=[("authorization", f"Bearer {token}")] if token else None, timeout=5)
        return "OK"
    except grpc.RpcError as exc:
        return exc.code().name
    finally:
        channel.close()


def http_status(host: str, port: int, token: str | None) -> int | None:
    req = urllib.request.Request(f"http://{host}:{port}/", headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        return urllib.request.urlopen(req, timeout=5).status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError, http.client.HTTPException):  # not an HTTP server
        return None


def test_local_run_listens_on_loopback_only_and_every_port_wants_the_token():
    from onepass.pipeline.ray_env import local_ray_env

    local_ray_env()  # what a local run sets before Ray is imported
    import ray

    from onepass.pipeline.ray_stages import start_ray

    if ray.is_initialized():
        ray.shutdown()

    def listeners() -> dict[tuple[str, int], str]:
        out = subprocess.run([tool("ss"), "-ltnpH"], capture_output=True, text=True, check=True).stdout
        found = {}
        for line in out.splitlines():
            m = re.search(r"\s(\S+):(\d+)\s+\S+\s+users:\(\(\"([^\"]+)\",pid=(\d+)", line)
            if m and ours_(int(m.group(4))):
                found[(m.group(1), int(m.group(2)))] = m.group(3)
        return found

    def ours_(pid: int) -> bool:
        """Started by this test (Ray's processes descend from it): another Ray on the machine,
        with its own token, is not this one's business."""
        while pid > 1:
            if pid == os.getpid():
                return True
            try:
                pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                return False
        return False

    before = listeners()
    start_ray(None)
    try:
        token = os.environ["RAY_AUTH_TOKEN"]
        assert os.environ["RAY_AUTH_MODE"] == "token"
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        # the agents open their ports after ray.init returns: wait for every port the node reports
        node = ray.nodes()[0]
        expected = {node[k] for k in ("NodeManagerPort", "ObjectManagerPort", "RuntimeEnvAgentPort", "MetricsAgentPort",
                                      "DashboardAgentListenPort", "MetricsExportPort") if node.get(k, -1) > 0}
        deadline = time.time() + 60
        while not expected <= {port for _, port in listeners()} and time.time() < deadline:
            time.sleep(0.05)
        listening = listeners()
        assert expected <= {port for _, port in listening}, (expected, listening)
        # every socket that started listening with Ray, whatever its process calls itself
        ours = [(addr, port, name) for (addr, port), name in listening.items() if (addr, port) not in before]
        assert len(ours) >= 3, listening
        assert not any(name.startswith("dashboard") or port == 8265 for _, port, name in ours)  # no dashboard
        for addr, port, name in ours:
            assert re.fullmatch(r"127\.\d+\.\d+\.\d+|\[::ffff:127\.\d+\.\d+\.\d+\]|\[::1\]", addr), \
                f"{name} listens on {addr}:{port}, not on loopback"
            host = "127.0.0.1"
            status = http_status(host, port, None)
            if status is not None:  # an HTTP server (the runtime-env agent)
                assert status == 401, (addr, port, name, status)
                assert http_status(host, port, token) != 401
                continue
            refused = [m for m in PROBES if grpc_code(host, port, m, None) == "UNAUTHENTICATED"]
            assert refused, f"{name} on {addr}:{port} answered without the token"
            assert all(grpc_code(host, port, m, token) != "UNAUTHENTICATED" for m in refused)  # the token opens it
    finally:
        ray.shutdown()
