"""Registry blobs in an S3-compatible bucket: a real moto server process, real obstore calls."""

from __future__ import annotations

import hashlib
import itertools
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import obstore
import pytest
from modelport.client.channel import ModelportClientError
from modelport.client.registry import RegistryClient
from modelport.errors import Internal
from modelport.registry.blob_backends import S3Backend
from modelport.registry.blobs import BlobStore
from modelport.registry.settings import RegistrySettings
from modelport.registry.store import RegistryStore

from tests.registry.postgres import PostgresServer
from tests.registry.registry_servers import ThreadedRegistry
from tests.support.s3_server import S3Server, set_credentials

_buckets = itertools.count()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    set_credentials()
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bucket_url(s3: S3Server) -> str:
    name = f"models-{next(_buckets)}"
    s3.create_bucket(name)
    return f"s3://{name}/registry"


def backend(s3: S3Server, url: str, part_bytes: int = 5 * 1024 * 1024) -> S3Backend:
    return S3Backend(url, endpoint=s3.endpoint, part_bytes=part_bytes)


def test_multipart_upload_round_trip_and_deletion(
    s3: S3Server, bucket_url: str, tmp_path: Path
) -> None:
    blobs = BlobStore(tmp_path / "staging", backend(s3, bucket_url), stale_upload_seconds=0)
    payload = hashlib.sha256(b"seed").digest() * (11 * 1024 * 1024 // 32)  # 11 MiB: 3 parts
    sha = hashlib.sha256(payload).hexdigest()
    temp = blobs.temp_path()
    temp.write_bytes(payload)
    blobs.make_durable(temp)
    blobs.stage(temp, sha)
    blobs.place(temp, sha)

    assert not temp.exists(), "the staged copy goes once the bucket has it"
    assert blobs.exists(sha)
    assert list(blobs.stored()) == [sha]
    assert b"".join(blobs.read_chunks(sha, 1 << 20)) == payload
    blobs.delete(sha)
    assert not blobs.exists(sha)
    assert list(blobs.stored()) == []


def test_unfinished_multipart_upload_is_invisible(
    s3: S3Server, bucket_url: str, tmp_path: Path
) -> None:
    """A registry that dies mid-upload leaves parts S3 keeps hidden: no blob, no listing."""
    store = backend(s3, bucket_url)
    blobs = BlobStore(tmp_path / "staging", store)
    sha = hashlib.sha256(b"never finished").hexdigest()
    writer = obstore.open_writer(store.store, blobs.name(sha), buffer_size=5 * 1024 * 1024)
    writer.write(b"x" * (6 * 1024 * 1024))  # the first part is sent
    writer.flush()
    bucket = bucket_url.removeprefix("s3://").split("/")[0]
    with urllib.request.urlopen(f"{s3.endpoint}/{bucket}?uploads", timeout=10) as answer:
        in_progress = answer.read().decode()
    assert blobs.name(sha) in in_progress, "the upload is under way on the server"
    assert not blobs.exists(sha)
    assert list(blobs.stored()) == []
    assert list(obstore.list(store.store)) in ([], [[]])


def test_damaged_object_fails_the_read(s3: S3Server, bucket_url: str, tmp_path: Path) -> None:
    store = backend(s3, bucket_url)
    blobs = BlobStore(tmp_path / "staging", store)
    sha = hashlib.sha256(b"original").hexdigest()
    obstore.put(store.store, blobs.name(sha), b"tampered")
    with pytest.raises(Internal, match="does not hash to its name"):
        b"".join(blobs.read_chunks(sha, 1024))


def test_two_registry_replicas_share_postgresql_and_one_bucket(
    s3: S3Server,
    bucket_url: str,
    postgres: PostgresServer | None,
    tmp_path: Path,
    make_model: Callable[..., Path],
) -> None:
    assert postgres is not None, "PostgreSQL is needed for several registry replicas"
    database = postgres.create_database("registry_s3")

    def replica(name: str) -> ThreadedRegistry:
        return ThreadedRegistry(
            RegistrySettings(
                database=database,
                blob_dir=tmp_path / name,  # each replica's own local staging
                blob_store=bucket_url,
                s3_endpoint=s3.endpoint,
                max_upload_mb=8,
                host="127.0.0.1",
                grpc_port=0,
            )
        )

    first, second = replica("a"), replica("b")
    try:
        with RegistryClient(first.address) as a, RegistryClient(second.address) as b:
            v1 = a.push(make_model("scale", 2.0), name="scale", aliases=["production"])
            v2 = b.push(make_model("scale", 3.0), name="scale")
            assert (v1.version, v2.version) == (1, 2)
            # Either replica serves either version: the bytes are in the bucket.
            for client, ref in ((b, "scale:1"), (a, "scale:2")):
                got = client.download(ref, tmp_path / f"{ref.replace(':', '-')}.tar")
                assert got.sha256 in {v1.sha256, v2.sha256}
            b.set_alias("scale", 2, "production")
            assert a.resolve("scale@production").version == 2
            # Deleting a version through one replica removes its blob from the bucket.
            a.delete_version("scale", 1)
            store = backend(s3, bucket_url)
            names = [m["path"] for batch in obstore.list(store.store, "sha256") for m in batch]
            assert [n.rsplit("/", 1)[-1] for n in names] == [v2.sha256]
            with pytest.raises(ModelportClientError, match="no version 1"):
                b.download("scale:1", tmp_path / "gone.tar")
    finally:
        first.stop()
        second.stop()


def test_sweep_spares_fresh_blobs_and_removes_old_orphans(
    s3: S3Server, bucket_url: str, tmp_path: Path
) -> None:
    """A blob staged by another replica waits for its row; a crash's leftover goes."""
    database = f"sqlite:///{tmp_path / 'registry.db'}"
    store = backend(s3, bucket_url)
    orphan = hashlib.sha256(b"orphan").hexdigest()
    obstore.put(store.store, f"sha256/{orphan[:2]}/{orphan}", b"orphan")

    kept = RegistryStore.open(
        database, tmp_path / "staging", max_upload_bytes=1 << 20, blob_backend=store
    )
    assert kept.blobs.exists(orphan), "younger than the stale-upload period: spared"
    kept.close()
    swept = RegistryStore.open(
        database,
        tmp_path / "staging",
        max_upload_bytes=1 << 20,
        stale_upload_seconds=0,
        blob_backend=store,
    )
    assert not swept.blobs.exists(orphan)
    swept.close()


def test_encrypted_blobs_in_a_bucket_rotate_without_reupload(
    s3: S3Server, bucket_url: str, tmp_path: Path
) -> None:
    """With --kek-file the bucket holds ciphertext and a .key object per blob;
    reads decrypt on the way and a KEK rotation rewrites only the .key objects."""
    import base64

    import yaml
    from modelport.artifacts.keyring import Keyring, new_key
    from modelport.artifacts.sealed_blobs import MAGIC
    from modelport.artifacts.sealed_files import SealedFiles
    from modelport.auth.files import WatchedFile

    keys = {"k1": new_key()}
    kek_file = tmp_path / "kek.yaml"

    def write_keyring(active: str) -> None:
        encoded = {k: base64.b64encode(v).decode() for k, v in keys.items()}
        kek_file.write_text(yaml.safe_dump({"active": active, "keys": encoded}))

    write_keyring("k1")
    keyring = WatchedFile(kek_file, Keyring.parse)
    sealing = SealedFiles(keyring.get, chunk_bytes=64 * 1024)
    bucket = backend(s3, bucket_url)
    blobs = BlobStore(tmp_path / "staging", bucket, sealing=sealing)
    payload = hashlib.sha256(b"secret").digest() * (300 * 1024 // 32)
    sha = hashlib.sha256(payload).hexdigest()
    temp = blobs.temp_path()
    temp.write_bytes(payload)
    durable = blobs.make_durable(temp)
    blobs.stage(durable, sha)
    blobs.place(durable, sha)

    stored = b"".join(bucket.read_chunks(blobs.name(sha), 1 << 20))
    assert stored.startswith(MAGIC) and payload[:4096] not in stored
    assert bucket.exists(blobs.name(sha) + ".key")
    assert list(blobs.stored()) == [sha]
    assert b"".join(blobs.read_chunks(sha, 1 << 16)) == payload

    keys["k2"] = new_key()
    write_keyring("k2")
    assert keyring.reload()
    assert blobs.rewrap() == 1
    assert b"".join(bucket.read_chunks(blobs.name(sha), 1 << 20)) == stored, "blob untouched"
    del keys["k1"]
    write_keyring("k2")
    assert keyring.reload()
    assert b"".join(blobs.read_chunks(sha, 1 << 16)) == payload
    blobs.delete(sha)
    assert not bucket.exists(blobs.name(sha) + ".key")
