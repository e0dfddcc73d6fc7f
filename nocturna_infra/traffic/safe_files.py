"""File operations for a directory other local users may share: no symlink is ever followed,
temp files are created exclusively, modes are explicit, and unsafe directories are refused.

The switch runs as root in directories Nginx reads (`/etc/nginx/upstreams`, the selection
directory). A local user who could plant a symlink there could otherwise make root truncate,
overwrite or copy (into a world-readable backup) any file on the host.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path
from typing import Final

DEFAULT_MODE: Final = 0o644
"""Upstream and selection files: Nginx workers (not root) read them; only the owner writes."""
RECORD_MODE: Final = 0o600
"""The watch record: it quotes what the release answered (masked, but owner-only anyway)."""
LOCK_MODE: Final = 0o600
"""The lock file: whoever can open it can take the lock and block every switch."""
_NOFOLLOW: Final = os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeFileError(Exception):
    """A path is a symlink, not a regular file, or in a directory others may write."""


def temp_prefix(path: Path) -> str:
    """Every temp file the switch creates for `path` starts with this (cleaned under lock)."""
    return f".{path.name}.tmp."


def check_directory(directory: Path, install: str = "install -d -m 755") -> None:
    """Refuse a directory another user could write to: owned by someone other than root or
    us, or group/world-writable (sticky or not). Missing: say so and how to create it."""
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        msg = f"{directory}: no such directory; create it with `{install} {directory}`"
        raise UnsafeFileError(msg) from None
    except OSError as error:
        msg = f"{directory}: cannot be checked ({error.strerror})"
        raise UnsafeFileError(msg) from None
    if not stat.S_ISDIR(info.st_mode):
        msg = f"{directory}: not a directory"
        raise UnsafeFileError(msg)
    if info.st_uid not in (0, os.geteuid()):
        msg = (
            f"{directory}: owned by uid {info.st_uid}, not by root or uid {os.geteuid()}; "
            f"another user could replace the files the switch writes there"
        )
        raise UnsafeFileError(msg)
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        msg = (
            f"{directory}: group- or world-writable (mode {stat.S_IMODE(info.st_mode):o}); "
            f"others could plant symlinks there. Run `chmod go-w {directory}`"
        )
        raise UnsafeFileError(msg)


def _refuse_symlink(path: Path, error: OSError) -> UnsafeFileError:
    if error.errno == errno.ELOOP:
        return UnsafeFileError(f"{path}: is a symlink; refusing to follow it")
    return UnsafeFileError(f"{path}: cannot be opened ({error.strerror})")


def read_file(path: Path) -> tuple[bytes, int] | None:
    """Content and permission bits of a regular file; None if absent. Never follows a link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise _refuse_symlink(path, error) from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            msg = f"{path}: not a regular file"
            raise UnsafeFileError(msg)
        return handle.read(), stat.S_IMODE(info.st_mode)


def kept_mode(old_mode: int | None) -> int:
    """The old file's permission bits without execute or world-write, else DEFAULT_MODE."""
    return DEFAULT_MODE if old_mode is None else old_mode & 0o664


def exists(path: Path) -> bool:
    """Whether anything (a file, or a planted symlink) occupies `path`."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | None, mode: int = DEFAULT_MODE) -> None:
    """Make `path` hold exactly `data` with permission bits `mode` (None: absent).

    Written to a fresh, exclusively created temp file (a planted file or symlink with that
    name fails the create instead of redirecting it), fsynced, then renamed over `path`:
    rename replaces a symlink at `path` itself, never its target. A crash leaves the old or
    the new complete file.
    """
    if data is None:
        try:
            os.unlink(path)  # removes a symlink itself, never its target
        except FileNotFoundError:
            return
        _fsync_dir(path.parent)
        return
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    except FileNotFoundError:
        pass
    temp = path.with_name(f"{temp_prefix(path)}{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # the umask must not decide
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    _fsync_dir(path.parent)


def remove_temps(path: Path) -> None:
    """Temp files left by switches killed between create and rename (call under the lock)."""
    prefix = temp_prefix(path)
    for entry in os.scandir(path.parent):
        if entry.name.startswith(prefix):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def open_lock(path: Path) -> int:
    """A descriptor on the lock file, created owner-only; a symlink or non-file is refused."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, LOCK_MODE)
    except OSError as error:
        raise _refuse_symlink(path, error) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        msg = f"{path}: not a regular file"
        raise UnsafeFileError(msg)
    if stat.S_IMODE(info.st_mode) != LOCK_MODE and info.st_uid == os.geteuid():
        os.fchmod(fd, LOCK_MODE)  # a lock file left by an older switch with 0644
    return fd
