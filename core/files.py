"""Reading input files that could be anything the path names, and writing output files to places
that may not take them.

`open(path).read()` on a FIFO waits for a writer forever, and on /dev/zero never ends. Input files
(inventory, waivers, baselines, secrets, certificates, catalogues, app lists) are read with
`read_regular_file`, which opens without blocking, refuses anything that is not a regular file,
and stops at a size limit.

Every file a command writes for the user (`--out`: reports, keys, CSRs, profiles, deployments) is
written by `write_output`: atomically (a temporary file beside it, then a rename or a link, so a
reader never sees half a file, and a failed write leaves nothing behind), with its mode from the
start, and any OSError turned into one OutputError line: exit 2 when the place the user named
cannot take the file (read-only, no such folder, no permission), exit 3 when the disk is full.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from core.errors import EXIT_COULD_NOT_RUN, EXIT_INPUT, InputFileError, OutputError

# Larger than any inventory, baseline or secret file a town has; an input file beyond it is a mistake.
DEFAULT_LIMIT = 64 * 1024 * 1024


def read_regular_file(path: str | Path, limit: int = DEFAULT_LIMIT) -> bytes:
    """The bytes of a regular file. Raises FileNotFoundError, PermissionError, or OSError whose
    strerror says "not a regular file" or "larger than N bytes"."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device"
            raise OSError(errno.EINVAL, f"not a regular file ({kind})", str(path))
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > limit:
                raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_input(path: str | Path, what: str, limit: int = DEFAULT_LIMIT) -> bytes:
    """The bytes of an input file the user named (a certificate, a catalogue, a CA key), by
    `read_regular_file`; InputFileError as one line, `<what> <path> ...`, otherwise."""
    try:
        return read_regular_file(path, limit)
    except FileNotFoundError:
        raise InputFileError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise InputFileError(f"{what} {path}: {e.strerror or e.__class__.__name__}") from None


# Errors that say the place the user named cannot take the file (bad input, exit 2); any other
# OSError (a full disk, a quota, an I/O error) means the write could not run (exit 3).
_PLACE_ERRORS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR,
                           errno.ENAMETOOLONG, errno.ELOOP, errno.EEXIST})


def output_error(path: Path, e: OSError) -> OutputError:
    """The one line for an OSError while writing `path`."""
    if e.errno == errno.ENOENT and not path.parent.is_dir():
        return OutputError(f"cannot write {path}: the folder {path.parent} does not exist", EXIT_INPUT)
    if e.errno == errno.EEXIST:
        return OutputError(f"cannot write {path}: it exists and is never overwritten", EXIT_INPUT)
    code = EXIT_INPUT if e.errno in _PLACE_ERRORS else EXIT_COULD_NOT_RUN
    return OutputError(f"cannot write {path}: {e.strerror or e.__class__.__name__}", code)


def write_output(path: str | Path, data: bytes, *, mode: int = 0o644, exclusive: bool = False,
                 parents: bool = False) -> Path:
    """Write `data` to `path` atomically with `mode`; raises OutputError (see the module docstring).

    `exclusive`: never replace an existing file (a key). `parents`: make missing folders (reports
    into a new folder); otherwise the folder must exist."""
    out = Path(path)
    if out.is_dir():
        raise OutputError(f"cannot write {out}: it is a folder; give a file name", EXIT_INPUT)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        if parents:
            out.parent.mkdir(parents=True, exist_ok=True)
        if exclusive and out.exists():
            raise FileExistsError(errno.EEXIST, "exists", str(out))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, out)  # fails if `out` appeared meanwhile: never replaced
            tmp.unlink()
        else:
            tmp.replace(out)
    except OSError as e:
        with contextlib.suppress(OSError):  # on a read-only file system even this fails
            tmp.unlink()
        raise output_error(out, e) from None
    return out


def make_output_dir(path: str | Path) -> Path:
    """A folder for output files, made if missing, whose parent must exist; raises OutputError."""
    out = Path(path)
    try:
        out.mkdir(exist_ok=True)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise OutputError(f"cannot write {out}: the folder {out.parent} does not exist", EXIT_INPUT) from None
        raise output_error(out, e) from None
    return out
