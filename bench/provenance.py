"""Where a result came from: the commit and tree state, the machine, the command, when and how long.

:func:`meta` is the one place a result's ``meta`` block is made; :func:`bench._out.emit`
adds it to every result. The pure parsers take text so that tests need no git or /proc.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
OUTPUTS = ("bench/results/", "bench/figures/", "bench/REPORT.md")  # what benchmarks write: not code
MAX_DIRTY_LISTED = 50  # files named in meta.dirty_files; the count is always exact
GIT_TIMEOUT_S = 10.0


def cpu_model(cpuinfo: str | None = None) -> str:
    """The ``model name`` line of /proc/cpuinfo (or ``platform.processor()``)."""
    if cpuinfo is None:
        p = Path("/proc/cpuinfo")
        cpuinfo = p.read_text() if p.exists() else ""
    for line in cpuinfo.splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def host_class(hostname: str) -> str:
    """The host name's first label with each run of digits as ``N`` (``gpu-17.lab`` -> ``gpu-N``):
    what kind of host, not which one (pure)."""
    return re.sub(r"\d+", "N", hostname.split(".")[0].lower()) or "unknown"


def machine_info() -> dict:
    """CPU, cores this process may use, RAM, library versions, host class, and the GPU if torch sees one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    info = {"cpu": cpu_model(), "cores": cores, "ram_gib": round(ram / 2**30, 1), "torch": torch.__version__,
            "transformers": metadata.version("transformers"), "python": platform.python_version(),
            "os": platform.platform(terse=True), "host": host_class(socket.gethostname())}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_count"] = torch.cuda.device_count()
    return info


def dirty_files(porcelain: str) -> list[str]:
    """Changed or untracked paths in ``git status --porcelain`` output, leaving out what
    benchmarks themselves write (:data:`OUTPUTS`) (pure)."""
    paths = [line[3:].split(" -> ")[-1].strip('"') for line in porcelain.splitlines() if len(line) > 3]
    return [p for p in paths if not p.startswith(OUTPUTS)]


def git_state(repo: Path = REPO) -> dict:
    """``commit`` (HEAD), ``dirty`` and the ``dirty_files``; ``None`` values when git cannot tell."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True,
                              timeout=GIT_TIMEOUT_S).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = dirty_files(git("status", "--porcelain", "--untracked-files=all"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "dirty_files": []}
    return {"commit": commit, "dirty": bool(dirty), "dirty_files": dirty[:MAX_DIRTY_LISTED],
            "dirty_count": len(dirty)}


def command_line(argv: list[str], module: str | None) -> str:
    """The command that ran, as one shell line: ``python -m <module> ...`` or ``<program> ...`` (pure)."""
    head = ["python", "-m", module] if module else [Path(argv[0]).name if argv else "python"]
    return shlex.join(head + list(argv[1:]))


def process_seconds(stat: str, uptime: str, ticks_per_s: int) -> float:
    """Wall seconds since a process started, from its /proc/<pid>/stat and /proc/uptime (pure)."""
    start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime; fields from 3 follow ")"
    return round(float(uptime.split()[0]) - start_ticks / ticks_per_s, 1)


def _seconds_so_far() -> float | None:
    try:
        return process_seconds(Path("/proc/self/stat").read_text(), Path("/proc/uptime").read_text(),
                               os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None  # not Linux: wall time is not recorded


def meta() -> dict:
    """The ``meta`` block of a result made now, in this process: git state, command, machine,
    wall seconds since the process started, UTC date."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return {**git_state(), "command": command_line(sys.argv, spec.name if spec else None),
            "machine": machine_info(), "seconds": _seconds_so_far(),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def describe(info: dict) -> str:
    """One line for a report: ``CPU (N cores[, R GiB]), torch X[, GPU]``."""
    ram = f", {info['ram_gib']} GiB" if info.get("ram_gib") else ""
    s = f"{info.get('cpu', '?')} ({info.get('cores', '?')} cores{ram}), torch {info.get('torch', '?')}"
    return s + (f", GPU {info['gpu']}" if info.get("gpu") else "")
