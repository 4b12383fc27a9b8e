"""Writes a crash cannot leave half-done: a file by one rename, a directory by a two-rename swap.

Replacing a directory renames the old one aside (``.NAME.old``), then the new one into place,
then deletes the old one. A crash between the two renames leaves no ``NAME`` but a complete
``.NAME.old``; readers that care (checkpoints) look there too.
"""

import os
import shutil
import tempfile
from pathlib import Path


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write ``path`` through a temporary file beside it (``.NAME.*.tmp``) and one rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def old_path(directory: str | Path) -> Path:
    """Where ``swap_directory`` parks the directory it replaces: ``.NAME.old`` beside it."""
    directory = Path(directory)
    return directory.with_name(f".{directory.name}.old")


def swap_directory(new: str | Path, directory: str | Path) -> Path:
    """Put the complete directory ``new`` (a sibling) in place of ``directory``, old one aside first."""
    new, directory = Path(new), Path(directory)
    if directory.exists():
        old = old_path(directory)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
        os.replace(new, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, directory)
    return directory
