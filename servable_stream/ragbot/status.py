"""The index status users see (the answer to `{"status": true}`): each document with its state,
chunk count and the time it was last indexed, failures with their reasons, a rebuild in progress."""

from __future__ import annotations

from typing import Any

INDEXED, KEPT, FAILED = "indexed", "kept", "failed"


def index_report(status: dict[str, Any], building: dict[str, str] | None) -> dict[str, Any]:
    """The last build's `status` as a list of documents: `indexed`; `kept` (it failed to load again,
    its previous version still serves); `failed` (not in the index), each failure with its reason."""
    reasons = {failure["document"]: failure["reason"] for failure in status.get("failures", [])}
    documents = []
    for document in status.get("documents", []):
        reason = reasons.pop(document["document"], None)
        documents.append(
            {
                "document": document["document"],
                "title": document.get("title", ""),
                "state": KEPT if reason else INDEXED,
                "chunks": document.get("chunks", 0),
                "indexed_at": document.get("indexed_at"),
                **({"reason": reason} if reason else {}),
            }
        )
    for source, reason in reasons.items():
        failed = {"document": source, "title": "", "state": FAILED, "chunks": 0, "indexed_at": None}
        documents.append({**failed, "reason": reason})
    return {
        "state": status.get("state", "empty"),
        "message": status.get("message", ""),
        "updated_at": status.get("updated_at"),
        "chunks": status.get("chunks", 0),
        "building": building,
        "documents": documents,
    }
