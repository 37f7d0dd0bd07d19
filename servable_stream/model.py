"""OpenVINO Model Server Python node: a RAG chatbot that streams its answer.

Input `pre_prompt` (a question, or a JSON chat request); outputs `sources` (once, first),
`completion` (text pieces as generated) and `end_signal` (last). `{"status": true}` gets the index
status as `status`, then `end_signal`. See the README, "The protocol".
"""

from pathlib import Path

from pyovms import Tensor
from ragbot.request import decode_input, parse_request
from ragbot.service import RagService, setup_logging
from ragbot.settings import Settings


class OvmsPythonModel:
    def initialize(self, kwargs: dict) -> None:
        setup_logging()
        self.settings = Settings.from_env(Path(kwargs["base_path"]))
        self.service = RagService(self.settings)

    def execute(self, inputs: list):
        request = parse_request(decode_input(inputs), self.settings.max_new_tokens)
        outputs = self.service.answer(request)
        return ([Tensor(name, text.encode("utf-8"))] for name, text in outputs)

    def finalize(self) -> None:
        self.service.stop()
