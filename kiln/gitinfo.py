"""The git revision stamped into images, tags and metadata."""

from __future__ import annotations

from pathlib import Path

from kiln.runner import capture


def git_revision(root: Path) -> str:
    """Short commit id, '+dirty' when the work tree has changes, 'unknown' outside git."""
    rev = capture(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"])
    if not rev:
        return "unknown"
    dirty = capture(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"])
    return rev.strip() + ("+dirty" if dirty else "")
