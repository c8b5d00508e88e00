from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WatchPoolRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PoolModel(_message.Message):
    __slots__ = ("name", "state", "size_bytes", "in_flight")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    size_bytes: int
    in_flight: int
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., size_bytes: _Optional[int] = ..., in_flight: _Optional[int] = ...) -> None: ...

class PoolState(_message.Message):
    __slots__ = ("budget_bytes", "used_bytes", "models", "hits", "loads", "evictions", "load_failures", "load_seconds")
    BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    LOADS_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FAILURES_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    budget_bytes: int
    used_bytes: int
    models: _containers.RepeatedCompositeFieldContainer[PoolModel]
    hits: int
    loads: int
    evictions: int
    load_failures: int
    load_seconds: float
    def __init__(self, budget_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ..., models: _Optional[_Iterable[_Union[PoolModel, _Mapping]]] = ..., hits: _Optional[int] = ..., loads: _Optional[int] = ..., evictions: _Optional[int] = ..., load_failures: _Optional[int] = ..., load_seconds: _Optional[float] = ...) -> None: ...

class PrefetchRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class PrefetchResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
