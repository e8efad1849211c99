"""Which device the ONNX Runtime models run on: one setting, `auto | cpu | cuda[:N]`.

Every ONNX Runtime session of the package (face detector and mesh, CenterFace, the text
models) is made by `make_session`, so the setting (config `processing.device`, CLI
`--device`, `Deidentifier(device=...)`) reaches each of them the same way.

- cpu: CPUExecutionProvider only.
- cuda / cuda:N: CUDA on GPU N (0 when not given), with TensorRT before it when its libraries
  are present, CPU after it for the operators CUDA lacks. When the installed onnxruntime has
  no CUDAExecutionProvider this is an error (DeviceUnavailableError), not a silent CPU run:
  whoever asked for the GPU is told what is missing.
- auto: CUDA on GPU 0 when onnxruntime offers it and it starts, CPU otherwise.

"Offers" is not enough: onnxruntime-gpu lists CUDAExecutionProvider whether or not the CUDA
and cuDNN libraries, the driver or the GPU are there, and when they are not it builds the
session on the CPU with only a log line. So CUDA is tried once per GPU index on a small
bundled model (`cuda_starts`) before it is chosen.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicom_deid.errors import DeidError

if TYPE_CHECKING:
    from dicom_deid.faces.models import FaceModels

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
DEVICE_PATTERN = r"^(auto|cpu|cuda(:[0-9]+)?)$"
# Who runs the face detector and mesh: MediaPipe's own TFLite graphs (CPU only) or the same
# models converted to ONNX (faces/onnx_models.py) on the device above. auto: ONNX where the
# device resolves to a GPU, MediaPipe on the CPU, where its XNNPACK kernels are faster than
# onnxruntime's for these networks (benchmarks/onnx_vs_mediapipe.py) and the points agree to
# 0.01 % of the inter-ocular distance (tests/faces/test_onnx_models.py).
FACE_ENGINES = ("auto", "mediapipe", "onnx")
DEFAULT_FACE_ENGINE = "auto"
# Who runs the keypoint SR's body pose and hands: MediaPipe's Pose and Hands or the same
# models on ONNX Runtime (keypoints/onnx_pose.py, keypoints/onnx_hands.py). auto: ONNX on
# every device: on the CPU it is faster per frame than MediaPipe's
# (benchmarks/pose_onnx_vs_mediapipe.py and hands_onnx_vs_mediapipe.py, one thread each:
# pose x1.46 CPU time; the whole keypoint stage x1.2-1.3 CPU time).
KEYPOINT_ENGINES = ("auto", "mediapipe", "onnx")
DEFAULT_KEYPOINT_ENGINE = "auto"
_DEVICE_RE = re.compile(DEVICE_PATTERN)
# The smallest bundled model: the session that tells whether CUDA really starts.
PROBE_MODEL = "mp_face_detection_short.onnx"
LOG = logging.getLogger(__name__)

Provider = str | tuple[str, dict[str, Any]]


class ModelSettingsError(DeidError, ValueError):
    """A model setting (device, face engine) that is not one of its values."""


class DeviceError(ModelSettingsError):
    """A device setting that is not auto, cpu, cuda or cuda:N."""


class DeviceUnavailableError(DeidError, RuntimeError):
    """The device asked for cannot be used with the installed onnxruntime."""


def parse_device(value: str) -> str:
    """The setting in canonical form (lower case, no spaces); DeviceError when malformed."""
    text = str(value).strip().lower()
    if not _DEVICE_RE.match(text):
        raise DeviceError(f"device must be auto, cpu, cuda or cuda:N, got {value!r}")
    return text


def _cuda_index(device: str) -> int:
    return int(device.split(":", 1)[1]) if ":" in device else 0


def _installed_runtimes() -> list[str]:
    found = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def _missing_cuda_message(available: Sequence[str]) -> str:
    runtimes = _installed_runtimes()
    hint = ("both onnxruntime and onnxruntime-gpu are installed, and the CPU-only one shadows "
            "the other: uninstall both, then install onnxruntime-gpu alone "
            "(scripts/setup.sh --gpu)") if len(runtimes) > 1 else \
        ("install the `gpu` extra (onnxruntime-gpu instead of onnxruntime: "
         "scripts/setup.sh --gpu), with the CUDA and cuDNN libraries it needs")
    return (f"device cuda was asked for, but onnxruntime offers no {CUDA} "
            f"(installed: {', '.join(runtimes) or 'no onnxruntime distribution'}; "
            f"providers: {', '.join(available) or 'none'}): {hint}")


def tensorrt_libraries_present() -> bool:
    """TensorRT's runtime library is loadable (onnxruntime-gpu lists its provider even
    when it is not, and then fails each session on it)."""
    return ctypes.util.find_library("nvinfer") is not None


def select_providers(device: str, available: Sequence[str], *,
                     tensorrt: bool = False) -> list[Provider]:
    """Execution providers for `device`, given onnxruntime's available providers.

    tensorrt: TensorRT's libraries are present (then it goes before CUDA when offered).
    Raises DeviceError (malformed setting) or DeviceUnavailableError (cuda asked, absent).
    """
    device = parse_device(device)
    if device == "cpu":
        return [CPU]
    has_cuda = CUDA in available
    if device == "auto":
        if not has_cuda:
            return [CPU]
        device = "cuda:0"
    if not has_cuda:
        raise DeviceUnavailableError(_missing_cuda_message(available))
    index = _cuda_index(device)
    chosen: list[Provider] = []
    if tensorrt and TENSORRT in available:
        chosen.append((TENSORRT, {"device_id": index}))
    chosen.append((CUDA, {"device_id": index}))
    chosen.append(CPU)
    return chosen


def providers_for(device: str) -> list[Provider]:
    """select_providers against the installed onnxruntime, with CUDA only where it starts.

    Raises DeviceUnavailableError when cuda[:N] is asked and CUDA is not offered or does not
    start; auto then falls back to the CPU (logged once).
    """
    import onnxruntime as ort

    chosen = select_providers(device, ort.get_available_providers(),
                              tensorrt=tensorrt_libraries_present())
    if not uses_gpu(chosen):
        return chosen
    chosen_device = parse_device(device)
    index = _cuda_index(chosen_device) if chosen_device != "auto" else 0
    if cuda_starts(index):
        return chosen
    if chosen_device == "auto":
        if not _fallback_logged:
            _fallback_logged.append(True)
            LOG.warning("onnxruntime offers CUDA but it does not start here; "
                        "the models run on the CPU (device auto)")
        return [CPU]
    raise DeviceUnavailableError(
        f"device {chosen_device} was asked for: onnxruntime offers {CUDA}, but it could not "
        f"start on GPU {index} (the CUDA 12 and cuDNN 9 libraries of the `gpu` extra, the "
        "NVIDIA driver or the GPU itself is missing; onnxruntime's own log lines name the "
        "library it could not load)")


_cuda_probe: dict[int, bool] = {}
_fallback_logged: list[bool] = []


def cuda_starts(index: int = 0) -> bool:
    """Whether an onnxruntime session really runs on CUDA GPU `index` (tried once per index
    and process on PROBE_MODEL; False where onnxruntime has no CUDA provider at all)."""
    if index not in _cuda_probe:
        _cuda_probe[index] = _try_cuda(index)
    return _cuda_probe[index]


def _try_cuda(index: int) -> bool:
    import onnxruntime as ort

    from dicom_deid.resources import model_path

    if CUDA not in ort.get_available_providers():
        return False
    _preload_cuda_libraries(ort)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(model_path(PROBE_MODEL)), sess_options=options,
                                       providers=[(CUDA, {"device_id": index}), CPU])
    except Exception:  # noqa: BLE001 - any failure to start means: not on this GPU
        return False
    return CUDA in session.get_providers()


def uses_gpu(providers: Sequence[Provider]) -> bool:
    names = [p[0] if isinstance(p, tuple) else p for p in providers]
    return CUDA in names or TENSORRT in names


def make_session(model: str | Path | bytes, device: str = "auto", *,
                 threads: int | None = None) -> Any:
    """An onnxruntime InferenceSession of `model` (a path or the model's bytes) on `device`.

    threads: intra-op threads (None: onnxruntime's default, one per core).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Idle worker threads sleep instead of spinning: the models share the CPU with the
    # decoder, the encoder and each other (see faces/centerface.py for the measurement).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    providers = providers_for(device)
    if uses_gpu(providers):
        _preload_cuda_libraries(ort)
    session = ort.InferenceSession(source, sess_options=options, providers=providers)
    if uses_gpu(providers) and not uses_gpu(session.get_providers()) \
            and parse_device(device) != "auto":
        # CUDA started for the probe but not for this model (e.g. the GPU ran out of memory).
        raise DeviceUnavailableError(f"device {device}: onnxruntime built this model's session "
                                     "on the CPU only (see its log for why CUDA failed)")
    return session


class BundledModel:
    """A session of a model shipped in models/, with one image input (the MediaPipe models)."""

    def __init__(self, name: str, device: str = "auto", threads: int | None = None) -> None:
        from dicom_deid.resources import model_path

        self.session = make_session(model_path(name), device, threads=threads)
        self.input = self.session.get_inputs()[0].name
        self.shapes = [tuple(o.shape) for o in self.session.get_outputs()]

    def __call__(self, tensor: Any) -> list[Any]:
        return self.session.run(None, {self.input: tensor})


_preloaded: list[bool] = []


def _preload_cuda_libraries(ort: Any) -> None:
    """Load the CUDA and cuDNN libraries of NVIDIA's pip wheels (the `gpu` extra), which the
    loader does not search by itself; a system CUDA is used when they are absent."""
    if _preloaded or not hasattr(ort, "preload_dlls"):
        return
    _preloaded.append(True)
    # A system CUDA may still serve when this fails; the session says so if not.
    with contextlib.suppress(Exception):
        ort.preload_dlls()


@dataclass(frozen=True)
class ModelSettings:
    """How the models of one run are built: the one object that carries the device (and
    the face engine) from the config or the CLI to every session (Deidentifier ->
    InstanceContext -> FaceReplacer, KeypointExtractor, the text stage)."""

    device: str = "auto"
    face_engine: str = DEFAULT_FACE_ENGINE
    keypoint_engine: str = DEFAULT_KEYPOINT_ENGINE

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", parse_device(self.device))
        if self.keypoint_engine not in KEYPOINT_ENGINES:
            raise ModelSettingsError(f"keypoint engine must be one of {KEYPOINT_ENGINES}, "
                                     f"got {self.keypoint_engine!r}")
        if self.face_engine not in FACE_ENGINES:
            raise ModelSettingsError(f"face engine must be one of {FACE_ENGINES}, "
                                     f"got {self.face_engine!r}")

    def check(self) -> None:
        """Raise DeviceUnavailableError now when the device cannot be used here (rather
        than at the first video)."""
        providers_for(self.device)

    def resolved_keypoint_engine(self) -> str:
        """mediapipe or onnx: who runs the keypoint SR's body pose and hands."""
        return "onnx" if self.keypoint_engine == "auto" else self.keypoint_engine

    def resolved_face_engine(self) -> str:
        """mediapipe or onnx: auto resolved against the installed onnxruntime."""
        if self.face_engine != "auto":
            return self.face_engine
        return "onnx" if uses_gpu(providers_for(self.device)) else "mediapipe"

    def face_models(self) -> FaceModels:
        """The tracker's face models on this engine and device (MediaPipe: CPU only)."""
        if self.resolved_face_engine() == "onnx":
            from dicom_deid.faces.onnx_models import OnnxFaceModels

            return OnnxFaceModels(device=self.device)
        from dicom_deid.faces.models import MediaPipeFaceModels

        return MediaPipeFaceModels()
