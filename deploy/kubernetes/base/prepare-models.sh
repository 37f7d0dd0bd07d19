#!/usr/bin/env bash
# The prepare-models Job: puts the servable folder (code, sample documents, models) on the
# ovms-rag-servable volume with the project's own scripts, as `make models` does on a workstation.
# It runs in the OVMS image (`make python_image`), which already holds OpenVINO, optimum-intel and NNCF.
set -euo pipefail
: "${SOURCE_ARCHIVE:?set SOURCE_ARCHIVE in the ovms-rag-source ConfigMap to a .tar.gz of this project}"
: "${SELECTED_MODEL:?}" "${EMBEDDING_MODEL:?}"
workspace="${MODELS_DIR:-/workspace}"  # the scripts' own variable for where model folders go
src=/tmp/src
mkdir -p "$src"
python3 -c 'import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1]).read())' \
  "$SOURCE_ARCHIVE" | tar -xz --strip-components=1 -C "$src"
cd "$src"
# The scripts' pins from pyproject.toml, not the project itself: the image's Python may be newer than
# the project's requires-python. The model wheels are data only (pyproject.toml, [tool.ovms-rag]).
python3 - <<'PY'
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))
pins = [p for p in project["project"]["optional-dependencies"]["scripts"] if not p.startswith("ovms-rag")]
open("/tmp/pins", "w").write("\n".join(pins))
open("/tmp/no-deps", "w").write("\n".join(project["tool"]["ovms-rag"]["no-deps"]))
PY
pip3 install --user --no-cache-dir -r /tmp/pins
pip3 install --user --no-cache-dir --no-deps -r /tmp/no-deps
# The code first, then the models beside it. The servers use docs.txt from a ConfigMap, not this copy.
cp -r servable_stream/. "$workspace/"
export MODELS_DIR="$workspace"
# --device CPU: the Job checks and measures the models on CPU even when the servers run on GPU.
python3 scripts/download_model.py --model "$SELECTED_MODEL" --device CPU
python3 scripts/compress_model.py --model "$SELECTED_MODEL" --precision INT4 --device CPU
python3 scripts/download_embedding_model.py --model "$EMBEDDING_MODEL" --device CPU
# The servers' init container waits for this file, so they never start on a half-written folder or
# before the models they are configured for exist.
touch "$workspace/.prepared-$SELECTED_MODEL-$EMBEDDING_MODEL"
echo "prepared $workspace for $SELECTED_MODEL and $EMBEDDING_MODEL"
