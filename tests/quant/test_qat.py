import math

import pytest
import torch
from torch import nn

import shrinklib
from shrinklib import zoo
from shrinklib.quant import QuantLinear, fake_quantize_weight, quantize_per_token
from shrinklib.quant.qat import QATConfig, QATLinear, binarize, convert_qat_, qat_, qat_layers, ternarize


def linear(k=40, n=12, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(k, n)


def inputs(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_minmax_forward_is_fake_quantized_weights_and_activations_with_straight_through_gradient():
    lin, x = linear(), inputs(6, 40)
    q = QATLinear.from_linear(lin, QATConfig("minmax", 8, 8))
    x_q, x_scale = quantize_per_token(x)
    expected = (x_q.float() * x_scale[:, None]) @ fake_quantize_weight(lin.weight.detach(), 8, True).T + lin.bias
    y = q(x)
    assert torch.allclose(y, expected, atol=1e-5)
    y.pow(2).sum().backward()
    w_hat = q.quantized_weight().detach().requires_grad_(True)
    (nn.functional.linear(x_q.float() * x_scale[:, None], w_hat, lin.bias)).pow(2).sum().backward()
    assert torch.allclose(q.weight.grad, w_hat.grad, atol=1e-4)  # dL/dw = dL/dw_hat: the grid covers every weight


def test_lsq_step_gradient_is_the_papers_scaled_gradient():
    lin = linear()
    q = QATLinear.from_linear(lin, QATConfig("lsq", 2, None))
    qmax, n = 1, 40
    step = q.step.detach().clone()
    assert torch.allclose(step, 2 * lin.weight.detach().abs().mean(1, keepdim=True) / math.sqrt(qmax))
    c = inputs(12, 40, seed=2)
    (q.quantized_weight() * c).sum().backward()
    v = lin.weight.detach() / step
    dwhat_ds = torch.where(v <= -2, torch.full_like(v, -2.0), torch.where(v >= 1, torch.ones_like(v), torch.round(v) - v))
    expected = (c * dwhat_ds).sum(1, keepdim=True) / math.sqrt(n * qmax)
    assert torch.allclose(q.step.grad, expected, atol=1e-5)


def test_ternary_and_binary_grids():
    w = torch.tensor([[0.9, -0.1, -1.1, 0.05, 0.6, -0.7]])
    levels, alpha = ternarize(w)
    delta = 0.7 * w.abs().mean()
    assert levels.tolist() == [[1, 0, -1, 0, 1, -1]] and float(delta) < 0.6
    assert math.isclose(float(alpha), (0.9 + 1.1 + 0.6 + 0.7) / 4, rel_tol=1e-6)
    levels, alpha = binarize(w)
    assert levels.tolist() == [[1, -1, -1, 1, 1, -1]] and math.isclose(float(alpha), float(w.abs().mean()), rel_tol=1e-6)
    q = QATLinear.from_linear(linear(6, 1), QATConfig("ternary", activation_bits=None))
    q.weight.data.copy_(w)
    q.quantized_weight().sum().backward()
    assert torch.equal(q.weight.grad, torch.ones_like(w))  # straight through


@pytest.mark.parametrize("config", [QATConfig("minmax", 8, 8), QATConfig("lsq", 4, None), QATConfig("ternary", 8, 8),
                                    QATConfig("binary", 8, None)], ids=["w8a8", "lsq4", "ternary", "binary"])
def test_training_then_converting_keeps_the_function_and_round_trips(config, tmp_path):
    model = qat_(zoo.tiny_bert(vocab_size=50), config)
    assert len(qat_layers(model)) == 12
    batch = {"input_ids": torch.randint(0, 50, (16, 8), generator=torch.Generator().manual_seed(0)),
             "labels": torch.randint(0, 2, (16,), generator=torch.Generator().manual_seed(1))}
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(15):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    ids = batch["input_ids"][:4]
    with torch.no_grad():
        trained = model(input_ids=ids).logits
        if config.activation_bits is not None and config.weights in ("ternary", "binary"):
            for layer in qat_layers(model):  # the converted ternary layers keep float activations
                layer.config = QATConfig(layer.config.weights, layer.config.bits, None)
            trained = model(input_ids=ids).logits
    convert_qat_(model)
    assert not qat_layers(model) and len([m for m in model.modules() if isinstance(m, QuantLinear)]) == 12
    converted = model(input_ids=ids).logits
    assert torch.allclose(converted, trained, atol=1e-4)
    shrinklib.save(model, tmp_path)
    assert torch.equal(shrinklib.load(tmp_path)(input_ids=ids).logits, converted)


def test_bad_input(unchanged):
    with pytest.raises(ValueError, match="weights must be one of"):
        QATConfig("kmeans")
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 8"):
        QATConfig("lsq", 1)
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 8"):
        QATConfig("minmax", 8, 16)
    model = zoo.tiny_bert(vocab_size=50)
    with unchanged(model):
        with pytest.raises(TypeError, match="config must be a QATConfig"):
            qat_(model, "int8")
        with pytest.raises(ValueError, match="no QATLinear layer"):
            convert_qat_(model)
        with pytest.raises(ValueError, match="nothing to train quantized"):
            qat_(model, filter_fn=lambda m, fqn: False)
