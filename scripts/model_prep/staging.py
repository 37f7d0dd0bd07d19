"""Output folders written whole or not at all: a temporary sibling folder renamed when complete."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from model_prep.errors import ModelPrepError

GIB = 1024**3


def is_model_folder(path: Path) -> bool:
    """True when `path` holds a finished OpenVINO model (what the scripts write last is the rename)."""
    return (path / "openvino_model.xml").is_file() and (path / "openvino_model.bin").is_file()


def check_folder_name(name: str, option: str = "--name") -> str:
    """`name` when it names one folder inside the output folder, else an error asking for another `option`."""
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise ModelPrepError(
            f"{name!r} cannot be a model folder name (it must name one folder inside --output-dir); "
            f"pass another {option} NAME"
        )
    return name


def target_folder(output_dir: Path, name: str) -> Path:
    """output_dir/name, refused unless it is strictly inside output_dir (also after symbolic links)."""
    target = output_dir / check_folder_name(name)
    if output_dir.resolve() not in target.resolve().parents:
        raise ModelPrepError(
            f"{target} is not inside --output-dir {output_dir}; choose another name or folder"
        )
    return target


def should_build(target: Path, force: bool) -> bool:
    """False when `target` is already a finished model and --force is off (the caller skips it).

    An existing folder that is not a finished model is an error unless --force, so nothing the user
    put there is overwritten silently.
    """
    if not target.exists() or force:
        return True
    if is_model_folder(target):
        return False
    raise ModelPrepError(
        f"{target} already exists and is not a finished OpenVINO model folder; "
        f"remove it or pass --force to replace it"
    )


def check_free_space(folder: Path, needed_bytes: int, what: str) -> None:
    """Fail before writing anything when the file system of `folder` has less than `needed_bytes` free."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed_bytes:
        raise ModelPrepError(
            f"not enough disk space for {what} in {folder}: about {needed_bytes / GIB:.2f} GiB needed, "
            f"{free / GIB:.2f} GiB free; free some space or choose another --output-dir"
        )


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to `target`; on success it replaces `target`, else it goes.

    Also cleans up after KeyboardInterrupt, so an interrupted run leaves no half-written model behind.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a model folder is readable like any other
    try:
        yield staging
        if target.exists():  # swap by two renames, so readers of `target` see no gap worth the name
            replaced = staging.with_suffix(".replaced")
            target.rename(replaced)
            staging.rename(target)
            shutil.rmtree(replaced)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def folder_size(path: Path) -> int:
    """Bytes used by the files under `path`."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
