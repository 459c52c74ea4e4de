"""Writing whole files on any Beam filesystem (local or gs://): the folder made first, the
content under a temporary name renamed into place, so a reader never sees half a file."""

import uuid

from apache_beam.io.filesystems import FileSystems


def write_file(path: str, data: bytes) -> str:
    """Write ``data`` to ``path``, replacing what was there; returns the path."""
    directory = path.replace("\\", "/").rsplit("/", 1)[0]
    try:
        FileSystems.mkdirs(directory)
    except OSError:
        pass  # already there (or made by another writer a moment ago)
    temporary = f"{path}.{uuid.uuid4().hex}.tmp"
    with FileSystems.create(temporary) as f:
        f.write(data)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([temporary], [path])
    return path
