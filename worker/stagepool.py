"""The stages a node can run: the span it loaded, plus sub-spans on demand.

A node registers ``[start, end)`` and the router may plan it for any sub-span
``[a, b)`` of it. The node then runs exactly the planned blocks (the input stage
only if ``a == 0``, the output stage only if ``b == num_blocks``), so its
output is what the plan says it is. A sub-span stage is loaded from the same
verified weight files the first time it is planned and kept (LRU) for later
jobs; it costs at most the memory of the blocks it holds.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Callable

from proto.errors import ProtocolError
from worker.stage import Stage

logger = logging.getLogger(__name__)

Loader = Callable[[int, int], Stage]  # (start, end) -> stage of those blocks


class StagePool:
    def __init__(self, main: Stage, loader: Loader | None = None, max_extra: int = 2):
        self.main = main
        self.loader = loader
        self.max_extra = max_extra  # sub-span stages kept loaded at once, count
        self._extra: OrderedDict[tuple[int, int], Stage] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, start: int, end: int) -> Stage:
        """The stage for blocks ``[start, end)``; ProtocolError outside the served span."""
        spec = self.main.spec
        if (start, end) == (spec.start, spec.end):
            return self.main
        if not spec.start <= start < end <= spec.end:
            raise ProtocolError(f"plan gives this node blocks [{start}, {end}) but it serves "
                                f"[{spec.start}, {spec.end})")
        if self.loader is None:
            raise ProtocolError(f"plan gives this node the sub-span [{start}, {end}) of [{spec.start}, "
                                f"{spec.end}), and this worker was started without a stage loader")
        with self._lock:
            stage = self._extra.get((start, end))
            if stage is None:
                logger.info("loading sub-span [%d, %d) of [%d, %d)", start, end, spec.start, spec.end)
                stage = self._extra[(start, end)] = self.loader(start, end)
                while len(self._extra) > self.max_extra:
                    self._extra.popitem(last=False)
            self._extra.move_to_end((start, end))
            return stage
