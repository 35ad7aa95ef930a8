"""The build context: `.dockerignore` read as Docker documents it, and packed and hashed reproducibly.

Docker's documented rules (docs.docker.com, "Dockerignore files"): lines are trimmed and cleaned (Go's filepath.Clean),
`#` starts a comment, a leading `/` is the context root; matching follows Go's filepath.Match (`*` and `?` within one
path segment, `[...]` character classes, `\\` escapes), `**` spans any number of folders (zero included), a pattern that
matches a folder excludes everything under it, `!` re-includes, and the last matching line decides.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from control import buildcontext
from control.buildcontext import content_hash, context_files, excluded, pack, parse

TREE = ["top.txt", "notes.md", "README.md", "README-secret.md", ".hidden.pyc", "a.pyc", "src/app.py", "src/app.pyc",
        "src/__pycache__/x.pyc", "src/deep/mod.py", "src/deep/__pycache__/y.pyc", "src/deep/temp3.txt", "build/out.bin",
        "build/keep/me.txt", "docs/guide.md", "docs/temp1.txt", "docs/sub/temp2.txt", "tempx", "temp12"]

IGNORE = """# a comment, then a blank line

*.md
!README*.md
  README-secret.md  
**/*.pyc
build/
!build/keep
*/temp*
temp?
/docs/sub
"""

# What Docker's rules let through, line by line:
EXPECTED = sorted([
    ".dockerignore",  # not excluded by any line
    "top.txt",
    "README.md",  # *.md, then !README*.md (README-secret.md: its own later line excludes it again)
    "docs/guide.md",  # *.md stays within the root segment
    "src/app.py", "src/deep/mod.py",  # **/*.pyc takes the .pyc files at every depth, the root's and dotfiles too
    "build/keep/me.txt",  # build/ excludes the folder, !build/keep brings one subfolder back
    "src/deep/temp3.txt",  # */temp* is one level down only: docs/temp1.txt goes, this stays
    "temp12",  # temp? is one character: tempx goes
])


def _tree(root: Path, files=TREE, ignore: str | None = IGNORE) -> Path:
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"contents of {rel}\n")
    if ignore is not None:
        (root / ".dockerignore").write_text(ignore)
    return root


def _all_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".git" not in p.relative_to(root).parts)


def test_the_documented_rules_on_a_tree(tmp_path):
    assert context_files(_tree(tmp_path)) == EXPECTED


def test_without_a_dockerignore_everything_but_git_is_sent(tmp_path):
    _tree(tmp_path, ignore=None)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    assert context_files(tmp_path) == sorted(TREE)


@pytest.mark.parametrize(("pattern", "path", "is_excluded"), [
    ("*.md", "notes.md", True),
    ("*.md", "docs/notes.md", False),  # `*` never crosses a slash
    ("*/*.md", "docs/notes.md", True),
    ("*/*.md", "docs/sub/notes.md", False),
    ("*", ".hidden", True),  # no dotfile exception, unlike a shell
    ("?.txt", "a.txt", True),
    ("?.txt", "ab.txt", False),
    ("?", "/", False),
    ("**/*.pyc", "a.pyc", True),  # ** spans zero folders
    ("**/*.pyc", "a/b/c/d.pyc", True),
    ("a/**/z", "a/z", True),
    ("a/**/z", "a/b/c/z", True),
    ("a/**/z", "b/a/z", False),
    ("**", "any/where/at/all", True),
    ("docs", "docs/a/b.txt", True),  # a folder pattern takes everything under it
    ("docs/", "docs/a.txt", True),  # a trailing slash is cleaned away
    ("docs", "docs2/a.txt", False),  # whole segments only
    ("/docs", "docs/a.txt", True),  # a leading slash is the context root
    ("./docs/../src", "src/a.py", True),  # cleaned like Go's filepath.Clean
    ("src/a.py", "x/src/a.py", False),  # anchored at the root
    ("a.b", "axb", False),  # regex metacharacters are literal
    ("a+b(1)", "a+b(1)", True),
])
def test_one_pattern(pattern, path, is_excluded):
    assert excluded(path, parse(pattern)) is is_excluded


def test_the_last_matching_line_decides():
    assert excluded("x.log", parse("*.log\n!x.log")) is False
    assert excluded("x.log", parse("!x.log\n*.log")) is True
    assert excluded("x.log", parse("*.log\n!x.log\n*.log")) is True
    assert excluded("y.log", parse("*.log\n!x.log")) is True
    # A later line about a parent folder decides for everything under it.
    assert excluded("src/keep.py", parse("!src/keep.py\nsrc")) is True
    assert excluded("src/keep.py", parse("src\n!src/keep.py")) is False
    assert excluded("src/other.py", parse("src\n!src/keep.py")) is True


def test_comments_blank_lines_and_whitespace():
    rules = parse("# *.py\n\n   \n  *.txt  \n\t!keep.txt\n")
    assert [r.pattern for r in rules] == ["*.txt", "!keep.txt"]
    assert [r.include for r in rules] == [False, True]
    assert excluded("a.py", rules) is False
    assert excluded("a.txt", rules) is True and excluded("keep.txt", rules) is False


def test_an_allowlist_reincludes_folders_under_a_star(tmp_path):
    _tree(tmp_path, ["Dockerfile", "common/a.py", "common/sub/b.py", "common/sub/__pycache__/b.pyc", "runs/r1/big.bin",
                     ".venv/lib/x.py", "tests/t.py"], ignore="*\n!Dockerfile\n!common/\n**/__pycache__\n")
    assert context_files(tmp_path) == ["Dockerfile", "common/a.py", "common/sub/b.py"]


def test_a_reinclude_with_a_leading_wildcard_is_found_at_any_depth(tmp_path):
    _tree(tmp_path, ["a/b/c/KEEP", "a/b/c/drop", "x/KEEP", "drop"], ignore="*\n!**/KEEP\n")
    assert context_files(tmp_path) == ["a/b/c/KEEP", "x/KEEP"]


def test_git_folders_are_never_walked_or_sent(tmp_path):
    _tree(tmp_path, ["src/a.py", ".git/HEAD", ".git/objects/ab/cd", "vendor/lib/.git/config", "vendor/lib/x.py"],
          ignore="!.git\n!**/.git/**\n")
    assert context_files(tmp_path) == [".dockerignore", "src/a.py", "vendor/lib/x.py"]


@pytest.mark.parametrize("ignore", [IGNORE, "*\n!src\n**/__pycache__\n", "build\n!build/keep/me.txt\n", "*\n!**/*.py\n",
                                    "src/deep\n!src/deep/mod.py\n*.md\n", "**\n!docs/\ndocs/sub\n!docs/sub/temp2.txt\n"])
def test_pruning_folders_never_changes_the_answer(tmp_path, ignore):
    """Skipping a folder is only an optimisation: the listing must equal every file filtered by `excluded`."""
    root = _tree(tmp_path, ignore=ignore)
    rules = parse(ignore)
    assert context_files(root) == [f for f in _all_files(root) if not excluded(f, rules)]


def test_pruning_respects_a_wildcard_in_a_reincluded_folder_name(tmp_path):
    root = _tree(tmp_path, ["docs-old/keep.md", "docs-old/drop.md", "top.txt"], ignore="*\n!docs*/keep.md\n")
    assert excluded("docs-old/keep.md", parse("*\n!docs*/keep.md")) is False
    assert context_files(root) == ["docs-old/keep.md"]


def test_character_classes_pass_through_as_moby_patternmatcher_compiles_them():
    """Classes reach the regexp as written: `[^a-c]` negates; `[!a-c]` is a class holding '!' (not a shell negation)."""
    rules = parse("file[12].txt\nlog[^a-c].txt\nbang[!a].txt\n")
    assert excluded("file1.txt", rules) and excluded("file2.txt", rules) and not excluded("file3.txt", rules)
    assert excluded("logd.txt", rules) and not excluded("logb.txt", rules)
    assert excluded("bang!.txt", rules) and excluded("banga.txt", rules) and not excluded("bangb.txt", rules)


def test_a_backslash_escapes_a_wildcard():
    rules = parse("star\\*.txt\n")
    assert excluded("star*.txt", rules) and not excluded("stary.txt", rules)


# --- packing and hashing ----------------------------------------------------------------------------------------------


def _members(blob: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        return tar.getmembers()


def test_pack_is_byte_for_byte_reproducible(tmp_path):
    root = _tree(tmp_path)
    files = context_files(root)
    first = pack(root, files)
    for rel in files:  # new times on every file: the archive must not notice
        os.utime(root / rel, (1_000_000_000, 1_000_000_000))
    second = pack(root, context_files(root))
    assert first == second
    assert gzip.decompress(first)  # a real gzip stream
    assert first[4:8] == b"\0\0\0\0", "gzip header time is zero"


def test_pack_holds_exactly_the_files_with_fixed_metadata(tmp_path):
    root = _tree(tmp_path)
    (root / "src" / "run.sh").write_text("#!/bin/sh\n")
    (root / "src" / "run.sh").chmod(0o755)
    (root / "top.txt").chmod(0o600)  # private on this machine, readable in the image
    files = context_files(root)
    members = _members(pack(root, files))
    assert [m.name for m in members] == files
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        assert m.mode == (0o755 if m.name == "src/run.sh" else 0o644), m.name
    with tarfile.open(fileobj=io.BytesIO(pack(root, files)), mode="r:gz") as tar:
        assert tar.extractfile("src/app.py").read() == (root / "src" / "app.py").read_bytes()


def test_content_hash_is_stable_and_sees_every_change(tmp_path):
    root = _tree(tmp_path)
    files = context_files(root)
    base = content_hash(root, files)
    assert base == content_hash(root, files) and len(base) == 64
    os.utime(root / "top.txt", (1, 1))
    assert content_hash(root, files) == base, "times are not content"

    (root / "src" / "app.py").write_text("contents of src/app.py!\n")
    changed_bytes = content_hash(root, files)
    (root / "src" / "app.py").write_text("contents of src/app.py\n")
    assert changed_bytes != base and content_hash(root, files) == base

    (root / "src" / "app.py").chmod(0o755)
    assert content_hash(root, files) != base, "an executable bit is content"
    (root / "src" / "app.py").chmod(0o644)

    (root / "top.txt").rename(root / "top2.txt")
    assert content_hash(root, context_files(root)) != base, "a rename is content"


def test_the_same_tree_in_two_places_packs_and_hashes_the_same(tmp_path):
    a = _tree(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    assert context_files(a) == context_files(b)
    assert pack(a, context_files(a)) == pack(b, context_files(b))
    assert content_hash(a, context_files(a)) == content_hash(b, context_files(b))


# --- against a real `docker build` ------------------------------------------------------------------------------------


def _docker_available() -> str | None:
    if shutil.which("docker") is None:
        return "no docker CLI on this machine"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"docker info failed: {e}"
    return None if info.returncode == 0 else "docker info failed: no running daemon"


def _docker_context(root: Path) -> list[str]:
    """The files `docker build` gives `COPY . /ctx/` from `root`, read back from the image (FROM scratch: nothing pulled)."""
    tag = f"llmops-buildcontext-test:{uuid.uuid4().hex[:12]}"
    env = os.environ | {"DOCKER_BUILDKIT": os.environ.get("LLMOPS_TEST_DOCKER_BUILDKIT", "0")}
    subprocess.run(["docker", "build", "-q", "-t", tag, "-f", "-", str(root)], input=b"FROM scratch\nCOPY . /ctx/\n", env=env,
                   check=True, capture_output=True, timeout=120)
    try:
        cid = subprocess.run(["docker", "create", tag, "/none"], check=True, capture_output=True, text=True, timeout=60).stdout.strip()
        try:
            exported = subprocess.run(["docker", "export", cid], check=True, capture_output=True, timeout=60).stdout
        finally:
            subprocess.run(["docker", "rm", cid], capture_output=True, timeout=60)
    finally:
        subprocess.run(["docker", "rmi", tag], capture_output=True, timeout=60)
    with tarfile.open(fileobj=io.BytesIO(exported)) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile() and m.name.startswith("ctx/")]
    return sorted(n.removeprefix("ctx/") for n in names)


# Not `*` then `!**/*.py`: the legacy builder (the one a daemon without BuildKit runs) skips an excluded folder unless an
# exception's literal text starts with it, so it sends no src/app.py although the last matching line re-includes it;
# BuildKit walks such folders, as context_files does.
@pytest.mark.parametrize("ignore", [IGNORE, "*\n!src\n**/__pycache__\n", "src/deep\n!src/deep/mod.py\n*.md\n",
                                    "**\n!docs/\ndocs/sub\n!docs/sub/temp2.txt\n"])
def test_the_listing_matches_a_real_docker_build(tmp_path, ignore):
    why = _docker_available()
    if why:
        pytest.skip(why)
    root = _tree(tmp_path, ignore=ignore)
    docker = [f for f in _docker_context(root) if not f.startswith(".git/")]
    assert docker == context_files(root)
    assert buildcontext.ALWAYS_SKIPPED == {".git"}


def test_character_classes_and_escapes_match_a_real_docker_build(tmp_path):
    why = _docker_available()
    if why:
        pytest.skip(why)
    root = _tree(tmp_path, ["file1.txt", "file3.txt", "star*.txt", "stary.txt"], ignore="file[12].txt\nstar\\*.txt\n")
    assert _docker_context(root) == [".dockerignore", "file3.txt", "stary.txt"]  # what Docker's rules say
    assert context_files(root) == [".dockerignore", "file3.txt", "stary.txt"]
