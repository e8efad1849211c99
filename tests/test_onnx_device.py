"""The device setting: providers onnxruntime offers in, providers chosen out (no GPU needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_deid.errors import DeidError
from dicom_deid.onnx_device import (
    CPU,
    CUDA,
    TENSORRT,
    DeviceError,
    DeviceUnavailableError,
    cuda_starts,
    make_session,
    parse_device,
    select_providers,
)

CPU_ONLY = [CPU]
GPU_BUILD = [TENSORRT, CUDA, CPU]


@pytest.mark.parametrize("value, expected", [
    ("auto", "auto"), ("CPU", "cpu"), (" cuda ", "cuda"), ("cuda:1", "cuda:1")])
def test_parse_accepts_the_four_forms(value, expected):
    assert parse_device(value) == expected


@pytest.mark.parametrize("value", ["gpu", "cuda:", "cuda:x", "cuda1", "", "tpu:0"])
def test_parse_rejects_anything_else(value):
    with pytest.raises(DeviceError, match="auto, cpu, cuda or cuda:N"):
        parse_device(value)


def test_cpu_is_cpu_even_where_cuda_is_offered():
    assert select_providers("cpu", GPU_BUILD) == [CPU]


def test_auto_takes_cpu_without_cuda_and_cuda_with_it():
    assert select_providers("auto", CPU_ONLY) == [CPU]
    assert select_providers("auto", [CUDA, CPU]) == [(CUDA, {"device_id": 0}), CPU]


def test_cuda_index_reaches_the_provider_and_cpu_stays_behind():
    assert select_providers("cuda:2", [CUDA, CPU]) == [(CUDA, {"device_id": 2}), CPU]


def test_tensorrt_goes_first_only_when_its_libraries_are_present():
    assert select_providers("cuda", GPU_BUILD, tensorrt=False)[0] == (CUDA, {"device_id": 0})
    assert select_providers("cuda", GPU_BUILD, tensorrt=True) == [
        (TENSORRT, {"device_id": 0}), (CUDA, {"device_id": 0}), CPU]


def test_cuda_asked_but_absent_is_a_clear_error():
    with pytest.raises(DeviceUnavailableError) as info:
        select_providers("cuda", CPU_ONLY)
    assert isinstance(info.value, DeidError)
    message = str(info.value)
    assert CUDA in message and "onnxruntime" in message and "gpu" in message


def test_sessions_here_run_on_the_cpu():
    """This machine's onnxruntime: auto gives a CPU session; cuda fails when it has no CUDA."""

    from dicom_deid.resources import model_path

    session = make_session(model_path("mp_face_detection_short.onnx"), "auto")
    if not cuda_starts(0):
        assert session.get_providers() == [CPU]
        with pytest.raises(DeviceUnavailableError):
            make_session(model_path("mp_face_detection_short.onnx"), "cuda")


def test_model_settings_check_their_values():
    from dicom_deid.onnx_device import ModelSettings, ModelSettingsError

    assert ModelSettings("CUDA:1").device == "cuda:1"
    with pytest.raises(ModelSettingsError, match="face engine"):
        ModelSettings("cpu", "tflite")
    with pytest.raises(DeviceError):
        ModelSettings("gpu")


def test_onnx_engine_builds_onnx_face_models():
    from dicom_deid.faces.onnx_models import OnnxFaceModels
    from dicom_deid.onnx_device import ModelSettings

    assert isinstance(ModelSettings("cpu", "onnx").face_models(), OnnxFaceModels)


def test_auto_engine_is_onnx_on_a_gpu_and_mediapipe_on_the_cpu(monkeypatch):
    from dicom_deid import onnx_device
    from dicom_deid.onnx_device import ModelSettings

    assert ModelSettings().face_engine == "auto"
    assert ModelSettings("cpu").resolved_face_engine() == "mediapipe"
    assert ModelSettings("cpu", "onnx").resolved_face_engine() == "onnx"
    # A GPU build of onnxruntime (simulated: none here): auto and cuda take ONNX.
    monkeypatch.setattr(onnx_device, "providers_for",
                        lambda device: select_providers(device, [CUDA, CPU]))
    assert ModelSettings("auto").resolved_face_engine() == "onnx"
    assert ModelSettings("cuda:1").resolved_face_engine() == "onnx"
    assert ModelSettings("cuda", "mediapipe").resolved_face_engine() == "mediapipe"


def test_config_takes_the_device_and_rejects_other_values():
    from dicom_deid.config import ConfigError, parse_config

    config = parse_config({"processing": {"device": "cuda:1", "face_engine": "onnx"}},
                          source="test", base_dir=Path("/"))
    assert config.processing.device == "cuda:1"
    assert config.processing.face_engine == "onnx"
    assert parse_config({}, source="test", base_dir=Path("/")).processing.device == "auto"
    with pytest.raises(ConfigError, match="processing.device"):
        parse_config({"processing": {"device": "gpu"}}, source="test", base_dir=Path("/"))


def _no_cuda() -> bool:
    from dicom_deid.onnx_device import cuda_starts

    return not cuda_starts(0)


@pytest.mark.skipif(not _no_cuda(), reason="this onnxruntime offers CUDA")
def test_deidentifier_refuses_cuda_it_cannot_have(tmp_path):
    from dicom_deid.deidentifier import Deidentifier

    with pytest.raises(DeviceUnavailableError, match="gpu"):
        Deidentifier("basic", key=tmp_path / "site.key", device="cuda")


@pytest.mark.skipif(not _no_cuda(), reason="this onnxruntime offers CUDA")
def test_cli_says_why_cuda_cannot_be_used(tmp_path, key_file, capsys):
    from dicom_deid.cli import main
    from tests.helpers import REPO

    sample = REPO / "tests" / "data" / "sample"
    code = main(["deidentify", str(sample), "-o", str(tmp_path / "out"), "--key-file",
                 str(key_file), "--device", "cuda"])
    assert code == 2
    err = capsys.readouterr().err
    assert CUDA in err and "onnxruntime" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.skipif(not _no_cuda(), reason="this onnxruntime offers CUDA")
def test_faces_command_refuses_cuda_before_making_its_output(tmp_path, capsys):
    from dicom_deid.cli import main
    from tests.helpers import shared_data

    clip = shared_data("video", "grid", "bbaf2n.mpg")
    out = tmp_path / "out"
    assert main(["faces", str(clip), "-o", str(out), "--method", "blur",
                 "--device", "cuda:0"]) == 2
    assert CUDA in capsys.readouterr().err
    assert not out.exists()


def test_cuda_is_tried_not_taken_on_trust(monkeypatch):
    """onnxruntime-gpu offers CUDA even where its libraries, the driver or the GPU are missing,
    and then builds CPU sessions with only a log line: cuda must fail, auto must take the CPU."""
    import onnxruntime as ort

    from dicom_deid import onnx_device

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(onnx_device, "_cuda_probe", {})
    tried: list[int] = []

    def fails(index: int) -> bool:
        tried.append(index)
        return False

    monkeypatch.setattr(onnx_device, "_try_cuda", fails)
    assert onnx_device.providers_for("auto") == [CPU]
    with pytest.raises(DeviceUnavailableError, match="could not start on GPU 1"):
        onnx_device.providers_for("cuda:1")
    onnx_device.providers_for("auto")
    assert tried == [0, 1]  # once per GPU index, not once per session
    monkeypatch.setattr(onnx_device, "_cuda_probe", {})
    monkeypatch.setattr(onnx_device, "_try_cuda", lambda index: True)
    assert onnx_device.providers_for("cuda:1") == [(CUDA, {"device_id": 1}), CPU]


def test_cuda_probe_matches_what_a_session_really_runs_on():
    """Here (no GPU) the probe says no whichever onnxruntime is installed; on a GPU machine
    with the gpu extra it must say yes, and auto sessions then run on CUDA."""
    from dicom_deid.resources import model_path

    session = make_session(model_path("mp_face_detection_short.onnx"), "auto")
    assert (session.get_providers()[0] == CUDA) == cuda_starts(0)


def test_node_config_carries_the_keypoint_engine_to_the_study_job(tmp_path, key_file,
                                                                   monkeypatch):
    """processing.keypoint_engine: parsed, checked, and handed by the node's scheduler to
    run_study_job, whose Deidentifier runs the keypoint SR on it."""
    from dicom_deid.config import ConfigError, parse_config
    from dicom_deid.node import jobs
    from dicom_deid.node.audit import AuditLog
    from dicom_deid.node.scheduler import Scheduler

    base = Path("/")
    assert parse_config({}, source="t", base_dir=base).processing.keypoint_engine == "auto"
    with pytest.raises(ConfigError, match="processing.keypoint_engine"):
        parse_config({"processing": {"keypoint_engine": "tflite"}}, source="t", base_dir=base)
    config = parse_config({"state_dir": str(tmp_path / "st"),
                           "processing": {"device": "cpu", "keypoint_engine": "mediapipe"}},
                          source="t", base_dir=base)
    config.state_dir.mkdir(parents=True)

    submitted: list[tuple] = []

    class _Pool:
        def submit(self, fn, *args):
            submitted.append((fn, args))

    scheduler = Scheduler(config, AuditLog(config.audit_log))
    monkeypatch.setattr(scheduler, "_executor", lambda: _Pool())
    try:
        scheduler._submit(1, "S-test")
    finally:
        scheduler.journal.close()
    [(fn, args)] = submitted
    assert fn is jobs.run_study_job
    device, face_engine, keypoint_engine = args[-3:]
    assert (device, keypoint_engine) == ("cpu", "mediapipe")
    route = {"profile": "basic", "options": [], "faces": "none"}
    made = jobs._deidentifier(route, key_file, device, face_engine, keypoint_engine)
    assert made.runtime.resolved_keypoint_engine() == "mediapipe"
    default = jobs._deidentifier(route, key_file, "cpu").runtime
    assert default.resolved_keypoint_engine() == "onnx"
