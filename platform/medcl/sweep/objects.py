"""Conditional writes to an S3 bucket (boto3): the compare-and-swap a sweep driver needs.

``pyarrow.fs`` (medcl.storage) has no conditional PUT; S3 has had ``If-None-Match: *`` (create
only if absent) and ``If-Match: <ETag>`` (replace only the version last seen) on PutObject since
2024 (https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html). A write
whose condition fails raises :class:`Conflict`; nothing is overwritten. Transient errors
(throttling, 5xx, dropped connections) are retried by botocore's ``standard`` retry mode with
exponential backoff (``MAX_ATTEMPTS`` tries).

Credentials, region and endpoint come from the process environment as for pyarrow (``AWS_*``,
``AWS_ENDPOINT_URL`` for an S3-compatible store).
"""
from __future__ import annotations

MAX_ATTEMPTS = 8
CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


class Conflict(RuntimeError):
    """A conditional write refused: the object is not (or no longer) the version expected."""


class ObjectsUnavailable(RuntimeError):
    """boto3 is missing, or the URI is not ``s3://``."""


class Bucket:
    """Conditional get/put/delete of the keys of one ``s3://bucket``."""

    def __init__(self, uri: str):
        if not uri.startswith("s3://"):
            raise ObjectsUnavailable(f"{uri}: conditional writes are implemented for s3:// only")
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise ObjectsUnavailable("a sweep whose output_dir is in S3 keeps its study there with conditional "
                                     "writes, which need boto3: pip install 'boto3>=1.36'") from None
        self.name = uri[len("s3://"):].split("/", 1)[0]
        self.client = boto3.client("s3", config=Config(retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"}))

    def key(self, uri: str) -> str:
        prefix = f"s3://{self.name}/"
        if not uri.startswith(prefix):
            raise ValueError(f"{uri} is not in bucket {self.name}")
        return uri[len(prefix):]

    def get(self, uri: str) -> tuple[bytes | None, str | None]:
        """``(content, ETag)``, or ``(None, None)`` when there is no such object."""
        try:
            answer = self.client.get_object(Bucket=self.name, Key=self.key(uri))
        except self.client.exceptions.NoSuchKey:
            return None, None
        return answer["Body"].read(), answer["ETag"]

    def etag(self, uri: str) -> str | None:
        """The object's ETag, ``None`` when there is no such object."""
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.name, Key=self.key(uri))["ETag"]
        except ClientError as exc:
            if _code(exc) in MISSING_CODES:
                return None
            raise

    def put(self, uri: str, data: bytes, *, expected: str | None) -> str:
        """Write ``data`` only if the object is the version ``expected`` (an ETag), or, with
        ``expected=None``, only if there is no object; return the new ETag. :class:`Conflict` else."""
        from botocore.exceptions import ClientError

        condition = {"IfMatch": expected} if expected else {"IfNoneMatch": "*"}
        try:
            return self.client.put_object(Bucket=self.name, Key=self.key(uri), Body=data, **condition)["ETag"]
        except ClientError as exc:
            if _code(exc) in CONFLICT_CODES or (expected and _code(exc) in MISSING_CODES):
                raise Conflict(f"{uri}: {'changed since ETag ' + expected if expected else 'already exists'}") from None
            raise

    def delete(self, uri: str) -> None:
        self.client.delete_object(Bucket=self.name, Key=self.key(uri))


def _code(exc) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
