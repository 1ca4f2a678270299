"""Model compression: structured L1 filter pruning, knowledge distillation and int8 static quantization.

* **Pruning** (Li et al., *Pruning Filters for Efficient ConvNets*): :func:`prune_l1` removes the same
  fraction of output filters from every convolution, the filters with the smallest L1 norm first.
  Torch-Pruning's dependency graph (``tp.pruner.MetaPruner`` with ``MagnitudeImportance(p=1,
  group_reduction="first")``, the L1 norm of each filter of the pruned layer) keeps
  coupled layers consistent (residual additions, batch norms, the next layer's input channels); the
  classifier's output layer is never pruned. :func:`prune_and_finetune` then fine-tunes through
  :func:`robustnb.train.fit` and caches the result. :func:`parameter_count` counts parameters the way
  Torch-Pruning does (``tp.utils.count_ops_and_params``), and :func:`slim_student` builds a freshly initialised
  network with exactly the layer widths pruning at a ratio leaves (the same fraction of filters removed from
  every convolution): a distillation student of the pruned model's parameter count.
* **Knowledge distillation** (Hinton et al., 2015): :func:`kd_terms` turns the Hinton loss
  ``(1 - alpha) * CE(student, y) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))`` into
  :func:`robustnb.train.fit`'s form ``CE + sum(weight * term)``: a ``kd`` term ``T^2 * KL`` with weight
  ``alpha`` and a ``ce_scale`` term ``CE`` with weight ``-alpha`` (so the CE weight becomes
  ``1 - alpha``). ``fit``'s CE must then be plain cross-entropy (``label_smoothing=0``; checked).
* **Post-training static int8 quantization** (:func:`quantize_int8`): observers are inserted with
  ``torch.ao.quantization.quantize_fx.prepare_fx`` and the ``onednn`` qconfig mapping (per-channel int8
  weights, uint8 activations over the full 8-bit range), calibrated on training images, and converted
  with ``convert_fx`` into a graph that calls the int8 kernels of FBGEMM/oneDNN (``quantized::conv2d``,
  ``quantized::linear``, ``quantized::add_relu``). The input normalisation layer stays in fp32 in front
  of it. The converted model cannot be differentiated. Two gradient paths for attacking it white-box
  (:func:`int8_own_gradient`, :func:`int8_bpda`) are defined below. :func:`int8_kernels` shows which int8 operators
  actually ran (from the profiler), :func:`state_dict_bytes` and :func:`latency` give the size and CPU
  speed.
  Why ``onednn`` and not ``x86``: torch's ``x86`` mapping observes activations with ``reduce_range=True``
  (7 bits, a guard against 16-bit overflow in FBGEMM's kernels on CPUs without VNNI); the ``onednn``
  mapping uses all 8 bits (oneDNN handles CPUs without VNNI itself). On ``cpu`` ResNets trained without
  zero-initialised residual blocks (weaker than the book's), 7-bit activations cost ResNet-34 7.7 and
  ResNet-50 19.1 points of source accuracy against fp32, all 8 bits 1.4 and 11.6 (1,000 source test images);
  the latency was the same.

The FX quantization API prints deprecation warnings on torch 2.14 (it points to torchao's pt2e flow);
they are silenced here, the API still works and runs the same kernels.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import sys
import time
import warnings
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
from torch.profiler import ProfilerActivity, profile

from robustnb.cache import cache_key, cached, data_spec, tensor_digest
from robustnb.checks import check_images
from robustnb.config import ConfigError
from robustnb.models import count_parameters
from robustnb.train import TrainConfig, fit, logits_of


# ------------------------------------------------------------------------------------------- pruning
def _output_layer(model: nn.Module) -> nn.Module:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no nn.Linear output layer to protect from pruning")
    return linears[-1]


def check_ratio(ratio) -> float:
    try:
        r = float(ratio)
    except (TypeError, ValueError):
        raise ConfigError(f"pruning ratio must be a number in [0, 1), got {ratio!r}.") from None
    if not 0 <= r < 1:
        raise ConfigError(f"pruning ratio must be in [0, 1) (fraction of filters removed per layer), got {ratio!r}.")
    return r


def prune_l1(model: nn.Module, ratio: float, example_inputs: torch.Tensor) -> nn.Module:
    """A copy of ``model`` with ``ratio`` of the filters of every conv layer removed (smallest L1 norm first).

    Structured: layers really get smaller (fewer channels), so the pruned model needs less memory and
    compute without sparse kernels. The output layer keeps its classes.
    """

    ratio = check_ratio(ratio)
    model = copy.deepcopy(model).cpu().eval()
    if ratio == 0:
        return model
    # Li et al.'s criterion: the L1 norm of each filter of the layer being pruned (Torch-Pruning's
    # "standard L1-norm of the first layer in a group"); coupled layers follow that layer's choice.
    importance = tp.importance.MagnitudeImportance(p=1, normalizer=None, group_reduction="first")
    pruner = tp.pruner.MetaPruner(model, example_inputs.cpu(), importance=importance,
                                  pruning_ratio=ratio, ignored_layers=[_output_layer(model)])
    pruner.step()
    return model


def ratio_for_parameters(build: Callable[[], nn.Module], target: int, example_inputs: torch.Tensor,
                         tol: float = 0.01) -> float:
    """The pruning ratio that brings ``build()``'s model closest to ``target`` parameters (bisection)."""
    full = count_parameters(build())
    if target >= full:
        return 0.0
    lo, hi = 0.0, 0.99
    for _ in range(8):
        mid = (lo + hi) / 2
        n = count_parameters(prune_l1(build(), mid, example_inputs))
        if abs(n - target) <= tol * target:
            return round(mid, 4)
        lo, hi = (mid, hi) if n > target else (lo, mid)
    return round((lo + hi) / 2, 4)


def parameter_count(model: nn.Module, example_inputs: torch.Tensor) -> int:
    """Parameters of ``model`` as Torch-Pruning counts them (``tp.utils.count_ops_and_params`` on
    ``example_inputs``, float images (N, C, H, W) in [0, 1]); the count comparisons of pruned and slim models
    read this."""
    model = copy.deepcopy(model).cpu().eval()
    with torch.no_grad():
        _, params = tp.utils.count_ops_and_params(model, example_inputs.cpu()[:1])
    return int(params)


def check_matched(a: int, b: int, tol: float = 0.10, what: str = "models") -> float:
    """``|a - b| / b``: the relative difference of two parameter counts; :class:`ConfigError` above ``tol``."""
    if b <= 0:
        raise ConfigError(f"parameter counts must be positive, got {a} and {b}.")
    rel = abs(a - b) / b
    if rel > tol:
        raise ConfigError(f"{what}: {a:,} vs {b:,} parameters differ by {rel:.1%}, more than the {tol:.0%} allowed "
                          "for a size-matched comparison.")
    return rel


def slim_student(build: Callable[[], nn.Module], ratio: float, example_inputs: torch.Tensor) -> nn.Module:
    """A freshly initialised ``build()`` network with ``ratio`` of the filters of every convolution removed: the
    layer widths :func:`prune_l1` leaves at ``ratio`` (Torch-Pruning removes the same number of filters per layer
    whatever the weights), hence the pruned model's parameter count (:func:`parameter_count`), with new weights.
    Convolutions are re-drawn with torchvision's ResNet initialisation (Kaiming normal, fan-out) and linear layers
    with their default one (the pruning step only chose which random filters to keep); batch norms keep their
    initial values (zero-initialised residual branches stay zero). For a student distilled to the pruned model's
    size: the two then differ by how they were made, not by their size."""
    ratio = check_ratio(ratio)
    model = prune_l1(build(), ratio, example_inputs)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            m.reset_parameters()
    return model


def prune_and_finetune(base: nn.Module, base_spec: dict, ratio: float, data, cfg: TrainConfig,
                       device="cpu", name: str = "pruned", eval_data=None) -> nn.Module:
    """L1-prune a trained ``base`` (identified by ``base_spec``) and fine-tune it; cached by the full spec.

    The pruned architecture is rebuilt from the base weights (pruning is deterministic), so the cache can
    load the fine-tuned weights into it.
    """
    ratio = check_ratio(ratio)
    x0 = data.images[:2].float().div(255) if hasattr(data, "images") else data[0][:2]
    spec = {"kind": "pruned_l1", "criterion": "l1-filter-first", "base": base_spec, "ratio": ratio, "finetune": cfg.as_dict()}
    return cached(name, spec, build=lambda: prune_l1(base, ratio, x0),
                  train=lambda m: fit(m, data, cfg, device=device, eval_data=eval_data, desc=f"fine-tuning {name}"),
                  device=device)


# -------------------------------------------------------------------------------------- distillation
def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch."""
    t = float(temperature)
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                    reduction="batchmean", log_target=True) * t * t


def kd_terms(teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.9) -> dict:
    """``extra_terms`` for :func:`robustnb.train.fit` giving the Hinton loss (see the module docstring)."""
    if not 0 <= alpha <= 1:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha!r}.")
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature!r}.")
    teacher.eval()  # the teacher's forward runs under no_grad: its weights are never touched

    def kd(model, x, y, out):
        with torch.no_grad():
            t_logits = logits_of(teacher(x))
        return kd_loss(logits_of(out).float(), t_logits.float(), temperature)  # float32 under bf16 autocast too

    def ce(model, x, y, out):
        return F.cross_entropy(logits_of(out).float(), y)

    return {"kd": (alpha, kd), "ce_scale": (-alpha, ce)}


def distill(build_student: Callable[[], nn.Module], teacher: nn.Module, teacher_spec: dict, student_arch: str,
            data, cfg: TrainConfig, temperature: float = 4.0, alpha: float = 0.9, device="cpu",
            name: str = "distilled", eval_data=None) -> nn.Module:
    """Train a student from scratch with the Hinton loss against ``teacher``; cached by the full spec."""
    if cfg.label_smoothing != 0:
        raise ConfigError("distill needs label_smoothing=0 (the KD terms assume plain cross-entropy).")
    dspec = data_spec(data) if hasattr(data, "meta") else {"data": "tensors", "data_fp": "", "n": len(data[1])}
    spec = {"kind": "distilled", "student": student_arch, "teacher": teacher_spec, "T": float(temperature),
            "alpha": float(alpha), "train": cfg.as_dict(), **dspec}
    teacher = teacher.to(device)
    return cached(name, spec, build=build_student,
                  train=lambda m: fit(m, data, cfg, device=device, extra_terms=kd_terms(teacher, temperature, alpha),
                                      eval_data=eval_data, desc=f"distilling {name}"),
                  device=device)


# -------------------------------------------------------------------------------------- quantization
class Int8Classifier(nn.Sequential):
    """``Normalize`` (fp32) followed by an FX-converted int8 network; runs on the CPU only."""


def quantize_int8(model: nn.Module, calibration: torch.Tensor, batch_size: int = 128,
                  backend: str = "onednn") -> Int8Classifier:
    """Post-training static int8 quantization of a ``Normalize + network`` classifier.

    ``calibration``: float images in [0, 1] run through the observers to fix activation ranges.
    """
    check_images(calibration, "calibration images")
    if len(calibration) == 0:
        raise ConfigError("int8 calibration needs at least one image (got an empty batch): the observers "
                          "would fix no activation range and every output would be 0.")
    if backend not in torch.backends.quantized.supported_engines:
        raise ConfigError(f"quantized backend {backend!r} not supported here: choose one of "
                          f"{torch.backends.quantized.supported_engines}.")
    torch.backends.quantized.engine = backend
    if not (isinstance(model, nn.Sequential) and len(model) == 2):
        raise ValueError("quantize_int8 expects robustnb's Sequential(Normalize, network) classifiers")
    norm, net = copy.deepcopy(model[0]).cpu().eval(), copy.deepcopy(model[1]).cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(net, get_default_qconfig_mapping(backend), (norm(calibration[:2].cpu()),))
        with torch.no_grad():
            for i in range(0, len(calibration), batch_size):
                prepared(norm(calibration[i:i + batch_size].cpu()))
        q = convert_fx(prepared)
    out = Int8Classifier(norm, q).eval()
    parent = getattr(model, "robustnb_info", None)
    if parent and "key" in parent:  # a name for results computed from it (robustnb.cache.describe)
        out.robustnb_info = {"key": cache_key({"kind": "int8", "parent": parent["key"], "backend": backend,
                                               "batch_size": batch_size,
                                               "calibration": tensor_digest({"x": calibration})}),
                             "from_cache": False, "train_seconds": 0.0}
    return out


class _Int8Attackable(nn.Module):
    """An int8 classifier as a gradient attack sees it: its own logits forward (on the CPU, where its kernels
    run), and a chosen gradient backward."""

    def __init__(self, qmodel: nn.Module):
        super().__init__()
        self.qmodel = qmodel

    def int8_logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.qmodel(x.detach().cpu()).to(x.device)


class Int8OwnGradient(_Int8Attackable):
    """The int8 model with its *own* input gradient: that of the function it computes. Every activation of
    the int8 graph is rounded to an integer grid and the derivative of a rounding is zero almost everywhere,
    so this gradient is exactly zero (torch has no backward for the int8 kernels; this is the value that
    backward would give). A gradient attack through it keeps the **gradient masking** of the quantizer in its
    purest form: FGSM returns the clean image (sign(0) = 0), PGD stays at its random start."""

    def __init__(self, qmodel: nn.Module):
        super().__init__(qmodel)
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)  # torchattacks reads the device here

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zero = 0.0 * x.flatten(1).sum(1, keepdim=True)  # keeps x in the graph with a zero derivative
        return logits_of(self.int8_logits(x)) + zero


class Int8BPDA(_Int8Attackable):
    """BPDA / straight-through through the quantizer (Athalye et al., 2018): the forward value is the int8
    model's logits (the attack follows the deployed model's decision and loss), the backward is the gradient
    of its fp32 parent at the same input (every quantize / round step is replaced by the identity in the
    backward pass). This removes the masking while attacking the int8 model itself."""

    def __init__(self, qmodel: nn.Module, fp32: nn.Module):
        super().__init__(qmodel)
        self.fp32 = fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = logits_of(self.fp32(x)).float()
        return logits_of(self.int8_logits(x)) + (f - f.detach())


def int8_own_gradient(qmodel: nn.Module) -> Int8OwnGradient:
    """``qmodel`` for a white-box gradient attack that keeps its gradient masking (see :class:`Int8OwnGradient`)."""
    return Int8OwnGradient(qmodel).eval()


def int8_bpda(qmodel: nn.Module, fp32: nn.Module) -> Int8BPDA:
    """``qmodel`` for a white-box gradient attack that removes its gradient masking: int8 forward, fp32
    parent backward (see :class:`Int8BPDA`)."""
    return Int8BPDA(qmodel, fp32.eval()).eval()


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the profiler's C++ start/stop lines, written to file descriptor 2 (in Jupyter, ipykernel
    forwards that descriptor to the notebook; ``sys.stderr`` itself is not involved)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def int8_kernels(qmodel: nn.Module, example: torch.Tensor) -> pd.DataFrame:
    """The operators that ran in one forward pass (from ``torch.profiler``), int8 ones flagged.

    Columns: ``op, calls, int8`` (``int8`` is True for ``quantized::`` kernels).
    """

    with _quiet_stderr(), torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        qmodel(example.cpu())
    counts: dict[str, int] = {}
    for e in prof.events():
        counts[e.name] = counts.get(e.name, 0) + 1
    rows = [{"op": k, "calls": v, "int8": k.startswith("quantized::")} for k, v in counts.items()
            if k.startswith(("quantized::", "aten::conv", "aten::linear", "aten::addmm", "aten::quantize", "aten::dequantize"))]
    return pd.DataFrame(rows).sort_values(["int8", "calls"], ascending=False).reset_index(drop=True)


def quantized_modules(qmodel: nn.Module) -> pd.DataFrame:
    """Module classes in the converted model and how many of each (``torch.ao.nn.quantized`` = int8)."""
    counts: dict[str, int] = {}
    for m in qmodel.modules():
        key = f"{type(m).__module__}.{type(m).__name__}"
        if "quantized" in key or isinstance(m, (nn.Conv2d, nn.Linear)):
            counts[key] = counts.get(key, 0) + 1
    return pd.DataFrame([{"module": k, "count": v} for k, v in counts.items()])


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())`` (weights, int8 packed weights, scales, buffers)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


@torch.no_grad()
def latency(model: nn.Module, x: torch.Tensor, repeats: int = 5, warmup: int = 1) -> float:
    """Median seconds for one forward pass of ``x`` on the CPU."""
    model = model.eval()
    x = x.cpu()
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t0)
    return float(sorted(times)[len(times) // 2])
