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
