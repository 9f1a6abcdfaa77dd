from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KIND_UNSPECIFIED: _ClassVar[Kind]
    KIND_OPEN: _ClassVar[Kind]
    KIND_STEP: _ClassVar[Kind]
    KIND_CLOSE: _ClassVar[Kind]
KIND_UNSPECIFIED: Kind
KIND_OPEN: Kind
KIND_STEP: Kind
KIND_CLOSE: Kind

class Tensor(_message.Message):
    __slots__ = ("codec", "shape", "block", "data")
    CODEC_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    codec: int
    shape: _containers.RepeatedScalarFieldContainer[int]
    block: int
    data: bytes
    def __init__(self, codec: _Optional[int] = ..., shape: _Optional[_Iterable[int]] = ..., block: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class HopMessage(_message.Message):
    __slots__ = ("job_id", "replica", "hop", "step", "kind", "payload", "payload_hash", "ids", "output", "error", "sender", "signature", "upstream", "session", "sent_unix_ms", "extras", "route", "receipts")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    HOP_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_HASH_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SENT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    EXTRAS_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    RECEIPTS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    replica: int
    hop: int
    step: int
    kind: Kind
    payload: Tensor
    payload_hash: bytes
    ids: _containers.RepeatedScalarFieldContainer[int]
    output: bytes
    error: str
    sender: str
    signature: bytes
    upstream: bool
    session: bytes
    sent_unix_ms: int
    extras: _containers.RepeatedCompositeFieldContainer[Tensor]
    route: int
    receipts: _containers.RepeatedCompositeFieldContainer[SignedReceipt]
    def __init__(self, job_id: _Optional[str] = ..., replica: _Optional[int] = ..., hop: _Optional[int] = ..., step: _Optional[int] = ..., kind: _Optional[_Union[Kind, str]] = ..., payload: _Optional[_Union[Tensor, _Mapping]] = ..., payload_hash: _Optional[bytes] = ..., ids: _Optional[_Iterable[int]] = ..., output: _Optional[bytes] = ..., error: _Optional[str] = ..., sender: _Optional[str] = ..., signature: _Optional[bytes] = ..., upstream: _Optional[bool] = ..., session: _Optional[bytes] = ..., sent_unix_ms: _Optional[int] = ..., extras: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., route: _Optional[int] = ..., receipts: _Optional[_Iterable[_Union[SignedReceipt, _Mapping]]] = ...) -> None: ...

class HopBatch(_message.Message):
    __slots__ = ("messages", "codes")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[HopMessage]
    codes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, messages: _Optional[_Iterable[_Union[HopMessage, _Mapping]]] = ..., codes: _Optional[_Iterable[int]] = ...) -> None: ...

class SignedReceipt(_message.Message):
    __slots__ = ("receipt", "signature")
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    receipt: bytes
    signature: bytes
    def __init__(self, receipt: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ReceiptsRequest(_message.Message):
    __slots__ = ("job_id", "replica")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    replica: int
    def __init__(self, job_id: _Optional[str] = ..., replica: _Optional[int] = ...) -> None: ...

class ReceiptsResponse(_message.Message):
    __slots__ = ("receipts",)
    RECEIPTS_FIELD_NUMBER: _ClassVar[int]
    receipts: _containers.RepeatedCompositeFieldContainer[SignedReceipt]
    def __init__(self, receipts: _Optional[_Iterable[_Union[SignedReceipt, _Mapping]]] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("model", "num_blocks", "start", "end", "node", "free_cache_bytes", "sessions", "tokens_per_second", "version", "device", "codecs", "batched_steps")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NUM_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    FREE_CACHE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    CODECS_FIELD_NUMBER: _ClassVar[int]
    BATCHED_STEPS_FIELD_NUMBER: _ClassVar[int]
    model: str
    num_blocks: int
    start: int
    end: int
    node: str
    free_cache_bytes: int
    sessions: int
    tokens_per_second: float
    version: str
    device: str
    codecs: _containers.RepeatedScalarFieldContainer[int]
    batched_steps: int
    def __init__(self, model: _Optional[str] = ..., num_blocks: _Optional[int] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., node: _Optional[str] = ..., free_cache_bytes: _Optional[int] = ..., sessions: _Optional[int] = ..., tokens_per_second: _Optional[float] = ..., version: _Optional[str] = ..., device: _Optional[str] = ..., codecs: _Optional[_Iterable[int]] = ..., batched_steps: _Optional[int] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ("sent_unix_ns",)
    SENT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    sent_unix_ns: int
    def __init__(self, sent_unix_ns: _Optional[int] = ...) -> None: ...

class PingResponse(_message.Message):
    __slots__ = ("sent_unix_ns", "received_unix_ns")
    SENT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    sent_unix_ns: int
    received_unix_ns: int
    def __init__(self, sent_unix_ns: _Optional[int] = ..., received_unix_ns: _Optional[int] = ...) -> None: ...
