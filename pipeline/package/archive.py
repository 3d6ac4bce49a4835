"""Writing and reading a package: a byte-reproducible zip, or a folder.

A zip made twice from the same files is the same bytes: entries sorted by name, every
timestamp 1980-01-01 00:00:00 (the earliest a zip can hold), permissions 0644, "made by" Unix,
deflate at a fixed level, no extra fields, no folders, no absolute paths. Both forms are
written atomically (a temporary sibling renamed into place), so a failed run never leaves half a
package nor destroys an earlier one; an existing output is replaced only with ``force``.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from pipeline.core.errors import DeployError, PackageCorrupt
from pipeline.core.io import atomic_writer, publish_dir

ZIP_DATE = (1980, 1, 1, 0, 0, 0)
ZIP_MODE = 0o100644  # regular file, rw-r--r--
ZIP_LEVEL = 9
MAX_FILE_BYTES = 2 << 30  # refuse absurd entries (a zip bomb) rather than read them into memory


def is_zip_path(path: Path) -> bool:
    return path.suffix.lower() == ".zip"


def check_output(out: Path, force: bool) -> None:
    """Refuse an existing output without ``force`` (a folder that is empty counts as new)."""
    exists = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if exists and not force:
        raise DeployError(f"{out} already exists; pass --force to replace it (the old one stays until the new "
                          "package is complete).")
    if is_zip_path(out) and out.is_dir():
        raise DeployError(f"{out} is a folder; give a .zip file name or a folder without the .zip suffix.")
    if not is_zip_path(out) and out.exists() and not out.is_dir():
        raise DeployError(f"{out} is a file; a folder package needs a folder name (or end it in .zip).")


def zip_bytes(files: dict[str, bytes]) -> bytes:
    """The reproducible zip of ``files`` (name -> bytes)."""
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = ZIP_MODE << 16
            zf.writestr(info, files[name], compress_type=zipfile.ZIP_DEFLATED, compresslevel=ZIP_LEVEL)
    return buf.getvalue()


def write_package(files: dict[str, bytes], out: Path, force: bool) -> Path:
    """Write ``files`` as a zip (``out`` ends in ``.zip``) or a folder, atomically."""
    check_output(out, force)
    for name in files:
        _check_name(name)
    if is_zip_path(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(out) as fh:
            fh.write(zip_bytes(files))
        os.chmod(out, 0o644)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    for name, data in sorted(files.items()):
        (tmp / name).write_bytes(data)
        os.chmod(tmp / name, 0o644)
    os.chmod(tmp, 0o755)
    return publish_dir(tmp, out)


def _check_name(name: str) -> None:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or len(p.parts) != 1:
        raise PackageCorrupt(f"{name!r} is not a plain file name; a package holds plain files only.")


def read_package(path: Path) -> dict[str, bytes]:
    """The files of a package (zip or folder); :class:`PackageCorrupt` names what cannot be read."""
    if not path.exists():
        raise DeployError(f"package {path} does not exist.")
    if path.is_dir():
        files = {}
        for entry in sorted(path.iterdir()):
            if not entry.is_file():
                raise PackageCorrupt(f"{path}: {entry.name} is not a plain file; a package holds plain files only.")
            files[entry.name] = entry.read_bytes()
        return files
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackageCorrupt(f"{path} is not a readable zip ({exc}); the package is corrupt.") from None
    files = {}
    with zf:
        for info in zf.infolist():
            _check_name(info.filename)
            if info.file_size > MAX_FILE_BYTES:
                raise PackageCorrupt(f"{path}: {info.filename} claims {info.file_size} bytes; refusing to read it.")
            try:
                files[info.filename] = zf.read(info)
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as exc:  # bad CRC, bad deflate
                raise PackageCorrupt(f"{path}: {info.filename} cannot be read from the zip ({exc}); "
                                     "the package is corrupt.") from None
    return files


__all__ = ["check_output", "is_zip_path", "read_package", "write_package", "zip_bytes"]
