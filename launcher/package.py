"""Build the trainer distribution reproducibly and upload it under a content-hash name."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Only the trainer goes into the job's distribution: not the launcher, infra or serving code.
INCLUDED = ("trainer", "pyproject.toml", "README.md", "LICENSE")
EPOCH = "315532800"  # 1980-01-01: zip's earliest date; fixed so the same source gives the same bytes


def build_wheel(out_dir: Path) -> Path:
    """Build the trainer wheel into out_dir and return its path."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in INCLUDED:
            path = REPO / name
            if path.is_dir():
                shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(path, src / name)
        built = Path(tmp) / "dist"
        env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH, "PYTHONHASHSEED": "0"}
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(built), str(src)],
            check=True, env=env, cwd=tmp,
        )
        (wheel,) = built.glob("llmops_kit-*.whl")
        out_dir.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(wheel, out_dir / wheel.name))


def content_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def package_uri(wheel: Path, staging_bucket: str) -> str:
    """Where the wheel lives in the staging bucket: named by its content hash."""
    return f"gs://{staging_bucket.removeprefix('gs://')}/packages/{content_hash(wheel)}/{wheel.name}"


def upload_package(wheel: Path, staging_bucket: str, log=print) -> str:
    """gs:// URI of the wheel in the staging bucket; uploads only if that content is not there yet."""
    from trainer import storage

    bucket = staging_bucket.removeprefix("gs://")
    uri = package_uri(wheel, staging_bucket)
    blob = storage.client().bucket(bucket).blob(uri.split("/", 3)[3])
    if blob.exists():
        log(f"package already uploaded: {uri}")
        return uri
    from google.api_core.exceptions import PreconditionFailed

    try:
        blob.upload_from_filename(str(wheel), if_generation_match=0)
    except PreconditionFailed:  # someone uploaded the same content meanwhile
        return uri
    log(f"uploaded {wheel.name} ({wheel.stat().st_size / 1024:.0f} KiB) to {uri}")
    return uri
