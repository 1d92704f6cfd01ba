"""Crash-safe file operations: what survives a power cut is either the old thing or the new one.

A rename is atomic, but only durable once the directory holding it is fsynced, and the
data behind it only once the file itself is. Every write here follows the same order:
write a temporary beside the target, fsync it, rename over the target, fsync the folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Replace `path` with `data`: readers see the old content or the new, never a torn file."""
    raw = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, raw)
        os.fchmod(fd, mode)  # O_CREAT's mode is filtered by the umask; the overlay needs exact modes
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def symlink_atomic(target: str, link: Path) -> None:
    """Point `link` at `target` (relative, so it holds inside a chroot), atomically and durably."""
    tmp = link.with_name(f".{link.name}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)


def copy_tree_durable(src: Path, dst: Path) -> list[Path]:
    """Copy a folder of regular files, fsyncing each file and folder. Refuses symlinks and
    special files (a bundle is plain files; a link could point out of the slot). Returns the
    files written, relative to `dst`."""
    written: list[Path] = []
    dst.mkdir(parents=True)
    for dirpath, dirnames, filenames in os.walk(src):
        here = Path(dirpath)
        rel = here.relative_to(src)
        for name in sorted(dirnames):
            p = here / name
            if p.is_symlink():
                raise OSError(f"{p}: symlinks are not allowed inside a bundle")
            (dst / rel / name).mkdir()
        for name in sorted(filenames):
            p = here / name
            if p.is_symlink() or not p.is_file():
                raise OSError(f"{p}: only regular files are allowed inside a bundle")
            out = dst / rel / name
            with open(p, "rb") as fin, open(out, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
                fout.flush()
                os.fsync(fout.fileno())
            os.chmod(out, 0o644)
            written.append(rel / name)
    for dirpath, _, _ in os.walk(dst, topdown=False):
        os.chmod(dirpath, 0o755)
        fsync_dir(Path(dirpath))
    return written


def remove_tree_durable(path: Path) -> None:
    """Remove a folder and make the removal durable (so a stale slot does not come back)."""
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
    else:
        return
    fsync_dir(path.parent)
