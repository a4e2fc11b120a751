"""``psaudit`` in a pseudo-terminal of a given width, as a person's terminal shows it."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def in_a_terminal(columns: int, args: list[str], env: dict[str, str] | None = None) -> str:
    """``psaudit ARGS`` in a pseudo-terminal of ``columns`` x 50: what the terminal got
    (stderr left out), with ``\\r\\n`` as ``\\n``."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    environment = {k: v for k, v in os.environ.items() if k not in {"COLUMNS", "LINES"}}
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", *args],
        cwd=ROOT,
        stdin=child,
        stdout=child,
        stderr=subprocess.DEVNULL,
        env={**environment, **(env or {})},
    )
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=120)
    os.close(main)
    return b"".join(chunks).decode().replace("\r\n", "\n")
