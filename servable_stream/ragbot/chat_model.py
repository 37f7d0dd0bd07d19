"""The LLM as a LangChain chat model: the tokenizer's own chat template, real token streaming."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict

from .engine import Engine

ROLE_OF_TYPE = {"system": "system", "human": "user", "ai": "assistant"}


class OpenVINOChatModel(BaseChatModel):
    """Chat model over the shared continuous-batching Engine.

    `.stream(messages, max_new_tokens=..., temperature=..., top_p=..., seed=..., ignore_eos=...,
    regex=..., repetition_penalty=..., no_repeat_ngram_size=...)`
    (and `arrival=`, the request's `Engine.expect()`, closed once it is submitted) yields a chunk
    per text piece as the pipeline produces it, then a last empty chunk whose `response_metadata`
    holds finish_reason, ttft/decode timing and prompt lookup's counts (when on) and whose
    `usage_metadata` holds the token counts.
    Closing the stream cancels the request in the pipeline.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: Engine
    max_new_tokens: int = 256

    @property
    def _llm_type(self) -> str:
        return "openvino-genai-continuous-batching"

    def render(self, messages: list[BaseMessage]) -> str:
        """The prompt text made by the model's chat template."""
        turns = [{"role": ROLE_OF_TYPE[m.type], "content": m.content} for m in messages]
        tokenizer = self.engine.tokenizer
        try:
            return tokenizer.apply_chat_template(turns, add_generation_prompt=True)
        except Exception:
            if turns[0]["role"] != "system" or len(turns) < 2:
                raise
            # Templates without a system role: the system text opens the first user turn.
            merged = [{"role": "user", "content": f"{turns[0]['content']}\n\n{turns[1]['content']}"}]
            return tokenizer.apply_chat_template(merged + turns[2:], add_generation_prompt=True)

    def tokenize(self, messages: list[BaseMessage]) -> Any:
        """Prompt token ids (openvino Tensor [1, n]) for `messages`."""
        return self.engine.encode(self.render(messages))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        input_ids = kwargs.get("input_ids")
        if input_ids is None:
            input_ids = self.tokenize(messages)
        config = self.engine.generation_config(
            max_new_tokens=kwargs.get("max_new_tokens", self.max_new_tokens),
            temperature=kwargs.get("temperature", 0.0),
            top_p=kwargs.get("top_p", 1.0),
            seed=kwargs.get("seed"),
            ignore_eos=kwargs.get("ignore_eos", False),
            regex=kwargs.get("regex"),
            repetition_penalty=kwargs.get("repetition_penalty", 1.0),
            no_repeat_ngram_size=kwargs.get("no_repeat_ngram_size", 0),
        )
        if stop:
            config.stop_strings = set(stop)
        started = time.perf_counter()
        generation = self.engine.submit(input_ids, config, kwargs.get("arrival"))
        try:
            for piece in generation.pieces():
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
                if run_manager is not None:
                    run_manager.on_llm_new_token(piece, chunk=chunk)
                yield chunk
        finally:
            generation.cancel()
        first = generation.first_token_time or generation.end_time
        decode_s = generation.end_time - first
        stats = {
            "finish_reason": generation.finish_reason,
            "ttft_ms": (first - started) * 1000,
            "tokens_per_s": (generation.generated_tokens - 1) / decode_s if decode_s > 0 else 0.0,
        }
        if lookup := generation.lookup():
            stats["lookup"] = lookup
        usage = {
            "input_tokens": generation.prompt_tokens,
            "output_tokens": generation.generated_tokens,
            "total_tokens": generation.prompt_tokens + generation.generated_tokens,
        }
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", response_metadata=stats, usage_metadata=usage),
            generation_info=stats,
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        chunks = list(self._stream(messages, stop=stop, run_manager=run_manager, **kwargs))
        last = chunks[-1].message
        message = AIMessage(
            content="".join(c.message.content for c in chunks),
            response_metadata=last.response_metadata,
            usage_metadata=last.usage_metadata,
        )
        return ChatResult(
            generations=[ChatGeneration(message=message, generation_info=chunks[-1].generation_info)]
        )
