"""Start one training process per GPU, and rendezvous across Vertex replicas through CLUSTER_SPEC.

Vertex runs `python -m trainer.task` once per replica. With more than one GPU (or replica) the task
re-executes itself under torchrun; torchrun sets RANK/LOCAL_RANK/WORLD_SIZE, the kit starts the process
group (NCCL on GPUs, gloo on CPU, so CI runs the same path) and accelerate wraps the model for
data-parallel training. Every rank trains its share of each step; rank 0 alone checks the base model,
evaluates, merges and writes the run.
"""

from __future__ import annotations

import json
import os
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


TIMEOUT_ENV = "LLMOPS_DIST_TIMEOUT_S"  # how long a rank waits for the others in one collective before the run fails
FAIL_AT_STEP_ENV = "LLMOPS_FAIL_AT_STEP"  # failure drill: "<rank>:<step>" makes that rank fail after that optimizer step


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def setup_accelerator(env: Mapping[str, str] = os.environ):
    """The Accelerator for a torchrun worker (WORLD_SIZE > 1), with the process group the kit starts itself:
    NCCL on GPUs, gloo on CPU (accelerate alone leaves a CPU torchrun worker as a single process, so nothing would
    be split or synchronised). None for a single process."""
    if int(env.get("WORLD_SIZE", "1")) <= 1:
        return None
    from datetime import timedelta

    import torch
    import torch.distributed as dist
    from accelerate import Accelerator

    gpu = torch.cuda.is_available()
    if not dist.is_initialized():
        if gpu:
            torch.cuda.set_device(int(env.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if gpu else "gloo", timeout=timedelta(seconds=float(env.get(TIMEOUT_ENV, "1800"))))
    return Accelerator(cpu=not gpu)


def fail_at_step(env: Mapping[str, str] = os.environ) -> int | None:
    """The step after which this rank fails, when a failure drill asks for it."""
    target, _, step = env.get(FAIL_AT_STEP_ENV, "").partition(":")
    return int(step) if target.strip().isdigit() and step.strip().isdigit() and int(target) == rank() else None
