"""Where an output file may go, checked before any work: a render that ends in a traceback after
minutes of work, or writes a format its name does not say, is worse than a refusal up front."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from engine.media.errors import MediaError


def check_output(path: Path, suffixes: Sequence[str]) -> None:
    """Raise MediaError unless `path` names a file with one of `suffixes` in a writable folder."""
    if path.is_dir():
        raise MediaError(f"{path} is a folder: name the file to write, e.g. {path / ('out' + suffixes[0])}")
    if path.suffix.lower() not in suffixes:
        written = " or ".join(suffixes)
        raise MediaError(f"{path}: this writes {written} files; name the output {path.stem}{suffixes[0]}")
    folder = path.parent
    if not folder.is_dir():
        raise MediaError(f"{path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise MediaError(f"{path}: no permission to write in {folder}")
