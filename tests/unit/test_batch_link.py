"""The sending side of batched steps (worker.ring.batch) against next hops that misbehave: one that
stays silent, one that answers another session's step or too few, one that refuses some messages.
Each session hears its own error within the hop timeout, and only the sessions that were wronged
fail; the Coalescer sends what came when a member of a forward never hands its message in."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from concurrent import futures

import grpc

from proto.errors import JobInputError, ProtocolError
from proto.tessera.v1 import worker_pb2 as pb
from proto.tessera.v1 import worker_pb2_grpc as pb_grpc
from worker.ring.batch import COALESCE_S, BatchLink, Coalescer
from worker.ring.link import message
from worker.ring.outbound import PeerTimeout
from worker.signing import Signer

NEXT = Signer("0x" + "22" * 32)
DOMAIN = b"\x07" * 32


def _request(job: int, step: int = 1) -> pb.HopMessage:
    return message(job, 0, 1, step, pb.KIND_STEP, session=os.urandom(32))


def _answer(req: pb.HopMessage, ids=(7,)) -> pb.HopMessage:
    return NEXT.sign(message(int(req.job_id), req.replica, 2, req.step, req.kind, upstream=True, ids=ids,
                             session=req.session), DOMAIN)


@contextlib.contextmanager
def _next_hop(answer_batch):
    """A next hop whose ForwardBatch answers each request with ``answer_batch(request)`` (None: never)."""
    stop = threading.Event()
    seen: list[pb.HopBatch] = []

    class Hop(pb_grpc.WorkerServiceServicer):
        def ForwardBatch(self, request_iterator, context):
            for batch in request_iterator:
                seen.append(batch)
                out = answer_batch(batch)
                if out is None:
                    stop.wait()
                    return
                yield out

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_WorkerServiceServicer_to_server(Hop(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield BatchLink(pb_grpc.WorkerServiceStub(channel), NEXT.address), seen
    finally:
        stop.set()
        channel.close()
        server.stop(0)


def test_each_message_gets_its_own_answer_in_one_round_trip():
    with _next_hop(lambda b: pb.HopBatch(messages=[_answer(m) for m in b.messages],
                                         codes=[0] * len(b.messages))) as (link, seen):
        msgs = [_request(j) for j in range(5)]
        out = link.exchange(msgs, timeout_s=5)
        again = link.exchange([_request(9)], timeout_s=5)  # the idle stream is reused
    assert [a.session for a in out] == [m.session for m in msgs] and list(out[0].ids) == [7]
    assert len(seen) == 2 and len(again) == 1 and isinstance(again[0], pb.HopMessage)


def test_a_silent_next_hop_fails_every_session_of_the_batch_within_the_hop_timeout():
    with _next_hop(lambda b: None) as (link, _):
        t0 = time.monotonic()
        out = link.exchange([_request(1), _request(2)], timeout_s=0.5)
        took = time.monotonic() - t0
    assert all(isinstance(a, PeerTimeout) for a in out) and took < 5


def test_an_answer_for_another_session_fails_only_the_session_it_was_for():
    def swapped(b: pb.HopBatch) -> pb.HopBatch:
        answers = [_answer(m) for m in b.messages]
        answers[0] = _answer(_request(1))  # another session's (fresh nonce) in the first slot
        return pb.HopBatch(messages=answers, codes=[0] * len(answers))

    with _next_hop(swapped) as (link, _):
        out = link.exchange([_request(1), _request(2)], timeout_s=5)
    assert isinstance(out[0], ProtocolError) and "another session" in str(out[0])
    assert isinstance(out[1], pb.HopMessage)


def test_a_batch_answered_with_too_few_answers_fails_every_session_of_it():
    with _next_hop(lambda b: pb.HopBatch(messages=[_answer(b.messages[0])], codes=[0])) as (link, _):
        out = link.exchange([_request(1), _request(2)], timeout_s=5)
    assert all(isinstance(a, ProtocolError) and "2 steps with 1 answers" in str(a) for a in out)


def test_a_refused_message_hears_the_refusal_its_own_stream_would_have_ended_with():
    invalid, denied = grpc.StatusCode.INVALID_ARGUMENT.value[0], grpc.StatusCode.PERMISSION_DENIED.value[0]

    def refuse_some(b: pb.HopBatch) -> pb.HopBatch:
        m = list(b.messages)
        return pb.HopBatch(messages=[pb.HopMessage(error="context too long"), _answer(m[1]),
                                     pb.HopMessage(error="bad signature")], codes=[invalid, 0, denied])

    with _next_hop(refuse_some) as (link, _):
        out = link.exchange([_request(j) for j in range(3)], timeout_s=5)
    assert isinstance(out[0], JobInputError) and "context too long" in str(out[0])  # deterministic: not retried
    assert isinstance(out[1], pb.HopMessage)
    assert type(out[2]) is ProtocolError and "PERMISSION_DENIED bad signature" in str(out[2])


def test_the_coalescer_sends_a_forward_whole_and_what_came_when_a_member_never_comes():
    with _next_hop(lambda b: pb.HopBatch(messages=[_answer(m) for m in b.messages],
                                         codes=[0] * len(b.messages))) as (link, seen):
        c = Coalescer(link)
        msgs = [_request(j) for j in range(3)]
        got: dict[int, pb.HopMessage] = {}

        def member(j: int) -> None:
            got[j] = c.exchange_built(("f", 1), 3, lambda: msgs[j], 5)[0]

        threads = [threading.Thread(target=member, args=(j,)) for j in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert [len(b.messages) for b in seen] == [3]  # the whole forward in one message
        assert all(got[j].session == msgs[j].session for j in range(3))
        t0 = time.monotonic()
        late, _, _ = c.exchange_built(("f", 2), 3, lambda: _request(5), 5)  # its two peers never hand theirs in
        assert time.monotonic() - t0 >= COALESCE_S and late.step == 1
        assert [len(b.messages) for b in seen] == [3, 1]


def test_the_sending_thread_builds_every_members_message_and_a_failed_build_fails_only_its_own():
    """Members hand in how to build their message; one thread builds them all (the head's job threads
    do not take turns for the GIL around each receipt, encode and sign), sends the rest of the batch when
    one build raises, and that member alone hears its error."""
    with _next_hop(lambda b: pb.HopBatch(messages=[_answer(m) for m in b.messages],
                                         codes=[0] * len(b.messages))) as (link, seen):
        c = Coalescer(link)
        msgs = [_request(j) for j in range(4)]
        builders: list[int] = []

        def build(j: int) -> pb.HopMessage:
            builders.append(threading.get_ident())
            if j == 2:
                raise ProtocolError("receipt of hop 0 expected step 3, got 1")
            return msgs[j]

        got: dict[int, object] = {}

        def member(j: int) -> None:
            try:
                got[j] = c.exchange_built(("f", 1), 4, lambda: build(j), 5)
            except ProtocolError as exc:
                got[j] = exc

        threads = [threading.Thread(target=member, args=(j,)) for j in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(builders) == 4 and len(set(builders)) == 1  # every message built on one thread
        assert [len(b.messages) for b in seen] == [3]  # the three built ones in one batch
        assert isinstance(got[2], ProtocolError) and "expected step 3" in str(got[2])
        for j in (0, 1, 3):
            answer, built, seconds = got[j]
            assert built is msgs[j] and answer.session == msgs[j].session and seconds >= 0


def test_a_stream_that_saw_a_refusal_is_not_reused():
    codes = iter([[grpc.StatusCode.PERMISSION_DENIED.value[0]], [0]])

    def answer(b: pb.HopBatch) -> pb.HopBatch:
        c = next(codes)
        return pb.HopBatch(messages=[_answer(m) if not c[0] else pb.HopMessage(error="no") for m in b.messages],
                           codes=c)

    with _next_hop(answer) as (link, _):
        assert isinstance(link.exchange([_request(1)], 5)[0], ProtocolError)
        assert isinstance(link.exchange([_request(2)], 5)[0], pb.HopMessage)
        assert link._open == 1  # the refused stream was closed; the second batch's is open, idle


def test_a_node_without_batches_gets_each_session_on_its_own_stream():
    """An older node answers UNIMPLEMENTED: nothing of the batch ran, so its sessions go on their own
    streams (exchange says None), now and for every later batch to it."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_WorkerServiceServicer_to_server(pb_grpc.WorkerServiceServicer(), server)  # no method implemented
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        link = BatchLink(pb_grpc.WorkerServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}")), NEXT.address)
        assert link.exchange([_request(1), _request(2)], 5) is None
        assert link.unsupported and link.exchange([_request(3)], 5) is None
    finally:
        server.stop(0)
