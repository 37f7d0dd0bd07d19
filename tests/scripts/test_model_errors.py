"""Clear errors and nothing half-written: unknown names, existing folders, full disks, failures, Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from tests.conftest import LIVENESS_S, sigint_as_in_a_terminal, wait_until
from tests.scripts.conftest import SCRIPTS
from tests.scripts.runner import script_command, script_env

REGISTRY = json.loads((SCRIPTS.parent / "servable_stream" / "ragbot" / "models.json").read_text())
LLM_SCRIPTS = ("download_model.py", "compress_model.py")


@pytest.mark.parametrize(
    ("script_name", "kind"),
    [
        ("download_model.py", "llm"),
        ("compress_model.py", "llm"),
        ("download_embedding_model.py", "embedding"),
    ],
)
def test_help_lists_every_supported_name(script, script_name, kind):
    result = script(script_name, "--help")
    assert result.returncode == 0
    for name, entry in REGISTRY[kind].items():
        assert name in result.stdout and entry["model_id"] in result.stdout


@pytest.mark.parametrize(
    ("script_name", "kind"),
    [
        ("download_model.py", "llm"),
        ("compress_model.py", "llm"),
        ("download_embedding_model.py", "embedding"),
    ],
)
def test_unknown_name_lists_the_choices(script, script_name, kind, tmp_path):
    result = script(script_name, "--model", "no-such-model", "--output-dir", str(tmp_path))
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "unknown" in message and "'no-such-model'" in message
    assert all(name in message for name in REGISTRY[kind])
    assert list(tmp_path.iterdir()) == []


def test_model_and_model_id_are_exclusive(script):
    result = script("download_model.py", "--model", "smollm2-135m-instruct", "--model-id", "a/b")
    assert result.returncode == 2 and "exactly one of --model NAME or --model-id" in result.stderr


def test_missing_local_path_is_named(script, tmp_path):
    result = script(
        "download_model.py", "--model-id", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path)
    )
    assert result.returncode == 2 and "no such file or folder" in result.stderr


def test_existing_folder_that_is_not_a_model_is_left_alone(script, tmp_path):
    target = tmp_path / "all-MiniLM-L6-v2"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    result = script(
        "download_embedding_model.py", "--model", "all-MiniLM-L6-v2", "--output-dir", str(tmp_path)
    )
    assert result.returncode == 2
    assert "already exists and is not a finished OpenVINO model folder" in " ".join(result.stderr.split())
    assert "--force" in result.stderr
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all-MiniLM-L6-v2"]


def test_compress_without_an_exported_model_says_how_to_make_it(script, tmp_path):
    result = script("compress_model.py", "--model", "qwen2.5-0.5b-instruct", "--output-dir", str(tmp_path))
    assert result.returncode == 2
    assert "download_model.py --model qwen2.5-0.5b-instruct" in result.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MiB file system (tmpfs), so free-space checks meet a truly full disk."""
    mount_point = tmp_path / "small_disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


@pytest.mark.parametrize(
    "command",
    [
        ("download_model.py", "--model", "smollm2-135m-instruct"),
        ("download_embedding_model.py", "--model", "all-MiniLM-L6-v2"),
    ],
)
def test_not_enough_disk_is_refused_before_writing(script, small_disk, command):
    result = script(*command, "--output-dir", str(small_disk))
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "not enough disk space" in message and "GiB needed" in message
    assert list(small_disk.iterdir()) == []


def test_not_enough_disk_for_compression(script, small_disk, tiny_ir):
    result = script(
        "compress_model.py",
        "--model",
        "tiny-llama",
        "--source",
        str(tiny_ir),
        "--output-dir",
        str(small_disk),
    )
    assert result.returncode == 2 and "not enough disk space" in " ".join(result.stderr.split())
    assert list(small_disk.iterdir()) == []


def test_failed_export_leaves_nothing_behind(script, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    out = tmp_path / "out"
    result = script("download_model.py", "--model-id", str(broken), "--output-dir", str(out))
    assert result.returncode == 2
    assert (
        f"exporting {broken} failed" in " ".join(result.stderr.split()) and "Traceback" not in result.stderr
    )
    assert not out.exists() or list(out.iterdir()) == []


def test_interrupted_conversion_leaves_nothing_behind(tiny_gguf, tmp_path):
    """Ctrl-C in the middle of a conversion removes the staging folder and exits 130. A test hook holds
    the conversion once the export has written into the staging folder, so the interrupt lands there
    however fast the machine is."""
    out, held, log = tmp_path / "out", tmp_path / "held", tmp_path / "stderr.txt"
    command = script_command(
        "download_model.py", "--model-id", str(tiny_gguf), "--output-dir", str(out), hooked=True
    )
    with log.open("w") as stderr:
        process = subprocess.Popen(
            command,
            env=script_env({"MODEL_PREP_TEST_HOLD": str(held)}),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=sigint_as_in_a_terminal,
        )
    try:
        wait_until(lambda: held.exists() or process.poll() is not None, "the conversion is held", 600)
        assert process.poll() is None, log.read_text()
        assert list(out.glob(".tiny-llama.*.partial/openvino_model.xml")), "nothing written yet"
        process.send_signal(signal.SIGINT)
        process.wait(LIVENESS_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = log.read_text()
    assert process.returncode == 130, stderr
    assert "nothing half-written" in stderr
    assert list(out.iterdir()) == []


def test_staged_folder_replaces_the_target_only_when_complete(tmp_path):
    from model_prep.staging import staged_folder

    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_folder(target) as staging:
        (staging / "new.txt").write_text("new")
        raise RuntimeError("export failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"] and (target / "old.txt").is_file()
    with staged_folder(target) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert [p.name for p in target.iterdir()] == ["new.txt"]


def test_registry_int4_settings_are_usable():
    from model_prep.registry import spec_from_registry

    for name in REGISTRY["llm"]:
        spec = spec_from_registry("llm", name)
        assert spec.int4.group_size in (-1, 32, 64, 128) and 0 < spec.int4.ratio <= 1
    assert spec_from_registry("llm", "llama-3.2-1b-instruct").gated


def test_model_id_dot_exports_into_a_named_folder_and_keeps_the_output_folder(
    script, tiny_hf_llama, tmp_path
):
    """`--model-id .` with --force names the folder it means; the output folder itself is never replaced."""
    from model_prep.staging import is_model_folder

    out = tmp_path / "out"
    out.mkdir()
    (out / "sentinel.txt").write_text("mine")
    result = script(
        "download_model.py", "--model-id", ".", "--output-dir", str(out), "--force", cwd=tiny_hf_llama
    )
    assert result.returncode == 0, result.stderr
    assert (out / "sentinel.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["sentinel.txt", "tiny-llama-hf"]
    assert is_model_folder(out / "tiny-llama-hf")


@pytest.mark.parametrize(
    ("script_name", "args"),
    [
        ("download_model.py", ("--model-id", "/")),
        ("download_model.py", ("--model-id", "a/b", "--name", "..")),
        ("download_model.py", ("--model-id", "a/b", "--name", "x/y")),
        ("download_embedding_model.py", ("--model-id", "a/b", "--name", ".")),
        ("compress_model.py", ("--model", "../x", "--source", "nowhere")),
    ],
)
def test_folder_names_outside_the_output_folder_are_refused(script, tmp_path, script_name, args):
    (tmp_path / "sentinel.txt").write_text("mine")
    result = script(script_name, *args, "--output-dir", str(tmp_path), "--force")
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "cannot be a model folder name" in message and "pass another --" in message
    assert "Traceback" not in message
    assert [p.name for p in tmp_path.iterdir()] == ["sentinel.txt"]


def test_a_target_linked_to_the_output_folder_is_refused(tmp_path):
    from model_prep.errors import ModelPrepError
    from model_prep.staging import target_folder

    (tmp_path / "loop").symlink_to(tmp_path)
    with pytest.raises(ModelPrepError, match="not inside --output-dir"):
        target_folder(tmp_path, "loop")
    assert target_folder(tmp_path, "model") == tmp_path / "model"


def no_gpu() -> None:
    """Skip unless this machine has no GPU (the device tests need one to be missing)."""
    import openvino

    if any(device.startswith("GPU") for device in openvino.Core().available_devices):
        pytest.skip("this machine has a GPU")


@pytest.mark.parametrize(
    "command",
    [
        ("download_model.py", "--model", "smollm2-135m-instruct"),
        ("download_embedding_model.py", "--model", "all-MiniLM-L6-v2"),
        ("compress_model.py", "--model", "smollm2-135m-instruct"),
    ],
)
def test_a_missing_device_is_refused_at_once(tmp_path, command):
    """Before any work: a test hook fails the run if the script finds the model or writes a folder."""
    no_gpu()
    result = subprocess.run(
        script_command(*command, "--device", "GPU", "--output-dir", str(tmp_path), hooked=True),
        capture_output=True,
        text=True,
        env=script_env({"MODEL_PREP_TEST_NO_WORK": "1"}),
        timeout=600,
    )
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert "--device GPU is not available here; OpenVINO sees CPU" in message and "Traceback" not in message
    assert list(tmp_path.iterdir()) == []


def test_device_names_accept_families_indexes_and_auto():
    from model_prep.cli import device_names

    assert device_names(["CPU"]) == {"CPU", "CPU.0", "AUTO"}
    assert {"GPU", "GPU.0"} <= device_names(["CPU", "GPU"])
    assert {"GPU", "GPU.0", "GPU.1"} <= device_names(["CPU", "GPU.0", "GPU.1"])
    assert "GPU.2" not in device_names(["CPU", "GPU.0", "GPU.1"])


def test_a_failed_measurement_is_reported(tiny_ir):
    """compress_model.py's report: a device that fails to compile is a ModelPrepError, not a traceback."""
    from compress_model import report
    from model_prep.errors import ModelPrepError

    no_gpu()
    with pytest.raises(ModelPrepError, match="measuring source on GPU failed"):
        report("tiny-llama", {"source": tiny_ir}, "GPU")


def test_a_failed_embedding_check_is_reported(monkeypatch, capsys, tmp_path):
    """download_embedding_model.py: a check that fails (e.g. on a device) exits 2 and leaves nothing."""
    import download_embedding_model
    from model_prep import cli, export, sources

    def fail(model_dir, device):
        raise RuntimeError("Failed to load libOpenCL.so.1")

    monkeypatch.setattr(cli, "check_device", lambda device: None)
    monkeypatch.setattr(sources, "locate", lambda spec, target, revision: tmp_path)
    monkeypatch.setattr(export, "export_embedding", lambda source, out_dir: None)
    monkeypatch.setattr(export, "check_embedding", fail)
    out = tmp_path / "out"
    argv = ["download_embedding_model.py", "--model-id", "a/b", "--output-dir", str(out), "--device", "GPU"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        cli.run(download_embedding_model.main)
    assert exited.value.code == 2
    assert "checking b on GPU failed: Failed to load libOpenCL.so.1" in " ".join(
        capsys.readouterr().err.split()
    )
    assert list(out.iterdir()) == []
