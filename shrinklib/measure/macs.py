"""Multiply-accumulates (MACs) of one forward pass, in all, by module and by component.

One MAC is one ``a * b + c``; a matrix product of (m x k) by (k x n) costs m*k*n MACs
(2*m*k*n FLOPs). The count comes from :class:`torch.utils.flop_counter.FlopCounterMode`,
which watches every aten operation of a real forward pass and applies a formula to those
it knows (matrix products, convolutions, attention kernels); MACs = FLOPs / 2.
Elementwise work (activations, softmax, norms, adding the bias) is not counted: it is
small next to the products, and it is not a MAC.

What FlopCounterMode alone misses on CPU, and what this module adds:

* **Attention through SDPA.** Transformers 5 runs BERT and Llama attention through
  ``F.scaled_dot_product_attention``; on CPU that dispatches to
  ``aten._scaled_dot_product_flash_attention_for_cpu``, for which torch 2.13 has no
  formula, so the QK^T and AV products - the term quadratic in sequence length - would
  count as zero. We register the standard attention formula for it (the one torch uses
  for the CUDA kernels, GQA included): with query/key/value of shapes (b, h, L, d),
  (b, h_kv, S, d), (b, h_kv, S, d_v), 2 * b*h*L*S*(d + d_v) FLOPs. So the model is
  counted as it runs, without switching it to eager attention; the tests check that
  the count equals the eager one (explicit ``bmm``s).
* **The fused ``nn.MultiheadAttention`` fast path** (``aten._native_multi_head_attention``,
  taken in eval mode without grad): the in-projections, QK^T, AV and out-projection.
* **``torch._int_mm``** (int8 x int8 -> int32, chapter 3): a matrix product like any other.
* **Recurrent layers** (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``) run as one fused aten op that
  FlopCounterMode does not see; they are counted analytically instead. Per layer,
  direction and token, a layer with G gates (LSTM 4, GRU 3, RNN 1), input size I and
  hidden size H costs G*H*(I + H) MACs, plus H*P for an LSTM projection to size P (which
  then replaces H as the recurrent input); layer l > 0 reads the previous layer's output,
  I = directions * (P or H).

Attribution: every counted operation is charged to the innermost module running when
it happens (a stack kept by forward hooks on every submodule), so a module's MACs are its
own, not its children's: ``attention.self`` holds QK^T and AV, ``attention.self.query``
its projection. :func:`macs_by_component` then sums modules by
:func:`~shrinklib.measure.components.component_of`.
"""
from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence
from torch.utils.flop_counter import FlopCounterMode

from shrinklib.measure.components import component_of, empty_breakdown
from shrinklib._checks import check_int, check_positive_int
from shrinklib.measure.forward import Inputs, call, dummy_inputs, evaluating

aten = torch.ops.aten


def _sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of softmax(Q K^T) V for shapes (b, h, L, d), (b, h_kv, S, d), (b, h_kv, S, d_v)."""
    L, d, S, d_v = query[-2], query[-1], key[-2], value[-1]
    return 2 * math.prod(query[:-2]) * L * S * (d + d_v)


def _native_mha_flops(query, key, value, embed_dim, num_heads, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of ``aten._native_multi_head_attention`` (batch-first (b, L, E) inputs)."""
    b, L, E, S = math.prod(query[:-2]), query[-2], query[-1], key[-2]
    projections = b * L * E * E + 2 * b * S * E * E + b * L * E * E  # q, k and v, out
    attention = 2 * b * L * S * E  # QK^T and AV over all heads
    return 2 * (projections + attention)


def _mm_flops(a, b, *args, out_shape=None, **kwargs) -> int:
    return 2 * a[0] * a[1] * b[1]


def _extra_formulas() -> dict:
    formulas = {
        "_scaled_dot_product_flash_attention_for_cpu": _sdpa_flops,
        "_scaled_dot_product_fused_attention_overrideable": _sdpa_flops,
        "_native_multi_head_attention": _native_mha_flops,
        "_int_mm": _mm_flops,
    }
    return {getattr(aten, name): f for name, f in formulas.items() if hasattr(aten, name)}


_RNN_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def recurrent_macs(rnn: nn.RNNBase, tokens: int) -> int:
    """MACs of ``rnn`` reading ``tokens`` tokens in all (batch x length), by the formula above."""
    if not isinstance(rnn, nn.RNNBase):
        raise TypeError(f"rnn must be an nn.LSTM, nn.GRU or nn.RNN, got {type(rnn).__name__}")
    check_int("tokens", tokens, minimum=0)
    if rnn.mode not in _RNN_GATES:
        raise TypeError(f"unknown recurrent layer mode {rnn.mode!r}; known: {sorted(_RNN_GATES)}")
    gates, hidden = _RNN_GATES[rnn.mode], rnn.hidden_size
    proj = getattr(rnn, "proj_size", 0) or 0
    out_size = proj or hidden
    directions = 2 if rnn.bidirectional else 1
    per_token = 0
    for layer in range(rnn.num_layers):
        in_size = rnn.input_size if layer == 0 else directions * out_size
        per_direction = gates * hidden * (in_size + out_size) + (hidden * proj if proj else 0)
        per_token += directions * per_direction
    return per_token * tokens


def _tokens(rnn: nn.RNNBase, args: tuple, kwargs: dict) -> int:
    x = args[0] if args else kwargs.get("input")
    if isinstance(x, PackedSequence):
        return x.data.shape[0]
    if x.dim() == 2:  # unbatched (L, I)
        return x.shape[0]
    return x.shape[0] * x.shape[1]


class _Attribution:
    """Forward hooks that charge the FLOPs counted by ``counter`` to the innermost module."""

    def __init__(self, model: nn.Module, counter: FlopCounterMode):
        self.counter = counter
        self.own: dict[str, int] = defaultdict(int)  # fqn -> own FLOPs
        self.modules: dict[str, nn.Module] = {}
        self.stack: list[list] = []  # [fqn, FLOPs counted at entry, children's FLOPs, tokens, added FLOPs]
        self.handles = []
        self.captured = 0  # FLOPs the counter saw while some module of the model was running
        for fqn, module in model.named_modules():
            self.modules[fqn] = module
            self.handles.append(module.register_forward_pre_hook(self._pre(fqn), with_kwargs=True))
            self.handles.append(module.register_forward_hook(self._post, with_kwargs=True, always_call=True))

    def _pre(self, fqn: str):
        def hook(module, args, kwargs):
            tokens = _tokens(module, args, kwargs) if isinstance(module, nn.RNNBase) else 0
            self.stack.append([fqn, self.counter.get_total_flops(), 0, tokens, 0])

        return hook

    def _post(self, module, args, kwargs, output):
        if not self.stack:
            return
        fqn, start, children, tokens, added = self.stack.pop()
        counted = self.counter.get_total_flops() - start
        if not self.stack:
            self.captured += counted
        inclusive = counted + added  # ``added``: analytic FLOPs of recurrent descendants
        if isinstance(module, nn.RNNBase):  # a fused op FlopCounterMode does not see
            inclusive = children + 2 * recurrent_macs(module, tokens)
        self.own[fqn] += inclusive - children
        if self.stack:
            self.stack[-1][2] += inclusive
            self.stack[-1][4] += inclusive - counted

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _count(model: nn.Module, batch_size: int, seq_len: int, inputs: Inputs | None) -> tuple[dict[str, int], dict]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_positive_int("batch_size", batch_size)
    check_positive_int("seq_len", seq_len)
    if inputs is None:
        inputs = dummy_inputs(model, batch_size, seq_len)
    counter = FlopCounterMode(display=False, custom_mapping=_extra_formulas())
    attribution = _Attribution(model, counter)
    try:
        with evaluating(model), torch.no_grad(), counter:
            call(model, inputs)
    finally:
        attribution.remove()
    own = dict(attribution.own)
    outside = counter.get_total_flops() - attribution.captured
    if outside > 0:  # work done outside the root module's forward (rare: a hook, say)
        own[""] = own.get("", 0) + outside
    macs_of = {fqn: flops // 2 for fqn, flops in own.items() if flops}
    return macs_of, attribution.modules


def macs_by_module(
    model: nn.Module, batch_size: int = 1, seq_len: int = 128, *, inputs: Inputs | None = None
) -> dict[str, int]:
    """``{fqn: MACs}`` of the modules doing work in one forward pass, each module's own work only.

    Inputs: ``inputs`` if given (a dict of keyword arguments, a tuple, or a tensor), else
    :func:`~shrinklib.measure.forward.dummy_inputs` for ``batch_size`` x ``seq_len``
    (token ids and an attention mask of ones for a model that reads tokens). The model
    runs in eval mode, without grad; its modes are restored afterwards.
    """
    return _count(model, batch_size, seq_len, inputs)[0]


def macs_by_component(
    model: nn.Module, batch_size: int = 1, seq_len: int = 128, *, inputs: Inputs | None = None
) -> dict[str, int]:
    """``{component: MACs}`` of one forward pass for every component; sums to :func:`macs`.

    Norms, activations and softmax do no MACs, so ``norms`` is 0 for the models of the book.
    """
    by_module, modules = _count(model, batch_size, seq_len, inputs)
    out = empty_breakdown()
    for fqn, value in by_module.items():
        out[component_of(fqn, modules.get(fqn))] += value
    return out


def macs(model: nn.Module, batch_size: int = 1, seq_len: int = 128, *, inputs: Inputs | None = None) -> int:
    """Total multiply-accumulates of one forward pass (see :func:`macs_by_module` for the inputs)."""
    return sum(macs_by_module(model, batch_size, seq_len, inputs=inputs).values())
