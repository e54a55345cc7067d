"""A film store behind a ``pyarrow.fs`` URI (``s3://bucket/films``, ``gs://...``, ``file:///shared/films``).

The film's folder lives there; farm works in a local copy of it (``cache_for``: ffmpeg needs local
files), pulls what the store holds when it opens a film, and writes every file through to it.
An S3-compatible server other than AWS is named in the URI's query, as pyarrow reads it:
``s3://films?endpoint_override=minio.lan:9000&scheme=http``; credentials come from the
environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ...), never from the URI.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Optional

from farm.errors import InputError, OutputConflictError, first_line
from farm.folder.layout import is_temporary


def is_uri(out: str | Path) -> bool:
    return "://" in str(out)


def split_film_uri(uri: str) -> tuple[str, str]:
    """``s3://b/films/my-film?q`` -> (``s3://b/films?q``, ``my-film``): the store and the film in it."""
    path, mark, query = uri.partition("?")
    root, _, slug = path.rstrip("/").rpartition("/")
    if not slug or root.endswith(":/") or root.endswith("://"):
        raise InputError(f"{uri}: names no film in a film store (expected STORE_URI/FILM, "
                         "e.g. s3://bucket/films/my-film)")
    return root + mark + query, slug


class Remote:
    """A film store behind a ``pyarrow.fs`` URI: the place a film's files end up."""

    def __init__(self, uri: str) -> None:
        import pyarrow.fs as pafs

        path, mark, query = uri.partition("?")
        self.uri = path.rstrip("/")  # what is said: the query (an endpoint, a region) is not repeated
        self.query = mark + query
        try:
            self.fs, base = pafs.FileSystem.from_uri(self.uri + self.query)
        except Exception as exc:  # ArrowInvalid (unknown scheme or query), ArrowNotImplementedError, OSError
            raise InputError(f"--out: {uri} cannot be used as a film store ({first_line(exc)})") from exc
        self.base = base.rstrip("/")
        self.local = self.fs.type_name == "local"

    def film_uri(self, slug: str) -> str:
        """The URI of the film ``slug`` in this store, as ``farm stitch`` takes it."""
        return f"{self.uri}/{slug}{self.query}"

    def where(self, relative: str) -> str:
        return f"{self.base}/{relative}" if relative else self.base

    def check(self, what: str, action: Any) -> Any:
        try:
            return action()
        except Exception as exc:
            raise InputError(f"--out: {self.uri}: cannot {what} ({first_line(exc)})") from exc

    def put(self, relative: str, data: bytes) -> None:
        target = self.where(relative)

        def write() -> None:
            self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            if not self.local:  # an object store writes an object whole or not at all
                with self.fs.open_output_stream(target) as out:
                    out.write(data)
                return
            temporary = f"{target}.{os.getpid()}.tmp"
            with self.fs.open_output_stream(temporary) as out:
                out.write(data)
            self.fs.move(temporary, target)

        self.check(f"write {relative}", write)

    def read(self, relative: str) -> Optional[bytes]:
        """An object's bytes; None when there is none."""
        import pyarrow.fs as pafs

        target = self.where(relative)

        def fetch() -> Optional[bytes]:
            if self.fs.get_file_info(target).type != pafs.FileType.File:
                return None
            try:
                with self.fs.open_input_stream(target) as source:
                    return source.read()
            except FileNotFoundError:  # removed between the look and the read
                return None

        return self.check(f"read {relative}", fetch)

    def delete(self, relative: str) -> None:
        import pyarrow.fs as pafs

        target = self.where(relative)
        info = self.check(f"look at {relative}", lambda: self.fs.get_file_info(target))
        if info.type == pafs.FileType.File:
            self.check(f"delete {relative}", lambda: self.fs.delete_file(target))

    def pull(self, relative: str, local: Path) -> bool:
        """Copy the store's folder ``relative`` into ``local`` (emptied first); False if there is none."""
        import pyarrow.fs as pafs

        source = self.where(relative)
        info = self.check(f"look at {relative}", lambda: self.fs.get_file_info(source))
        shutil.rmtree(local, ignore_errors=True)
        if info.type == pafs.FileType.NotFound:
            return False
        if info.type != pafs.FileType.Directory:
            raise OutputConflictError(f"{self.uri}/{relative}: exists and is not a folder; choose another --out")
        local.mkdir(parents=True, exist_ok=True)
        self.check(f"read {relative}", lambda: pafs.copy_files(
            source, str(local), source_filesystem=self.fs, destination_filesystem=pafs.LocalFileSystem()))
        return True

    def publish_since(self, root: Path, folder: Path, since: float, sent: Iterable[str] = ()) -> list[str]:
        """Every file made in ``folder`` (under the local copy ``root``) since ``since`` and not yet
        ``sent`` goes to the store; the names sent."""
        done, names = set(sent), []
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(root).as_posix()
            if path.is_file() and not is_temporary(path.name) and path.stat().st_mtime >= since \
                    and relative not in done:
                self.put(relative, path.read_bytes())
                names.append(relative)
        return names


def cache_for(uri: str) -> Path:
    """The local working copy of a remote film store."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "farm" / "stores" / hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
