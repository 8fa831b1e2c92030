"""Python-backend shared-memory regions in /dev/shm (RAM) that a killed server leaves behind.

A server that exits normally unlinks its regions; one that had to be killed cannot, so `TritonServer.stop`
removes those created since its start that no live process still has open or mapped.
"""
from __future__ import annotations

import os
from pathlib import Path

SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "triton_python_backend_shm_region_"


def remove_orphaned_shm(*, since: float, shm_dir: Path = SHM_DIR) -> int:
    """Unlink python-backend regions created at or after `since` that no live process has open or mapped.

    Regions of servers still running are mapped by their stubs, so they are never touched.
    """
    candidates = [path for path in shm_dir.glob(f"{SHM_PREFIX}*") if _mtime(path) >= since - 1.0]
    if not candidates:
        return 0
    in_use = _open_or_mapped_shm()
    removed = 0
    for path in candidates:
        if path.name not in in_use:
            try:
                path.unlink()
                removed += 1
            except OSError:
                pass
    return removed


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")      # gone already: never a candidate worth unlinking, but harmless


def _open_or_mapped_shm() -> set[str]:
    names: set[str] = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            for link in (proc / "fd").iterdir():
                target = os.readlink(link)
                if SHM_PREFIX in target:
                    names.add(Path(target.split(" ")[0]).name)
            for line in (proc / "maps").read_text().splitlines():
                if SHM_PREFIX in line:
                    names.add(Path(line.split()[-1]).name)
        except OSError:          # the process ended, or is not ours to read
            continue
    return names
