"""RAG chatbot servable helpers: settings, request parsing, LLM engine, documents, index, chain."""
