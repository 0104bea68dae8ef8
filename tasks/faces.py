"""faces: dlib's face detector and 128-d face descriptor, loaded offline (``kind = "face"`` embeddings).

**Face** (``kind = "face"``, 128 floats): dlib's ResNet face descriptor (the ``face_recognition``
model, trained so that two photos of one person are < 0.6 apart in Euclidean distance), computed on
the face box after aligning it with dlib's 5-point landmark model; the network runs in onnxruntime,
built from dlib's own weight file (:func:`face_resnet`, same vectors, ~15x faster than dlib-bin's
BLAS-less build). Face boxes come from the tracks
(episodes are tracked by their faces, see :mod:`tasks.episode_track`) or, with
``detect_in_box=True``, from dlib's HOG detector run inside each person box.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

FACE_DIM: Final = 128
FACE_MODEL: Final = "dlib_face_recognition_resnet_model_v1 + shape_predictor_5_face_landmarks"


def face_models_dir() -> Path:
    """Where ``face_recognition_models`` keeps its weights (found without importing the package)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face_recognition_models is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@lru_cache(maxsize=1)
def face_models() -> tuple[Any, Any, Any]:
    """(HOG detector, 5-point shape predictor, 128-d embedder), loaded once per process."""
    import dlib

    folder = face_models_dir()
    return (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat")),
        dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat")),
    )


def detect_faces(
    image_rgb: np.ndarray, upsample: int = 1, threshold: float = 0.0
) -> list[tuple[float, float, float, float, float]]:
    """HOG face boxes ``(x1, y1, x2, y2, score)`` in the image's pixels (SVM margin ≥ ``threshold``)."""
    detector, _, _ = face_models()
    image_rgb = np.ascontiguousarray(image_rgb)  # dlib ignores row padding (PyAV pads rows)
    rects, scores, _ = detector.run(image_rgb, upsample, threshold)
    h, w = image_rgb.shape[:2]
    return [
        (max(0.0, r.left()), max(0.0, r.top()), min(float(w), r.right()), min(float(h), r.bottom()), float(s))
        for r, s in zip(rects, scores, strict=True)
    ]


def face_descriptors(
    image_rgb: np.ndarray,
    boxes: Iterable[tuple[float, float, float, float]],
    jitter: int = 0,
    *,
    engine: Literal["onnx", "dlib"] = "onnx",
) -> np.ndarray:
    """(n, 128) dlib descriptors of the faces in ``boxes`` (aligned with the 5-point landmarks).

    The ResNet runs in onnxruntime (:func:`face_resnet`: dlib's own weights, same vectors within
    1e-6, ~15x faster here than dlib's BLAS-less build); ``engine="dlib"`` or ``jitter`` run dlib's.
    """
    import dlib

    _, predictor, embedder = face_models()
    image_rgb = np.ascontiguousarray(image_rgb)  # dlib ignores row padding (PyAV pads rows)
    rects = [dlib.rectangle(int(x1), int(y1), int(x2), int(y2)) for x1, y1, x2, y2 in boxes]
    if not rects:
        return np.empty((0, FACE_DIM), np.float32)
    shapes = dlib.full_object_detections()
    for rect in rects:
        shapes.append(predictor(image_rgb, rect))
    chips = dlib.get_face_chips(image_rgb, shapes, size=FACE_CHIP_PX, padding=0.25)
    if engine == "onnx" and not jitter:
        return describe_chips(chips)
    vectors = (
        embedder.compute_face_descriptor(chips, jitter) if jitter else embedder.compute_face_descriptor(chips)
    )
    return np.asarray([np.asarray(v) for v in vectors], np.float32)


# dlib's face ResNet in onnxruntime. dlib-bin is built without BLAS, so its convolutions cost ~80 ms a
# face on one core here; the same network, read from the same .dat file and run by onnxruntime on one
# thread, costs ~6-14 ms and gives the same descriptor (max difference ~1e-6). The .dat file is dlib's
# serialisation: layers from the input up, each a name string then its fields; integers are a
# length byte (| 0x80 when negative) + little-endian bytes, parameter tensors a version (2), four
# dims and raw little-endian float32s. Only con / affine / pooling / fc layers carry numbers; the
# relu, add_prev and tag layers are fixed by the architecture (dlib's dnn_face_recognition_ex.cpp):
#   con 32 7x7/2 · affine · relu · max_pool 3x3/2 · 14 residual blocks of
#   [con 3x3/s · affine · relu · con 3x3/1 · affine] + (input, avg_pool 2x2/2'd when s = 2) · relu
#   · global average · fc 256 → 128 (no bias).
# dlib adds tensors of different sizes by zero-padding the smaller (channels, and 3x3 + 4x4 at 256).

FACE_CHIP_PX: Final = 150
_CHIP_MEAN: Final = np.asarray([122.782, 117.001, 104.298], np.float32)  # input_rgb_image_sized<150>
_DLIB_LAYER = re.compile(rb"\x01[\x04-\x10](con_4|affine_|max_pool_2|avg_pool_2|fc_2)")


def _dlib_int(data: bytes, at: int) -> tuple[int, int]:
    head = data[at]
    value = int.from_bytes(data[at + 1 : at + 1 + (head & 0x0F)], "little")
    return (-value if head & 0x80 else value), at + 1 + (head & 0x0F)


def _dlib_ints(data: bytes, at: int, count: int) -> tuple[list[int], int]:
    out = []
    for _ in range(count):
        value, at = _dlib_int(data, at)
        out.append(value)
    return out, at


def _dlib_tensor(data: bytes, at: int) -> tuple[np.ndarray, int]:
    (version, *dims), at = _dlib_ints(data, at, 5)
    if version != 2:
        raise ValueError(f"unsupported dlib tensor version {version}")
    count = int(np.prod(dims))
    return np.frombuffer(data, "<f4", count, at).astype(np.float32), at + 4 * count


def _dlib_layers(data: bytes) -> list[tuple[str, Any]]:
    """The numbered layers of a dlib network file, input first: (kind, parameters)."""
    layers: list[tuple[str, Any]] = []
    at = 0
    while (match := _DLIB_LAYER.search(data, at)) is not None:
        name = match.group(1)
        at = match.end()
        if data[match.start() + 1] != len(name):
            at = match.start() + 1
            continue
        if name == b"con_4":
            params, at = _dlib_tensor(data, at)
            shape, at = _dlib_ints(data, at, 7)  # filters, rows, cols, stride y/x, padding y/x
            layers.append(("con", (params, shape)))
        elif name == b"affine_":
            params, at = _dlib_tensor(data, at)
            layers.append(("affine", params))
        elif name == b"fc_2":
            (outputs, inputs), at = _dlib_ints(data, at, 2)
            params, at = _dlib_tensor(data, at)
            layers.append(("fc", params.reshape(inputs, outputs)))
        else:
            window, at = _dlib_ints(data, at, 6)  # rows, cols, stride y/x, padding y/x
            layers.append((name.decode()[:3] + "pool", window))
    return layers


def _resnet_graph(layers: list[tuple[str, Any]]) -> Any:
    """The ONNX model of dlib's face ResNet, batch of (3, 150, 150) inputs → (128,) descriptors."""
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    weights: list[Any] = []

    def add(op: str, inputs: list[str], **attrs: Any) -> str:
        out = f"{op.lower()}{len(nodes)}"
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def const(array: np.ndarray, prefix: str) -> str:
        name = f"{prefix}{len(weights)}"
        weights.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def size(dims: list[int], window: list[int]) -> list[int]:
        rows, cols, sy, sx, py, px = window
        return [dims[0], 1 + (dims[1] + 2 * py - rows) // sy, 1 + (dims[2] + 2 * px - cols) // sx]

    def conv(x: str, dims: list[int], con: Any, affine: Any) -> tuple[str, list[int]]:
        params, (filters, rows, cols, sy, sx, py, px) = con
        inputs = (params.size - filters) // (filters * rows * cols)
        kernel = params[: filters * inputs * rows * cols].reshape(filters, inputs, rows, cols)
        gamma, beta = affine[:filters], affine[filters:]  # affine folded into the convolution
        bias = params[-filters:] * gamma + beta
        out = add(
            "Conv",
            [x, const(kernel * gamma[:, None, None, None], "w"), const(bias, "b")],
            kernel_shape=[rows, cols],
            strides=[sy, sx],
            pads=[py, px, py, px],
        )
        return out, [filters, *size(dims, [rows, cols, sy, sx, py, px])[1:]]

    def pad(x: str, dims: list[int], to: list[int]) -> str:
        if dims == to:
            return x
        pads = np.asarray([0, 0, 0, 0, 0, *(t - d for t, d in zip(to, dims, strict=True))], np.int64)
        return add("Pad", [x, const(pads, "pads")])

    def pool(op: str, x: str, window: list[int]) -> str:
        rows, cols, sy, sx, py, px = window
        return add(op, [x], kernel_shape=[rows, cols], strides=[sy, sx], pads=[py, px, py, px])

    kinds = [kind for kind, _ in layers]
    if kinds[:3] != ["con", "affine", "maxpool"] or kinds[-2:] != ["avgpool", "fc"]:
        raise ValueError(f"not dlib's face ResNet: {kinds}")
    x, dims = conv("input", [3, FACE_CHIP_PX, FACE_CHIP_PX], layers[0][1], layers[1][1])
    x = pool("MaxPool", add("Relu", [x]), layers[2][1])
    dims = size(dims, layers[2][1])
    at = 3
    while kinds[at] == "con":
        y, ydims = conv(x, dims, layers[at][1], layers[at + 1][1])
        y, ydims = conv(add("Relu", [y]), ydims, layers[at + 2][1], layers[at + 3][1])
        at += 4
        skip, sdims = x, dims
        if kinds[at] == "avgpool" and layers[at][1][0] > 0:  # a downsampling block's shortcut
            skip, sdims = pool("AveragePool", x, layers[at][1]), size(dims, layers[at][1])
            at += 1
        dims = [max(a, b) for a, b in zip(ydims, sdims, strict=True)]
        x = add("Relu", [add("Add", [pad(y, ydims, dims), pad(skip, sdims, dims)])])
    if at != len(layers) - 2:
        raise ValueError(f"not dlib's face ResNet: {kinds}")
    x = add("Flatten", [add("GlobalAveragePool", [x])])
    nodes.append(helper.make_node("MatMul", [x, const(layers[-1][1], "fc")], ["descriptor"]))
    graph = helper.make_graph(
        nodes,
        "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, FACE_CHIP_PX, FACE_CHIP_PX])],
        [helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, ["n", FACE_DIM])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@lru_cache(maxsize=1)
def face_resnet() -> Any:
    """An onnxruntime session (one thread) of dlib's face ResNet, built once per process from its .dat."""
    import onnxruntime as ort

    data = (face_models_dir() / "dlib_face_recognition_resnet_model_v1.dat").read_bytes()
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    model = _resnet_graph(_dlib_layers(data)).SerializeToString()
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def describe_chips(chips: Iterable[np.ndarray]) -> np.ndarray:
    """(n, 128) descriptors of aligned 150x150 RGB face chips (dlib's ``get_face_chips``)."""
    batch = np.asarray(list(chips), np.float32).reshape(-1, FACE_CHIP_PX, FACE_CHIP_PX, 3)
    if not len(batch):
        return np.empty((0, FACE_DIM), np.float32)
    tensor = np.ascontiguousarray(((batch - _CHIP_MEAN) / 256.0).transpose(0, 3, 1, 2))
    return np.asarray(face_resnet().run(None, {"input": tensor})[0], np.float32)
