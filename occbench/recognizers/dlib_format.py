"""A reader of dlib's binary serialization of DNNs (no dlib needed).

Written from the format in dlib's sources (dlib/serialize.h, dlib/float_details.h, dlib/dnn/core.h,
tensor.h, layers.h, input.h, loss.h):

- integers: a control byte (bit 7: negative; low 4 bits: number of bytes) + magnitude, little endian;
- floats/doubles: ``float_details`` = integer mantissa then integer exponent, value = mantissa * 2**exponent;
- strings: integer length + bytes; bools: ASCII ``'1'`` / ``'0'``;
- tensors: version, then num_samples, k, nr, nc, then data (version 2: raw little-endian float32;
  version 1: one dlib float each); alias tensors: version + the 4 dimensions (no data).

A network serializes recursively, output end first: ``add_loss_layer`` writes its version, the loss and
then its subnetwork; every ``add_layer`` writes its version, its *subnetwork*, then its own layer details
and state; ``add_tag_layer``/``add_skip_layer`` write a version and their subnetwork (their tag ids are
not stored). So the stream holds every wrapper's version top-down, then the input layer, then the layer
details bottom-up. Tags and skips being invisible in the file, the caller states the layer stack
(``spec``, dlib's printing order: output end first), and the reader checks it against the file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

from ..errors import OccbenchError


class DlibFormatError(OccbenchError):
    """The bytes are not a dlib network of the expected structure."""


# --------------------------------------------------------------------------------------- primitives


class Reader:
    def __init__(self, data: bytes, name: str = "<bytes>"):
        self.data = memoryview(data)
        self.pos = 0
        self.name = name

    def fail(self, msg: str) -> DlibFormatError:
        return DlibFormatError(f"{self.name}: byte {self.pos}: {msg}")

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise self.fail(f"unexpected end of data (wanted {n} more bytes)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        ctrl = self.take(1)[0]
        if ctrl & 0x70:
            raise self.fail(f"invalid integer control byte 0x{ctrl:02x}")
        size = ctrl & 0x0F
        if size > 8:
            raise self.fail(f"integer of {size} bytes")
        value = int.from_bytes(self.take(size), "little") if size else 0
        return -value if ctrl & 0x80 else value

    def float(self) -> float:
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise self.fail("old ASCII float encoding (pre-2017 dlib) is not supported")
        mantissa, exponent = self.int(), self.int()
        if exponent >= 32000:  # float_details::is_inf / is_ninf / is_nan
            return {32000: float("inf"), 32001: float("-inf")}.get(exponent, float("nan"))
        return float(np.ldexp(float(mantissa), exponent))

    def string(self) -> str:
        n = self.int()
        return bytes(self.take(n)).decode("latin-1")

    def bool(self) -> bool:
        c = bytes(self.take(1))
        if c not in (b"0", b"1"):
            raise self.fail(f"invalid bool byte {c!r}")
        return c == b"1"

    def dims(self, what: str) -> tuple[int, int, int, int]:
        version = self.int()
        if version != 1 and what == "alias_tensor":
            raise self.fail(f"unsupported alias_tensor version {version}")
        dims = (self.int(), self.int(), self.int(), self.int())
        return dims if what == "alias_tensor" else (version, *dims)

    def tensor(self) -> np.ndarray:
        version, n, k, nr, nc = self.dims("tensor")
        count = n * k * nr * nc
        if version == 2:
            arr = np.frombuffer(self.take(4 * count), dtype="<f4").astype(np.float32)
        elif version == 1:
            arr = np.array([self.float() for _ in range(count)], dtype=np.float32)
        else:
            raise self.fail(f"unsupported tensor version {version}")
        return arr.reshape(n, k, nr, nc)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        return self.dims("alias_tensor")  # type: ignore[return-value]


# --------------------------------------------------------------------------------------- layers


@dataclass
class Conv:
    weight: np.ndarray  # (out, in, kh, kw), cross-correlation like torch
    bias: np.ndarray  # (out,)
    stride: tuple[int, int]  # (y, x)
    padding: tuple[int, int]  # (y, x), zeros


@dataclass
class Fc:
    weight: np.ndarray  # (in, out): output = flatten(x) @ weight (+ bias)
    bias: np.ndarray | None


@dataclass
class Affine:
    gamma: np.ndarray  # conv mode: (k,) per channel; fc mode: (k, nr, nc) per element
    beta: np.ndarray
    conv_mode: bool


@dataclass
class Relu:
    pass


@dataclass
class Pool:
    kind: str  # "max" | "avg"
    size: tuple[int, int]  # (nr, nc); 0 = the whole input extent (``*_pool_everything``)
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass
class AddPrev:
    tag: int


@dataclass
class Tag:
    id: int


@dataclass
class Skip:
    id: int


@dataclass
class InputRGB:
    mean_rgb: tuple[float, float, float]  # input = (pixel - mean) / 256, channels R, G, B
    size: tuple[int, int] | None  # (rows, cols) of input_rgb_image_sized, else None


@dataclass
class LossMetric:
    margin: float
    distance_threshold: float  # same person if ||a - b|| < this


Layer = Union[Conv, Fc, Affine, Relu, Pool, AddPrev, Tag, Skip]


@dataclass
class DlibNet:
    loss: LossMetric
    input: InputRGB
    layers: list[Layer]  # output end first, like dlib's ``cout << net``


def _multipliers(r: Reader, n: int = 4) -> None:
    for _ in range(n):  # learning-rate / weight-decay multipliers: training-only
        r.float()


def _read_con(r: Reader) -> Conv:
    params = r.tensor().reshape(-1)
    nf, nr, nc, sy, sx, py, px = (r.int() for _ in range(7))
    fshape = r.alias_tensor()
    bshape = r.alias_tensor()
    _multipliers(r)
    fsize = int(np.prod(fshape))
    if fshape[0] != nf or fshape[2:] != (nr, nc) or int(np.prod(bshape)) != nf or params.size != fsize + nf:
        raise r.fail(f"inconsistent con_ shapes: filters {fshape}, biases {bshape}, params {params.size}")
    return Conv(params[:fsize].reshape(fshape).copy(), params[fsize:].copy(), (sy, sx), (py, px))


def _read_fc(r: Reader) -> Fc:
    n_out, n_in = r.int(), r.int()
    params = r.tensor().reshape(-1)
    wshape = r.alias_tensor()
    r.alias_tensor()  # biases (an empty alias in no-bias mode)
    bias_mode = r.int()  # 0: FC_HAS_BIAS, 1: FC_NO_BIAS
    _multipliers(r)
    if wshape[:2] != (n_in, n_out) or params.size != n_in * n_out + (n_out if bias_mode == 0 else 0):
        raise r.fail(f"inconsistent fc_ shapes: weights {wshape}, params {params.size}, bias_mode {bias_mode}")
    weight = params[:n_in * n_out].reshape(n_in, n_out).copy()
    return Fc(weight, params[n_in * n_out:].copy() if bias_mode == 0 else None)


def _read_affine(r: Reader) -> Affine:
    params = r.tensor().reshape(-1)
    gshape = r.alias_tensor()
    r.alias_tensor()  # beta, same shape as gamma
    mode = r.int()  # 0: CONV_MODE (per channel), 1: FC_MODE (per element)
    g = int(np.prod(gshape))
    if params.size != 2 * g or mode not in (0, 1):
        raise r.fail(f"inconsistent affine_: gamma {gshape}, params {params.size}, mode {mode}")
    shape = (gshape[1],) if mode == 0 else gshape[1:]
    return Affine(params[:g].reshape(shape).copy(), params[g:].reshape(shape).copy(), mode == 0)


def _read_pool(r: Reader, kind: str) -> Pool:
    nr, nc, sy, sx, py, px = (r.int() for _ in range(6))
    return Pool(kind, (nr, nc), (sy, sx), (py, px))


_DETAILS = {
    "con_4": ("con", _read_con),
    "fc_2": ("fc", _read_fc),
    "affine_": ("affine", _read_affine),
    "relu_": ("relu", lambda r: Relu()),
    "max_pool_2": ("max_pool", lambda r: _read_pool(r, "max")),
    "avg_pool_2": ("avg_pool", lambda r: _read_pool(r, "avg")),
    "add_prev_": ("add_prev", lambda r: AddPrev(-1)),
}


def _read_input(r: Reader) -> InputRGB:
    version = r.string()
    if version not in ("input_rgb_image", "input_rgb_image_sized"):
        raise r.fail(f"unsupported input layer {version!r} (expected input_rgb_image[_sized])")
    mean = (r.float(), r.float(), r.float())
    size = (r.int(), r.int()) if version == "input_rgb_image_sized" else None
    return InputRGB(mean, size)


def _read_loss(r: Reader) -> LossMetric:
    version = r.string()
    if version == "loss_metric_":  # old files: these values were hard coded in dlib
        return LossMetric(0.1, 0.75)
    if version != "loss_metric_2":
        raise r.fail(f"unsupported loss layer {version!r} (expected loss_metric_)")
    return LossMetric(r.float(), r.float())


_SPEC = re.compile(r"^(con|fc|affine|relu|max_pool|avg_pool)$|^(add_prev|tag|skip)(\d+)$")


def parse_dlib_net(data: bytes, spec: Sequence[str], name: str = "<bytes>") -> DlibNet:
    """Parse a ``loss_metric`` network over ``input_rgb_image[_sized]``.

    ``spec`` lists the layers output end first, e.g. ``["fc", "avg_pool", "relu", "add_prev2", "avg_pool",
    "skip1", "tag2", ...]``; layer kinds are checked against the version strings in the file."""
    parsed = [_SPEC.match(s) for s in spec]
    if not spec or not all(parsed):
        bad = [s for s, m in zip(spec, parsed) if not m]
        raise ValueError(f"invalid layer spec entries {bad or spec}")
    r = Reader(data, name)
    if r.int() != 1:
        raise r.fail("not a dlib add_loss_layer (version != 1)")
    loss = _read_loss(r)

    versions = []
    for i, s in enumerate(spec):  # wrapper versions, output end first
        v = r.int()
        wrapper = s.startswith(("tag", "skip"))
        ok = v == 1 if wrapper else (v in (2, 3) if i == len(spec) - 1 else v in (1, 2))
        if not ok:
            raise r.fail(f"layer {i} ({s}): unexpected {'tag/skip' if wrapper else 'add_layer'} version {v}; "
                         "the file does not have the expected layer structure")
        versions.append(v)
    inp = _read_input(r)

    layers: list = [None] * len(spec)
    for i in reversed(range(len(spec))):  # layer details, input end first
        m = parsed[i]
        kind, num = (m.group(1), None) if m.group(1) else (m.group(2), int(m.group(3)))
        if kind in ("tag", "skip"):
            layers[i] = Tag(num) if kind == "tag" else Skip(num)
            continue
        version = r.string()
        if version not in _DETAILS:
            raise r.fail(f"layer {i}: unsupported dlib layer {version!r}")
        found, read = _DETAILS[version]
        if found != kind:
            raise r.fail(f"layer {i}: expected {spec[i]}, found {version!r}")
        layer = read(r)
        layers[i] = AddPrev(num) if kind == "add_prev" else layer
        for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, get_output..._disabled
            r.bool()
        r.tensor()  # x_grad
        r.tensor()  # cached_output
        if i == len(spec) - 1:
            r.tensor()  # grad_final
            if versions[i] == 3:
                r.int()  # _sample_expansion_factor
        elif versions[i] == 2:
            r.tensor()  # params_grad
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} unread bytes after the network")
    return DlibNet(loss, inp, layers)


# ------------------------------------------------------------------ dlib_face_recognition_resnet_model_v1


def _block() -> list[str]:  # BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>>, BN = affine
    return ["affine", "con", "relu", "affine", "con"]


def _ares() -> list[str]:  # relu<add_prev1<block<N,BN,1,tag1<SUBNET>>>>
    return ["relu", "add_prev1", *_block(), "tag1"]


def _ares_down() -> list[str]:  # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,BN,2,tag1<SUBNET>>>>>>>
    return ["relu", "add_prev2", "avg_pool", "skip1", "tag2", *_block(), "tag1"]


def face_recognition_v1_spec() -> list[str]:
    """The layer stack of dlib's ``anet_type`` (examples/dnn_face_recognition_ex.cpp), output end first:
    loss_metric<fc_no_bias<128, avg_pool_everything<level0..level4<max_pool<3,3,2,2, relu<affine<
    con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>."""
    level0 = _ares_down()
    level1 = _ares() + _ares() + _ares_down()
    level2 = _ares() + _ares() + _ares_down()
    level3 = _ares() * 3 + _ares_down()
    level4 = _ares() * 3
    return ["fc", "avg_pool", *level0, *level1, *level2, *level3, *level4, "max_pool", "relu", "affine", "con"]
