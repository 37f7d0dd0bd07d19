"""Test servable for the client tests: speaks the chatbot protocol with predictable, slow answers.

Answers "[turn N] word1 word2 ..." (N = user messages received, max_new_tokens words, default 12),
one word every CLIENT_TEST_DELAY_S seconds (default 0.05), after `sources` and before `end_signal`.
Every request is appended to $CLIENT_TEST_LOG_DIR/requests.jsonl; a generator closed before its end
(a cancelled stream) appends a line to $CLIENT_TEST_LOG_DIR/cancelled.jsonl.
A question containing "please fail" fails at once; "fail midway" fails after three words; "cite the
sources" gets GROUNDED_ANSWER (word by word, then finish_reason "stop") and an end_signal with the
grounding the real servable would send for it against the sources' "text".
With CLIENT_TEST_FAIL_INITIALIZE set, initialize fails, so the graph is never ready. With
CLIENT_TEST_DIE=before_text (or after_text), the server process kills itself with SIGKILL at its first
answer, after `sources` (or after three words): a replica that dies.
"""

import json
import os
import signal
import time
from pathlib import Path

from pyovms import Tensor

GROUNDED_MARKER = "cite the sources"
# Cites source 1 and a source that does not exist; 1,200 (twice) and Lima are in no source's text.
GROUNDED_ANSWER = (
    "The HT-7 flies 47 minutes [1] and its motors last 1,200 hours. After 1,200 hours, send it to Lima [3]."
)
GROUNDING = {"facts": 5, "unsupported": ["1,200", "1,200", "Lima"], "citations": [1], "refused": False}


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
        self.die = os.environ.get("CLIENT_TEST_DIE", "")

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
        if GROUNDED_MARKER in question:
            first, *rest = GROUNDED_ANSWER.split(" ")
            pieces = [first, *(f" {word}" for word in rest)]
            finish_reason, checked = "stop", {"grounding": GROUNDING}
        else:
            words = int(request.get("max_new_tokens", 12))
            pieces = [f"[turn {turn}] word1" if index == 0 else f" word{index + 1}" for index in range(words)]
            finish_reason, checked = "length", {}
        sources = []
        if request.get("use_rag", True):
            sources = [
                {
                    "document": "guide/setup.md",
                    "title": "Setup guide",
                    "snippet": f"About: {question}",
                    "score": 0.91,
                    "text": f"About: {question} The HT-7 flies 47 minutes on one battery.",
                },
                {
                    "document": "https://example.com/faq",
                    "title": "FAQ",
                    "snippet": "Frequent questions.",
                    "score": 0.42,
                    "text": "Frequent questions. The battery charges in 90 minutes.",
                },
            ]
        sent = 0
        try:
            yield text_tensor("sources", json.dumps(sources))
            first_token_at = None
            for index, piece in enumerate(pieces):
                if (self.die, index) in (("before_text", 0), ("after_text", 3)):
                    time.sleep(self.delay)  # what was yielded reaches the client first
                    os.kill(os.getpid(), signal.SIGKILL)
                if "fail midway" in question and index == 3:
                    raise RuntimeError("the test servable failed in the middle of the answer")
                time.sleep(self.delay)
                first_token_at = first_token_at or time.perf_counter()
                sent += 1
                yield text_tensor("completion", piece)
            elapsed = time.perf_counter() - started
            end = {
                "finish_reason": finish_reason,
                "prompt_tokens": sum(len(m["content"].split()) for m in request["messages"]),
                "generated_tokens": len(pieces),
                "ttft_ms": round(((first_token_at or time.perf_counter()) - started) * 1000, 3),
                "tokens_per_s": round(len(pieces) / elapsed, 3) if elapsed > 0 else 0.0,
                "retrieval_ms": 0.0,
                **checked,
            }
            yield text_tensor("end_signal", json.dumps(end))
        except GeneratorExit:
            self.log("cancelled.jsonl", {"question": question, "words_sent": sent})
            raise
