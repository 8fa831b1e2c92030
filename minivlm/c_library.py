"""Small C libraries compiled on first use with the system's compiler into the user's cache (the admin-key
preload of `minivlm.server.secret_argv`, the decoder's kernels of `minivlm.decoding.native`).

A library is named by a hash of its source, its flags and whatever else it depends on (`key`: the
compiler's version, the CPU it was tuned for), so a changed input builds a new file and an old one is never
loaded by mistake. Compiling writes beside the target and renames: a second process building at once never
loads half a file.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence


class CompileError(RuntimeError):
    """No compiler here, or it refused the source (the message holds its error output)."""


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "minivlm"


def compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def shared_library(name: str, source: str, flags: Sequence[str], *, key: str = "", folder: str | None = None) -> Path:
    """The compiled library `name-<hash>.so` under the cache's `folder` (default `name`), built if missing."""
    digest = hashlib.sha256("\0".join([source, " ".join(flags), key]).encode()).hexdigest()[:16]
    library = cache_dir() / (folder or name) / f"{name}-{digest}.so"
    if library.is_file():
        return library
    cc = compiler()
    if cc is None:
        raise CompileError("no C compiler (cc, gcc or clang) found; install gcc or set CC")
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.parent) as work:
        source_file, partial = Path(work) / f"{name}.c", Path(work) / library.name
        source_file.write_text(source)
        try:
            result = subprocess.run([cc, "-shared", "-fPIC", "-o", str(partial), str(source_file), *flags],
                                    capture_output=True, text=True)
        except OSError as error:
            raise CompileError(f"cannot run the C compiler {cc}: {error}") from error
        if result.returncode != 0:
            raise CompileError(f"{cc} failed on {name}.c:\n{result.stderr.strip()[-2000:]}")
        os.replace(partial, library)
    return library
