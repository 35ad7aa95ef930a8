"""The executor image the CustomJob runs the trainer package on.

Chosen deliberately: the newest prebuilt Vertex AI PyTorch GPU training image listed in the
docs seen while building this (2026-11): `pytorch-gpu.2-4.py310`, Python 3.10 and torch 2.4.
Its support window may have ended by the time you read this: check
https://cloud.google.com/vertex-ai/docs/training/pre-built-containers and override with
`make train BACKEND=vertex IMAGE=...` (or `llmops launch --image ...`). The trainer's
distribution metadata (requires-python, torch range) must admit the image's Python and torch,
so pip keeps the image's torch instead of downloading another one at every job start; a test
checks that against the values below.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class ExecutorImage:
    uri: str
    python: str
    torch: str


DEFAULT_IMAGE = ExecutorImage("us-docker.pkg.dev/vertex-ai/training/pytorch-gpu.2-4.py310:latest", python="3.10", torch="2.4.0")
