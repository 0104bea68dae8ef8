"""Ultralytics-exported YOLO detection models run straight in onnxruntime, decoded lazily.

Ultralytics' ONNX predictor wraps onnxruntime in torch pre- and post-processing, and the exported
graph decodes *every* anchor through the DFL head (a softmax over 16 bins for each side of 5040
boxes at 640x384) although a frame has a few dozen boxes above the confidence threshold. Here the
graph is cut where the head splits into box-distribution logits and class logits; the session runs
up to there, and the DFL expectation, anchors and strides are applied to the anchors whose class
score passes ``conf`` only. Letterbox, class-offset greedy NMS and the scaling back to the frame are
ultralytics' own rules, so the boxes are those of ``YOLO(...).predict`` (tests/tasks/test_yolo_onnx.py
compares them frame by frame).

Measured on the bundled int8 detector (one core, 640x384, ``bench/detector.py``): see its docstring.

A graph this module does not recognise (another head, an end-to-end export) is not cut:
:func:`find_head` returns None and :mod:`tasks.detector` keeps ultralytics' predictor for it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

LETTERBOX_FILL = 114  # ultralytics' padding colour
MAX_DETECTIONS = 300  # ultralytics' max_det
CLASS_OFFSET = 7680.0  # ultralytics' max_wh: boxes of different classes never suppress each other
_EMPTY = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


@dataclass(frozen=True)
class HeadCut:
    """Where the Detect head's decoding starts in an exported graph."""

    boxes: str  # (batch, 4 x reg_max, anchors) box-distribution logits
    scores: str  # (batch, classes, anchors) class logits, before the sigmoid


def find_head(model: object) -> HeadCut | None:
    """The box and class logits of an ultralytics Detect export, or None for any other graph.

    The export ends ``Concat(Mul(decoded boxes, strides), Sigmoid(class logits))`` and its DFL is
    ``Softmax`` over ``Transpose(Reshape(box logits))``.
    """
    graph = model.graph  # type: ignore[attr-defined]
    producer = {out: node for node in graph.node for out in node.output}
    if len(graph.output) != 1:
        return None
    last = producer.get(graph.output[0].name)
    if last is None or last.op_type != "Concat" or len(last.input) != 2:
        return None
    sigmoid = producer.get(last.input[1])
    if sigmoid is None or sigmoid.op_type != "Sigmoid":
        return None
    softmax = [n for n in graph.node if n.op_type == "Softmax" and "/dfl/" in n.name]
    if len(softmax) != 1:
        return None
    source = softmax[0].input[0]
    node = producer.get(source)
    while node is not None and node.op_type in ("Transpose", "Reshape"):
        source = node.input[0]
        node = producer.get(source)
    return HeadCut(boxes=source, scores=sigmoid.input[0])


def cut_graph(model: object, head: HeadCut) -> bytes:
    """The serialized graph with the head's logits as its outputs and everything after them removed."""
    import onnx
    from onnx import helper

    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    graph = cut.graph
    del graph.output[:]
    for name in (head.boxes, head.scores):
        graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    needed = {head.boxes, head.scores}
    kept = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    unused = [init for init in graph.initializer if init.name not in needed]
    for init in unused:
        graph.initializer.remove(init)
    return bytes(cut.SerializeToString())


@dataclass(frozen=True)
class Letterbox:
    """How a frame was placed in the model's input (ultralytics' ``LetterBox`` with ``auto=True``)."""

    gain_x: float  # input pixels per frame pixel (the rounded size over the frame's)
    gain_y: float
    pad_x: int
    pad_y: int
    shape: tuple[int, int]  # the input's (height, width)


def letterbox(image: np.ndarray, imgsz: int, stride: int) -> tuple[np.ndarray, Letterbox]:
    """Resize the long side to ``imgsz`` and pad each side to a multiple of ``stride`` (centred)."""
    h, w = image.shape[:2]
    gain = min(imgsz / h, imgsz / w)
    new_w, new_h = max(round(w * gain), 1), max(round(h * gain), 1)
    dw, dh = (imgsz - new_w) % stride / 2, (imgsz - new_h) % stride / 2
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    fill = (LETTERBOX_FILL,) * 3
    padded = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=fill)
    return padded, Letterbox(new_w / w, new_h / h, left, top, (padded.shape[0], padded.shape[1]))


def anchor_grid(shape: tuple[int, int], strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Anchor centres (in grid cells) and their strides, in the export's order (levels, then rows)."""
    points, scale = [], []
    for stride in strides:
        gh, gw = shape[0] // stride, shape[1] // stride
        ys, xs = np.meshgrid(np.arange(gh) + 0.5, np.arange(gw) + 0.5, indexing="ij")
        points.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        scale.append(np.full(gh * gw, stride, np.float32))
    return np.concatenate(points).astype(np.float32), np.concatenate(scale)


def decode(
    box_logits: np.ndarray,
    score_logits: np.ndarray,
    anchors: np.ndarray,
    strides: np.ndarray,
    conf: float,
    classes: list[int] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xyxy in input pixels, score, class) of one image's anchors whose best class passes ``conf``.

    ``box_logits`` is (4 x reg_max, anchors), ``score_logits`` (classes, anchors).
    """
    best = score_logits.argmax(axis=0)
    best_logit = score_logits[best, np.arange(score_logits.shape[1])]
    keep = best_logit > np.log(conf / (1.0 - conf))  # sigmoid(x) > conf, without 5040 exps
    if classes is not None:
        keep &= np.isin(best, classes)
    index = np.flatnonzero(keep)
    reg_max = box_logits.shape[0] // 4
    logits = box_logits[:, index].reshape(4, reg_max, len(index))
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    sides = (weights * np.arange(reg_max, dtype=np.float32)[None, :, None]).sum(axis=1) / weights.sum(axis=1)
    point = anchors[index].T  # (2, k)
    top_left, bottom_right = point - sides[:2], point + sides[2:]
    # ultralytics goes through centre + size; doing the same keeps its float rounding
    centre, size = (top_left + bottom_right) / 2, bottom_right - top_left
    xyxy = np.concatenate([centre - size / 2, centre + size / 2]).T * strides[index, None]
    score = 1.0 / (1.0 + np.exp(-best_logit[index]))
    return xyxy.astype(np.float32), score.astype(np.float32), best[index]


def nms(xyxy: np.ndarray, score: np.ndarray, cls: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy NMS (IoU > ``iou`` suppresses), best score first, per class."""
    order = np.argsort(-score, kind="stable")
    boxes = xyxy + (cls.astype(np.float32) * CLASS_OFFSET)[:, None]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept: list[int] = []
    while order.size and len(kept) < MAX_DETECTIONS:
        i, rest = order[0], order[1:]
        kept.append(int(i))
        x1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        overlap = inter / (area[i] + area[rest] - inter)
        order = rest[overlap <= iou]
    return np.asarray(kept, np.int64)


class YoloOnnx:
    """One ultralytics Detect export, cut at its head (:func:`find_head`), in one onnxruntime session."""

    def __init__(self, path: Path, model: object, head: HeadCut, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.path = path
        self.session = onnxruntime.InferenceSession(
            cut_graph(model, head), options, providers=["CPUExecutionProvider"]
        )
        self.input = self.session.get_inputs()[0].name
        meta = {p.key: p.value for p in model.metadata_props}  # type: ignore[attr-defined]
        self.stride = int(meta.get("stride", 32))
        self.names: dict[int, str] = ast.literal_eval(meta["names"]) if "names" in meta else {}
        self._anchors: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def load(cls, path: Path, threads: int) -> YoloOnnx | None:
        """The model, or None when ``path`` is not a Detect export this module can cut."""
        import onnx

        model = onnx.load(str(path))
        head = find_head(model)
        return None if head is None else cls(path, model, head, threads)

    def strides(self) -> tuple[int, ...]:
        """The head's levels: P3..P5 for the standard Detect head (the largest is the model's stride)."""
        return tuple(self.stride // 2**k for k in (2, 1, 0))

    def detect(
        self, frames: list[np.ndarray], *, imgsz: int, conf: float, iou: float, classes: list[int] | None
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per BGR frame: (xyxy in the frame's pixels, score, class)."""
        placed = [letterbox(frame, imgsz, self.stride) for frame in frames]
        out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = [_EMPTY] * len(frames)
        for shape in dict.fromkeys(p[1].shape for p in placed):  # one session call per input shape
            members = [i for i, p in enumerate(placed) if p[1].shape == shape]
            batch = np.stack([placed[i][0][..., ::-1].transpose(2, 0, 1) for i in members])
            tensor = np.ascontiguousarray(batch, dtype=np.float32) / np.float32(255.0)
            box_logits, score_logits = self.session.run(None, {self.input: tensor})
            anchors, strides = self._grid(shape, box_logits.shape[2])
            for k, i in enumerate(members):
                xyxy, score, cls = decode(box_logits[k], score_logits[k], anchors, strides, conf, classes)
                keep = nms(xyxy, score, cls, iou)
                out[i] = (_to_frame(xyxy[keep], placed[i][1], frames[i].shape), score[keep], cls[keep])
        return out

    def _grid(self, shape: tuple[int, int], count: int) -> tuple[np.ndarray, np.ndarray]:
        if shape not in self._anchors:
            grid = anchor_grid(shape, self.strides())
            if len(grid[0]) != count:
                raise ValueError(f"{self.path}: {count} anchors for a {shape} input, expected {len(grid[0])}")
            self._anchors[shape] = grid
        return self._anchors[shape]


def _to_frame(xyxy: np.ndarray, placed: Letterbox, frame_shape: tuple[int, ...]) -> np.ndarray:
    """Input pixels → the frame's pixels (ultralytics' ``scale_boxes``: unpad, divide, clip)."""
    pad = np.array([placed.pad_x, placed.pad_y] * 2, np.float32)
    out = (xyxy - pad) / np.array([placed.gain_x, placed.gain_y] * 2, np.float32)
    h, w = frame_shape[:2]
    out[:, 0::2] = out[:, 0::2].clip(0, w)
    out[:, 1::2] = out[:, 1::2].clip(0, h)
    return out
