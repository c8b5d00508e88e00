from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListRoutesRequest(_message.Message):
    __slots__ = ("model_name",)
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    def __init__(self, model_name: _Optional[str] = ...) -> None: ...

class ReplicaRoute(_message.Message):
    __slots__ = ("address", "ready", "terminating", "ejected", "versions", "in_flight", "picks")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    TERMINATING_FIELD_NUMBER: _ClassVar[int]
    EJECTED_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    PICKS_FIELD_NUMBER: _ClassVar[int]
    address: str
    ready: bool
    terminating: bool
    ejected: bool
    versions: _containers.RepeatedScalarFieldContainer[str]
    in_flight: int
    picks: int
    def __init__(self, address: _Optional[str] = ..., ready: bool = ..., terminating: bool = ..., ejected: bool = ..., versions: _Optional[_Iterable[str]] = ..., in_flight: _Optional[int] = ..., picks: _Optional[int] = ...) -> None: ...

class SplitWeight(_message.Message):
    __slots__ = ("alias", "weight")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    alias: str
    weight: int
    def __init__(self, alias: _Optional[str] = ..., weight: _Optional[int] = ...) -> None: ...

class PolicyView(_message.Message):
    __slots__ = ("split", "shadow_alias", "ensemble_members", "scatter", "revision")
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    SHADOW_ALIAS_FIELD_NUMBER: _ClassVar[int]
    ENSEMBLE_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    SCATTER_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    split: _containers.RepeatedCompositeFieldContainer[SplitWeight]
    shadow_alias: str
    ensemble_members: _containers.RepeatedScalarFieldContainer[str]
    scatter: bool
    revision: int
    def __init__(self, split: _Optional[_Iterable[_Union[SplitWeight, _Mapping]]] = ..., shadow_alias: _Optional[str] = ..., ensemble_members: _Optional[_Iterable[str]] = ..., scatter: bool = ..., revision: _Optional[int] = ...) -> None: ...

class PoolCopy(_message.Message):
    __slots__ = ("address", "state", "size_bytes", "in_flight")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    address: str
    state: str
    size_bytes: int
    in_flight: int
    def __init__(self, address: _Optional[str] = ..., state: _Optional[str] = ..., size_bytes: _Optional[int] = ..., in_flight: _Optional[int] = ...) -> None: ...

class ModelRoute(_message.Message):
    __slots__ = ("name", "replicas", "policy", "aliases", "pool", "held", "pool_hits", "pool_misses")
    class AliasesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    POOL_HITS_FIELD_NUMBER: _ClassVar[int]
    POOL_MISSES_FIELD_NUMBER: _ClassVar[int]
    name: str
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaRoute]
    policy: PolicyView
    aliases: _containers.ScalarMap[str, str]
    pool: _containers.RepeatedCompositeFieldContainer[PoolCopy]
    held: int
    pool_hits: int
    pool_misses: int
    def __init__(self, name: _Optional[str] = ..., replicas: _Optional[_Iterable[_Union[ReplicaRoute, _Mapping]]] = ..., policy: _Optional[_Union[PolicyView, _Mapping]] = ..., aliases: _Optional[_Mapping[str, str]] = ..., pool: _Optional[_Iterable[_Union[PoolCopy, _Mapping]]] = ..., held: _Optional[int] = ..., pool_hits: _Optional[int] = ..., pool_misses: _Optional[int] = ...) -> None: ...

class PoolReplicaView(_message.Message):
    __slots__ = ("address", "budget_bytes", "used_bytes", "models", "hits", "loads", "evictions", "load_seconds")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    LOADS_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    address: str
    budget_bytes: int
    used_bytes: int
    models: int
    hits: int
    loads: int
    evictions: int
    load_seconds: float
    def __init__(self, address: _Optional[str] = ..., budget_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ..., models: _Optional[int] = ..., hits: _Optional[int] = ..., loads: _Optional[int] = ..., evictions: _Optional[int] = ..., load_seconds: _Optional[float] = ...) -> None: ...

class ListRoutesResponse(_message.Message):
    __slots__ = ("models", "pool_replicas")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    POOL_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelRoute]
    pool_replicas: _containers.RepeatedCompositeFieldContainer[PoolReplicaView]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelRoute, _Mapping]]] = ..., pool_replicas: _Optional[_Iterable[_Union[PoolReplicaView, _Mapping]]] = ...) -> None: ...
