"""Write outputs under a temporary name and rename them into place on success.

A crash, an exception or Ctrl-C while writing never leaves a partial output behind:
either the old file (if any) is still there, or the complete new one is.

A SIGKILL cannot be caught, so the process that writes cannot clean up after it. A small
helper process (the *janitor*, started with the first output and in a session of its own)
is told each temporary before it is created and each commit; when the writer dies, its end
of the pipe closes, and the janitor removes what is left and moves a folder that was being
replaced back into place. Should the janitor die too (a whole process group or cgroup
killed at once, a power cut), the next command that writes the same output removes the
temporaries: they are named ``.STEM.tmp-HOST-PID-XXXX`` so that only those of a dead
process on this machine are removed, never a write in progress.
"""

from __future__ import annotations

import os
import re
import shutil
import secrets
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from turndiff.errors import InputError

__all__ = ["atomic_output", "check_output"]

# Multi-part extensions that format libraries look at as a whole (nibabel: .nii.gz).
_DOUBLE_SUFFIXES = (".nii.gz", ".tar.gz")


def _split_suffix(name: str) -> tuple[str, str]:
    lower = name.lower()
    for s in _DOUBLE_SUFFIXES:
        if lower.endswith(s) and len(name) > len(s):
            return name[: -len(s)], name[-len(s) :]
    stem, ext = os.path.splitext(name)
    return stem, ext


def _default_mode(directory: bool) -> int:
    # mkstemp/mkdtemp create private (0600/0700) entries; give the final output the
    # permissions an ordinary open() would have given it.
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


#: What a model folder holds; a non-empty folder with anything else is not replaced.
_MODEL_SUFFIXES = (".json", ".safetensors")


def _written_by_turndiff(folder: Path) -> bool:
    """Whether every entry of ``folder`` is a file turndiff writes into a model folder
    (JSON and safetensors) or a non-empty sub-folder of such files."""
    entries = list(folder.iterdir())
    for e in entries:
        if e.is_symlink():
            return False
        if e.is_dir():
            if not any(e.iterdir()) or not _written_by_turndiff(e):
                return False
        elif not e.name.endswith(_MODEL_SUFFIXES):
            return False
    return True


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


# The janitor: reads NUL-terminated records from its stdin, ``+PATH`` (a temporary),
# ``-PATH`` (committed or removed) and ``<OLD\tTARGET`` (a folder moved aside while its
# replacement is renamed in); at end of file (the writer exited or was killed) it moves
# every OLD whose TARGET is missing back into place, then removes what is still listed.
# ``-S -I``: no site packages, so it starts in milliseconds and imports nothing of ours.
_JANITOR = r"""
import os, shutil, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
temps, olds, buf = {}, {}, b""
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    buf += chunk
    *records, buf = buf.split(b"\0")
    for r in records:
        kind, body = r[:1], r[1:]
        if kind == b"+":
            temps[body] = True
        elif kind == b"-":
            temps.pop(body, None)
            olds.pop(body, None)
        elif kind == b"<":
            old, target = body.split(b"\t", 1)
            olds[old] = target
for old, target in olds.items():
    moved = os.path.join(old, b"x")
    if os.path.lexists(moved) and not os.path.lexists(target):
        try:
            os.replace(moved, target)
        except OSError:
            continue
    temps[old] = True
for t in temps:
    if os.path.isdir(t) and not os.path.islink(t):
        shutil.rmtree(t, ignore_errors=True)
    else:
        try:
            os.unlink(t)
        except OSError:
            pass
"""


class _Janitor:
    """This process's janitor (see the module docstring); started on first use, and again
    in a forked child, which must not share its parent's."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._pid = -1

    def _send(self, record: bytes) -> None:
        if self._pid != os.getpid() or self._proc is None or self._proc.poll() is not None:
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-S", "-I", "-c", _JANITOR], stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            except OSError:
                self._proc = None  # the next write's stale-temporary sweep remains
                return
            self._pid = os.getpid()
        try:
            self._proc.stdin.write(record + b"\0")
            self._proc.stdin.flush()
        except OSError:
            pass

    def add(self, path: Path) -> None:
        self._send(b"+" + os.fsencode(os.path.abspath(path)))

    def moved_aside(self, old: Path, target: Path) -> None:
        self._send(b"<" + os.fsencode(os.path.abspath(old)) + b"\t" + os.fsencode(os.path.abspath(target)))

    def done(self, path: Path) -> None:
        self._send(b"-" + os.fsencode(os.path.abspath(path)))


_janitor = _Janitor()


def _new_temporary(parent: Path, prefix: str, suffix: str, directory: bool) -> Path:
    """Create a fresh file or folder ``parent/PREFIX<random>SUFFIX``, told to the janitor
    before it exists so that no instant is left in which a SIGKILL would orphan it."""
    for _ in range(100):
        p = parent / f"{prefix}{secrets.token_hex(4)}{suffix}"
        _janitor.add(p)
        try:
            if directory:
                os.mkdir(p, 0o700)
            else:
                os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return p
        except FileExistsError:
            _janitor.done(p)
    raise FileExistsError(f"no free temporary name in {parent}")


def _remove_stale_temporaries(parent: Path, stem: str) -> None:
    """Remove temporaries of ``stem`` left in ``parent`` by killed processes of this host."""
    pattern = re.compile(re.escape(f".{stem}.") + r"(?:tmp|old)-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-")
    host = _host()
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for e in entries:
        m = pattern.match(e.name)
        if m and m["host"] == host and not _alive(int(m["pid"])):
            _remove(e)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def check_output(
    path: str | os.PathLike[str],
    *,
    directory: bool = False,
    overwrite: bool = True,
    replaceable: Callable[[Path], bool] | None = None,
) -> None:
    """Raise :class:`InputError` now if :func:`atomic_output` would refuse ``path``, so a
    command can fail before its work instead of after it. Same arguments."""
    path = Path(path)
    if path.exists() and not (path.is_file() or path.is_dir()):
        # A device, FIFO or socket: the rename would replace it with a regular file.
        raise InputError(f"{path}: is a special file (device, pipe or socket), not an output file name")
    if path.exists() or path.is_symlink():
        if directory and not path.is_dir():
            raise InputError(f"{path}: exists and is not a folder")
        if not directory and path.is_dir():
            raise InputError(f"{path}: is a folder, expected a file name")
        if directory and any(path.iterdir()):
            if not overwrite:
                raise InputError(f"{path}: folder exists and is not empty")
            if not (replaceable or _written_by_turndiff)(path):
                raise InputError(f"{path}: folder exists and holds files not written by turndiff; "
                                 "choose a new folder or empty it")
        if not directory and not overwrite:
            raise InputError(f"{path}: file exists")


@contextmanager
def atomic_output(
    path: str | os.PathLike[str],
    *,
    directory: bool = False,
    overwrite: bool = True,
    replaceable: Callable[[Path], bool] | None = None,
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    Parameters
    ----------
    path : path-like
        The final output (a file, or a folder with ``directory=True``). Missing parent
        folders are created.
    directory : bool
        Yield a fresh empty temporary folder instead of a file name.
    overwrite : bool
        Replace an existing output. For files the replacement is a single atomic
        rename. For folders the old folder is moved aside, the new one renamed in, and
        the old one deleted, but only when it holds nothing but what turndiff writes
        into model folders (JSON and safetensors files): a folder with anything else is
        refused, so a user's data is never deleted. With ``overwrite=False`` only a
        missing or empty folder is replaced.
    replaceable : callable, optional
        For folders: which non-empty folders count as earlier outputs that may be
        replaced (default: only JSON and safetensors files, a model folder).

    Yields
    ------
    pathlib.Path
        The temporary path, in the same folder as ``path`` (so the final rename never
        crosses file systems) and with the same extension (``.out.tmp-ab12.nii.gz``),
        so libraries that pick a format by extension are happy. For files it already
        exists, empty; writers may truncate or replace it.

    Raises
    ------
    InputError
        ``path`` exists and is of the wrong kind (a folder where a file is wanted or
        vice versa), or is a non-empty folder and ``overwrite`` is False.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "x.npy"
    >>> with atomic_output(out) as tmp:
    ...     np.save(tmp, np.zeros(3))
    >>> out.exists()
    True
    """
    path = Path(path)
    check_output(path, directory=directory, overwrite=overwrite, replaceable=replaceable)
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{path}: cannot create the output folder ({e.strerror or e})") from None
    stem, ext = _split_suffix(path.name)
    _remove_stale_temporaries(parent, stem)
    tag = f"{_host()}-{os.getpid()}-"
    try:
        tmp = _new_temporary(parent, f".{stem}.tmp-{tag}", ext, directory)
    except OSError as e:
        raise InputError(f"{path}: cannot write here ({e.strerror or e})") from None

    try:
        yield tmp
        os.chmod(tmp, _default_mode(directory))
        if directory:
            # Some writers (safetensors, mkstemp) create private 0600 files; a shared
            # model folder must be readable by colleagues, as open() would have made it.
            for root, dirs, files in os.walk(tmp):
                for name in dirs:
                    os.chmod(os.path.join(root, name), _default_mode(True))
                for name in files:
                    os.chmod(os.path.join(root, name), _default_mode(False))
        if directory and path.exists():
            old = _new_temporary(parent, f".{stem}.old-{tag}", "", True)
            _janitor.moved_aside(old, path)  # killed in between: the janitor puts it back
            os.replace(path, old / "x")
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old / "x", path)
                shutil.rmtree(old, ignore_errors=True)
                _janitor.done(old)
                raise
            shutil.rmtree(old, ignore_errors=True)
            _janitor.done(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    finally:
        _janitor.done(tmp)
