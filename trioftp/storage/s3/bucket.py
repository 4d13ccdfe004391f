"""One S3 bucket through boto3: the few calls the S3 store makes, typed, with errors in six reasons.

Knows nothing of trioftp's names, folders or uploads: keys in, bytes and
ETags out. Every call blocks (network); the server runs them on worker
threads, so the client's connection pool is sized for many at once.
Credentials are found as boto3 finds them (environment, config files,
instance roles); only the endpoint and region are given here.
"""

from __future__ import annotations

import enum
import http.client
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import boto3
import botocore.config
import botocore.exceptions

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

POOL_CONNECTIONS = 64  # worker threads (trio's default limit is 40) plus an upload's part threads


class Reason(enum.Enum):
    NOT_FOUND = "not found"
    CHANGED = "changed"  # an If-Match precondition failed: the object is another version now
    EXISTS = "exists"  # an If-None-Match: * precondition failed
    UNAVAILABLE = "unavailable"  # no connection, timeouts, 5xx after retries
    DENIED = "denied"
    OTHER = "other"


class BucketError(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@attrs.frozen
class Head:
    etag: str  # as the engine sends it, quotes included
    size: int
    mtime_ns: int
    metadata: Mapping[str, str]


@attrs.frozen
class Listing:
    """One folder level: keys of objects with their facts, and the sub-prefixes."""

    objects: list[tuple[str, int, int, str]]  # key, size, mtime_ns, etag
    prefixes: list[str]


_NOT_FOUND = {"NoSuchKey", "NotFound", "404", "NoSuchUpload"}
_DENIED = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
_UNAVAILABLE = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500", "502"}


def forget_frames(exc: BaseException) -> None:
    """Drop the tracebacks of `exc` and what it chains to.

    The BucketError raised for it keeps it as its context; its frames hold
    botocore's connections, so a kept error (a log record, a test's
    pytest.raises) would keep sockets open until the cycle collector runs.
    """
    seen: set[int] = set()
    chain: list[BaseException | None] = [exc]
    while chain:
        item = chain.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        item.__traceback__ = None
        chain += [item.__cause__, item.__context__]


def _mapped(exc: Exception, key: str, *, precondition: Reason = Reason.CHANGED) -> BucketError:
    forget_frames(exc)
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code == "NoSuchBucket":
            return BucketError(Reason.OTHER, "the bucket does not exist (create it first)")
        if code in _NOT_FOUND or status == 404:
            return BucketError(Reason.NOT_FOUND, f"{key!r} not found")
        if code == "PreconditionFailed" or status == 412:
            return BucketError(precondition, f"{key!r}: {precondition.value}")
        if code in _DENIED or status == 403:
            return BucketError(Reason.DENIED, f"{key!r}: access denied by the object store ({code})")
        if code in _UNAVAILABLE or status >= 500:
            return BucketError(Reason.UNAVAILABLE, f"the object store failed ({code or status})")
        said = f"{code} {error.get('Message') or ''}".strip()
        return BucketError(Reason.OTHER, f"{key!r}: the object store said {said}")
    if isinstance(exc, botocore.exceptions.BotoCoreError | OSError):
        # No connection, a timeout, a connection cut mid-body: the engine is down or too slow.
        return BucketError(Reason.UNAVAILABLE, f"the object store is unreachable: {exc}")
    return BucketError(Reason.OTHER, f"{key!r}: {exc}")


_CALL_ERRORS = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, OSError)


class Bucket:
    """A bucket of an S3-compatible engine.

    Args:
        name: the bucket.
        endpoint: the engine's URL (None: AWS as boto3 configures it).
        region: None: as boto3 finds it (else us-east-1, which every engine accepts).
        connect_timeout, read_timeout: seconds, per request; retries come on top.
    """

    def __init__(
        self,
        name: str,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 3,
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        session = boto3.session.Session()
        config = botocore.config.Config(
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=POOL_CONNECTIONS,
            # Engines on a host name or an IP without wildcard DNS need the bucket in the path.
            s3={"addressing_style": "path"} if endpoint else {},
            # Payload checksums (CRC) only where an API requires one: older engines refuse
            # the newer trailing checksums, and the store checks its own digest anyway.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        region = region or session.region_name or "us-east-1"
        self.client: S3Client = session.client("s3", endpoint_url=endpoint, region_name=region, config=config)

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------ objects

    def head(self, key: str) -> Head:
        try:
            answer = self.client.head_object(Bucket=self.name, Key=key)
        except _CALL_ERRORS as exc:
            raise _mapped(exc, key) from None
        return Head(
            etag=answer["ETag"],
            size=answer["ContentLength"],
            mtime_ns=int(answer["LastModified"].timestamp() * 1e9),
            metadata=answer.get("Metadata", {}),
        )

    def get(self, key: str, start: int = 0, end: int | None = None, *, etag: str | None = None) -> Any:
        """A streaming body of bytes [start, end) (end None: to the end), of version `etag` only.

        Raises:
            BucketError: CHANGED if the object is no longer that version.
        """
        extra: dict[str, Any] = {}
        if etag is not None:
            extra["IfMatch"] = etag
        if start or end is not None:
            extra["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            answer = self.client.get_object(Bucket=self.name, Key=key, **extra)
        except _CALL_ERRORS as exc:
            raise _mapped(exc, key) from None
        return answer["Body"]

    def read(self, key: str, start: int = 0, end: int | None = None, *, etag: str | None = None) -> bytes:
        body = self.get(key, start, end, etag=etag)
        try:
            data: bytes = body.read()
        except _CALL_ERRORS as exc:
            raise _mapped(exc, key) from None
        finally:
            body.close()
        return data

    def read_into(
        self, key: str, start: int, end: int, buffers: Sequence[memoryview], *, etag: str | None = None
    ) -> None:
        """Bytes [start, end) of version `etag` into `buffers`, one after another, each filled whole.

        The buffers' lengths add up to end - start.

        Raises:
            BucketError: CHANGED if the object is no longer that version; UNAVAILABLE if
                the body ends short (the engine went away mid-read).
        """
        body = self.get(key, start, end, etag=etag)
        fill = _filler(body)
        left = end - start
        try:
            for buffer in buffers:
                got = 0
                while got < len(buffer):
                    count = fill(buffer[got:])
                    if not count:
                        raise BucketError(
                            Reason.UNAVAILABLE, f"{key!r}: the body ended {left - got} bytes short"
                        )
                    got += count
                left -= got
        except _CALL_ERRORS as exc:
            raise _mapped(exc, key) from None
        finally:
            _close(body, whole=left == 0)

    def put(
        self,
        key: str,
        body: bytes | bytearray | memoryview,
        *,
        metadata: Mapping[str, str] | None = None,
        create_only: bool = False,
    ) -> str:
        """Store an object whole; returns its ETag.

        Raises:
            BucketError: EXISTS if `create_only` and the key is taken (where the engine checks).
        """
        extra: dict[str, Any] = {}
        if create_only:
            extra["IfNoneMatch"] = "*"
        try:
            answer = self.client.put_object(
                Bucket=self.name, Key=key, Body=bytes(body), Metadata=dict(metadata or {}), **extra
            )
        except _CALL_ERRORS as exc:
            raise _mapped(exc, key, precondition=Reason.EXISTS) from None
        return answer["ETag"]

    def copy(
        self,
        source: str,
        key: str,
        *,
        source_etag: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Copy an object (up to 5 GiB) within the bucket; metadata kept unless given. Returns the new ETag.

        Raises:
            BucketError: CHANGED if the source is no longer `source_etag`.
        """
        extra: dict[str, Any] = {}
        if source_etag is not None:
            extra["CopySourceIfMatch"] = source_etag
        if metadata is not None:
            extra["Metadata"] = dict(metadata)
            extra["MetadataDirective"] = "REPLACE"
        try:
            answer = self.client.copy_object(
                Bucket=self.name, Key=key, CopySource={"Bucket": self.name, "Key": source}, **extra
            )
        except _CALL_ERRORS as exc:
            raise _mapped(exc, source) from None
        return answer["CopyObjectResult"].get("ETag", "")

    def delete(self, key: str) -> None:
        """Delete an object; deleting one that is not there is no error (as S3 does)."""
        try:
            self.client.delete_object(Bucket=self.name, Key=key)
        except _CALL_ERRORS as exc:
            raise _mapped(exc, key) from None

    def delete_many(self, keys: Sequence[str]) -> None:
        for first in range(0, len(keys), 1000):
            batch = keys[first : first + 1000]
            try:
                self.client.delete_objects(
                    Bucket=self.name, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )
            except _CALL_ERRORS as exc:
                raise _mapped(exc, batch[0]) from None

    # ------------------------------------------------------------------ listings

    def list_level(self, prefix: str, *, limit: int | None = None) -> Listing:
        """Objects and sub-prefixes directly under `prefix` (delimiter "/"), every page of them."""
        objects: list[tuple[str, int, int, str]] = []
        prefixes: list[str] = []
        for page in self._pages(prefix, "/", limit):
            for item in page.get("Contents", []):
                objects.append(
                    (item["Key"], item["Size"], int(item["LastModified"].timestamp() * 1e9), item["ETag"])
                )
            prefixes.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
        return Listing(objects=objects, prefixes=prefixes)

    def list_all(self, prefix: str) -> Iterator[tuple[str, int]]:
        """Every key under `prefix` (no delimiter) with its mtime in ns."""
        for page in self._pages(prefix, None, None):
            for item in page.get("Contents", []):
                yield item["Key"], int(item["LastModified"].timestamp() * 1e9)

    def _pages(self, prefix: str, delimiter: str | None, limit: int | None) -> Iterator[Any]:
        extra: dict[str, Any] = {"Prefix": prefix}
        if delimiter:
            extra["Delimiter"] = delimiter
        if limit:
            extra["MaxKeys"] = limit
        token: str | None = None
        while True:
            if token:
                extra["ContinuationToken"] = token
            try:
                page = self.client.list_objects_v2(Bucket=self.name, **extra)
            except _CALL_ERRORS as exc:
                raise _mapped(exc, prefix) from None
            yield page
            token = page.get("NextContinuationToken")
            if limit or not page.get("IsTruncated") or not token:
                return

    # ------------------------------------------------------------------ multipart

    def create_multipart(self, key: str, *, metadata: Mapping[str, str] | None = None) -> str:
        try:
            answer = self.client.create_multipart_upload(
                Bucket=self.name, Key=key, Metadata=dict(metadata or {})
            )
        except _CALL_ERRORS as exc:
            raise _mapped(exc, key) from None
        return answer["UploadId"]

    def upload_part(self, key: str, upload_id: str, number: int, body: bytes | bytearray | memoryview) -> str:
        """Send one part; a bytearray goes as it is (botocore hashes and sends it in one piece each)."""
        if isinstance(body, memoryview):
            body = bytes(body)  # botocore takes bytes, bytearray or a file
        try:
            answer = self.client.upload_part(
                # The stubs omit bytearray; botocore's validator and urllib3 take it.
                Bucket=self.name,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,  # type: ignore[arg-type]
            )
        except _CALL_ERRORS as exc:
            raise _mapped(exc, key) from None
        return answer["ETag"]

    def upload_part_copy(
        self,
        key: str,
        upload_id: str,
        number: int,
        source: str,
        start: int | None = None,
        end: int | None = None,
        *,
        source_etag: str | None = None,
    ) -> str:
        """Make part `number` a copy of `source` (bytes [start, end) if given); returns its ETag."""
        extra: dict[str, Any] = {}
        if start is not None and end is not None:
            extra["CopySourceRange"] = f"bytes={start}-{end - 1}"
        if source_etag is not None:
            extra["CopySourceIfMatch"] = source_etag
        try:
            answer = self.client.upload_part_copy(
                Bucket=self.name, Key=key, UploadId=upload_id, PartNumber=number,
                CopySource={"Bucket": self.name, "Key": source}, **extra,
            )  # fmt: skip
        except _CALL_ERRORS as exc:
            raise _mapped(exc, source) from None
        return answer["CopyPartResult"].get("ETag", "")

    def complete_multipart(self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]) -> str:
        listed: list[CompletedPartTypeDef] = [{"PartNumber": n, "ETag": etag} for n, etag in parts]
        try:
            answer = self.client.complete_multipart_upload(
                Bucket=self.name, Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed}
            )
        except _CALL_ERRORS as exc:
            raise _mapped(exc, key) from None
        return answer.get("ETag", "")

    def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.name, Key=key, UploadId=upload_id)
        except _CALL_ERRORS as exc:
            error = _mapped(exc, key)
            if error.reason is not Reason.NOT_FOUND:
                raise error from None


def _filler(body: Any) -> Callable[[memoryview], int]:
    """A readinto for a body from get(): straight from the socket into the caller's buffer if it can.

    botocore's body has no readinto, and urllib3's reads into a new bytes object
    and copies it over. The http.client response under both reads into the buffer
    itself (botocore asks urllib3 not to decode, so the bytes are the same); a
    fresh bytes object per piece costs a mapping from the OS and a page fault per
    page in the server. Anything else: read and copy.
    """
    response = getattr(getattr(body, "_raw_stream", None), "_fp", None)
    if isinstance(response, http.client.HTTPResponse):
        return response.readinto

    def copy(buffer: memoryview) -> int:
        data: bytes = body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    return copy


def _close(body: Any, *, whole: bool) -> None:
    """Close a body from get(), its connection back to the pool if it was read `whole`.

    A body read through `_filler` bypassed urllib3, which then does not know it
    was read whole: released first, its connection serves the next request (a
    close alone would drop it, and the next range would open a new one).
    """
    raw = getattr(body, "_raw_stream", None)
    response = getattr(raw, "_fp", None)
    if whole and raw is not None and isinstance(response, http.client.HTTPResponse) and response.isclosed():
        raw.release_conn()
    body.close()
