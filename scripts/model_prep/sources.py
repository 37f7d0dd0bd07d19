"""Where a model is exported from: an installed model wheel, a local file or folder, or the Hub."""

from __future__ import annotations

from pathlib import Path

from model_prep import hub, registry
from model_prep.errors import ModelPrepError
from model_prep.progress import console
from model_prep.staging import check_free_space, folder_size

# Exported IRs keep the source precision, so bf16/fp16 sources become float32 IRs (twice the size);
# a GGUF is dequantised to a float32 Hugging Face folder, then exported to a float32 IR.
IR_PER_SOURCE_BYTE = 2
GGUF_BYTES_PER_WEIGHT = 2 * 4


def export_bytes(source: Path) -> int:
    """Disk space the export of `source` needs (temporary copies included)."""
    if source.suffix == ".gguf":
        from model_prep.gguf_source import gguf_parameter_count

        return GGUF_BYTES_PER_WEIGHT * gguf_parameter_count(source)
    return IR_PER_SOURCE_BYTE * folder_size(source)


def locate(spec: registry.ModelSpec, target: Path, revision: str | None) -> Path:
    """The local file or folder to export `spec` from, downloading it when it is a Hub id.

    Checks free disk space at `target` before anything is written (for the Hub, before downloading).
    """
    source = registry.package_path(spec)
    if source is None and Path(spec.model_id).expanduser().exists():
        source = Path(spec.model_id).expanduser()
    elif source is None and spec.model_id.startswith(("/", ".", "~")):
        raise ModelPrepError(f"--model-id {spec.model_id}: no such file or folder")
    if source is not None:
        check_free_space(target.parent, export_bytes(source), f"exporting {spec.name}")
        return source
    console.print(f"Fetching {spec.model_id} from the Hugging Face Hub")

    def room_for(download_bytes: int) -> None:
        needed = (1 + IR_PER_SOURCE_BYTE) * download_bytes
        check_free_space(target.parent, needed, f"downloading and exporting {spec.model_id}")

    return hub.fetch(spec.model_id, revision, spec.gated, room_for)
