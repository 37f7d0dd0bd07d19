"""The retrieval chain (LangChain): retrieve chunks for the question (and the turn before) -> rank
their passages -> the best few as numbered sources -> prompt with the passages and the question last,
trimmed to fit the model -> chat model stream (or the refusal when no passage is relevant enough)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from langchain_core.documents import Document
from langchain_core.messages import AIMessageChunk, BaseMessage, convert_to_messages
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableLambda

from . import grounding
from .chat_model import OpenVINOChatModel
from .engine import Arrival
from .passages import Passage, rank
from .request import ChatRequest
from .settings import AnswerSettings

SNIPPET_CHARS = 300
# No tokenizer packs more characters than this into a token on real text: longer questions are
# refused before spending time on tokenizing them.
MAX_CHARS_PER_TOKEN = 64
NO_PASSAGE = "(no passage of the documents fits in the model's context)"
# Chat-template control markers (<|im_start|>, </s>, [INST], <<SYS>>, ...) found in documents are
# broken up so retrieved text can never open or close a turn.
_MARKERS = re.compile(r"<\|[^<>|]{0,40}\|>|</?s>|\[/?INST\]|<</?SYS>>")


def neutralize(text: str) -> str:
    """Retrieved text as plain data: template markers lose their special meaning."""
    return _MARKERS.sub(lambda m: m.group(0).replace("<", "< ").replace("[", "[ "), text)


@dataclass
class Prepared:
    """A request ready to generate: the sources shown to the user and the prompt token ids, or the
    refusal to send instead of generating when no passage is relevant enough."""

    sources: list[dict[str, Any]]
    input_ids: Any
    messages: list[BaseMessage]
    max_new_tokens: int
    retrieval_ms: float
    refusal: str | None = None
    regex: str | None = None  # extract mode: the answer is one of the passages, cited


def _regex_literal(text: str) -> str:
    """`text` matched literally by the structured-output regex (xgrammar knows no escaped space)."""
    return re.sub(r"([\\.^$*+?()\[\]{}|])", r"\\\1", text)


class PassageEmbeddings(Protocol):
    """What ranking passages needs of the embedding model (CountedOpenVINOEmbeddings)."""

    def embed_query(self, text: str) -> list[float]: ...

    def embed_passages(self, texts: list[str]) -> list[list[float]]: ...


class RagChain:
    """`prepare(request)` retrieves and builds the prompt; `stream(prepared, request)` generates.

    Retrieval searches for the question together with the last `history_turns` user turns (a
    follow-up such as "And how much does it cost?" names nothing by itself), cuts the chunks into
    passages (see `passages`), ranks them against the same text and keeps the best few, numbered as
    the answer cites them."""

    def __init__(
        self,
        chat_model: OpenVINOChatModel,
        search: Callable[[str, int], list[Document]],  # [] only when nothing is indexed
        embeddings: PassageEmbeddings,
        top_k: int,
        context_tokens: int,
        answer: AnswerSettings,
    ) -> None:
        self.chat_model = chat_model
        self.search = search
        self.embeddings = embeddings
        self.top_k = top_k
        self.context_tokens = context_tokens
        self.answer = answer
        self.rag_prompt = ChatPromptTemplate.from_messages(
            [
                ("system", "{instructions}{user_system}"),
                MessagesPlaceholder("history"),
                ("human", "Passages:\n{context}\n\nQuestion: {question}"),
            ]
        )
        self.prepare_chain = RunnableLambda(self._retrieve) | RunnableLambda(self._fit)

    def prepare(self, request: ChatRequest) -> Prepared:
        """Retrieve (when use_rag) and build a prompt that fits the model; ValueError if it cannot."""
        return self.prepare_chain.invoke(request)

    def stream(
        self, prepared: Prepared, request: ChatRequest, arrival: Arrival | None = None
    ) -> Iterator[AIMessageChunk]:
        """Chunks of the answer as generated; the last carries finish_reason and token counts."""
        return self.chat_model.stream(
            prepared.messages,
            input_ids=prepared.input_ids,
            arrival=arrival,
            max_new_tokens=prepared.max_new_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            ignore_eos=request.ignore_eos,
            regex=prepared.regex,
            repetition_penalty=self.answer.repetition_penalty,
            no_repeat_ngram_size=self.answer.no_repeat_ngram_size,
        )

    def search_query(self, request: ChatRequest) -> str:
        """The question, after the user turns before it that retrieval should also see."""
        users = [m["content"] for m in request.messages if m["role"] == "user"]
        return "\n".join(users[-1 - self.answer.history_turns :])

    def _retrieve(self, request: ChatRequest) -> dict[str, Any]:
        started = time.perf_counter()
        found: list[Passage] = []
        chunks: list[Document] = []
        if request.use_rag:
            query = self.search_query(request)
            chunks = self.search(query, self.top_k)
            found = rank(
                query,
                chunks,
                self.embeddings.embed_query,
                self.embeddings.embed_passages,
                self.answer.passage_sentences,
                self.answer.lexical_weight,
            )[: self.answer.passages]
        elapsed = (time.perf_counter() - started) * 1000
        return {"request": request, "chunks": chunks, "passages": found, "retrieval_ms": elapsed}

    def _messages(self, request: ChatRequest, passages: list[Passage], history_from: int) -> list:
        conversation = request.messages[history_from:]
        if not request.use_rag:
            kept = [m for i, m in enumerate(request.messages) if i >= history_from or m["role"] == "system"]
            return convert_to_messages([(m["role"], m["content"]) for m in kept])
        user_system = "\n\n".join(m["content"] for m in request.messages if m["role"] == "system")
        turns = [(m["role"], m["content"]) for m in conversation[:-1] if m["role"] != "system"]
        context = "\n".join(f"[{n}] {neutralize(p.text)}" for n, p in enumerate(passages, start=1))
        return self.rag_prompt.format_messages(
            instructions=self.answer.prompt.format(refusal=self.answer.refusal),
            user_system=f"\n\n{user_system}" if user_system else "",
            history=turns,
            context=context or NO_PASSAGE,
            question=request.question,
        )

    def _fit(self, state: dict[str, Any]) -> Prepared:
        """Drop the lowest-ranked passages, then the oldest turns (system messages stay), until prompt +
        answer fit the context; the answer is shortened only when the question alone leaves too little
        room. With no passage relevant enough, the answer is the refusal, without generating."""
        request: ChatRequest = state["request"]
        passages: list[Passage] = state["passages"]
        if len(request.question) > MAX_CHARS_PER_TOKEN * self.context_tokens:
            raise ValueError(
                f"pre_prompt: the question is {len(request.question)} characters, far more than the model's "
                f"context of {self.context_tokens} tokens (MAX_CONTEXT_TOKENS) holds"
            )
        question_tokens = int(self.chat_model.engine.encode(request.question).get_shape()[-1])
        if question_tokens >= self.context_tokens:
            raise ValueError(
                f"pre_prompt: the question is {question_tokens} tokens; the model's context holds "
                f"{self.context_tokens} (MAX_CONTEXT_TOKENS)"
            )
        if request.use_rag and not self._relevant(request.question, state["chunks"], passages):
            return Prepared([], None, [], 0, state["retrieval_ms"], refusal=self.answer.refusal)
        budget = self.context_tokens - request.max_new_tokens
        history_from = 0
        while True:
            for keep in range(len(passages), -1, -1):
                messages = self._messages(request, passages[:keep], history_from)
                ids = self.chat_model.tokenize(messages)
                if ids.get_shape()[-1] <= budget:
                    return self._prepared(state, passages[:keep], messages, ids, request.max_new_tokens)
            later_user_turns = [
                i
                for i in range(history_from + 1, len(request.messages))
                if request.messages[i]["role"] == "user"
            ]
            if later_user_turns:
                history_from = later_user_turns[0]
                continue
            room = self.context_tokens - int(ids.get_shape()[-1])
            if room < 1:
                raise ValueError(
                    f"pre_prompt: the prompt is {ids.get_shape()[-1]} tokens; the model's context holds "
                    f"{self.context_tokens} (MAX_CONTEXT_TOKENS)"
                )
            return self._prepared(state, [], messages, ids, room)

    def _relevant(self, question: str, chunks: list[Document], passages: list[Passage]) -> bool:
        """Whether the passages may answer: the best scores at least RELEVANCE_THRESHOLD and, with
        REQUIRE_QUESTION_NAMES, the retrieved chunks hold every name and code of the question (a
        question about the Moon, or a product no document names, finds chunks on other things)."""
        if not passages or passages[0].score < self.answer.relevance_threshold:
            return False
        if not self.answer.require_question_names:
            return True
        unknown = grounding.unsupported(question, [chunk.page_content for chunk in chunks])
        return not any(fact.kind == "name" for fact in unknown)

    def _prepared(
        self, state: dict, passages: list[Passage], messages: list, ids: Any, max_new_tokens: int
    ) -> Prepared:
        sources = [
            {
                "document": p.metadata.get("document", ""),
                "title": p.metadata.get("title", ""),
                "snippet": p.text[:SNIPPET_CHARS],
                "text": p.text,
                "score": round(p.score, 4),
            }
            for p in passages
        ]
        regex = None
        if self.answer.mode == "extract" and passages:
            best = passages[: self.answer.extract_choices]
            regex = "|".join(_regex_literal(f"{p.text} [{n}]") for n, p in enumerate(best, start=1))
        return Prepared(sources, ids, messages, max_new_tokens, state["retrieval_ms"], regex=regex)
