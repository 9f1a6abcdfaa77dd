"""CPU use of given processes and of the whole machine while a benchmark runs (Linux /proc)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_s(stat: str) -> float:
    """User + system CPU seconds from a /proc/<pid>/stat line (pure)."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime: fields 14 and 15


def machine_ticks(stat: str) -> tuple[int, int]:
    """(idle, total) jiffies from /proc/stat's first line (pure); idle counts iowait too."""
    parts = [int(v) for v in stat.splitlines()[0].split()[1:]]
    return parts[3] + (parts[4] if len(parts) > 4 else 0), sum(parts[:8])


def _read(path: str) -> str:
    return Path(path).read_text()


class CpuSampler:
    """Samples the CPU time of ``pids`` (name -> pid) and the machine's idle share every ``every_s``."""

    def __init__(self, pids: dict[str, int], every_s: float = 1.0):
        self.pids, self.every_s = pids, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)
        self.samples: list[tuple[float, dict[str, float], tuple[int, int]]] = []  # (t, cpu s by name, ticks)

    def _sample(self) -> None:
        cpu = {}
        for name, pid in self.pids.items():
            try:
                cpu[name] = process_cpu_s(_read(f"/proc/{pid}/stat"))
            except (OSError, IndexError, ValueError):
                cpu[name] = float("nan")  # the process is gone
        self.samples.append((time.monotonic(), cpu, machine_ticks(_read("/proc/stat"))))

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def start(self) -> "CpuSampler":
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> dict:
        """Stop; per process: CPU seconds used, mean and peak cores; the machine's idle share and load."""
        self._stop.set()
        self._thread.join(5)
        self._sample()
        (t0, c0, k0), (t1, c1, k1) = self.samples[0], self.samples[-1]
        wall = max(t1 - t0, 1e-9)
        per = {}
        for name in self.pids:
            used = c1[name] - c0[name]
            steps = [(b[1][name] - a[1][name]) / max(b[0] - a[0], 1e-9) for a, b in zip(self.samples, self.samples[1:])]
            per[name] = {"cpu_s": round(used, 2), "mean_cores": round(used / wall, 3),
                         "peak_cores": round(max(steps, default=0.0), 3)}
        idle = (k1[0] - k0[0]) / max(k1[1] - k0[1], 1)
        return {"wall_s": round(wall, 1), "processes": per, "machine_idle_share": round(idle, 3),
                "machine_cores": os.cpu_count(), "load_avg_end": [round(v, 2) for v in os.getloadavg()]}
