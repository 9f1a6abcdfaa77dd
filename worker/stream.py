"""Token streaming (``tessera.v1.StreamService``): the head publishes, requesters subscribe.

The head's generation loop hands every step's ids to :meth:`TokenHub.publish`
(through ``run_replica(on_token=)``) as a :class:`TokenEvent` signed by the node
key (:class:`TokenSigner`); ``Subscribe`` replays a replica's events from the
first and follows it until its last. The digest is ``keccak256(abi.encode(DOMAIN,
jobId, replica, attempt, index, keccak(ids as uint32 words), done, keccak(error),
sender))``, signed EIP-191 like hop messages, so a gateway can show who said what.
Anyone may subscribe: the prompt is on chain and the output is revealed there.
These tokens are a preview; the job's settled output is what counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import coincurve
import grpc
from eth_account import Account
from eth_hash.auto import keccak
from eth_utils import to_checksum_address

from proto.errors import ProtocolError
from proto.tessera.v1 import stream_pb2 as spb
from proto.tessera.v1 import stream_pb2_grpc as spb_grpc

logger = logging.getLogger(__name__)

DOMAIN = keccak(b"tessera.v1.TokenEvent")
_EIP191 = b"\x19Ethereum Signed Message:\n32"
MAX_STREAMS = 64  # replicas kept for replay, count (the oldest finished ones go first)
MAX_EVENTS = 4200  # events kept per replica, count (max_tokens is at most 4096)
MAX_WAIT_S = 1800.0  # longest a Subscribe follows a replica, seconds


def digest(ev: spb.TokenEvent) -> bytes:
    """The 32-byte digest the head signs: every field of ``ev`` but ``signature``."""
    try:
        job = int(ev.job_id)
        sender = bytes.fromhex(ev.sender[2:]) if ev.sender[:2] in ("0x", "0X") else b""
    except ValueError:
        raise ProtocolError(f"token event names job {ev.job_id!r} and sender {ev.sender!r}") from None
    if not 0 <= job < 2**256 or len(sender) != 20:
        raise ProtocolError(f"token event names job {ev.job_id!r} and sender {ev.sender!r}")
    ids = b"".join(i.to_bytes(4, "big") for i in ev.ids)
    words = (job, ev.replica, ev.attempt, ev.index)
    return keccak(DOMAIN + b"".join(w.to_bytes(32, "big") for w in words) + keccak(ids)
                  + int(ev.done).to_bytes(32, "big") + keccak(ev.error.encode()) + bytes(12) + sender)


def recover(ev: spb.TokenEvent) -> str:
    """Checksummed address that signed ``ev``; ProtocolError if the signature does not hold."""
    sig = ev.signature
    if len(sig) != 65 or sig[64] not in (27, 28):
        raise ProtocolError("token event is unsigned or its signature is malformed")
    try:
        pub = coincurve.PublicKey.from_signature_and_message(sig[:64] + bytes([sig[64] - 27]),
                                                             keccak(_EIP191 + digest(ev)), hasher=None)
    except Exception as exc:  # noqa: BLE001 - coincurve raises several types for a bad signature
        raise ProtocolError(f"invalid signature on token event: {exc}") from exc
    addr = to_checksum_address(keccak(pub.format(compressed=False)[1:])[-20:])
    if addr.lower() != ev.sender.lower():
        raise ProtocolError(f"token event claims sender {ev.sender} but was signed by {addr}")
    return addr


class TokenSigner:
    """Builds signed token events with the node key."""

    def __init__(self, private_key: str | bytes):
        acct = Account.from_key(private_key)
        self._key = coincurve.PrivateKey(bytes(acct.key))
        self.address = acct.address

    def event(self, job_id: int, replica: int, attempt: int, index: int, ids: Sequence[int] = (),
              done: bool = False, error: str = "") -> spb.TokenEvent:
        ev = spb.TokenEvent(job_id=str(job_id), replica=replica, attempt=attempt, index=index, ids=list(ids),
                            done=done, error=error[:500], sender=self.address)
        sig = self._key.sign_recoverable(keccak(_EIP191 + digest(ev)), hasher=None)
        ev.signature = sig[:64] + bytes([sig[64] + 27])
        return ev


class _Replica:
    __slots__ = ("events", "done", "attempt", "count")

    def __init__(self):
        self.events: list[spb.TokenEvent] = []
        self.done = False
        self.attempt = 0
        self.count = 0  # ids produced in the current attempt


class TokenHub:
    """Bounded store of the token events of the replicas this node heads, with waiting readers."""

    def __init__(self, max_subscribers: int, signer: TokenSigner | None = None):
        self.signer = signer
        self.max_subscribers = max_subscribers  # each holds a gRPC handler thread while it follows
        self._streams: OrderedDict[tuple[int, int], _Replica] = OrderedDict()
        self._cond = threading.Condition()
        self._subscribers = 0

    def begin(self, job_id: int, replica: int) -> None:
        """A (new) attempt at a replica: its output starts again from index 0."""
        with self._cond:
            r = self._get(job_id, replica)
            r.attempt += 1
            r.count, r.done = 0, False
            self._cond.notify_all()

    def publish(self, job_id: int, replica: int, ids: Sequence[int]) -> None:
        """One step's ids from the head's loop (dropped while no signer is set)."""
        if self.signer is None:
            return
        with self._cond:
            r = self._get(job_id, replica)
            if r.attempt == 0:
                r.attempt = 1
            self._append(r, self.signer.event(job_id, replica, r.attempt, r.count, ids))
            r.count += len(ids)

    def finish(self, job_id: int, replica: int, error: str = "") -> None:
        """The replica's run ended (``error`` says why it failed, if it did)."""
        if self.signer is None:
            return
        with self._cond:
            r = self._get(job_id, replica)
            self._append(r, self.signer.event(job_id, replica, max(r.attempt, 1), r.count, (), True, error))
            r.done = not error  # a failed attempt may be retried; subscribers see the error
            self._cond.notify_all()

    def subscribe(self, job_id: int, replica: int, wait_s: float) -> Iterator[spb.TokenEvent]:
        """Every event of the replica from the first, following it until done or ``wait_s`` passes."""
        with self._cond:
            if self._subscribers >= self.max_subscribers:
                raise ProtocolError(f"{self.max_subscribers} subscribers already follow this node; try again later")
            self._subscribers += 1
        try:
            t_end = time.monotonic() + min(max(wait_s, 0.0), MAX_WAIT_S)
            sent = 0
            while True:
                with self._cond:
                    r = self._streams.get((job_id, replica))
                    while (r is None or len(r.events) <= sent) and time.monotonic() < t_end:
                        self._cond.wait(min(1.0, max(t_end - time.monotonic(), 0.0)))
                        r = self._streams.get((job_id, replica))
                    new = r.events[sent:] if r is not None else []
                for ev in new:
                    yield ev
                    if ev.done and not ev.error:
                        return
                sent += len(new)
                if not new and time.monotonic() >= t_end:
                    return
        finally:
            with self._cond:
                self._subscribers -= 1

    def _get(self, job_id: int, replica: int) -> _Replica:
        key = (job_id, replica)
        r = self._streams.get(key)
        if r is None:
            r = self._streams[key] = _Replica()
            while len(self._streams) > MAX_STREAMS:
                old = next((k for k, v in self._streams.items() if v.done), next(iter(self._streams)))
                del self._streams[old]
        return r

    def _append(self, r: _Replica, ev: spb.TokenEvent) -> None:
        if len(r.events) < MAX_EVENTS:
            r.events.append(ev)
        self._cond.notify_all()


class StreamServicer(spb_grpc.StreamServiceServicer):
    """Thin handler over a :class:`TokenHub`."""

    def __init__(self, hub: TokenHub):
        self.hub = hub

    def Subscribe(self, request, context):
        try:
            job = int(request.job_id)
        except ValueError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"job_id {request.job_id!r} is not a decimal integer")
        logger.info("token stream of job %s replica %s subscribed by %s", job, request.replica, context.peer())
        try:
            yield from self.hub.subscribe(job, request.replica, request.wait_ms / 1000)
        except ProtocolError as exc:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))


def add_to_server(server: grpc.Server, max_subscribers: int) -> TokenHub:
    """Serve ``StreamService`` on ``server``; returns the hub the head publishes into (its
    ``signer`` is set by whoever runs heads: the on-chain daemon). At most ``max_subscribers``
    subscribers at once: the server sizes its thread pool for them beside the ring's."""
    hub = TokenHub(max_subscribers)
    spb_grpc.add_StreamServiceServicer_to_server(StreamServicer(hub), server)
    return hub
