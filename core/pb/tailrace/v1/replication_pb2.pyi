from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReplicaHandshake(_message.Message):
    __slots__ = ("cluster", "group", "broker_id", "max_offset", "secret", "epoch", "history")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_OFFSET_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    group: str
    broker_id: int
    max_offset: int
    secret: str
    epoch: int
    history: _containers.RepeatedCompositeFieldContainer[EpochEntry]
    def __init__(self, cluster: _Optional[str] = ..., group: _Optional[str] = ..., broker_id: _Optional[int] = ..., max_offset: _Optional[int] = ..., secret: _Optional[str] = ..., epoch: _Optional[int] = ..., history: _Optional[_Iterable[_Union[EpochEntry, _Mapping]]] = ...) -> None: ...

class EpochEntry(_message.Message):
    __slots__ = ("epoch", "start_offset")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    start_offset: int
    def __init__(self, epoch: _Optional[int] = ..., start_offset: _Optional[int] = ...) -> None: ...

class ReplicaAck(_message.Message):
    __slots__ = ("max_offset", "flushed_offset")
    MAX_OFFSET_FIELD_NUMBER: _ClassVar[int]
    FLUSHED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    max_offset: int
    flushed_offset: int
    def __init__(self, max_offset: _Optional[int] = ..., flushed_offset: _Optional[int] = ...) -> None: ...

class ReplicateRequest(_message.Message):
    __slots__ = ("handshake", "ack")
    HANDSHAKE_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    handshake: ReplicaHandshake
    ack: ReplicaAck
    def __init__(self, handshake: _Optional[_Union[ReplicaHandshake, _Mapping]] = ..., ack: _Optional[_Union[ReplicaAck, _Mapping]] = ...) -> None: ...

class ReplicaHandshakeReply(_message.Message):
    __slots__ = ("start_offset", "truncate_to", "master_max", "confirmed", "history")
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_TO_FIELD_NUMBER: _ClassVar[int]
    MASTER_MAX_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    start_offset: int
    truncate_to: int
    master_max: int
    confirmed: int
    history: _containers.RepeatedCompositeFieldContainer[EpochEntry]
    def __init__(self, start_offset: _Optional[int] = ..., truncate_to: _Optional[int] = ..., master_max: _Optional[int] = ..., confirmed: _Optional[int] = ..., history: _Optional[_Iterable[_Union[EpochEntry, _Mapping]]] = ...) -> None: ...

class ReplicaChunk(_message.Message):
    __slots__ = ("offset", "data", "epoch", "confirmed")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    epoch: int
    confirmed: int
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., epoch: _Optional[int] = ..., confirmed: _Optional[int] = ...) -> None: ...

class ReplicaHeartbeat(_message.Message):
    __slots__ = ("master_max", "confirmed", "retention_floor")
    MASTER_MAX_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FLOOR_FIELD_NUMBER: _ClassVar[int]
    master_max: int
    confirmed: int
    retention_floor: int
    def __init__(self, master_max: _Optional[int] = ..., confirmed: _Optional[int] = ..., retention_floor: _Optional[int] = ...) -> None: ...

class ReplicateResponse(_message.Message):
    __slots__ = ("handshake_reply", "chunk", "heartbeat")
    HANDSHAKE_REPLY_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    handshake_reply: ReplicaHandshakeReply
    chunk: ReplicaChunk
    heartbeat: ReplicaHeartbeat
    def __init__(self, handshake_reply: _Optional[_Union[ReplicaHandshakeReply, _Mapping]] = ..., chunk: _Optional[_Union[ReplicaChunk, _Mapping]] = ..., heartbeat: _Optional[_Union[ReplicaHeartbeat, _Mapping]] = ...) -> None: ...
