"""Where the project reads and writes: a local path or an object-storage URI (s3://, gs://, ...), one interface.

Local paths keep plain file semantics (write to a temporary name, then `os.replace`). URIs go through fsspec
(s3fs, gcsfs, ... configured as usual: AWS_* / GOOGLE_* environment variables, ~/.aws, fsspec config): an
object is written by one PUT, which object stores make visible all at once or not at all, so a reader never
sees a partial object, and a result's status object is written last as its completion marker. Videos are
opened as seekable files that fetch byte ranges on demand (PyAV reads the container index and the packets it
needs), never copied whole. The rest of curation never knows whether bytes came from disk or a bucket.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from pathlib import Path


def is_uri(path: str | os.PathLike) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def _fs(uri: str, fresh: bool = False):
    """The fsspec filesystem of a URI; `fresh`: forget cached listings (other nodes write there too)."""
    import fsspec

    fs, _ = fsspec.core.url_to_fs(uri)
    if fresh:
        fs.invalidate_cache()
    return fs


def join(base: str | os.PathLike, *parts: str) -> str:
    """`base/part/...` for a path or a URI (URIs always use '/')."""
    if is_uri(base):
        return posixpath.join(str(base).rstrip("/"), *parts)
    return str(Path(base).joinpath(*parts))


def exists(path: str | os.PathLike) -> bool:
    if is_uri(path):
        return _fs(str(path), fresh=True).exists(str(path))
    return Path(path).exists()


def is_file(path: str | os.PathLike) -> bool:
    if is_uri(path):
        return _fs(str(path), fresh=True).isfile(str(path))
    return Path(path).is_file()


def size(path: str | os.PathLike) -> int:
    if is_uri(path):
        return int(_fs(str(path)).size(str(path)))
    return Path(path).stat().st_size


def read_bytes(path: str | os.PathLike) -> bytes:
    if is_uri(path):
        return _fs(str(path)).cat_file(str(path))
    return Path(path).read_bytes()


def read_many(paths: list[str]) -> dict[str, bytes]:
    """{path: bytes} of many small files; fetched concurrently from an object store."""
    if not paths:
        return {}
    if is_uri(paths[0]):
        fs = _fs(paths[0])
        proto = paths[0].split("://", 1)[0]
        got = fs.cat(list(paths), on_error="omit")
        return {(k if "://" in k else f"{proto}://{k}"): v for k, v in got.items()}
    out = {}
    for p in paths:
        try:
            out[p] = Path(p).read_bytes()
        except FileNotFoundError:
            pass
    return out


def read_text(path: str | os.PathLike) -> str:
    return read_bytes(path).decode()


def open_read(path: str | os.PathLike, block_size: int = 1 << 20):
    """A seekable binary file; for a URI it fetches `block_size` ranges as they are read."""
    if is_uri(path):
        return _fs(str(path)).open(str(path), "rb", block_size=block_size, cache_type="readahead")
    return open(path, "rb")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a whole file atomically: a reader sees the old content, or none, or all of the new."""
    if is_uri(path):
        fs = _fs(str(path))
        fs.pipe_file(str(path), data)
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, p)


def upload(local: str | os.PathLike, path: str | os.PathLike) -> None:
    """Move a finished local file to `path` (atomic for a local destination; one PUT for a URI)."""
    if is_uri(path):
        _fs(str(path)).put_file(str(local), str(path))
        os.unlink(local)
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    os.replace(local, path)


def remove(path: str | os.PathLike) -> None:
    if is_uri(path):
        fs = _fs(str(path))
        if fs.exists(str(path)):
            fs.rm_file(str(path))
        return
    Path(path).unlink(missing_ok=True)


def listdir_files(path: str | os.PathLike, suffix: str = "") -> list[str]:
    """Files directly in folder `path` whose name ends with `suffix`, sorted (full paths / URIs)."""
    if is_uri(path):
        fs = _fs(str(path), fresh=True)
        if not fs.exists(str(path)):
            return []
        proto = str(path).split("://", 1)[0]
        names = fs.ls(str(path), detail=True)
        return sorted(f"{proto}://{e['name']}" for e in names if e["type"] == "file" and e["name"].endswith(suffix))
    p = Path(path)
    return sorted(str(q) for q in p.glob(f"*{suffix}") if q.is_file()) if p.is_dir() else []


def find_files(root: str | os.PathLike, suffix: str = "") -> list[str]:
    """Every file under `root` (recursively) whose name ends with `suffix`, sorted."""
    if is_uri(root):
        fs = _fs(str(root), fresh=True)
        proto = str(root).split("://", 1)[0]
        return sorted(f"{proto}://{p}" for p in fs.find(str(root)) if p.endswith(suffix))
    r = Path(root)
    return sorted(str(q) for q in r.rglob(f"*{suffix}") if q.is_file()) if r.is_dir() else []


def walk_videos(root: str, extensions: set[str]) -> list[str]:
    """Video files under `root` (a folder or one file, path or URI), sorted by path."""
    if is_uri(root):
        fs = _fs(root, fresh=True)
        if fs.isfile(root):
            return [root]
        proto = root.split("://", 1)[0]
        return sorted(f"{proto}://{p}" for p in fs.find(root) if posixpath.splitext(p)[1].lower() in extensions)
    r = Path(root)
    if r.is_file():
        return [str(r)]
    return [str(p) for p in sorted(p for p in r.rglob("*") if p.is_file() and p.suffix.lower() in extensions)]


def probe(src: str, out: str, token_path: str, token: bytes) -> tuple[str | None, str | None]:
    """Run on a node: does it see `src`, and the same `out` as the driver (the driver's `token` at
    `token_path`), and can it write there? (problem or None, the file it wrote for the driver to read back)."""
    try:
        if not exists(src):
            return f"cannot see --src {src}", None
    except Exception as e:
        return f"cannot see --src {src}: {_short(e)}", None
    try:
        seen = read_bytes(token_path) if is_file(token_path) else None
    except Exception as e:
        return f"cannot read --out {out}: {_short(e)}", None
    if seen != token:
        return (f"does not see the driver's --out {out} (a folder of the same name on its own disk is not "
                "shared)"), None
    mine = join(posixpath.dirname(token_path) if is_uri(token_path) else str(Path(token_path).parent),
                f"{uuid.uuid4().hex}.node")
    try:
        write_bytes(mine, token)
    except Exception as e:
        return f"cannot write --out {out}: {_short(e)}", None
    return None, mine


def _short(e: BaseException) -> str:
    msg = str(e).splitlines()[0][:200] if str(e) else ""
    return f"{type(e).__name__}: {msg}"
