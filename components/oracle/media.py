"""The images annotators see, by reference: a copy of each selected image, under an opaque name,
in a folder of the run that Label Studio serves.

Why by reference: inline, every task carried its image's bytes (base64), so Label Studio stored,
listed and sent them with every task: a round of 500 photos was 37.8 MB per import and a
listing of 2,000 tasks took 13 s (issue 31). A task now holds a URL of about 60 bytes.

Why a copy under Label Studio's local-files storage (and not the dataset's own path, nor an
object store): the dataset's paths name the class folder (``optdigits/6/…``), so no URL may
point at them; a copy named by the task's opaque ``item`` (a hash of run and sample) in a folder
named by the run says nothing. Label Studio serves it only to users of a project whose local
storage holds the folder (``/data/local-files/?d=<run>/<item>.png``, checked per request), with
no extra server to run. The folder is ``label_studio.media_root``, which
``infra/label-studio/server.sh`` makes the server's ``LOCAL_FILES_DOCUMENT_ROOT``; a team whose
Label Studio runs elsewhere mounts the same folder there at the same path (``infra/compose.yaml``
does). The copies are kept after the run: a label corrected later is corrected on the same image.

For a team (``label_studio.images: s3``, ``S3Media``): the same copies, as objects of an
S3-compatible store (``infra/s3/server.sh`` runs SeaweedFS), keyed ``<run>/<item>.<ext>``, so
runs on any host and Label Studio share them without a shared folder. A task holds
``s3://<bucket>/<run>/<item>.<ext>``; the run's project gets an S3 source storage of the
bucket (never synced) whose keys may only read, and Label Studio fetches each image with them
and sends it on (``presign`` off): an annotator's browser talks to Label Studio only, needs no
route to the store, and sees no key; an image is served to users of the task's project only.
"""
from __future__ import annotations

import base64
import io
import os
import tempfile
from pathlib import Path
from urllib.parse import quote

from components.data.split import RESPLIT
from components.oracle.base import OracleError

LOCAL_FILES = "/data/local-files/?d="   # Label Studio's URL for a file of a local storage
MAX_SIDE = 1024                         # larger images are shrunk (as JPEG) before they are shown
S3_START_HINT = ("start it with `infra/s3/server.sh start` (install it once with "
                 "`infra/s3/install.sh`), or set label_studio.s3.endpoint")
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg"}


def shown_bytes(path: Path, max_side: int = MAX_SIDE) -> tuple[bytes, str]:
    """The image as annotators get it, and its extension: PNG and JPEG files as they are, other
    formats (and sides over ``max_side``) re-encoded, the large ones as JPEG. An unreadable file
    is one error that says how to replace it."""
    try:
        return _encoded(Path(path), max_side)
    except (OSError, ValueError) as err:
        raise OracleError(f"image {path} cannot be shown to annotators ({err}); replace or delete "
                          f"it and rebuild the manifest: {RESPLIT}") from None


def _encoded(path: Path, max_side: int) -> tuple[bytes, str]:
    from PIL import Image

    with Image.open(path) as im:
        if im.format in ("PNG", "JPEG") and max(im.size) <= max_side:
            im.verify()  # a truncated file fails here, not in the annotator's browser
            return path.read_bytes(), "png" if im.format == "PNG" else "jpg"
        im = im.convert("RGB" if im.mode not in ("L", "RGB") else im.mode)
        large = max(im.size) > max_side
        if large:
            im.thumbnail((max_side, max_side))
        buf = io.BytesIO()
        im.save(buf, "JPEG" if large else "PNG", quality=90)
        return buf.getvalue(), "jpg" if large else "png"


def image_data_uri(path: Path, max_side: int = MAX_SIDE) -> str:
    """The image inline (``label_studio.images: inline``)."""
    data, ext = shown_bytes(path, max_side)
    kind = "jpeg" if ext == "jpg" else ext
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


class MediaFolder:
    """``<root>/<run>/``: the run's copies, each named ``<item>.<ext>``."""

    def __init__(self, root: str | Path, run: str):
        self.root = Path(root).expanduser().resolve()
        self.run = run
        self.folder = self.root / run

    def ensure(self) -> Path:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OracleError(f"cannot make {self.folder} for the images annotators see "
                              f"({err.strerror}); set label_studio.media_root to a folder this "
                              "run may write and Label Studio serves") from None
        return self.folder

    def put(self, item: str, path: Path) -> str:
        """Copy ``path`` as ``item`` (once: a retried round finds it there); its task's URL."""
        data, ext = shown_bytes(path)
        name = f"{item}.{ext}"
        dest = self.ensure() / name
        if not dest.exists():
            fd, part = tempfile.mkstemp(dir=self.folder, prefix=".part-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(part, 0o644)
            os.replace(part, dest)
        return LOCAL_FILES + quote(f"{self.run}/{name}")


def read_s3_keys(credentials: str | Path) -> dict[str, tuple[str, str]]:
    """The store's keys: ``writer`` (the run's: ``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY`` from the environment, else from the credentials file that
    ``infra/s3/server.sh`` writes) and ``reader`` (what Label Studio is given: the file's
    read-only ``LABEL_STUDIO_S3_*`` pair where it has one, else the writer's)."""
    path = Path(credentials).expanduser()
    found: dict[str, str] = {}
    if path.is_file():
        found = dict(line.split("=", 1) for line in path.read_text().splitlines()
                     if "=" in line and not line.lstrip().startswith("#"))
        found = {k.strip(): v.strip() for k, v in found.items()}
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        writer = (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    elif found.get("AWS_ACCESS_KEY_ID") and found.get("AWS_SECRET_ACCESS_KEY"):
        writer = (found["AWS_ACCESS_KEY_ID"], found["AWS_SECRET_ACCESS_KEY"])
    else:
        raise OracleError(f"no S3 keys for label_studio.images: s3: set AWS_ACCESS_KEY_ID and "
                          f"AWS_SECRET_ACCESS_KEY, or {S3_START_HINT} (it writes {path}; "
                          "label_studio.s3.credentials names that file)")
    reader = (found.get("LABEL_STUDIO_S3_ACCESS_KEY_ID"),
              found.get("LABEL_STUDIO_S3_SECRET_ACCESS_KEY"))
    return {"writer": writer, "reader": reader if all(reader) else writer}


class S3Media:
    """``s3://<bucket>/<run>/``: the run's copies as objects, each keyed ``<run>/<item>.<ext>``
    (``label_studio.images: s3``). Same interface as ``MediaFolder``."""

    def __init__(self, endpoint: str, bucket: str, credentials: str | Path, run: str,
                 client=None):
        self.endpoint, self.bucket, self.run = endpoint.rstrip("/"), bucket, run
        self.credentials = credentials
        self._client = client
        self._checked = False

    @property
    def keys(self) -> dict[str, tuple[str, str]]:
        return read_s3_keys(self.credentials)

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            key, secret = self.keys["writer"]
            self._client = boto3.client(
                "s3", endpoint_url=self.endpoint or None, aws_access_key_id=key,
                aws_secret_access_key=secret,
                region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                config=Config(signature_version="s3v4", connect_timeout=5, read_timeout=60,
                              retries={"mode": "standard", "max_attempts": 3},
                              s3={"addressing_style": "path"}))
        return self._client

    def _failed(self, err: Exception, doing: str) -> OracleError:
        """One line that says what to do about an error of the store."""
        from botocore.exceptions import ClientError, EndpointConnectionError

        where = f"the S3 store at {self.endpoint or 'AWS'}"
        if isinstance(err, EndpointConnectionError) or not isinstance(err, ClientError):
            return OracleError(f"{where} is not reachable while {doing} "
                               f"({err.__class__.__name__}); {S3_START_HINT}")
        code = str(err.response.get("Error", {}).get("Code"))
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchBucket", "404") or (status == 404 and doing == "checking the bucket"):
            return OracleError(
                f"bucket {self.bucket!r} does not exist at {where}; create it (`infra/s3/"
                "server.sh start` creates label_studio.s3.bucket; another store: `aws s3 mb "
                f"s3://{self.bucket}" + (f" --endpoint-url {self.endpoint}`" if self.endpoint
                                         else "`") + ") or set label_studio.s3.bucket")
        if status in (401, 403) or code in ("AccessDenied", "InvalidAccessKeyId",
                                            "SignatureDoesNotMatch", "403"):
            return OracleError(
                f"{where} refused the keys while {doing} ({code}); check AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY, or {self.credentials} (label_studio.s3.credentials, "
                "written by infra/s3/server.sh): they must be this store's and may write to "
                f"bucket {self.bucket!r}")
        return OracleError(f"{where} failed while {doing} ({code}: {err}); see its log "
                           "(.sage-ada/servers/s3-<port>.log for infra/s3/server.sh)")

    def ensure(self) -> str:
        """Check once that the store answers, takes the keys and has the bucket; its URL."""
        if not self._checked:
            client = self.client   # no keys: read_s3_keys's own error, not "unreachable"
            try:
                client.head_bucket(Bucket=self.bucket)
            except Exception as err:  # botocore's errors: unreachable, refused, no bucket
                raise self._failed(err, "checking the bucket") from None
            self._checked = True
        return f"s3://{self.bucket}/{self.run}/"

    def key(self, name: str) -> str:
        return f"{self.run}/{name}"

    def upload(self, name: str, data: bytes, content_type: str) -> str:
        """Put ``data`` as ``<run>/<name>`` unless it is there already (a retried round); its
        task URL."""
        from botocore.exceptions import ClientError

        self.ensure()
        key = self.key(name)
        try:
            try:
                self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as err:
                if err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                    raise
                self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                       ContentType=content_type)
        except Exception as err:
            raise self._failed(err, f"uploading {key}") from None
        return f"s3://{self.bucket}/{key}"

    def put(self, item: str, path: Path) -> str:
        """Upload ``path`` as shown to annotators, as ``item`` (once); its task's URL."""
        data, ext = shown_bytes(path)
        return self.upload(f"{item}.{ext}", data, CONTENT_TYPES[ext])

    def storage(self) -> dict:
        """Label Studio's S3 source storage of the run's objects, as ``import_storage.s3.create``
        takes it (with the read-only keys): never synced, and ``presign`` off, so Label Studio
        reads each image and sends it on to people logged in to the task's project."""
        key, secret = self.keys["reader"]
        return {"bucket": self.bucket, "prefix": self.run, "s3endpoint": self.endpoint or None,
                "aws_access_key_id": key, "aws_secret_access_key": secret,
                "presign": False, "use_blob_urls": True, "synchronizable": False,
                "recursive_scan": False}
