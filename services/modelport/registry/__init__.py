"""The model registry: models, immutable versions, aliases, policies, and a change stream.

`store.RegistryStore` is the transport-free core (SQLAlchemy metadata plus a
content-addressed `blobs.BlobStore`); `servicer.RegistryServicer` maps it to
the `modelport.registry.v1.ModelRegistry` gRPC service.
"""
