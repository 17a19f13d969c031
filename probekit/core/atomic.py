"""Publishing a finished temporary file under its final name, atomically.

Writers create ``.name.XXXX.tmp`` beside the target with :func:`tempfile.mkstemp` (mode 0600) and
call :func:`publish` once it is complete: the file gets the mode a plain ``open(..., "w")`` would
have given it (0666 minus the umask), then replaces the target in one rename, so a reader never
sees a half-written file.
"""

from __future__ import annotations

import os


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Chmod ``tmp`` to the umask's default file mode and rename it onto ``path``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
