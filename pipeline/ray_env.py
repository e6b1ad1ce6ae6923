"""Environment for a local Ray, set before Ray is first imported (it reads these once)."""

from __future__ import annotations

import os
import secrets

__all__ = ["local_ray_env"]


def local_ray_env() -> None:
    """Token authentication for a local Ray: a fresh secret per run, handed to our own processes
    through the environment; node address 127.0.0.1. Not called when joining a cluster (``--address``): that cluster's
    own token settings apply."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray replaces a 127.0.0.1 node address by the machine's reachable IP unless "clusters" are
    # off (its switch for a single local node): then every Ray server binds to loopback only.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
