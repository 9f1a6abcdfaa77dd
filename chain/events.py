"""Follow contract events from a persisted cursor: no event missed, none repeated.

The cursor file holds the position ``(block, log_index)`` of the last event the
handler finished (or the last block scanned when it was empty). After a
restart the follower reads logs from that block again and skips positions at
or before the cursor, so an event is delivered once even if the process died
between two events of one block. Logs are always read with ``eth_getLogs``
over block ranges; where the node offers WebSocket subscriptions, a
``newHeads`` subscription only wakes the follower up early instead of waiting
out the poll interval.

Reorgs: events are read only ``confirmations`` blocks behind the head, and the
cursor also keeps the hashes of the last blocks it scanned. When one of them is
no longer on the canonical chain, the follower rewinds to the newest block that
still is and delivers again what follows (handlers must be idempotent: the
node's job ledger is keyed by job id and request). A reorg deeper than the kept
history raises :class:`ReorgTooDeep` with what to do.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from eth_utils import event_abi_to_log_topic
from web3 import Web3
from web3.contract import Contract
from websockets.sync.client import connect

from proto.errors import ChainError

logger = logging.getLogger(__name__)

END_OF_BLOCK = 2**31  # log index meaning "every event of this block is done"
HASH_HISTORY = 128  # scanned block hashes kept in the cursor file (deepest reorg handled), count


class ReorgTooDeep(ChainError):
    """Every block hash the cursor remembers was replaced: the reorg is deeper than its history."""


@dataclass(frozen=True, order=True)
class Cursor:
    block: int
    log_index: int


@dataclass(frozen=True)
class ChainEvent:
    name: str  # Solidity event name, e.g. JobSubmitted
    args: dict
    block: int
    log_index: int
    tx_hash: str
    address: str
    block_hash: str = ""  # hex, no 0x: the block the log was read from

    @property
    def position(self) -> Cursor:
        return Cursor(self.block, self.log_index)


def read_cursor(path: Path) -> Cursor | None:
    return _read(path)[0]


def _read(path: Path) -> tuple[Cursor | None, list[tuple[int, str]]]:
    """(cursor, [(block, hash), ...] oldest first) from the cursor file."""
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        return None, []
    return Cursor(int(d["block"]), int(d["log_index"])), [(int(b), str(h)) for b, h in d.get("hashes", [])]


def write_cursor(path: Path, cur: Cursor, hashes: Sequence[tuple[int, str]] = ()) -> None:
    """Atomic replace, so a crash leaves the old or the new cursor, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"block": cur.block, "log_index": cur.log_index, "hashes": [list(h) for h in hashes]}))
    os.replace(tmp, path)


class EventFollower:
    """Deliver events of ``contracts`` (optionally only ``names``) in chain order, exactly once."""

    def __init__(self, w3: Web3, contracts: Sequence[Contract], cursor_file: str | Path, start_block: int,
                 names: Iterable[str] | None = None, confirmations: int = 0, batch_blocks: int = 2000,
                 ws_url: str | None = None):
        self.w3 = w3
        self.cursor_file = Path(cursor_file)
        self.start_block = start_block  # first block to read when there is no cursor yet
        self.confirmations = confirmations  # blocks to wait before reading (reorg safety)
        self.batch_blocks = batch_blocks  # max blocks per eth_getLogs
        self.ws_url = ws_url
        wanted = set(names) if names else None
        self._by_topic: dict[bytes, tuple[Contract, str]] = {}
        for c in contracts:
            for entry in c.abi:
                if entry["type"] == "event" and (wanted is None or entry["name"] in wanted):
                    self._by_topic[bytes(event_abi_to_log_topic(entry))] = (c, entry["name"])
        self._addresses = [c.address for c in contracts]
        self._wake = threading.Event()
        self._head_hash: str | None = None  # hash of the safe head read by the last poll

    @property
    def cursor(self) -> Cursor:
        return read_cursor(self.cursor_file) or Cursor(self.start_block - 1, END_OF_BLOCK)

    def _block_hash(self, number: int) -> str | None:
        blk = self.w3.eth.get_block(number)
        return None if blk is None else bytes(blk["hash"]).hex()

    def check_reorg(self) -> Cursor | None:
        """If a block the cursor scanned left the canonical chain, rewind the cursor to the newest
        block that did not and return the new cursor; None when nothing changed."""
        cur, hashes = _read(self.cursor_file)
        if cur is None or not hashes or self._block_hash(hashes[-1][0]) == hashes[-1][1]:
            return None
        for i in range(len(hashes) - 2, -1, -1):
            block, h = hashes[i]
            if self._block_hash(block) == h:
                back = Cursor(block, END_OF_BLOCK)
                write_cursor(self.cursor_file, back, hashes[: i + 1])
                logger.warning("event follower: reorg below block %d; reading again from block %d",
                               hashes[i + 1][0], block + 1)
                return back
        raise ReorgTooDeep(f"the chain reorganised deeper than the last {len(hashes)} blocks this node scanned "
                           f"(cursor {self.cursor_file}); raise `confirmations` in node.toml, delete the cursor "
                           "file and restart to rescan from the deployment block")

    def poll(self) -> tuple[list[ChainEvent], int]:
        """Events after the cursor up to the safe head, and that head (nothing is marked done)."""
        self.check_reorg()
        cur = self.cursor
        head = self.w3.eth.block_number - self.confirmations
        self._head_hash = self._block_hash(head) if head >= 0 else None
        events: list[ChainEvent] = []
        frm = cur.block if cur.log_index != END_OF_BLOCK else cur.block + 1
        while frm <= head:
            to = min(head, frm + self.batch_blocks - 1)
            logs = self.w3.eth.get_logs({"fromBlock": frm, "toBlock": to, "address": self._addresses})
            for log in logs:
                ev = self._decode(log)
                if ev is not None and ev.position > cur:
                    events.append(ev)
            frm = to + 1
        events.sort(key=lambda e: e.position)
        return events, head

    def _decode(self, log) -> ChainEvent | None:
        if not log["topics"]:
            return None
        hit = self._by_topic.get(bytes(log["topics"][0]))
        if hit is None:
            return None
        contract, name = hit
        d = contract.events[name]().process_log(log)
        return ChainEvent(name, dict(d["args"]), d["blockNumber"], d["logIndex"], d["transactionHash"].hex(),
                          d["address"], bytes(log["blockHash"]).hex())

    def ack(self, position: Cursor, block_hash: str | None = None) -> None:
        """Mark everything at or before ``position`` as handled; ``block_hash`` (of the block the
        events were read from) is remembered for reorg checks."""
        cur, hashes = _read(self.cursor_file)
        if cur is not None and position <= cur:
            return
        if block_hash and position.block >= self.start_block and (not hashes or hashes[-1][0] != position.block):
            hashes = [*hashes, (position.block, block_hash)][-HASH_HISTORY:]
        write_cursor(self.cursor_file, position, hashes)

    def run_once(self, handler: Callable[[ChainEvent], None]) -> int:
        """Deliver pending events to ``handler`` (cursor saved after each); returns how many."""
        events, head = self.poll()
        for ev in events:
            handler(ev)
            self.ack(ev.position, ev.block_hash)
        self.ack(Cursor(head, END_OF_BLOCK), self._head_hash)
        return len(events)

    def follow(self, handler: Callable[[ChainEvent], None], stop: threading.Event, poll_interval_s: float = 1.0) -> None:
        """Deliver events until ``stop`` is set; wakes on new heads where WebSockets work."""
        if self.ws_url:
            threading.Thread(target=self._watch_heads, args=(stop,), daemon=True, name="heads").start()
        while not stop.is_set():
            try:
                self.run_once(handler)
            except Exception:  # noqa: BLE001 - keep following through RPC hiccups; handler errors retry
                logger.exception("event follower: will retry from the saved cursor")
            self._wake.wait(poll_interval_s)
            self._wake.clear()

    def _watch_heads(self, stop: threading.Event) -> None:
        try:
            with connect(self.ws_url, open_timeout=3) as ws:
                ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}))
                logger.info("event follower: subscribed to new heads on %s", self.ws_url)
                while not stop.is_set():
                    try:
                        ws.recv(timeout=0.5)
                        self._wake.set()
                    except TimeoutError:
                        continue
        except Exception as exc:  # noqa: BLE001 - fall back to polling
            logger.info("event follower: no WebSocket subscriptions (%s); polling", exc)
