from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ControllerHeartbeatRequest(_message.Message):
    __slots__ = ("cluster", "group", "node_id", "address", "epoch", "role", "max_offset", "in_sync", "priority", "member_address")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MAX_OFFSET_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    group: str
    node_id: int
    address: str
    epoch: int
    role: str
    max_offset: int
    in_sync: _containers.RepeatedScalarFieldContainer[int]
    priority: int
    member_address: str
    def __init__(self, cluster: _Optional[str] = ..., group: _Optional[str] = ..., node_id: _Optional[int] = ..., address: _Optional[str] = ..., epoch: _Optional[int] = ..., role: _Optional[str] = ..., max_offset: _Optional[int] = ..., in_sync: _Optional[_Iterable[int]] = ..., priority: _Optional[int] = ..., member_address: _Optional[str] = ...) -> None: ...

class ControllerHeartbeatResponse(_message.Message):
    __slots__ = ("epoch", "master_id", "master_address", "in_sync", "lease_ms", "master_member_address")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    MASTER_ID_FIELD_NUMBER: _ClassVar[int]
    MASTER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    MASTER_MEMBER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    master_id: int
    master_address: str
    in_sync: _containers.RepeatedScalarFieldContainer[int]
    lease_ms: int
    master_member_address: str
    def __init__(self, epoch: _Optional[int] = ..., master_id: _Optional[int] = ..., master_address: _Optional[str] = ..., in_sync: _Optional[_Iterable[int]] = ..., lease_ms: _Optional[int] = ..., master_member_address: _Optional[str] = ...) -> None: ...

class ControllerStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ControllerStatusResponse(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class IsolateRequest(_message.Message):
    __slots__ = ("address", "duration_ms")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    address: str
    duration_ms: int
    def __init__(self, address: _Optional[str] = ..., duration_ms: _Optional[int] = ...) -> None: ...

class IsolateResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TopicConfig(_message.Message):
    __slots__ = ("name", "read_queues", "write_queues", "perm")
    NAME_FIELD_NUMBER: _ClassVar[int]
    READ_QUEUES_FIELD_NUMBER: _ClassVar[int]
    WRITE_QUEUES_FIELD_NUMBER: _ClassVar[int]
    PERM_FIELD_NUMBER: _ClassVar[int]
    name: str
    read_queues: int
    write_queues: int
    perm: str
    def __init__(self, name: _Optional[str] = ..., read_queues: _Optional[int] = ..., write_queues: _Optional[int] = ..., perm: _Optional[str] = ...) -> None: ...

class BrokerRegistration(_message.Message):
    __slots__ = ("cluster", "broker_name", "broker_id", "address", "epoch", "role", "max_offset", "heartbeat_ms", "topics", "node_id", "auto_create_topics", "member_address")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    BROKER_NAME_FIELD_NUMBER: _ClassVar[int]
    BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MAX_OFFSET_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_MS_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    AUTO_CREATE_TOPICS_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    broker_name: str
    broker_id: int
    address: str
    epoch: int
    role: str
    max_offset: int
    heartbeat_ms: int
    topics: _containers.RepeatedCompositeFieldContainer[TopicConfig]
    node_id: int
    auto_create_topics: bool
    member_address: str
    def __init__(self, cluster: _Optional[str] = ..., broker_name: _Optional[str] = ..., broker_id: _Optional[int] = ..., address: _Optional[str] = ..., epoch: _Optional[int] = ..., role: _Optional[str] = ..., max_offset: _Optional[int] = ..., heartbeat_ms: _Optional[int] = ..., topics: _Optional[_Iterable[_Union[TopicConfig, _Mapping]]] = ..., node_id: _Optional[int] = ..., auto_create_topics: _Optional[bool] = ..., member_address: _Optional[str] = ...) -> None: ...

class RegisterBrokerRequest(_message.Message):
    __slots__ = ("broker",)
    BROKER_FIELD_NUMBER: _ClassVar[int]
    broker: BrokerRegistration
    def __init__(self, broker: _Optional[_Union[BrokerRegistration, _Mapping]] = ...) -> None: ...

class RegisterBrokerResponse(_message.Message):
    __slots__ = ("group_epoch",)
    GROUP_EPOCH_FIELD_NUMBER: _ClassVar[int]
    group_epoch: int
    def __init__(self, group_epoch: _Optional[int] = ...) -> None: ...

class UnregisterBrokerRequest(_message.Message):
    __slots__ = ("broker_name", "broker_id", "address")
    BROKER_NAME_FIELD_NUMBER: _ClassVar[int]
    BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    broker_name: str
    broker_id: int
    address: str
    def __init__(self, broker_name: _Optional[str] = ..., broker_id: _Optional[int] = ..., address: _Optional[str] = ...) -> None: ...

class UnregisterBrokerResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetRouteRequest(_message.Message):
    __slots__ = ("topic",)
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    topic: str
    def __init__(self, topic: _Optional[str] = ...) -> None: ...

class BrokerRoute(_message.Message):
    __slots__ = ("broker_id", "address", "role", "epoch", "alive", "max_offset")
    BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    MAX_OFFSET_FIELD_NUMBER: _ClassVar[int]
    broker_id: int
    address: str
    role: str
    epoch: int
    alive: bool
    max_offset: int
    def __init__(self, broker_id: _Optional[int] = ..., address: _Optional[str] = ..., role: _Optional[str] = ..., epoch: _Optional[int] = ..., alive: _Optional[bool] = ..., max_offset: _Optional[int] = ...) -> None: ...

class GroupRoute(_message.Message):
    __slots__ = ("broker_name", "cluster", "read_queues", "write_queues", "perm", "brokers", "auto_create_topics")
    BROKER_NAME_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    READ_QUEUES_FIELD_NUMBER: _ClassVar[int]
    WRITE_QUEUES_FIELD_NUMBER: _ClassVar[int]
    PERM_FIELD_NUMBER: _ClassVar[int]
    BROKERS_FIELD_NUMBER: _ClassVar[int]
    AUTO_CREATE_TOPICS_FIELD_NUMBER: _ClassVar[int]
    broker_name: str
    cluster: str
    read_queues: int
    write_queues: int
    perm: str
    brokers: _containers.RepeatedCompositeFieldContainer[BrokerRoute]
    auto_create_topics: bool
    def __init__(self, broker_name: _Optional[str] = ..., cluster: _Optional[str] = ..., read_queues: _Optional[int] = ..., write_queues: _Optional[int] = ..., perm: _Optional[str] = ..., brokers: _Optional[_Iterable[_Union[BrokerRoute, _Mapping]]] = ..., auto_create_topics: _Optional[bool] = ...) -> None: ...

class GetRouteResponse(_message.Message):
    __slots__ = ("topic", "groups")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    groups: _containers.RepeatedCompositeFieldContainer[GroupRoute]
    def __init__(self, topic: _Optional[str] = ..., groups: _Optional[_Iterable[_Union[GroupRoute, _Mapping]]] = ...) -> None: ...

class ListClustersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClusterInfo(_message.Message):
    __slots__ = ("name", "groups")
    NAME_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    name: str
    groups: _containers.RepeatedCompositeFieldContainer[GroupRoute]
    def __init__(self, name: _Optional[str] = ..., groups: _Optional[_Iterable[_Union[GroupRoute, _Mapping]]] = ...) -> None: ...

class ListClustersResponse(_message.Message):
    __slots__ = ("clusters",)
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    clusters: _containers.RepeatedCompositeFieldContainer[ClusterInfo]
    def __init__(self, clusters: _Optional[_Iterable[_Union[ClusterInfo, _Mapping]]] = ...) -> None: ...
