"""Intermediate-layer distillation as a ``fit`` term: run the teacher, catch what both models compute, combine the losses.

The losses themselves (DistilBERT's cosine, Patient KD, TinyBERT's embedding, hidden-state
and attention losses, MiniLM's attention and value relations) and their papers are in
:mod:`shrinklib.distill.intermediate_losses`; the layer map in :mod:`shrinklib.distill.layer_map`.
TinyBERT's two stages are two ``fit`` calls: this term alone
(``TrainConfig(task_loss_weight=0)``), then the prediction layer's soft targets
(:func:`shrinklib.distill.logits.distill`).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from shrinklib._checks import check_mapping, check_weight
from shrinklib.arch import attention_modules, bert_backbone
from shrinklib.data import model_inputs
from shrinklib.distill.intermediate_losses import (
    attention_mse_loss,
    check_attention_mask,
    check_relation_heads,
    hidden_cosine_loss,
    hidden_mse_loss,
    minilm_attention_loss,
    minilm_value_loss,
    pkd_loss,
    relation_log_probs,
)
from shrinklib.distill.layer_map import check_layer_map
from shrinklib.distill.layer_map import layer_map as make_layer_map
from shrinklib.distill.logits import check_same_vocabulary
from shrinklib.measure.forward import evaluating

LOSSES = ("embedding", "hidden", "attention", "cosine", "pkd", "minilm_attention", "minilm_value")


def _check_weights(weights) -> dict[str, float]:
    check_mapping("weights", weights)
    if not weights:
        raise ValueError(f"weights must pick at least one loss of {LOSSES}, got an empty mapping")
    out = {}
    for name, weight in weights.items():
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r} in weights; choose from {LOSSES}")
        out[name] = check_weight(weight, name=f"weights[{name!r}]")
    return out


def _linear(backbone: nn.Module, layer: int, kind: str, name: str) -> nn.Linear:
    found = attention_modules(backbone.encoder.layer[layer])
    module = getattr(found[0], kind, None) if len(found) == 1 else None
    if not isinstance(module, nn.Linear):
        raise TypeError(f"{name}'s layer {layer} has no attention.self.{kind} Linear layer, which the attention "
                        "and MiniLM losses read")
    return module


class IntermediateDistillation(nn.Module):
    """The ``fit`` term ``sum_k weights[k] * L_k`` over the intermediate losses named in ``weights``.

    ``weights`` keys: ``"embedding"`` (TinyBERT, ``hidden_states[0]``), ``"hidden"``
    (TinyBERT, every student layer ``m`` against teacher layer ``g(m)``), ``"attention"``
    (TinyBERT, same pairs of layers), ``"cosine"`` (DistilBERT, last hidden states),
    ``"pkd"`` (Patient KD, [CLS] of student layers ``1..S-1`` against ``g(1..S-1)``),
    ``"minilm_attention"`` and ``"minilm_value"`` (MiniLM/MiniLMv2, last layers,
    ``relation_heads`` heads, default the teacher's head count). ``layer_map`` is ``g``
    in the ``hidden_states`` numbering (default ``layer_map(S, N, "uniform")``).

    Building the term sets ``student.config.output_hidden_states`` so that ``fit``'s
    plain ``model(**batch)`` returns the hidden states the term reads; the teacher runs
    in eval mode on each call and gets its own modes back. Attention maps and MiniLM's
    queries, keys and values are caught by forward hooks on the
    ``attention.self.query/key/value`` Linear layers that
    the picked losses need, and the maps are ``softmax(Q K^T / sqrt(d_head))`` over the
    real keys, which is what eager attention computes. They are not read from
    ``outputs.attentions``: SDPA attention (the default) returns none, and eager attention
    returns the maps *after* attention dropout while the student trains, which would bias
    the MSE towards flat maps. So both models keep their attention implementation.
    :meth:`remove` (or leaving a ``with`` block) takes the hooks off and restores the flag,
    so both models are then as they were before the term was built.

    The term owns the projections ``nn.Linear(d_s, d_t)`` (one per student layer for
    ``"hidden"``, one for ``"embedding"``), created only when the widths differ; teacher
    and student are held but not registered as submodules, so the term's parameters are
    exactly its projections. Each call runs the teacher without gradients on the batch
    without ``labels`` (moving it to the batch's device first if needed) and keeps the
    unweighted value of each loss in ``last_terms``.

    Every argument is checked, and every Linear layer the hooks need is found, before either
    model is touched: a refused term leaves both as they were. ``TypeError`` for models that
    are not BERT-like or ``weights`` that is not a mapping; ``ValueError`` for the rest
    (an unknown loss, a weight that is not a finite number >= 0, a bad ``layer_map``,
    widths or head counts a picked loss cannot compare, the same model twice).
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, *, layer_map: Sequence[int] | None = None,
                 weights: Mapping[str, float], relation_heads: int | None = None):
        super().__init__()
        teacher_base, student_base = bert_backbone(teacher, "teacher"), bert_backbone(student, "student")
        if student is teacher:
            raise ValueError("student and teacher must be two models, got the same one twice")
        self.weights = _check_weights(weights)
        tc, sc = teacher.config, student.config
        check_same_vocabulary(student, teacher)
        n, s = len(teacher_base.encoder.layer), len(student_base.encoder.layer)
        self.layer_map = make_layer_map(s, n, "uniform") if layer_map is None else check_layer_map(layer_map, s, n)
        d_s, d_t = sc.hidden_size, tc.hidden_size
        for name in ("cosine", "pkd"):
            if name in self.weights and d_s != d_t:
                raise ValueError(f"the {name!r} loss compares hidden states directly and needs equal widths, "
                                 f"got student {d_s} and teacher {d_t}; use 'hidden' (with a projection) instead")
        if "pkd" in self.weights and s < 2:
            raise ValueError("the 'pkd' loss uses student layers 1..S-1 (the last is left to the prediction loss) "
                             f"and needs a student of 2 or more layers, got {s}")
        if "attention" in self.weights:
            if sc.num_attention_heads != tc.num_attention_heads:
                raise ValueError(f"the 'attention' loss needs as many heads in student and teacher, got "
                                 f"{sc.num_attention_heads} and {tc.num_attention_heads}; use 'minilm_attention'")
            if 0 in self.layer_map:
                raise ValueError(f"the 'attention' loss needs teacher layers >= 1 in layer_map (0 is the embedding "
                                 f"output, which has no attention), got {self.layer_map}")
        minilm = [k for k in ("minilm_attention", "minilm_value") if k in self.weights]
        self.relation_heads = tc.num_attention_heads if relation_heads is None else relation_heads
        if minilm:
            check_relation_heads(self.relation_heads, d_s, d_t)
        elif relation_heads is not None:
            raise ValueError(f"relation_heads={relation_heads!r} is for the MiniLM losses, which weights does not pick")

        param = next(student.parameters())

        def projection() -> nn.Linear:
            return nn.Linear(d_s, d_t).to(device=param.device, dtype=param.dtype)

        self.embedding_projection = projection() if "embedding" in self.weights and d_s != d_t else None
        self.hidden_projections = (nn.ModuleList(projection() for _ in range(s))
                                   if "hidden" in self.weights and d_s != d_t else None)

        # Which outputs of which attention Linear layers (0-based layer, "query"/"key"/"value") each model must show.
        wanted = {"student": set(), "teacher": set()}
        if "attention" in self.weights:
            wanted["student"] |= {(m, kind) for m in range(s) for kind in ("query", "key")}
            wanted["teacher"] |= {(g - 1, kind) for g in self.layer_map for kind in ("query", "key")}
        if minilm:
            kinds = ("query", "key", "value") if "minilm_attention" in self.weights else ("value",)
            wanted["student"] |= {(s - 1, kind) for kind in kinds}
            wanted["teacher"] |= {(n - 1, kind) for kind in kinds}
        modules = {role: {key: _linear(base, *key, role) for key in sorted(wanted[role])}
                   for role, base in (("teacher", teacher_base), ("student", student_base))}
        self._wanted = {role: sorted(keys) for role, keys in wanted.items()}

        # Held, not registered: the term's parameters are its projections only.
        object.__setattr__(self, "teacher", teacher)
        object.__setattr__(self, "student", student)
        self.last_terms: dict[str, float] = {}
        self._needs_hidden = bool({"embedding", "hidden", "cosine", "pkd"} & set(self.weights))
        self._saved_hidden_flag = sc.output_hidden_states
        if self._needs_hidden:
            sc.output_hidden_states = True
        self._captured: dict[str, dict] = {"student": {}, "teacher": {}}
        self._handles = [module.register_forward_hook(self._catch(self._captured[role], key))
                         for role in modules for key, module in modules[role].items()]
        self._removed = False

    @staticmethod
    def _catch(store: dict, key):
        def hook(module, args, output):
            store[key] = output
        return hook

    def remove(self) -> None:
        """Take the hooks off and give the student its ``output_hidden_states`` flag back (idempotent)."""
        if self._removed:
            return
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for store in self._captured.values():
            store.clear()
        self.student.config.output_hidden_states = self._saved_hidden_flag
        self._removed = True

    def __enter__(self) -> "IntermediateDistillation":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def forward(self, model: nn.Module, batch: Mapping[str, torch.Tensor], outputs) -> torch.Tensor:
        """The weighted sum of the picked losses for this batch (``fit`` calls it after ``model(**batch)``)."""
        if self._removed:
            raise RuntimeError("this IntermediateDistillation was removed; build a new one")
        if not isinstance(batch, Mapping) or "input_ids" not in batch:
            raise TypeError("batch must be a dict of tensors with 'input_ids' (and 'attention_mask')")
        inputs = model_inputs(batch)
        mask = inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(inputs["input_ids"])
        cs, ct = self._captured["student"], self._captured["teacher"]
        missing = [key for key in self._wanted["student"] if key not in cs]
        if missing:
            raise ValueError(f"the student's attention {missing[0][1]} of layer {missing[0][0]} was not caught: run "
                             "the student as student(**batch) before calling the term")
        if next(self.teacher.parameters()).device != mask.device:
            self.teacher.to(mask.device)
        ct.clear()
        with torch.no_grad(), evaluating(self.teacher):
            teacher_out = self.teacher(**inputs, output_hidden_states=self._needs_hidden)

        s, g, w = len(self.layer_map), self.layer_map, self.weights
        terms: dict[str, torch.Tensor] = {}
        if self._needs_hidden:
            hs_s, hs_t = getattr(outputs, "hidden_states", None), teacher_out.hidden_states
            if hs_s is None or len(hs_s) != s + 1:
                got = "none" if hs_s is None else len(hs_s)
                raise ValueError(f"outputs must hold the student's hidden_states ({s + 1} tensors), got {got}: run the "
                                 "student as student(**batch) after building the term, which sets its config to "
                                 "return them")
            if "embedding" in w:
                terms["embedding"] = hidden_mse_loss(hs_s[0], hs_t[0], mask, self.embedding_projection)
            if "hidden" in w:
                proj = self.hidden_projections
                terms["hidden"] = sum(hidden_mse_loss(hs_s[m], hs_t[g[m - 1]], mask, proj[m - 1] if proj else None)
                                      for m in range(1, s + 1))
            if "cosine" in w:
                terms["cosine"] = hidden_cosine_loss(hs_s[-1], hs_t[-1], mask)
            if "pkd" in w:
                terms["pkd"] = pkd_loss([hs_s[m][:, 0] for m in range(1, s)],
                                        [hs_t[g[m - 1]][:, 0] for m in range(1, s)])
        if "attention" in w:
            real = check_attention_mask(mask, *cs[(0, "query")].shape[:2])
            heads = self.student.config.num_attention_heads

            def probs(store, layer):
                return relation_log_probs(store[(layer, "query")], store[(layer, "key")], heads, real).exp()

            terms["attention"] = sum(attention_mse_loss(probs(cs, m - 1), probs(ct, g[m - 1] - 1), mask)
                                     for m in range(1, s + 1))
        last_s, last_t = s - 1, len(self.teacher.base_model.encoder.layer) - 1
        if "minilm_attention" in w:
            terms["minilm_attention"] = minilm_attention_loss(cs[(last_s, "query")], cs[(last_s, "key")],
                                                              ct[(last_t, "query")], ct[(last_t, "key")],
                                                              mask, self.relation_heads)
        if "minilm_value" in w:
            terms["minilm_value"] = minilm_value_loss(cs[(last_s, "value")], ct[(last_t, "value")], mask,
                                                      self.relation_heads)
        cs.clear()  # a later call must not read this batch's student again
        ct.clear()
        self.last_terms = {k: float(v.detach()) for k, v in terms.items()}
        return sum(w[k] * terms[k] for k in terms)

    def extra_repr(self) -> str:
        return f"weights={self.weights}, layer_map={self.layer_map}"
