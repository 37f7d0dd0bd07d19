"""Loading a Python node's handler (``class OvmsPythonModel``) the way OVMS does.

The handler file's directory is appended to ``sys.path`` and the file is imported by its file name,
so helper modules next to it import by plain name and two handlers with the same file name collide
(refused here with a clear message). One ``OvmsPythonModel`` instance serves every graph instance
of its graph.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import traceback
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local_ovms import pyovms as local_pyovms
from local_ovms.errors import describe
from local_ovms.graph import Node

log = logging.getLogger(__name__)


class HandlerError(Exception):
    """A handler that cannot be used: import failed, no class, no execute, initialize raised."""


def resolve_pyovms() -> types.ModuleType:
    """The ``pyovms`` module: the real one when importable, else ``local_ovms.pyovms`` registered as it."""
    module = sys.modules.get("pyovms")
    if module is None:
        if importlib.util.find_spec("pyovms") is not None:
            module = importlib.import_module("pyovms")
        else:
            module = sys.modules["pyovms"] = local_pyovms
    return module


# What a handler may raise: any exception, and SystemExit too (say, argparse seeing the server's own
# command line), which ends the call that raised it, not the server.
HANDLER_FAILURES = (Exception, SystemExit)


@dataclass
class Handler:
    """A node's loaded ``OvmsPythonModel`` instance."""

    node: Node
    model: Any

    def finalize(self) -> None:
        """Call ``finalize()`` if the handler has one; an exception is logged, not raised."""
        finalize = getattr(self.model, "finalize", None)
        if not callable(finalize):
            return
        try:
            finalize()
        except HANDLER_FAILURES as exc:
            log.error("node %r: finalize raised %s", self.node.name, describe(exc))
            log.debug("finalize traceback:\n%s", traceback.format_exc())


def _import(path: Path) -> types.ModuleType:
    directory = str(path.parent)
    if directory not in sys.path:
        sys.path.append(directory)
    name = path.stem
    loaded = sys.modules.get(name)
    loaded_file = getattr(loaded, "__file__", None)
    if loaded is not None and (loaded_file is None or Path(loaded_file).resolve() != path):
        raise HandlerError(
            f"cannot import {path} as module {name!r}: that name is already taken by "
            f"{loaded_file or 'a built-in module'} (handlers are imported by file name; rename the file)"
        )
    try:
        module = importlib.import_module(name)
    except HANDLER_FAILURES as exc:
        log.debug("import traceback:\n%s", traceback.format_exc())
        raise HandlerError(f"importing {path} failed: {describe(exc)}") from exc
    module_file = getattr(module, "__file__", None)
    if module_file is None or Path(module_file).resolve() != path:
        raise HandlerError(
            f"importing {path} as {name!r} found {module_file or 'a built-in module'} instead "
            "(handlers are imported by file name; rename the file)"
        )
    return module


def load_handler(node: Node) -> Handler:
    """Import the node's handler, create its ``OvmsPythonModel`` and call ``initialize(kwargs)``."""
    module = _import(node.handler_path)
    cls = getattr(module, "OvmsPythonModel", None)
    if not isinstance(cls, type):
        raise HandlerError(f"{node.handler_path} defines no class OvmsPythonModel")
    if not callable(getattr(cls, "execute", None)):
        raise HandlerError(f"OvmsPythonModel in {node.handler_path} has no execute(self, inputs) method")
    try:
        model = cls()
        initialize = getattr(model, "initialize", None)
        if callable(initialize):
            initialize(
                {
                    "node_name": node.name,
                    "input_names": [s.name for s in node.inputs],
                    "output_names": [s.name for s in node.outputs],
                    "base_path": str(node.handler_path.parent),
                }
            )
    except HANDLER_FAILURES as exc:
        log.debug("initialize traceback:\n%s", traceback.format_exc())
        raise HandlerError(f"node {node.name!r}: initialize raised {describe(exc)}") from exc
    return Handler(node=node, model=model)
