from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Lineage(_message.Message):
    __slots__ = ("parent", "method", "parameters", "job")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PARENT_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    parent: str
    method: str
    parameters: _containers.ScalarMap[str, str]
    job: str
    def __init__(self, parent: _Optional[str] = ..., method: _Optional[str] = ..., parameters: _Optional[_Mapping[str, str]] = ..., job: _Optional[str] = ...) -> None: ...

class DeriveSpec(_message.Message):
    __slots__ = ("prune", "prune_pattern", "dtype", "quantize", "compile")
    PRUNE_FIELD_NUMBER: _ClassVar[int]
    PRUNE_PATTERN_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    QUANTIZE_FIELD_NUMBER: _ClassVar[int]
    COMPILE_FIELD_NUMBER: _ClassVar[int]
    prune: float
    prune_pattern: str
    dtype: str
    quantize: str
    compile: str
    def __init__(self, prune: _Optional[float] = ..., prune_pattern: _Optional[str] = ..., dtype: _Optional[str] = ..., quantize: _Optional[str] = ..., compile: _Optional[str] = ...) -> None: ...

class DeriveRequest(_message.Message):
    __slots__ = ("source", "spec", "eval_data", "eval_format", "metric", "max_accuracy_drop", "relative_drop", "aliases", "force", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    EVAL_DATA_FIELD_NUMBER: _ClassVar[int]
    EVAL_FORMAT_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    MAX_ACCURACY_DROP_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_DROP_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    source: str
    spec: DeriveSpec
    eval_data: bytes
    eval_format: str
    metric: str
    max_accuracy_drop: float
    relative_drop: bool
    aliases: _containers.RepeatedScalarFieldContainer[str]
    force: bool
    labels: _containers.ScalarMap[str, str]
    def __init__(self, source: _Optional[str] = ..., spec: _Optional[_Union[DeriveSpec, _Mapping]] = ..., eval_data: _Optional[bytes] = ..., eval_format: _Optional[str] = ..., metric: _Optional[str] = ..., max_accuracy_drop: _Optional[float] = ..., relative_drop: bool = ..., aliases: _Optional[_Iterable[str]] = ..., force: bool = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DeriveJob(_message.Message):
    __slots__ = ("id", "state", "model", "parent", "spec", "metric", "max_accuracy_drop", "relative_drop", "aliases", "force", "stage", "progress", "message", "child_version", "verdict", "metrics", "executor", "created_at", "updated_at", "eval_format")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[DeriveJob.State]
        QUEUED: _ClassVar[DeriveJob.State]
        RUNNING: _ClassVar[DeriveJob.State]
        SUCCEEDED: _ClassVar[DeriveJob.State]
        FAILED: _ClassVar[DeriveJob.State]
    STATE_UNSPECIFIED: DeriveJob.State
    QUEUED: DeriveJob.State
    RUNNING: DeriveJob.State
    SUCCEEDED: DeriveJob.State
    FAILED: DeriveJob.State
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    MAX_ACCURACY_DROP_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_DROP_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CHILD_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    EXECUTOR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    EVAL_FORMAT_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: DeriveJob.State
    model: str
    parent: str
    spec: DeriveSpec
    metric: str
    max_accuracy_drop: float
    relative_drop: bool
    aliases: _containers.RepeatedScalarFieldContainer[str]
    force: bool
    stage: str
    progress: float
    message: str
    child_version: int
    verdict: str
    metrics: _containers.ScalarMap[str, float]
    executor: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    eval_format: str
    def __init__(self, id: _Optional[str] = ..., state: _Optional[_Union[DeriveJob.State, str]] = ..., model: _Optional[str] = ..., parent: _Optional[str] = ..., spec: _Optional[_Union[DeriveSpec, _Mapping]] = ..., metric: _Optional[str] = ..., max_accuracy_drop: _Optional[float] = ..., relative_drop: bool = ..., aliases: _Optional[_Iterable[str]] = ..., force: bool = ..., stage: _Optional[str] = ..., progress: _Optional[float] = ..., message: _Optional[str] = ..., child_version: _Optional[int] = ..., verdict: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., executor: _Optional[str] = ..., created_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., eval_format: _Optional[str] = ...) -> None: ...

class GetDeriveJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListDeriveJobsRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ListDeriveJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[DeriveJob]
    def __init__(self, jobs: _Optional[_Iterable[_Union[DeriveJob, _Mapping]]] = ...) -> None: ...

class DeriveWorkRequest(_message.Message):
    __slots__ = ("id", "token")
    ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    id: str
    token: str
    def __init__(self, id: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class DeriveWork(_message.Message):
    __slots__ = ("job", "eval_data")
    JOB_FIELD_NUMBER: _ClassVar[int]
    EVAL_DATA_FIELD_NUMBER: _ClassVar[int]
    job: DeriveJob
    eval_data: bytes
    def __init__(self, job: _Optional[_Union[DeriveJob, _Mapping]] = ..., eval_data: _Optional[bytes] = ...) -> None: ...

class DeriveProgress(_message.Message):
    __slots__ = ("id", "token", "stage", "progress", "message", "failed")
    ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    id: str
    token: str
    stage: str
    progress: float
    message: str
    failed: bool
    def __init__(self, id: _Optional[str] = ..., token: _Optional[str] = ..., stage: _Optional[str] = ..., progress: _Optional[float] = ..., message: _Optional[str] = ..., failed: bool = ...) -> None: ...
