"""Where the time of a session's decode steps goes on one node: always-on counters, one log line.

Every hop (and the head) adds each phase of a step with :meth:`StepTimes.add`
and closes the step with :meth:`StepTimes.end_step`; what the measured phases
leave of the step's time is ``other`` (Python glue). Step 0 (the prompt) is not
counted, so the figures are per decode step. At the end of a session the node
logs :meth:`StepTimes.summary`, ``key=value`` pairs in ms per step that
:func:`parse` reads back (``bench.hopprofile`` reads them from the logs).
"""

from __future__ import annotations

import re

# the phases of a step, in the order they happen; ``other`` is what they leave of the step's time
PHASES = ("decode", "queue", "forward", "handoff", "verify_wait", "receipt", "encode", "message", "sign",
          "next_hop", "answer_check", "sample", "other")
_PAIR = re.compile(r"\b([a-z_]+)=(-?[0-9.]+)")


class StepTimes:
    """Seconds per phase summed over a session's decode steps; ``batch``: sessions in the forwards
    its steps ran in, summed; ``verify_cpu``: time its signature checks took wherever they ran
    (often on the verifier thread, overlapping the forward: not part of the step's time)."""

    __slots__ = ("totals", "cur", "cur_verify", "cur_batch", "steps", "step_s", "batch", "verify_cpu")

    def __init__(self):
        self.totals = dict.fromkeys(PHASES, 0.0)
        self.cur: dict[str, float] = {}  # the phases of the step in progress
        self.cur_verify = 0.0  # its signature checks' time, seconds
        self.cur_batch = 1  # sessions in its forward
        self.steps = 0  # decode steps counted
        self.step_s = 0.0  # their whole time, seconds
        self.batch = 0  # sessions in the forwards they ran in, summed
        self.verify_cpu = 0.0  # seconds

    def add(self, phase: str, seconds: float) -> None:
        self.cur[phase] = self.cur.get(phase, 0.0) + seconds

    def ran(self, queue_s: float, forward_s: float, batch: int) -> None:
        """The step's forward waited ``queue_s`` for the stage, then ran ``forward_s`` in a batch of ``batch``."""
        self.add("queue", queue_s)
        self.add("forward", forward_s)
        self.cur_batch = batch

    def checked(self, seconds: float) -> None:
        """A signature check of the step in progress took ``seconds`` (wherever it ran)."""
        self.cur_verify += seconds

    def end_step(self, step: int, seconds: float) -> None:
        """Close ``step``, which took ``seconds`` in all."""
        cur, self.cur = self.cur, {}
        verify, self.cur_verify = self.cur_verify, 0.0
        batch, self.cur_batch = self.cur_batch, 1
        if step == 0:
            return
        for k, v in cur.items():
            self.totals[k] += v
        self.totals["other"] += max(seconds - sum(cur.values()), 0.0)
        self.steps += 1
        self.step_s += seconds
        self.batch += batch
        self.verify_cpu += verify

    def summary(self) -> str:
        """``steps=N batch=B total=T phase=ms ...``: milliseconds per decode step."""
        n = max(self.steps, 1)
        parts = [f"steps={self.steps}", f"batch={self.batch / n:.2f}", f"total={1e3 * self.step_s / n:.3f}"]
        parts += [f"{k}={1e3 * v / n:.3f}" for k, v in self.totals.items() if v]
        parts.append(f"verify_cpu={1e3 * self.verify_cpu / n:.3f}")
        return " ".join(parts)


def parse(text: str) -> dict[str, float]:
    """The ``key=value`` pairs of a :meth:`StepTimes.summary` found in ``text`` (pure)."""
    return {k: float(v) for k, v in _PAIR.findall(text)}
