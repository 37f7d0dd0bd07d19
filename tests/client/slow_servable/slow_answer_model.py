"""Test servable for the client tests: speaks the chatbot protocol with predictable, slow answers.

Answers "[turn N] word1 word2 ..." (N = user messages received, max_new_tokens words, default 12),
one word every CLIENT_TEST_DELAY_S seconds (default 0.05), after `sources` and before `end_signal`.
Every request is appended to $CLIENT_TEST_LOG_DIR/requests.jsonl; a generator closed before its end
(a cancelled stream) appends a line to $CLIENT_TEST_LOG_DIR/cancelled.jsonl.
A question containing "please fail" fails at once; "fail midway" fails after three words.
With CLIENT_TEST_FAIL_INITIALIZE set, initialize fails, so the graph is never ready.
"""

import json
import os
import time
from pathlib import Path

from pyovms import Tensor


def decode_prompt(data: bytes) -> str:
    """Raw UTF-8, or one tritonclient BYTES element (4-byte little-endian length prefix)."""
    if len(data) >= 4 and int.from_bytes(data[:4], "little") == len(data) - 4:
        data = data[4:]
    return data.decode("utf-8")


def parse_request(text: str) -> dict:
    """The request as the real servable reads it, plus how it came ("format": "json" or "plain")."""
    if text.strip().startswith("{"):
        request = json.loads(text)
        if "question" in request:
            request["messages"] = [{"role": "user", "content": request.pop("question")}]
        return {**request, "format": "json"}
    return {"messages": [{"role": "user", "content": text}], "format": "plain"}


def text_tensor(name: str, text: str) -> list:
    return [Tensor(name, text.encode("utf-8"))]


class OvmsPythonModel:
    def initialize(self, kwargs: dict) -> None:
        if os.environ.get("CLIENT_TEST_FAIL_INITIALIZE"):
            raise RuntimeError("the test servable was asked not to start")
        self.log_dir = Path(os.environ["CLIENT_TEST_LOG_DIR"])
        self.delay = float(os.environ.get("CLIENT_TEST_DELAY_S", "0.05"))

    def log(self, file_name: str, record: dict) -> None:
        with open(self.log_dir / file_name, "a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")

    def execute(self, inputs: list):
        request = parse_request(decode_prompt(bytes(inputs[0])))
        self.log("requests.jsonl", request)
        question = request["messages"][-1]["content"]
        if "please fail" in question:
            raise ValueError("pre_prompt: the test servable was asked to fail")
        return self.answer(request, question)

    def answer(self, request: dict, question: str):
        started = time.perf_counter()
        turn = sum(1 for message in request["messages"] if message["role"] == "user")
        words = int(request.get("max_new_tokens", 12))
        sources = []
        if request.get("use_rag", True):
            sources = [
                {"document": "guide/setup.md", "title": "Setup guide", "snippet": f"About: {question}"},
                {"document": "https://example.com/faq", "title": "FAQ", "snippet": "Frequent questions."},
            ]
            for source, score in zip(sources, (0.91, 0.42), strict=True):
                source["score"] = score
        sent = 0
        try:
            yield text_tensor("sources", json.dumps(sources))
            first_token_at = None
            for index in range(words):
                if "fail midway" in question and index == 3:
                    raise RuntimeError("the test servable failed in the middle of the answer")
                time.sleep(self.delay)
                piece = f"[turn {turn}] word1" if index == 0 else f" word{index + 1}"
                first_token_at = first_token_at or time.perf_counter()
                sent += 1
                yield text_tensor("completion", piece)
            elapsed = time.perf_counter() - started
            end = {
                "finish_reason": "length",
                "prompt_tokens": sum(len(m["content"].split()) for m in request["messages"]),
                "generated_tokens": words,
                "ttft_ms": round(((first_token_at or time.perf_counter()) - started) * 1000, 3),
                "tokens_per_s": round(words / elapsed, 3) if elapsed > 0 else 0.0,
                "retrieval_ms": 0.0,
            }
            yield text_tensor("end_signal", json.dumps(end))
        except GeneratorExit:
            self.log("cancelled.jsonl", {"question": question, "words_sent": sent})
            raise
