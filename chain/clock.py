"""The chain's notion of now, for deciding when a deadline has passed.

``block.timestamp`` of the next block is what the contracts compare against.
The latest block's timestamp lags it while no block is mined (anvil mines on
demand), and a devnet may run ahead of the wall clock (``evm_increaseTime``).
:class:`ChainClock` tracks the largest offset seen between the latest block
and the wall clock and adds it to the wall clock.
"""

from __future__ import annotations

import threading
import time

from web3 import Web3


class ChainClock:
    def __init__(self, w3: Web3):
        self.w3 = w3
        self._offset = 0.0  # seconds the chain runs ahead of the wall clock (>= 0)
        self._lock = threading.Lock()

    def now(self) -> int:
        """Unix seconds that the next block will carry, at least."""
        ts = self.w3.eth.get_block("latest")["timestamp"]
        wall = time.time()
        with self._lock:
            self._offset = max(self._offset, ts - wall)
            return int(wall + self._offset)
