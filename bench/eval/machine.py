"""What machine a result came from: CPU model, cores, torch version, GPU name."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_model(cpuinfo: str | None = None) -> str:
    """The ``model name`` line of /proc/cpuinfo (or ``platform.processor()``)."""
    if cpuinfo is None:
        p = Path("/proc/cpuinfo")
        cpuinfo = p.read_text() if p.exists() else ""
    for line in cpuinfo.splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine_info(device: str = "cpu") -> dict:
    """A small dict describing this machine; GPU name only when ``device`` is a GPU."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {"cpu": cpu_model(), "cores": cores, "torch": torch.__version__,
            "python": platform.python_version(), "os": platform.platform(terse=True)}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def describe(info: dict) -> str:
    """One line for a report: ``CPU (N cores), torch X[, GPU]``."""
    s = f"{info.get('cpu', '?')} ({info.get('cores', '?')} cores), torch {info.get('torch', '?')}"
    return s + (f", GPU {info['gpu']}" if info.get("gpu") else "")
