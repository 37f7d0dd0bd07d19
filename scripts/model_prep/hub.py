"""Fetch a model from the Hugging Face Hub with huggingface_hub (HF_TOKEN, HF_ENDPOINT, local cache)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from pathlib import Path

from model_prep.errors import ModelPrepError

# Never needed to export with optimum-intel: other runtimes' copies of the weights.
OTHER_FORMATS = ["*.gguf", "*.onnx", "*.onnx_data", "onnx/*", "openvino/*", "*.msgpack", "*.h5", "*.ot"]
OTHER_FORMATS += ["original/*", "*.tflite", "coreml/*", "*.mlmodel"]
TORCH_FORMATS = ["*.bin", "*.pt", "*.pth"]
IR_FILE = "openvino_model.xml"
# Beside an OpenVINO IR (openvino_model.xml/.bin), the framework weights it was converted from.
FRAMEWORK_WEIGHTS = ["*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "*.pt", "*.pth"]
OFFLINE_HINT = (
    "use the offline model (`--model smollm2-135m-instruct` for the LLM, `--model all-MiniLM-L6-v2` for "
    "embeddings), or a model folder you already have with `--model-id /local/path`"
)


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def files_to_use(files: dict[str, int]) -> dict[str, int]:
    """The files of a repository (or folder) worth taking, with sizes: of a pre-converted OpenVINO IR,
    the IR, tokenizer and configs as they are; else what the export needs (safetensors preferred over
    torch pickles)."""
    skip = list(OTHER_FORMATS)
    if IR_FILE in files:
        skip += FRAMEWORK_WEIGHTS
    elif any(name.endswith(".safetensors") for name in files):
        skip += TORCH_FORMATS
    return {n: s for n, s in files.items() if not any(fnmatch.fnmatch(n, pattern) for pattern in skip)}


def _is_unreachable(error: Exception) -> bool:
    """True when the Hub could not be talked to at all (network down, wrong HF_ENDPOINT, server error)."""
    import httpx
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if isinstance(error, HfHubHTTPError):
        return error.response is not None and error.response.status_code >= 500
    return isinstance(error, httpx.TransportError | LocalEntryNotFoundError | ConnectionError | TimeoutError)


def _explain(error: Exception, model_id: str, gated: bool) -> ModelPrepError:
    """A user-facing message for what went wrong talking to the Hub."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    if isinstance(error, GatedRepoError) or (gated and isinstance(error, RepositoryNotFoundError)):
        return ModelPrepError(
            f"{model_id} is a gated model: accept its licence on its Hub page, then set HF_TOKEN to a token "
            f"of that account (or run `hf auth login`) ({error.__class__.__name__})"
        )
    if isinstance(error, RepositoryNotFoundError):
        return ModelPrepError(
            f"{model_id} was not found on {_endpoint()} (or it is private: set HF_TOKEN); "
            f"check the id or pass a local folder with --model-id /local/path"
        )
    if (
        isinstance(error, HfHubHTTPError)
        and error.response is not None
        and error.response.status_code in (401, 403)
    ):
        return ModelPrepError(
            f"{_endpoint()} refused access to {model_id} (HTTP {error.response.status_code}); "
            f"if it is gated or private, set HF_TOKEN to a token with access"
        )
    if _is_unreachable(error):
        return ModelPrepError(
            f"the Hugging Face Hub at {_endpoint()} is unreachable and {model_id} is not in the local cache; "
            f"{OFFLINE_HINT}"
        )
    return ModelPrepError(f"downloading {model_id} from {_endpoint()} failed: {error}")


def fetch(model_id: str, revision: str | None, gated: bool, check_space: Callable[[int], None]) -> Path:
    """Download what is needed of `model_id` into the Hugging Face cache, with progress bars.

    The Hub's model API lists the files and their sizes first, so `check_space(bytes)` can refuse
    before anything is written. When the Hub cannot be reached, a complete cached copy is used.
    """
    from huggingface_hub import HfApi, snapshot_download

    try:
        info = HfApi().model_info(model_id, revision=revision, files_metadata=True)
    except Exception as e:  # the Hub client raises many kinds; each is explained to the user
        if not _is_unreachable(e):
            raise _explain(e, model_id, gated) from e
        try:
            return Path(snapshot_download(model_id, revision=revision, local_files_only=True))
        except Exception:
            raise _explain(e, model_id, gated) from e
    files = files_to_use({s.rfilename: int(s.size or 0) for s in info.siblings or []})
    check_space(sum(files.values()))
    try:
        return Path(snapshot_download(model_id, revision=revision, allow_patterns=list(files)))
    except Exception as e:  # as above
        raise _explain(e, model_id, gated) from e
