from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class SubscribeRequest(_message.Message):
    __slots__ = ("job_id", "replica", "wait_ms")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    replica: int
    wait_ms: int
    def __init__(self, job_id: _Optional[str] = ..., replica: _Optional[int] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class TokenEvent(_message.Message):
    __slots__ = ("job_id", "replica", "attempt", "index", "ids", "done", "error", "sender", "signature")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    replica: int
    attempt: int
    index: int
    ids: _containers.RepeatedScalarFieldContainer[int]
    done: bool
    error: str
    sender: str
    signature: bytes
    def __init__(self, job_id: _Optional[str] = ..., replica: _Optional[int] = ..., attempt: _Optional[int] = ..., index: _Optional[int] = ..., ids: _Optional[_Iterable[int]] = ..., done: _Optional[bool] = ..., error: _Optional[str] = ..., sender: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...
