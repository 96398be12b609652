"""Which build of dinfer is running: package version and, when it can be known honestly, the git commit.

The commit comes from, in order:

1. ``DINFER_GIT_COMMIT`` in the environment (set it when building an image or wheel from a checkout);
2. ``git rev-parse HEAD`` when this package *is* the ``src/dinfer`` of a git checkout (a source run or an editable
   install); ``dirty`` then says whether tracked files differ from that commit;
3. nothing: ``commit`` is None (an installed wheel without the variable) — never a guess.

``dinfer --version``, the host node's and the ML node's ``/health`` and the host node's start-up log show it.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from dinfer import __version__

__all__ = ["COMMIT_ENV", "BuildInfo", "build_info", "git_commit"]

COMMIT_ENV = "DINFER_GIT_COMMIT"
_PACKAGE_DIR = Path(__file__).resolve().parent
_COMMIT_RE = re.compile(r"^[0-9a-f]{7,64}$")


@dataclass(frozen=True)
class BuildInfo:
    version: str
    """The installed package version (``importlib.metadata``)."""
    commit: str | None
    """Full git commit hash, or None when it cannot be known."""
    dirty: bool | None
    """True when the checkout has uncommitted changes to tracked files; None when not read from git."""
    commit_source: str
    """``env``, ``git`` or ``unknown``."""

    def describe(self) -> str:
        """One line, as ``dinfer --version`` prints it."""
        if self.commit is None:
            return f"dinfer {self.version} (commit unknown)"
        return f"dinfer {self.version} (commit {self.commit[:12]}{', modified' if self.dirty else ''})"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None  # no git binary, or it hung
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit(package_dir: Path = _PACKAGE_DIR) -> tuple[str, bool] | None:
    """(commit, dirty) of the checkout whose ``src/dinfer`` is ``package_dir``; None when it is not one."""
    top = _git(["rev-parse", "--show-toplevel"], package_dir)
    if top is None or (Path(top) / "src" / "dinfer").resolve() != package_dir.resolve():
        return None  # e.g. a wheel installed in a venv that happens to sit inside some checkout
    commit = _git(["rev-parse", "HEAD"], package_dir)
    if commit is None or not _COMMIT_RE.match(commit):
        return None
    status = _git(["status", "--porcelain", "--untracked-files=no"], package_dir)
    return commit, bool(status)


@cache
def build_info() -> BuildInfo:
    """This process's build identity (read once)."""
    env = os.environ.get(COMMIT_ENV, "").strip().lower()
    if env:
        if not _COMMIT_RE.match(env):
            from dinfer.errors import ConfigError

            raise ConfigError(f"{COMMIT_ENV} must be a hex git commit hash (7 to 64 digits), got {env!r:.80}")
        return BuildInfo(__version__, env, None, "env")
    found = git_commit()
    if found is None:
        return BuildInfo(__version__, None, None, "unknown")
    return BuildInfo(__version__, found[0], found[1], "git")
