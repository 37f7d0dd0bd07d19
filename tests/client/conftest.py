"""Fixtures for the client tests: the slow test servable on the real local server, the Gradio page
as a subprocess, and headless Chromium (Debian's) driven by Playwright."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import LIVENESS_S, REPO, free_port

SLOW_CONFIG = Path(__file__).resolve().parent / "slow_servable" / "config.json"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Seconds between two words of the slow servable: slow enough to watch, fast enough for tests.
WORD_DELAY_S = 0.05
# The slow servable answers a question with "cite the sources" in it with a fixed answer and grounding.
GROUNDED_QUESTION = "How long does it fly? Please cite the sources."
GROUNDED_ANSWER = (
    "The HT-7 flies 47 minutes [1] and its motors last 1,200 hours. After 1,200 hours, send it to Lima [3]."
)


def stop_all(processes: list[subprocess.Popen]) -> None:
    """Stop processes a fixture started: SIGTERM, then SIGKILL after 10 s."""
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()


@dataclass
class ServableLog:
    """What the slow test servable recorded: requests it got and answers closed early."""

    folder: Path

    def records(self, name: str) -> list[dict]:
        path = self.folder / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def requests(self) -> list[dict]:
        return self.records("requests.jsonl")

    def wait_for_cancellations(self, count: int = 1, timeout: float = LIVENESS_S) -> list[dict]:
        """The cancellation records, once at least `count` are there (else what there is at the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.records("cancelled.jsonl")
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


@dataclass
class SlowServer:
    server: object
    log: ServableLog

    @property
    def grpc_url(self) -> str:
        return self.server.grpc_url


@pytest.fixture
def slow_server(ovms_server, tmp_path: Path) -> SlowServer:
    """The local server serving tests/client/slow_servable as `python_model`."""
    log_dir = tmp_path / "servable-log"
    log_dir.mkdir()
    env = {"CLIENT_TEST_LOG_DIR": str(log_dir), "CLIENT_TEST_DELAY_S": str(WORD_DELAY_S)}
    return SlowServer(ovms_server(SLOW_CONFIG, env=env), ServableLog(log_dir))


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess]:
    """`python -m client.cli --url URL ARGS...`, run to its end."""

    def run(*args: str, url: str, stdin: str | None = None, timeout: float = 60):
        return subprocess.run(
            [sys.executable, "-m", "client.cli", "--url", url, *args],
            cwd=REPO,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture
def start_page(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Factory: start `python client/app.py` against a gRPC URL; returns the page URL. Stopped at teardown."""
    started: list[subprocess.Popen] = []

    def start(ovms_url: str) -> str:
        port = free_port()
        log = open(tmp_path / f"app-{port}.log", "wb")  # noqa: SIM115 - closed with the process
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            [sys.executable, "client/app.py", "--web_url", f"127.0.0.1:{port}", "--ovms_url", ovms_url]
            + ["--status_every", "1"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append(process)
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the page exited: {(tmp_path / f'app-{port}.log').read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return url
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("the page did not come up in 90 s")

    yield start
    stop_all(started)


@pytest.fixture
def browser_page(tmp_path: Path):
    """A Playwright page in headless Debian Chromium with a new, empty profile."""
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: run tests/install_browser.sh")
    from playwright.sync_api import expect, sync_playwright

    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1100},
        )
        page = context.pages[0] if context.pages else context.new_page()
        # Playwright's waits (5 s for expect, 30 s for actions by default) are liveness guards: make them
        # generous for a loaded machine.
        page.set_default_timeout(LIVENESS_S * 1000)
        expect.set_options(timeout=LIVENESS_S * 1000)
        try:
            yield page
        finally:
            context.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@dataclass
class ServableCopy:
    config: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def servable_copy(tmp_path_factory: pytest.TempPathFactory) -> ServableCopy:
    """A temporary copy of servable_stream/ (its code, config and documents; the default models used
    in place) with its own index folder, so that the repository tree is not modified."""
    source = REPO / "servable_stream"
    models = {
        "LLM_MODEL_DIR": source / "smollm2-135m-instruct_INT4_compressed_weights",
        "EMBEDDING_MODEL_DIR": source / "all-MiniLM-L6-v2",
    }
    missing = [str(folder) for folder in models.values() if not (folder / "openvino_model.xml").exists()]
    if missing or not (source / "config.json").exists():
        pytest.skip(f"the real servable or its default models are missing ({missing}): run `make models`")
    target = tmp_path_factory.mktemp("servable") / "servable_stream"
    target.mkdir()
    # Files and the servable's own folders; every other folder there is a model or an index.
    for item in source.iterdir():
        if item.is_file():
            shutil.copy2(item, target / item.name)
        elif item.name in ("ragbot", "documents"):
            shutil.copytree(item, target / item.name, ignore=shutil.ignore_patterns("__pycache__"))
    env = {name: str(folder) for name, folder in models.items()}
    return ServableCopy(target / "config.json", {**env, "RAG_INDEX_DIR": str(target / ".rag_index")})


@dataclass
class Gateway:
    """A running `python -m client.openai_api`."""

    url: str  # the OpenAI base URL, ending in /v1
    process: subprocess.Popen


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Factory: start the OpenAI gateway in front of a gRPC URL, ready once GET /v1/models answers (401
    counts when a key is set). Stopped at teardown."""
    started: list[subprocess.Popen] = []

    def start(ovms_url: str, *args: str) -> Gateway:
        port = free_port()
        log_path = tmp_path / f"gateway-{port}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "client.openai_api", "--ovms_url", ovms_url, "--host", "127.0.0.1",
                 "--port", str(port), *args],
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        started.append(process)
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + LIVENESS_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the gateway exited: {log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=5):
                    return Gateway(url, process)
            except urllib.error.HTTPError:
                return Gateway(url, process)
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the gateway did not come up in {LIVENESS_S:.0f} s")

    yield start
    stop_all(started)
