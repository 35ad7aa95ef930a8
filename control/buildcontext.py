"""The image's build context: the files `.dockerignore` lets through, packed reproducibly and hashed.

Docker's rules (moby/patternmatcher): patterns are matched against slash-separated paths relative to the context
root, `*` and `?` stay within one path segment, `**` spans any number of them, a pattern that matches a folder
matches everything under it, `!` re-includes, and the last matching pattern decides.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

ALWAYS_SKIPPED = {".git"}  # never part of a context we send (and never worth walking)


@dataclass(frozen=True)
class Rule:
    pattern: str
    include: bool  # a `!pattern` re-includes
    regex: re.Pattern


def _regex(pattern: str) -> re.Pattern:
    """The pattern as moby/patternmatcher compiles it: `[...]` classes pass through to the regexp as they are (so
    `[^a-c]` negates and `[!a-c]` is a class holding '!'), a backslash escapes the next character."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif c in ".+()|{}$":  # moby escapes these; every other character reaches the regexp as it is
            out.append("\\" + c)
            i += 1
        else:
            out.append(c)
            i += 1
    return re.compile("".join(out))


def parse(text: str) -> list[Rule]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = os.path.normpath(line[1:] if include else line).lstrip("/")
        rules.append(Rule(line, include, _regex(pattern)))
    return rules


def excluded(path: str, rules: list[Rule]) -> bool:
    """Whether the last rule matching `path` (or one of its parent folders) excludes it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for rule in rules:
        if any(rule.regex.fullmatch(p) for p in prefixes):
            verdict = not rule.include
    return verdict


def context_files(root: Path, ignore_file: str = ".dockerignore") -> list[str]:
    """Relative paths of the files a `docker build` of `root` would receive, sorted."""
    rules = parse((root / ignore_file).read_text(encoding="utf-8")) if (root / ignore_file).is_file() else []
    reincluded = [r.pattern.lstrip("!").strip("/").split("/") for r in rules if r.include]

    def may_hold_included(folder: str) -> bool:
        return not excluded(folder, rules) or any(_may_lead_to(folder.split("/"), parts) for parts in reincluded)

    files = []
    for folder, dirs, names in os.walk(root):
        rel = Path(folder).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        # Prune what nothing can re-include: a .venv or runs/ holds gigabytes we would otherwise walk.
        dirs[:] = sorted(d for d in dirs if d not in ALWAYS_SKIPPED and may_hold_included(prefix + d))
        files += [prefix + n for n in names if not excluded(prefix + n, rules)]
    return sorted(files)


def _may_lead_to(folder: list[str], pattern: list[str]) -> bool:
    """Whether a re-include pattern could match something under this folder: its first segments match the folder's."""
    for i, name in enumerate(folder):
        if i >= len(pattern) or "**" in pattern[i]:
            return True
        if not _regex(pattern[i]).fullmatch(name):
            return False
    return True


def content_hash(root: Path, files: list[str]) -> str:
    """A hash of every file's path, mode and bytes: the same source gives the same tag, any change a new one."""
    h = hashlib.sha256()
    for rel in files:
        path = root / rel
        h.update(rel.encode() + b"\0" + oct(path.stat().st_mode & 0o111).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def pack(root: Path, files: list[str]) -> bytes:
    """A gzipped tar of the files, byte-for-byte reproducible (fixed times, owners and order)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in files:
            data = (root / rel).read_bytes()
            info = tarfile.TarInfo(rel)
            info.size, info.mtime, info.uid, info.gid, info.uname, info.gname = len(data), 0, 0, 0, "", ""
            info.mode = 0o755 if os.access(root / rel, os.X_OK) else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
