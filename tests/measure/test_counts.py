import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from shrinklib.measure import (
    count_parameters,
    module_weights,
    nonzero_parameters,
    nonzeros,
    parameters_by_component,
    sparsity,
)
from shrinklib.utils import matching_modules

from .conftest import make_llama


def test_count_equals_torch_and_ties_count_once(bert, llama):
    for model in (bert, llama):
        assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    tied = make_llama(tie=True)
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    assert count_parameters(tied) == count_parameters(llama) - 100 * 32


def test_bert_by_component_exact(bert):
    h, i, layers = 24, 37, 2
    expected = {
        "embeddings": (100 + 128 + 2) * h,
        "attention": layers * 4 * (h * h + h),
        "ffn": layers * (h * i + i + i * h + h),
        "norms": (1 + 2 * layers) * 2 * h,
        "head": (h * h + h) + (h * 2 + 2),
        "recurrent": 0,
        "other": 0,
    }
    got = parameters_by_component(bert)
    assert got == expected
    assert sum(got.values()) == count_parameters(bert)


def test_by_component_sums_to_total(llama, bilstm):
    tied = make_llama(tie=True)
    for model in (llama, bilstm, tied):
        assert sum(parameters_by_component(model).values()) == count_parameters(model)
    assert parameters_by_component(tied)["head"] == 0  # the tied matrix counts as embeddings
    assert parameters_by_component(bilstm)["recurrent"] == sum(p.numel() for p in bilstm.lstm.parameters())


def test_sparsity_of_zeroed_weights_excludes_head(bert):
    with torch.no_grad():
        bert.classifier.weight.zero_()  # the head is not counted by default
        q = bert.bert.encoder.layer[0].attention.self.query
        q.weight[:, :12] = 0
    linears = [m for _, m in matching_modules(bert)]
    total = sum(m.weight.numel() for m in linears)
    assert nonzeros(bert) == total - 24 * 12
    assert sparsity(bert) == pytest.approx(24 * 12 / total)


def test_torch_pruning_is_counted_as_masked(bert):
    linears = [m for _, m in matching_modules(bert)]
    before = nonzero_parameters(bert)  # HF initializes biases and norm shifts to exact zeros
    for m in linears:
        prune.l1_unstructured(m, "weight", amount=0.3)
    expected_zeros = sum(round(0.3 * m.weight.numel()) for m in linears)
    total = sum(m.weight.numel() for m in linears)
    assert nonzeros(bert) == total - expected_zeros
    assert sparsity(bert) == pytest.approx(expected_zeros / total)
    assert count_parameters(bert) == sum(p.numel() for p in bert.parameters())
    assert nonzero_parameters(bert) == before - expected_zeros


def test_lstm_weights_not_biases(bilstm):
    names = [n for n, _ in module_weights(bilstm.lstm)]
    assert names and all(n.startswith("weight_") for n in names)
    picked = nonzeros(bilstm, lambda m, fqn: isinstance(m, nn.LSTM))
    assert picked == sum(p.numel() for n, p in bilstm.lstm.named_parameters() if n.startswith("weight"))


def test_bad_input(bert):
    with pytest.raises(ValueError, match="picked no module"):
        nonzeros(bert, lambda m, fqn: False)
    with pytest.raises(ValueError, match="only modules without weights"):
        sparsity(bert, lambda m, fqn: isinstance(m, nn.Dropout))
    with pytest.raises(TypeError, match="filter_fn must be callable"):
        nonzeros(bert, "encoder")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got str"):
        count_parameters("bert")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        parameters_by_component(None)


def test_compressed_layers_count_the_weights_they_stand_for(bert):
    """Quantized, clustered and 2:4-packed layers keep their weights in buffers: still parameters."""
    import copy

    from shrinklib import prune as shrink_prune
    from shrinklib import quant

    dense = count_parameters(bert)
    for compress in (lambda m: quant.quantize_(m, quant.Int8Dynamic()),
                     lambda m: quant.quantize_embeddings_(quant.quantize_(m, quant.WeightOnly(6, 16))),
                     lambda m: quant.cluster_(m, quant.ClusterConfig(bits=5)),
                     lambda m: quant.pq_embeddings_(m, quant.PQConfig(subvectors=4, centroids=8))):
        model = compress(copy.deepcopy(bert))
        codebooks = sum(m.codebook.numel() for m in model.modules() if isinstance(m, quant.ClusteredLinear))
        assert count_parameters(model) == dense + codebooks  # a clustered layer's shared values are trained
        assert sum(parameters_by_component(model).values()) == dense + codebooks
    pruned = copy.deepcopy(bert)

    def fits_24(module, fqn):
        return isinstance(module, nn.Linear) and module.in_features % 4 == 0

    for _, layer in matching_modules(pruned, fits_24):
        w = layer.weight.data
        keep = w.abs().reshape(-1, 4).topk(2, dim=1).indices
        mask = torch.zeros_like(w).reshape(-1, 4).scatter_(1, keep, 1.0).reshape(w.shape)
        w.mul_(mask)
    before = nonzero_parameters(pruned)
    shrink_prune.sparsify_24_(pruned, filter_fn=fits_24)
    assert count_parameters(pruned) == dense and nonzero_parameters(pruned) == before
