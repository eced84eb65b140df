"""MkDocs hook: stage the installed package layout for the API reference.

The folders ``particles/`` and ``validation/`` install as ``meanfield.particles`` and
``meanfield.validation`` (package-dir mapping in pyproject.toml). mkdocstrings reads the sources
statically, so it needs a ``meanfield/`` folder that contains them; this hook copies the three
folders into that layout under ``build/docs-src/`` (copies, not links: griffe resolves links and
would find the unmapped folder again), so any install, editable or not, gives the same pages.
"""

from __future__ import annotations

import os
import shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE = os.path.join(ROOT, "build", "docs-src")
MAPPED = {"particles": "particles", "validation": "validation"}  # meanfield.<key> <- <value>/


def stage() -> str:
    """Copy the sources to ``build/docs-src/meanfield`` in the installed layout; return the root."""
    package = os.path.join(STAGE, "meanfield")
    shutil.rmtree(package, ignore_errors=True)
    skip = shutil.ignore_patterns("__pycache__", "reports", "*.pyc")
    shutil.copytree(os.path.join(ROOT, "meanfield"), package, ignore=skip)
    for sub, folder in MAPPED.items():
        shutil.copytree(os.path.join(ROOT, folder), os.path.join(package, sub), ignore=skip)
    return STAGE


def on_startup(command, dirty):  # noqa: ARG001 (MkDocs hook signature)
    stage()
