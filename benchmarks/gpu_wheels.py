"""Fetch the wheels that let a lent GPU machine run python -m benchmarks.gpu with the kit's own pinned versions.

    python benchmarks/gpu_wheels.py [--dest .whl]

The lent machine (x86-64, CPython 3.12, torch 2.11.0+cu130, no network) already has torch, accelerate, safetensors,
numpy, pyyaml, psutil and nvidia-ml-py, and older transformers/peft/huggingface_hub/tokenizers. This script downloads,
for cp312 manylinux x86-64, the versions pinned in constraints.txt (the one source of versions) of the packages in
WANTED plus every non-extra Requires-Dist of theirs (followed through what it adds) that is pinned there and not on
the machine. bitsandbytes is trimmed to its CUDA 13.0 and CPU libraries so the folder stays small: the copied tree
must stay under 64 MiB, so the wheels are capped at 45 MiB. `.whl/` is git-ignored and travels as a carried path;
on the machine the run starts with

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \\
        && export PYTHONPATH=/tmp/site

Idempotent: wheels already in DEST at the pinned version are kept, other wheels there are removed.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging import tags
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from control.resolution import manylinux_platforms, pins  # noqa: E402

CONSTRAINTS = ROOT / "constraints.txt"
WANTED = ["bitsandbytes", "transformers", "peft", "tokenizers", "huggingface_hub", "pydantic", "pydantic_core", "pydantic-settings",
          "annotated-types", "typing-inspection", "typing_extensions", "sqlglot", "tensorboardX"]
OPTIONAL = ["python-dotenv"]  # pydantic-settings needs it; carried when constraints.txt pins it
# What the lent machine has (version where known); never carried as a dependency, and requirements on it are checked.
ON_MACHINE = {"torch": "2.11.0", "accelerate": "1.15.0", "safetensors": "0.8.0", "numpy": None, "pyyaml": None, "psutil": None,
              "nvidia-ml-py": None}
MACHINE_CUDA = "13.0"  # torch.version.cuda there; bitsandbytes loads libbitsandbytes_cuda{major}{minor}.so for it
MARKER_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
              "platform_python_implementation": "CPython", "sys_platform": "linux", "platform_system": "Linux",
              "platform_machine": "x86_64", "os_name": "posix", "extra": ""}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]
RETRY_GLIBC = [24, 31, 34, 35, 39]  # newer manylinux tags, tried only when the usual ones find no wheel
GLIBC_MAX = max(RETRY_GLIBC)
ALL_PLATFORMS = manylinux_platforms(GLIBC_MAX)
SUPPORTED = (set(tags.cpython_tags((3, 12), abis=["cp312"], platforms=ALL_PLATFORMS))
             | set(tags.compatible_tags((3, 12), "cp312", ALL_PLATFORMS)))  # what pip on the machine accepts
LIMIT_MIB = 45.0
MIB = 1024 * 1024


def wheels(dest: Path) -> dict[Path, tuple[str, Version]]:
    return {p: parse_wheel_filename(p.name)[:2] for p in sorted(dest.glob("*.whl"))}


def download(name: str, version: str, dest: Path) -> Path:
    found = [p for p, (n, v) in wheels(dest).items() if n == name and v == Version(version)]
    if found:
        return found[0]
    base = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
            "--implementation", "cp", "-d", str(dest), f"{name}=={version}"]
    for platforms in (PLATFORMS, PLATFORMS + [f"manylinux_2_{n}_x86_64" for n in RETRY_GLIBC]):
        run = subprocess.run(base + [arg for p in platforms for arg in ("--platform", p)], capture_output=True, text=True)
        if run.returncode == 0:
            break
        if platforms is PLATFORMS:
            print(f"no wheel of {name}=={version} for {PLATFORMS[0]} or older; retrying with manylinux_2_N, N in {RETRY_GLIBC}")
    else:
        sys.exit(f"error: no cp312 manylinux x86-64 wheel of {name}=={version} could be downloaded:\n{run.stderr.strip()}")
    found = [p for p, (n, v) in wheels(dest).items() if n == name and v == Version(version)]
    if not found:
        sys.exit(f"error: pip downloaded {name}=={version} but no matching wheel is in {dest}")
    print(f"downloaded {found[0].name}")
    return found[0]


def requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        message = Parser().parsestr(zf.read(meta).decode())
    reqs = [Requirement(r) for r in message.get_all("Requires-Dist") or []]
    return [r for r in reqs if not r.marker or r.marker.evaluate(MARKER_ENV)]


def trim_bitsandbytes(wheel: Path) -> None:
    """Keep only the CUDA 13.0 and CPU native libraries; RECORD loses the dropped files' lines."""
    keep = {f"libbitsandbytes_cuda{MACHINE_CUDA.replace('.', '')}.so", "libbitsandbytes_cpu.so"}
    with zipfile.ZipFile(wheel) as zf:
        libs = {i.filename for i in zf.infolist() if re.fullmatch(r"bitsandbytes/libbitsandbytes_\w+\.so", i.filename)}
        if missing := keep - {Path(n).name for n in libs}:
            sys.exit(f"error: {wheel.name} has no {', '.join(sorted(missing))} (has: {', '.join(sorted(libs))})")
        drop = {n for n in libs if Path(n).name not in keep}
        if not drop:
            return
        before = wheel.stat().st_size
        tmp = wheel.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
            for info in zf.infolist():
                if info.filename in drop:
                    continue
                data = zf.read(info)
                if re.fullmatch(r"[^/]+\.dist-info/RECORD", info.filename):
                    lines = data.decode().splitlines(keepends=True)
                    data = "".join(ln for ln in lines if next(csv.reader(io.StringIO(ln)), [""])[0] not in drop).encode()
                info.compress_type = zipfile.ZIP_DEFLATED
                out.writestr(info, data)
    os.replace(tmp, wheel)
    print(f"trimmed {wheel.name}: {before / MIB:.1f} MiB -> {wheel.stat().st_size / MIB:.1f} MiB, kept {', '.join(sorted(keep))}, "
          f"dropped {len(drop)} libraries")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=ROOT / ".whl", help="wheel folder (default: .whl at the repo root)")
    dest = parser.parse_args().dest
    dest.mkdir(parents=True, exist_ok=True)
    pinned = {name: str(version) for name, version in pins(CONSTRAINTS).items()}
    names = [canonicalize_name(n) for n in WANTED] + [canonicalize_name(n) for n in OPTIONAL if canonicalize_name(n) in pinned]
    if unpinned := [n for n in names if n not in pinned]:
        sys.exit(f"error: {CONSTRAINTS} pins no version of {', '.join(unpinned)}")
    chosen: dict[str, Path] = {}
    for name in names:  # grows while it is walked: each carried wheel's requirements are read in turn
        wheel = chosen[name] = download(name, pinned[name], dest)
        for req in requirements(wheel):
            dep = canonicalize_name(req.name)
            if dep in pinned and dep not in names and dep not in ON_MACHINE:
                names.append(dep)
                print(f"added {dep}=={pinned[dep]}: {name} requires {req}, pinned in constraints.txt and not on the machine")
            there = pinned[dep] if dep in names else ON_MACHINE.get(dep)
            if there and not req.specifier.contains(there, prereleases=True):
                print(f"WARNING: {name} requires {req}, but {dep} {there} is what the machine will have")
    if "bitsandbytes" in chosen:
        trim_bitsandbytes(chosen["bitsandbytes"])
    for path, (name, _) in wheels(dest).items():
        if chosen.get(name) != path:
            path.unlink()
            print(f"removed {path.name} (not pinned or not wanted)")
    rows = [(name, str(wheels(dest)[path][1]), path.stat().st_size, path) for name, path in sorted(chosen.items())]
    width = max(len(n) for n, *_ in rows)
    for name, version, size, _ in rows:
        print(f"{name:<{width}}  {version:<12} {size / MIB:7.2f} MiB")
    total = sum(size for _, _, size, _ in rows) / MIB
    print(f"{'total':<{width}}  {len(rows):<3} wheels    {total:7.2f} MiB (limit {LIMIT_MIB:.0f} MiB)")
    if bad := [p.name for *_, p in rows if not SUPPORTED & parse_wheel_filename(p.name)[3]]:
        sys.exit(f"error: not installable on CPython 3.12 manylinux x86-64 (glibc <= 2.{GLIBC_MAX}): {', '.join(bad)}")
    if total > LIMIT_MIB:
        sys.exit(f"error: the wheels take {total:.1f} MiB, over the {LIMIT_MIB:.0f} MiB the carried tree can spare")


if __name__ == "__main__":
    main()
