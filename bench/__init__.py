"""The project's benchmark: the servable through the local server against OpenVINO GenAI and the
reference demo's approach, plus retrieval, indexing, live reload and memory (see scripts/benchmark.py)."""
