"""Reading input files that could be anything the path names: a FIFO, a device, a directory.

`open(path).read()` on a FIFO waits for a writer forever, and on /dev/zero never ends. Input files
(inventory, waivers, baselines, secrets) are read with `read_regular_file`, which opens without
blocking, refuses anything that is not a regular file, and stops at a size limit.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

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
