"""The node's persisted job ledger: one small JSON file per job it is planned in.

What is written here survives a restart, so a node never runs a finished
replica twice, never loses an output it must still commit, and reveals with the
salt it committed with. Files are replaced atomically.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path


@dataclass(frozen=True)
class JobEntry:
    job_id: int
    roles: tuple[tuple[int, int], ...]  # (replica, index of this node's hop word in that replica; 0 = head)
    tails: tuple[int, ...]  # replicas whose tail, or tail's standby, this node is
    commit_deadline: int  # unix seconds
    reveal_deadline: int  # unix seconds
    head_done: tuple[int, ...] = ()  # replicas this node finished running as head
    outputs: dict = field(default_factory=dict)  # replica -> output hex (tail)
    salts: dict = field(default_factory=dict)  # replica -> salt hex (tail)
    masks: dict = field(default_factory=dict)  # replica -> servedMask of the route that produced the output (tail)
    receipts: dict = field(default_factory=dict)  # replica -> [signed receipt hex (receipt bytes || 65-byte sig)]
    committed: tuple[int, ...] = ()
    revealed: tuple[int, ...] = ()
    closed: bool = False  # finalized or past every deadline
    tx: str = ""  # hash of the submitting transaction (tells a job from another one a reorg gave the same id)
    note: str = ""  # last thing that happened, for `operator status`

    @property
    def heads(self) -> tuple[int, ...]:
        return tuple(r for r, pos in self.roles if pos == 0)


class JobBook:
    """Thread-safe store of :class:`JobEntry` under ``state_dir/jobs``."""

    def __init__(self, state_dir: Path):
        self.dir = Path(state_dir) / "jobs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._jobs: dict[int, JobEntry] = {}
        for f in sorted(self.dir.glob("*.json")):
            d = json.loads(f.read_text())
            for k in ("roles",):
                d[k] = tuple(tuple(x) for x in d[k])
            for k in ("tails", "head_done", "committed", "revealed"):
                d[k] = tuple(d[k])
            self._jobs[d["job_id"]] = JobEntry(**d)

    def get(self, job_id: int) -> JobEntry | None:
        with self._lock:
            return self._jobs.get(int(job_id))

    def open_jobs(self) -> list[JobEntry]:
        with self._lock:
            return [j for j in self._jobs.values() if not j.closed]

    def add(self, entry: JobEntry) -> bool:
        """Record a new job; False if it was already known (a replayed event)."""
        with self._lock:
            if entry.job_id in self._jobs:
                return False
            self._save(entry)
            return True

    def replace(self, entry: JobEntry) -> None:
        """Overwrite a job's entry (a reorg replaced the job with another under the same id)."""
        with self._lock:
            self._save(entry)

    def update(self, job_id: int, **changes) -> JobEntry:
        with self._lock:
            e = replace(self._jobs[int(job_id)], **changes)
            self._save(e)
            return e

    def _save(self, e: JobEntry) -> None:
        path = self.dir / f"{e.job_id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(e)))
        os.replace(tmp, path)
        self._jobs[e.job_id] = e
