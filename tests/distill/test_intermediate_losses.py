import math

import pytest
import torch
from torch import nn

from shrinklib.distill.intermediate_losses import (
    attention_mse_loss,
    hidden_cosine_loss,
    hidden_mse_loss,
    minilm_attention_loss,
    minilm_value_loss,
    pkd_loss,
)

# Three sequences of 7 tokens: one full, one right-padded, one left-padded.
MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 1],
                     [1, 1, 1, 1, 0, 0, 0],
                     [0, 0, 1, 1, 1, 1, 1]])
PAD = ~MASK.bool()
B, L, D_S, D_T = 3, 7, 24, 32


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _real(b):
    return [i for i in range(L) if MASK[b, i]]


def _scramble_padding(x, seed=9):
    """``x`` with every padded token position replaced by noise (dimension 1 is the token axis)."""
    x = x.clone()
    x[PAD] = _randn(*x[PAD].shape, seed=seed) * 100
    return x


# ----------------------------------------------------------------------------------
# The pure losses against their formulas


def test_hidden_cosine_loss():
    s, t = _randn(B, L, D_T, seed=1), _randn(B, L, D_T, seed=2)
    terms = [1 - (s[b, i] @ t[b, i]) / (s[b, i].norm() * t[b, i].norm()) for b in range(B) for i in _real(b)]
    expected = sum(terms) / len(terms)
    assert torch.allclose(hidden_cosine_loss(s, t, MASK), expected, atol=1e-6)
    assert torch.allclose(hidden_cosine_loss(_scramble_padding(s), _scramble_padding(t, 3), MASK), expected, atol=1e-6)
    assert hidden_cosine_loss(t, t, MASK).abs() < 1e-6
    assert hidden_cosine_loss(3 * t, t, MASK).abs() < 1e-6  # only the direction counts


def test_pkd_loss():
    s = [_randn(B, D_T, seed=i) for i in range(3)]
    t = [_randn(B, D_T, seed=10 + i) for i in range(3)]
    expected = 0.0
    for sj, tj in zip(s, t):
        expected += sum(((sj[b] / sj[b].norm() - tj[b] / tj[b].norm()) ** 2).sum() for b in range(B)) / B
    assert torch.allclose(pkd_loss(s, t), expected, atol=1e-6)
    assert torch.allclose(pkd_loss(tuple(2 * x for x in s), t), expected, atol=1e-6)
    assert pkd_loss(t, t).abs() < 1e-6


def test_hidden_mse_loss_with_a_projection_between_widths():
    s, t = _randn(B, L, D_S, seed=1), _randn(B, L, D_T, seed=2)
    projection = nn.Linear(D_S, D_T)
    w, bias = projection.weight.detach(), projection.bias.detach()
    squared = [((w @ s[b, i] + bias - t[b, i]) ** 2).sum() for b in range(B) for i in _real(b)]
    expected = sum(squared) / (len(squared) * D_T)
    got = hidden_mse_loss(s, t, MASK, projection)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(hidden_mse_loss(_scramble_padding(s), _scramble_padding(t), MASK, projection), got)
    got.backward()
    assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0
    # same width: no projection needed
    u = _randn(B, L, D_T, seed=3)
    same = sum(((u[b, i] - t[b, i]) ** 2).sum() for b in range(B) for i in _real(b)) / (len(squared) * D_T)
    assert torch.allclose(hidden_mse_loss(u, t, MASK), same, atol=1e-5)
    assert hidden_mse_loss(t, t, MASK) == 0


def _attention(heads, seed):
    return torch.softmax(_randn(B, heads, L, L, seed=seed), dim=-1)


def test_attention_mse_loss():
    s, t = _attention(2, 1), _attention(2, 2)
    squared = [(s[b, h, i, j] - t[b, h, i, j]) ** 2
               for b in range(B) for h in range(2) for i in _real(b) for j in _real(b)]
    expected = sum(squared) / len(squared)
    assert torch.allclose(attention_mse_loss(s, t, MASK), expected, atol=1e-7)
    scrambled = s.clone()
    for b in range(B):
        for i in range(L):
            if not MASK[b, i]:
                scrambled[b, :, i, :] = 5.0  # padded query rows
                scrambled[b, :, :, i] = -3.0  # padded key columns
    assert torch.allclose(attention_mse_loss(scrambled, t, MASK), expected, atol=1e-7)
    assert attention_mse_loss(t, t, MASK) == 0


def _relation_kl_by_hand(xs, ys, xt, yt, heads):
    """KL(teacher || student) of softmax(x_a y_a^T / sqrt(d_a)) over real keys, per head and real query."""
    total, count = 0.0, 0
    for b in range(B):
        real = _real(b)
        for a in range(heads):
            ds, dt = xs.shape[-1] // heads, xt.shape[-1] // heads
            cut_s, cut_t = slice(a * ds, (a + 1) * ds), slice(a * dt, (a + 1) * dt)
            for i in real:
                q_s = torch.stack([xs[b, i, cut_s] @ ys[b, j, cut_s] / math.sqrt(ds) for j in real]).softmax(0)
                p_t = torch.stack([xt[b, i, cut_t] @ yt[b, j, cut_t] / math.sqrt(dt) for j in real]).softmax(0)
                total += (p_t * (p_t.log() - q_s.log())).sum()
                count += 1
    return total / count


def test_minilm_attention_loss_splits_widths_into_relation_heads():
    qs, ks = _randn(B, L, D_S, seed=1), _randn(B, L, D_S, seed=2)
    qt, kt = _randn(B, L, D_T, seed=3), _randn(B, L, D_T, seed=4)
    for heads in (1, 4):
        expected = _relation_kl_by_hand(qs, ks, qt, kt, heads)
        got = minilm_attention_loss(qs, ks, qt, kt, MASK, heads)
        assert torch.allclose(got, expected, atol=1e-5)
        scrambled = [_scramble_padding(x, seed) for seed, x in enumerate((qs, ks, qt, kt))]
        assert torch.allclose(minilm_attention_loss(*scrambled, MASK, heads), got, atol=1e-6)
    assert minilm_attention_loss(qt, kt, qt, kt, MASK, 4).abs() < 1e-6


def test_minilm_value_loss():
    vs, vt = _randn(B, L, D_S, seed=5), _randn(B, L, D_T, seed=6)
    expected = _relation_kl_by_hand(vs, vs, vt, vt, 2)
    got = minilm_value_loss(vs, vt, MASK, 2)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(minilm_value_loss(_scramble_padding(vs), _scramble_padding(vt, 4), MASK, 2), got, atol=1e-6)
    assert minilm_value_loss(vt, vt, MASK, 8).abs() < 1e-6


def test_bad_input_of_the_losses():
    s, t = _randn(B, L, D_S), _randn(B, L, D_T)
    with pytest.raises(ValueError, match=r"must agree in shape \(batch, L, d\)"):
        hidden_cosine_loss(s, t, MASK)
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(batch, length\) = \(3, 7\), got \(3, 6\)"):
        hidden_cosine_loss(t, t, MASK[:, :6])
    with pytest.raises(ValueError, match="attention_mask must hold only 0"):
        hidden_cosine_loss(t, t, MASK * 2)
    with pytest.raises(ValueError, match="marks no real token"):
        hidden_cosine_loss(t, t, torch.zeros_like(MASK))
    with pytest.raises(TypeError, match="attention_mask must be a torch.Tensor"):
        hidden_cosine_loss(t, t, MASK.tolist())
    with pytest.raises(ValueError, match=r"student_hidden must have shape \(batch, L, d\), got \(3, 32\)"):
        hidden_cosine_loss(t[:, 0], t[:, 0], MASK)
    with pytest.raises(ValueError, match="student width 24 differs from teacher width 32: pass projection"):
        hidden_mse_loss(s, t, MASK)
    with pytest.raises(ValueError, match=r"nn.Linear\(24, 32\), got nn.Linear\(32, 24\)"):
        hidden_mse_loss(s, t, MASK, nn.Linear(D_T, D_S))
    with pytest.raises(TypeError, match="projection must be an nn.Linear or None"):
        hidden_mse_loss(s, t, MASK, nn.Identity())
    with pytest.raises(ValueError, match="must agree in every dimension but the last"):
        hidden_mse_loss(s[:, :5], t, MASK)
    with pytest.raises(TypeError, match="student_cls must be a list or tuple"):
        pkd_loss(t[:, 0], [t[:, 0]])
    with pytest.raises(ValueError, match="same number \\(>= 1\\) of layers, got 2 and 1"):
        pkd_loss([t[:, 0], t[:, 0]], [t[:, 0]])
    with pytest.raises(ValueError, match=r"student_cls\[0\] and teacher_cls\[0\] must agree in shape"):
        pkd_loss([s[:, 0]], [t[:, 0]])
    with pytest.raises(ValueError, match="same number of heads, got 2 and 4"):
        attention_mse_loss(_attention(2, 0), _attention(4, 0), MASK)
    with pytest.raises(ValueError, match=r"must both be \(batch, heads, L, L\), got \(3, 2, 7, 7\) and \(3, 2, 7, 6\)"):
        attention_mse_loss(_attention(2, 0), _attention(2, 0)[..., :6], MASK)
    with pytest.raises(ValueError, match=r"student_attention must have shape \(batch, heads, L, L\)"):
        attention_mse_loss(s, s, MASK)
    with pytest.raises(ValueError, match=r"relation_heads \(5\) must divide the width 24"):
        minilm_attention_loss(s, s, t, t, MASK, 5)
    with pytest.raises(ValueError, match="relation_heads must be a positive int, got 0"):
        minilm_value_loss(s, t, MASK, 0)
    with pytest.raises(ValueError, match="student_q and student_k must have one shape"):
        minilm_attention_loss(s, s[..., :12], t, t, MASK, 2)
    with pytest.raises(ValueError, match=r"must agree in \(batch, L\)"):
        minilm_value_loss(s[:2], t, MASK, 2)
    with pytest.raises(TypeError, match="teacher_v must be a torch.Tensor"):
        minilm_value_loss(s, t.numpy(), MASK, 2)


# ----------------------------------------------------------------------------------
# The helpers the fit term shares

from shrinklib.distill.intermediate_losses import (  # noqa: E402
    check_attention_mask,
    check_relation_heads,
    relation_log_probs,
)


def test_check_attention_mask_returns_the_real_tokens():
    real = check_attention_mask(MASK, B, L)
    assert real.dtype == torch.bool and torch.equal(real, MASK == 1)
    assert torch.equal(check_attention_mask(MASK.float(), B, L), real)


def test_check_relation_heads():
    assert check_relation_heads(4, D_S, D_T) == 4
    assert check_relation_heads(1) == 1


def test_relation_log_probs_is_the_per_head_softmax_over_real_keys():
    x, y = _randn(B, L, D_S, seed=1), _randn(B, L, D_S, seed=2)
    heads, size = 3, D_S // 3
    probs = relation_log_probs(x, y, heads, MASK == 1).exp()
    assert probs.shape == (B, heads, L, L)
    for b in range(B):
        real = _real(b)
        for a in range(heads):
            cut = slice(a * size, (a + 1) * size)
            for i in range(L):
                scores = torch.stack([x[b, i, cut] @ y[b, j, cut] / math.sqrt(size) for j in real])
                assert torch.allclose(probs[b, a, i, real], scores.softmax(0), atol=1e-6)
                assert (probs[b, a, i, PAD[b]] == 0).all()  # padded keys get no weight


def test_bad_input_of_the_helpers():
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(batch, length\) = \(3, 6\), got \(3, 7\)"):
        check_attention_mask(MASK, 3, 6)
    with pytest.raises(ValueError, match="attention_mask must hold only 0 \\(padding\\) and 1 \\(real token\\)"):
        check_attention_mask(MASK - 1, B, L)
    with pytest.raises(ValueError, match="attention_mask marks no real token"):
        check_attention_mask(torch.zeros_like(MASK), B, L)
    with pytest.raises(TypeError, match="attention_mask must be a torch.Tensor, got list"):
        check_attention_mask(MASK.tolist(), B, L)
    with pytest.raises(ValueError, match="relation_heads must be a positive int, got True"):
        check_relation_heads(True, D_S)
    with pytest.raises(ValueError, match=r"relation_heads \(5\) must divide the width 24"):
        check_relation_heads(5, D_S, D_T)
