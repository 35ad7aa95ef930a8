"""Start one training process per GPU, and rendezvous across Vertex replicas through CLUSTER_SPEC.

Vertex runs `python -m trainer.task` once per replica. With more than one GPU (or replica) the task
re-executes itself under torchrun; torchrun sets RANK/LOCAL_RANK/WORLD_SIZE and accelerate picks
them up for data-parallel training.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping

DEFAULT_PORT = 29500


def _node(env: Mapping[str, str]) -> tuple[int, int, str | None, int]:
    """(nnodes, node_rank, master_addr, master_port) from Vertex's CLUSTER_SPEC (single node without it)."""
    raw = env.get("CLUSTER_SPEC")
    if not raw:
        return 1, 0, None, DEFAULT_PORT
    spec = json.loads(raw)
    cluster, task = spec["cluster"], spec["task"]
    chief = cluster["workerpool0"][0]
    others = cluster.get("workerpool1", [])
    rank = 0 if task["type"] == "workerpool0" else 1 + int(task["index"])
    host, _, port = chief.partition(":")
    return 1 + len(others), rank, host, int(port or DEFAULT_PORT)


def torchrun_command(env: Mapping[str, str], argv: list[str], gpus: int) -> list[str] | None:
    """The command that relaunches the task under torchrun, or None to run in this process."""
    if "LOCAL_RANK" in env:  # already one of torchrun's workers
        return None
    nnodes, node_rank, host, port = _node(env)
    if nnodes == 1 and gpus <= 1:
        return None
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={max(gpus, 1)}"]
    if nnodes == 1:
        cmd.append("--standalone")
    else:
        cmd += [f"--nnodes={nnodes}", f"--node_rank={node_rank}", f"--master_addr={host}", f"--master_port={port}"]
    return [*cmd, "-m", "trainer.task", *argv]


def gpus_per_replica(env: Mapping[str, str]) -> int:
    if env.get("LLMOPS_GPUS_PER_REPLICA"):
        return int(env["LLMOPS_GPUS_PER_REPLICA"])
    import torch

    return torch.cuda.device_count()
