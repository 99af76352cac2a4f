from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SendStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEND_STATUS_UNSPECIFIED: _ClassVar[SendStatus]
    SEND_OK: _ClassVar[SendStatus]
    FLUSH_DISK_TIMEOUT: _ClassVar[SendStatus]
    SLAVE_TIMEOUT: _ClassVar[SendStatus]
    SLAVE_NOT_AVAILABLE: _ClassVar[SendStatus]
    NOT_MASTER: _ClassVar[SendStatus]
    MASTER_LEASE_EXPIRED: _ClassVar[SendStatus]

class PullStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PULL_STATUS_UNSPECIFIED: _ClassVar[PullStatus]
    FOUND: _ClassVar[PullStatus]
    NO_NEW_MSG: _ClassVar[PullStatus]
    NO_MATCHED_MSG: _ClassVar[PullStatus]
    OFFSET_TOO_SMALL: _ClassVar[PullStatus]
    OFFSET_OVERFLOW: _ClassVar[PullStatus]
    RETRY_ELSEWHERE: _ClassVar[PullStatus]

class TransactionResolution(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSACTION_RESOLUTION_UNSPECIFIED: _ClassVar[TransactionResolution]
    COMMIT: _ClassVar[TransactionResolution]
    ROLLBACK: _ClassVar[TransactionResolution]

class ResetTarget(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESET_TARGET_UNSPECIFIED: _ClassVar[ResetTarget]
    RESET_EARLIEST: _ClassVar[ResetTarget]
    RESET_LATEST: _ClassVar[ResetTarget]
    RESET_OFFSET: _ClassVar[ResetTarget]
    RESET_TIME: _ClassVar[ResetTarget]
SEND_STATUS_UNSPECIFIED: SendStatus
SEND_OK: SendStatus
FLUSH_DISK_TIMEOUT: SendStatus
SLAVE_TIMEOUT: SendStatus
SLAVE_NOT_AVAILABLE: SendStatus
NOT_MASTER: SendStatus
MASTER_LEASE_EXPIRED: SendStatus
PULL_STATUS_UNSPECIFIED: PullStatus
FOUND: PullStatus
NO_NEW_MSG: PullStatus
NO_MATCHED_MSG: PullStatus
OFFSET_TOO_SMALL: PullStatus
OFFSET_OVERFLOW: PullStatus
RETRY_ELSEWHERE: PullStatus
TRANSACTION_RESOLUTION_UNSPECIFIED: TransactionResolution
COMMIT: TransactionResolution
ROLLBACK: TransactionResolution
RESET_TARGET_UNSPECIFIED: ResetTarget
RESET_EARLIEST: ResetTarget
RESET_LATEST: ResetTarget
RESET_OFFSET: ResetTarget
RESET_TIME: ResetTarget

class PopRequest(_message.Message):
    __slots__ = ("group", "topic", "queue_id", "max_messages", "invisible_ms", "max_wait_ms", "tag_expression", "bodies_elsewhere")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    INVISIBLE_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    TAG_EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    BODIES_ELSEWHERE_FIELD_NUMBER: _ClassVar[int]
    group: str
    topic: str
    queue_id: int
    max_messages: int
    invisible_ms: int
    max_wait_ms: int
    tag_expression: str
    bodies_elsewhere: bool
    def __init__(self, group: _Optional[str] = ..., topic: _Optional[str] = ..., queue_id: _Optional[int] = ..., max_messages: _Optional[int] = ..., invisible_ms: _Optional[int] = ..., max_wait_ms: _Optional[int] = ..., tag_expression: _Optional[str] = ..., bodies_elsewhere: _Optional[bool] = ...) -> None: ...

class PoppedRecord(_message.Message):
    __slots__ = ("record", "attempt", "receipt_handle", "deadline_ms", "queue_id", "queue_offset", "size", "read_from", "physical_offset")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    READ_FROM_FIELD_NUMBER: _ClassVar[int]
    PHYSICAL_OFFSET_FIELD_NUMBER: _ClassVar[int]
    record: bytes
    attempt: int
    receipt_handle: str
    deadline_ms: int
    queue_id: int
    queue_offset: int
    size: int
    read_from: int
    physical_offset: int
    def __init__(self, record: _Optional[bytes] = ..., attempt: _Optional[int] = ..., receipt_handle: _Optional[str] = ..., deadline_ms: _Optional[int] = ..., queue_id: _Optional[int] = ..., queue_offset: _Optional[int] = ..., size: _Optional[int] = ..., read_from: _Optional[int] = ..., physical_offset: _Optional[int] = ...) -> None: ...

class PopResponse(_message.Message):
    __slots__ = ("messages", "served_by", "suggested_broker_id", "suggestion_reason", "held")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    SUGGESTED_BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    SUGGESTION_REASON_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[PoppedRecord]
    served_by: int
    suggested_broker_id: int
    suggestion_reason: str
    held: bool
    def __init__(self, messages: _Optional[_Iterable[_Union[PoppedRecord, _Mapping]]] = ..., served_by: _Optional[int] = ..., suggested_broker_id: _Optional[int] = ..., suggestion_reason: _Optional[str] = ..., held: _Optional[bool] = ...) -> None: ...

class AckPopRequest(_message.Message):
    __slots__ = ("group", "topic", "receipt_handles")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_HANDLES_FIELD_NUMBER: _ClassVar[int]
    group: str
    topic: str
    receipt_handles: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, group: _Optional[str] = ..., topic: _Optional[str] = ..., receipt_handles: _Optional[_Iterable[str]] = ...) -> None: ...

class AckPopResult(_message.Message):
    __slots__ = ("receipt_handle", "error_code", "detail")
    RECEIPT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    receipt_handle: str
    error_code: str
    detail: str
    def __init__(self, receipt_handle: _Optional[str] = ..., error_code: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class AckPopResponse(_message.Message):
    __slots__ = ("results", "served_by")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AckPopResult]
    served_by: int
    def __init__(self, results: _Optional[_Iterable[_Union[AckPopResult, _Mapping]]] = ..., served_by: _Optional[int] = ...) -> None: ...

class ChangeInvisibleRequest(_message.Message):
    __slots__ = ("group", "topic", "receipt_handle", "invisible_ms", "keep_handle")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    INVISIBLE_MS_FIELD_NUMBER: _ClassVar[int]
    KEEP_HANDLE_FIELD_NUMBER: _ClassVar[int]
    group: str
    topic: str
    receipt_handle: str
    invisible_ms: int
    keep_handle: bool
    def __init__(self, group: _Optional[str] = ..., topic: _Optional[str] = ..., receipt_handle: _Optional[str] = ..., invisible_ms: _Optional[int] = ..., keep_handle: _Optional[bool] = ...) -> None: ...

class ChangeInvisibleResponse(_message.Message):
    __slots__ = ("receipt_handle", "deadline_ms", "served_by")
    RECEIPT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    receipt_handle: str
    deadline_ms: int
    served_by: int
    def __init__(self, receipt_handle: _Optional[str] = ..., deadline_ms: _Optional[int] = ..., served_by: _Optional[int] = ...) -> None: ...

class PopDeadLetterRequest(_message.Message):
    __slots__ = ("group", "topic", "receipt_handle")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    group: str
    topic: str
    receipt_handle: str
    def __init__(self, group: _Optional[str] = ..., topic: _Optional[str] = ..., receipt_handle: _Optional[str] = ...) -> None: ...

class PopDeadLetterResponse(_message.Message):
    __slots__ = ("served_by",)
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    served_by: int
    def __init__(self, served_by: _Optional[int] = ...) -> None: ...

class LockQueuesRequest(_message.Message):
    __slots__ = ("group", "topic", "client_id", "queue_ids", "lease_ms")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_IDS_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    group: str
    topic: str
    client_id: str
    queue_ids: _containers.RepeatedScalarFieldContainer[int]
    lease_ms: int
    def __init__(self, group: _Optional[str] = ..., topic: _Optional[str] = ..., client_id: _Optional[str] = ..., queue_ids: _Optional[_Iterable[int]] = ..., lease_ms: _Optional[int] = ...) -> None: ...

class LockQueuesResponse(_message.Message):
    __slots__ = ("locked",)
    LOCKED_FIELD_NUMBER: _ClassVar[int]
    locked: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, locked: _Optional[_Iterable[int]] = ...) -> None: ...

class SendBackRequest(_message.Message):
    __slots__ = ("group", "topic", "message", "max_reconsume")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MAX_RECONSUME_FIELD_NUMBER: _ClassVar[int]
    group: str
    topic: str
    message: Message
    max_reconsume: int
    def __init__(self, group: _Optional[str] = ..., topic: _Optional[str] = ..., message: _Optional[_Union[Message, _Mapping]] = ..., max_reconsume: _Optional[int] = ...) -> None: ...

class SendBackResponse(_message.Message):
    __slots__ = ("destination", "attempts", "deliver_at_ms")
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    DELIVER_AT_MS_FIELD_NUMBER: _ClassVar[int]
    destination: str
    attempts: int
    deliver_at_ms: int
    def __init__(self, destination: _Optional[str] = ..., attempts: _Optional[int] = ..., deliver_at_ms: _Optional[int] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("body", "tags", "keys", "properties", "born_ms", "flags", "deliver_at_ms")
    class PropertiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    BODY_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    BORN_MS_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    DELIVER_AT_MS_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    tags: str
    keys: str
    properties: _containers.ScalarMap[str, str]
    born_ms: int
    flags: int
    deliver_at_ms: int
    def __init__(self, body: _Optional[bytes] = ..., tags: _Optional[str] = ..., keys: _Optional[str] = ..., properties: _Optional[_Mapping[str, str]] = ..., born_ms: _Optional[int] = ..., flags: _Optional[int] = ..., deliver_at_ms: _Optional[int] = ...) -> None: ...

class SendRequest(_message.Message):
    __slots__ = ("topic", "queue_id", "message")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    topic: str
    queue_id: int
    message: Message
    def __init__(self, topic: _Optional[str] = ..., queue_id: _Optional[int] = ..., message: _Optional[_Union[Message, _Mapping]] = ...) -> None: ...

class SendBatchRequest(_message.Message):
    __slots__ = ("topic", "queue_id", "messages")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    topic: str
    queue_id: int
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    def __init__(self, topic: _Optional[str] = ..., queue_id: _Optional[int] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ...) -> None: ...

class SendResponse(_message.Message):
    __slots__ = ("status", "topic", "queue_id", "served_by", "master_address", "detail", "broker_name", "queue_offsets", "physical_offsets", "epoch", "transaction_ids")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    MASTER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    BROKER_NAME_FIELD_NUMBER: _ClassVar[int]
    QUEUE_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    PHYSICAL_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_IDS_FIELD_NUMBER: _ClassVar[int]
    status: SendStatus
    topic: str
    queue_id: int
    served_by: int
    master_address: str
    detail: str
    broker_name: str
    queue_offsets: _containers.RepeatedScalarFieldContainer[int]
    physical_offsets: _containers.RepeatedScalarFieldContainer[int]
    epoch: int
    transaction_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, status: _Optional[_Union[SendStatus, str]] = ..., topic: _Optional[str] = ..., queue_id: _Optional[int] = ..., served_by: _Optional[int] = ..., master_address: _Optional[str] = ..., detail: _Optional[str] = ..., broker_name: _Optional[str] = ..., queue_offsets: _Optional[_Iterable[int]] = ..., physical_offsets: _Optional[_Iterable[int]] = ..., epoch: _Optional[int] = ..., transaction_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("group", "topic", "queue_id", "queue_offset", "max_messages", "max_bytes", "max_wait_ms", "subscription")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    group: str
    topic: str
    queue_id: int
    queue_offset: int
    max_messages: int
    max_bytes: int
    max_wait_ms: int
    subscription: str
    def __init__(self, group: _Optional[str] = ..., topic: _Optional[str] = ..., queue_id: _Optional[int] = ..., queue_offset: _Optional[int] = ..., max_messages: _Optional[int] = ..., max_bytes: _Optional[int] = ..., max_wait_ms: _Optional[int] = ..., subscription: _Optional[str] = ...) -> None: ...

class PullResponse(_message.Message):
    __slots__ = ("status", "records", "count", "next_queue_offset", "min_offset", "max_offset", "served_by", "suggested_broker_id", "suggestion_reason", "held")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    NEXT_QUEUE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    MIN_OFFSET_FIELD_NUMBER: _ClassVar[int]
    MAX_OFFSET_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    SUGGESTED_BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    SUGGESTION_REASON_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    status: PullStatus
    records: bytes
    count: int
    next_queue_offset: int
    min_offset: int
    max_offset: int
    served_by: int
    suggested_broker_id: int
    suggestion_reason: str
    held: bool
    def __init__(self, status: _Optional[_Union[PullStatus, str]] = ..., records: _Optional[bytes] = ..., count: _Optional[int] = ..., next_queue_offset: _Optional[int] = ..., min_offset: _Optional[int] = ..., max_offset: _Optional[int] = ..., served_by: _Optional[int] = ..., suggested_broker_id: _Optional[int] = ..., suggestion_reason: _Optional[str] = ..., held: _Optional[bool] = ...) -> None: ...

class CommitOffsetRequest(_message.Message):
    __slots__ = ("group", "topic", "queue_id", "offset")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    group: str
    topic: str
    queue_id: int
    offset: int
    def __init__(self, group: _Optional[str] = ..., topic: _Optional[str] = ..., queue_id: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class CommitOffsetResponse(_message.Message):
    __slots__ = ("served_by",)
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    served_by: int
    def __init__(self, served_by: _Optional[int] = ...) -> None: ...

class QueryOffsetRequest(_message.Message):
    __slots__ = ("group", "topic", "queue_id")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    group: str
    topic: str
    queue_id: int
    def __init__(self, group: _Optional[str] = ..., topic: _Optional[str] = ..., queue_id: _Optional[int] = ...) -> None: ...

class QueryOffsetResponse(_message.Message):
    __slots__ = ("found", "offset", "served_by")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    found: bool
    offset: int
    served_by: int
    def __init__(self, found: _Optional[bool] = ..., offset: _Optional[int] = ..., served_by: _Optional[int] = ...) -> None: ...

class GetQueueOffsetsRequest(_message.Message):
    __slots__ = ("topic",)
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    topic: str
    def __init__(self, topic: _Optional[str] = ...) -> None: ...

class QueueOffsets(_message.Message):
    __slots__ = ("queue_id", "min_offset", "max_offset")
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_OFFSET_FIELD_NUMBER: _ClassVar[int]
    MAX_OFFSET_FIELD_NUMBER: _ClassVar[int]
    queue_id: int
    min_offset: int
    max_offset: int
    def __init__(self, queue_id: _Optional[int] = ..., min_offset: _Optional[int] = ..., max_offset: _Optional[int] = ...) -> None: ...

class GetQueueOffsetsResponse(_message.Message):
    __slots__ = ("queues", "served_by")
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    queues: _containers.RepeatedCompositeFieldContainer[QueueOffsets]
    served_by: int
    def __init__(self, queues: _Optional[_Iterable[_Union[QueueOffsets, _Mapping]]] = ..., served_by: _Optional[int] = ...) -> None: ...

class CreateTopicRequest(_message.Message):
    __slots__ = ("topic", "queues")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    topic: str
    queues: int
    def __init__(self, topic: _Optional[str] = ..., queues: _Optional[int] = ...) -> None: ...

class CreateTopicResponse(_message.Message):
    __slots__ = ("created", "queues")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    created: bool
    queues: int
    def __init__(self, created: _Optional[bool] = ..., queues: _Optional[int] = ...) -> None: ...

class ListTopicsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TopicInfo(_message.Message):
    __slots__ = ("name", "queues")
    NAME_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    queues: int
    def __init__(self, name: _Optional[str] = ..., queues: _Optional[int] = ...) -> None: ...

class ListTopicsResponse(_message.Message):
    __slots__ = ("topics",)
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    topics: _containers.RepeatedCompositeFieldContainer[TopicInfo]
    def __init__(self, topics: _Optional[_Iterable[_Union[TopicInfo, _Mapping]]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("broker_name", "broker_id", "role", "address", "min_offset", "max_offset", "flushed_offset", "uptime_ms", "details_json")
    BROKER_NAME_FIELD_NUMBER: _ClassVar[int]
    BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MIN_OFFSET_FIELD_NUMBER: _ClassVar[int]
    MAX_OFFSET_FIELD_NUMBER: _ClassVar[int]
    FLUSHED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    UPTIME_MS_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    broker_name: str
    broker_id: int
    role: str
    address: str
    min_offset: int
    max_offset: int
    flushed_offset: int
    uptime_ms: int
    details_json: str
    def __init__(self, broker_name: _Optional[str] = ..., broker_id: _Optional[int] = ..., role: _Optional[str] = ..., address: _Optional[str] = ..., min_offset: _Optional[int] = ..., max_offset: _Optional[int] = ..., flushed_offset: _Optional[int] = ..., uptime_ms: _Optional[int] = ..., details_json: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("group", "client_id", "topic", "heartbeat_ms")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_MS_FIELD_NUMBER: _ClassVar[int]
    group: str
    client_id: str
    topic: str
    heartbeat_ms: int
    def __init__(self, group: _Optional[str] = ..., client_id: _Optional[str] = ..., topic: _Optional[str] = ..., heartbeat_ms: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("members", "served_by")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedScalarFieldContainer[str]
    served_by: int
    def __init__(self, members: _Optional[_Iterable[str]] = ..., served_by: _Optional[int] = ...) -> None: ...

class UnregisterRequest(_message.Message):
    __slots__ = ("group", "client_id", "topic")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    group: str
    client_id: str
    topic: str
    def __init__(self, group: _Optional[str] = ..., client_id: _Optional[str] = ..., topic: _Optional[str] = ...) -> None: ...

class UnregisterResponse(_message.Message):
    __slots__ = ("members",)
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, members: _Optional[_Iterable[str]] = ...) -> None: ...

class EndTransactionRequest(_message.Message):
    __slots__ = ("topic", "transaction_id", "resolution", "from_check", "producer_group")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    FROM_CHECK_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_GROUP_FIELD_NUMBER: _ClassVar[int]
    topic: str
    transaction_id: str
    resolution: TransactionResolution
    from_check: bool
    producer_group: str
    def __init__(self, topic: _Optional[str] = ..., transaction_id: _Optional[str] = ..., resolution: _Optional[_Union[TransactionResolution, str]] = ..., from_check: _Optional[bool] = ..., producer_group: _Optional[str] = ...) -> None: ...

class EndTransactionResponse(_message.Message):
    __slots__ = ("outcome", "repeated", "served_by")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REPEATED_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    outcome: str
    repeated: bool
    served_by: int
    def __init__(self, outcome: _Optional[str] = ..., repeated: _Optional[bool] = ..., served_by: _Optional[int] = ...) -> None: ...

class PollOrphanTransactionsRequest(_message.Message):
    __slots__ = ("max_count", "max_wait_ms", "topics", "producer_groups", "max_bytes", "delivered", "returned")
    MAX_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_GROUPS_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    RETURNED_FIELD_NUMBER: _ClassVar[int]
    max_count: int
    max_wait_ms: int
    topics: _containers.RepeatedScalarFieldContainer[str]
    producer_groups: _containers.RepeatedScalarFieldContainer[str]
    max_bytes: int
    delivered: _containers.RepeatedScalarFieldContainer[str]
    returned: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, max_count: _Optional[int] = ..., max_wait_ms: _Optional[int] = ..., topics: _Optional[_Iterable[str]] = ..., producer_groups: _Optional[_Iterable[str]] = ..., max_bytes: _Optional[int] = ..., delivered: _Optional[_Iterable[str]] = ..., returned: _Optional[_Iterable[str]] = ...) -> None: ...

class OrphanTransaction(_message.Message):
    __slots__ = ("transaction_id", "topic", "queue_id", "message", "producer_group", "checks", "message_id", "store_ms")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_GROUP_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    STORE_MS_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    topic: str
    queue_id: int
    message: Message
    producer_group: str
    checks: int
    message_id: str
    store_ms: int
    def __init__(self, transaction_id: _Optional[str] = ..., topic: _Optional[str] = ..., queue_id: _Optional[int] = ..., message: _Optional[_Union[Message, _Mapping]] = ..., producer_group: _Optional[str] = ..., checks: _Optional[int] = ..., message_id: _Optional[str] = ..., store_ms: _Optional[int] = ...) -> None: ...

class PollOrphanTransactionsResponse(_message.Message):
    __slots__ = ("orphans", "served_by")
    ORPHANS_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    orphans: _containers.RepeatedCompositeFieldContainer[OrphanTransaction]
    served_by: int
    def __init__(self, orphans: _Optional[_Iterable[_Union[OrphanTransaction, _Mapping]]] = ..., served_by: _Optional[int] = ...) -> None: ...

class DescribeGroupsRequest(_message.Message):
    __slots__ = ("group", "topic")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    group: str
    topic: str
    def __init__(self, group: _Optional[str] = ..., topic: _Optional[str] = ...) -> None: ...

class GroupQueue(_message.Message):
    __slots__ = ("group", "topic", "queue_id", "min_offset", "max_offset", "committed", "committed_offset", "lag_bytes", "lag_bytes_estimated", "backlog_bytes", "members", "lock_holder", "last_pull_ms", "suggested_broker_id", "suggestion_reason", "pop_inflight", "sent_away")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_OFFSET_FIELD_NUMBER: _ClassVar[int]
    MAX_OFFSET_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LAG_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAG_BYTES_ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    LOCK_HOLDER_FIELD_NUMBER: _ClassVar[int]
    LAST_PULL_MS_FIELD_NUMBER: _ClassVar[int]
    SUGGESTED_BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    SUGGESTION_REASON_FIELD_NUMBER: _ClassVar[int]
    POP_INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    SENT_AWAY_FIELD_NUMBER: _ClassVar[int]
    group: str
    topic: str
    queue_id: int
    min_offset: int
    max_offset: int
    committed: bool
    committed_offset: int
    lag_bytes: int
    lag_bytes_estimated: bool
    backlog_bytes: int
    members: _containers.RepeatedScalarFieldContainer[str]
    lock_holder: str
    last_pull_ms: int
    suggested_broker_id: int
    suggestion_reason: str
    pop_inflight: int
    sent_away: bool
    def __init__(self, group: _Optional[str] = ..., topic: _Optional[str] = ..., queue_id: _Optional[int] = ..., min_offset: _Optional[int] = ..., max_offset: _Optional[int] = ..., committed: _Optional[bool] = ..., committed_offset: _Optional[int] = ..., lag_bytes: _Optional[int] = ..., lag_bytes_estimated: _Optional[bool] = ..., backlog_bytes: _Optional[int] = ..., members: _Optional[_Iterable[str]] = ..., lock_holder: _Optional[str] = ..., last_pull_ms: _Optional[int] = ..., suggested_broker_id: _Optional[int] = ..., suggestion_reason: _Optional[str] = ..., pop_inflight: _Optional[int] = ..., sent_away: _Optional[bool] = ...) -> None: ...

class DescribeGroupsResponse(_message.Message):
    __slots__ = ("queues", "broker_name", "served_by", "role", "now_ms")
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    BROKER_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    NOW_MS_FIELD_NUMBER: _ClassVar[int]
    queues: _containers.RepeatedCompositeFieldContainer[GroupQueue]
    broker_name: str
    served_by: int
    role: str
    now_ms: int
    def __init__(self, queues: _Optional[_Iterable[_Union[GroupQueue, _Mapping]]] = ..., broker_name: _Optional[str] = ..., served_by: _Optional[int] = ..., role: _Optional[str] = ..., now_ms: _Optional[int] = ...) -> None: ...

class ResetOffsetRequest(_message.Message):
    __slots__ = ("group", "topic", "target", "offset", "timestamp_ms", "dry_run", "force")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    group: str
    topic: str
    target: ResetTarget
    offset: int
    timestamp_ms: int
    dry_run: bool
    force: bool
    def __init__(self, group: _Optional[str] = ..., topic: _Optional[str] = ..., target: _Optional[_Union[ResetTarget, str]] = ..., offset: _Optional[int] = ..., timestamp_ms: _Optional[int] = ..., dry_run: _Optional[bool] = ..., force: _Optional[bool] = ...) -> None: ...

class ResetQueue(_message.Message):
    __slots__ = ("queue_id", "committed", "old_offset", "new_offset", "min_offset", "max_offset", "popped", "pop_cursor", "pop_inflight")
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    OLD_OFFSET_FIELD_NUMBER: _ClassVar[int]
    NEW_OFFSET_FIELD_NUMBER: _ClassVar[int]
    MIN_OFFSET_FIELD_NUMBER: _ClassVar[int]
    MAX_OFFSET_FIELD_NUMBER: _ClassVar[int]
    POPPED_FIELD_NUMBER: _ClassVar[int]
    POP_CURSOR_FIELD_NUMBER: _ClassVar[int]
    POP_INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    queue_id: int
    committed: bool
    old_offset: int
    new_offset: int
    min_offset: int
    max_offset: int
    popped: bool
    pop_cursor: int
    pop_inflight: int
    def __init__(self, queue_id: _Optional[int] = ..., committed: _Optional[bool] = ..., old_offset: _Optional[int] = ..., new_offset: _Optional[int] = ..., min_offset: _Optional[int] = ..., max_offset: _Optional[int] = ..., popped: _Optional[bool] = ..., pop_cursor: _Optional[int] = ..., pop_inflight: _Optional[int] = ...) -> None: ...

class ResetOffsetResponse(_message.Message):
    __slots__ = ("queues", "applied", "members", "broker_name", "served_by", "last_pop_ms")
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    BROKER_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    LAST_POP_MS_FIELD_NUMBER: _ClassVar[int]
    queues: _containers.RepeatedCompositeFieldContainer[ResetQueue]
    applied: bool
    members: _containers.RepeatedScalarFieldContainer[str]
    broker_name: str
    served_by: int
    last_pop_ms: int
    def __init__(self, queues: _Optional[_Iterable[_Union[ResetQueue, _Mapping]]] = ..., applied: _Optional[bool] = ..., members: _Optional[_Iterable[str]] = ..., broker_name: _Optional[str] = ..., served_by: _Optional[int] = ..., last_pop_ms: _Optional[int] = ...) -> None: ...

class GetMessageRequest(_message.Message):
    __slots__ = ("physical_offset",)
    PHYSICAL_OFFSET_FIELD_NUMBER: _ClassVar[int]
    physical_offset: int
    def __init__(self, physical_offset: _Optional[int] = ...) -> None: ...

class GetMessageResponse(_message.Message):
    __slots__ = ("record", "broker_name", "served_by")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    BROKER_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    record: bytes
    broker_name: str
    served_by: int
    def __init__(self, record: _Optional[bytes] = ..., broker_name: _Optional[str] = ..., served_by: _Optional[int] = ...) -> None: ...

class FindMessagesRequest(_message.Message):
    __slots__ = ("topic", "key", "max_scan", "max_messages")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_SCAN_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    topic: str
    key: str
    max_scan: int
    max_messages: int
    def __init__(self, topic: _Optional[str] = ..., key: _Optional[str] = ..., max_scan: _Optional[int] = ..., max_messages: _Optional[int] = ...) -> None: ...

class FindMessagesResponse(_message.Message):
    __slots__ = ("records", "scanned", "complete", "broker_name", "served_by")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    SCANNED_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    BROKER_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedScalarFieldContainer[bytes]
    scanned: int
    complete: bool
    broker_name: str
    served_by: int
    def __init__(self, records: _Optional[_Iterable[bytes]] = ..., scanned: _Optional[int] = ..., complete: _Optional[bool] = ..., broker_name: _Optional[str] = ..., served_by: _Optional[int] = ...) -> None: ...

class DeleteTopicRequest(_message.Message):
    __slots__ = ("topic", "dry_run", "force")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    topic: str
    dry_run: bool
    force: bool
    def __init__(self, topic: _Optional[str] = ..., dry_run: _Optional[bool] = ..., force: _Optional[bool] = ...) -> None: ...

class DeletedOffset(_message.Message):
    __slots__ = ("group", "queue_id", "offset")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    group: str
    queue_id: int
    offset: int
    def __init__(self, group: _Optional[str] = ..., queue_id: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class DeleteTopicResponse(_message.Message):
    __slots__ = ("queues", "messages", "offsets", "groups", "pop_inflight", "deleted", "broker_name", "served_by")
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    POP_INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    BROKER_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    queues: _containers.RepeatedCompositeFieldContainer[QueueOffsets]
    messages: int
    offsets: _containers.RepeatedCompositeFieldContainer[DeletedOffset]
    groups: _containers.RepeatedScalarFieldContainer[str]
    pop_inflight: int
    deleted: bool
    broker_name: str
    served_by: int
    def __init__(self, queues: _Optional[_Iterable[_Union[QueueOffsets, _Mapping]]] = ..., messages: _Optional[int] = ..., offsets: _Optional[_Iterable[_Union[DeletedOffset, _Mapping]]] = ..., groups: _Optional[_Iterable[str]] = ..., pop_inflight: _Optional[int] = ..., deleted: _Optional[bool] = ..., broker_name: _Optional[str] = ..., served_by: _Optional[int] = ...) -> None: ...
