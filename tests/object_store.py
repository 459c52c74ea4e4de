"""``localtest://`` paths: a stand-in object store for tests, backed by a local folder.

Code that works on it goes through Beam's ``FileSystems`` only (no ``os``/``open`` on paths),
as it must for ``gs://`` or ``s3://``. Defining the class registers the scheme with Beam.
"""

import os
import tempfile

from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.localfilesystem import LocalFileSystem

SCHEME = "localtest"
PREFIX = f"{SCHEME}://"
ROOT = os.path.join(tempfile.gettempdir(), "beamline-localtest")


def local(path: str) -> str:
    """The local file behind a ``localtest://`` path."""
    return os.path.join(ROOT, path[len(PREFIX):]) if path.startswith(PREFIX) else path


def remote(path: str) -> str:
    return PREFIX + os.path.relpath(path, ROOT)


class LocalTestFileSystem(LocalFileSystem):
    """LocalFileSystem under another scheme, paths translated both ways."""

    @classmethod
    def scheme(cls):
        return SCHEME

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *(p.strip("/") for p in paths)])

    def split(self, path):
        head, tail = path.rstrip("/").rsplit("/", 1)
        return head, tail

    def _url_dirname(self, url_or_path):
        return self.split(url_or_path)[0]

    def mkdirs(self, path):
        return super().mkdirs(local(path))

    def _list(self, dir_or_prefix):
        for metadata in super()._list(local(dir_or_prefix)):
            yield FileMetadata(remote(metadata.path), metadata.size_in_bytes,
                               metadata.last_updated_in_seconds)

    def create(self, path, *args, **kwargs):
        return super().create(local(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return super().open(local(path), *args, **kwargs)

    def copy(self, sources, destinations):
        return super().copy([local(p) for p in sources], [local(p) for p in destinations])

    def rename(self, sources, destinations):
        return super().rename([local(p) for p in sources], [local(p) for p in destinations])

    def exists(self, path):
        return super().exists(local(path))

    def size(self, path):
        return super().size(local(path))

    def last_updated(self, path):
        return super().last_updated(local(path))

    def checksum(self, path):
        return super().checksum(local(path))

    def metadata(self, path):
        metadata = super().metadata(local(path))
        return FileMetadata(path, metadata.size_in_bytes, metadata.last_updated_in_seconds)

    def delete(self, paths):
        return super().delete([local(p) for p in paths])
