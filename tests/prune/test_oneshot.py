import pytest
import torch

import shrinklib
from shrinklib import prune


def _problem(seed=0, tokens=512, n_in=48, n_out=20):
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-1, 1, n_in)[torch.randperm(n_in, generator=g)]  # some features far louder than others
    X = torch.randn(tokens, n_in, generator=g, dtype=torch.float64) * scales.double()
    W = torch.randn(n_out, n_in, generator=g, dtype=torch.float64)
    return X, W


def _row_magnitude(W, pruned_per_row):
    """Reference magnitude mask: in each row, prune the ``pruned_per_row`` smallest |w|."""
    return torch.stack([torch.abs(r) > torch.abs(r).kthvalue(pruned_per_row).values for r in W])


def _error(X, W, W2):
    return float((X @ W.T - X @ W2.T).pow(2).sum())


def test_sparsegpt_beats_wanda_which_beats_magnitude_on_reconstruction():
    X, W = _problem()
    magnitude = W * _row_magnitude(W, 24)
    wanda = W * prune.wanda_mask(W, X.pow(2).sum(0), 0.5)
    sparse, keep = prune.sparsegpt_prune(W, X.T @ X, 0.5, blocksize=16)
    assert int((~keep).sum()) == round(0.5 * W.numel()) and torch.all(sparse[~keep] == 0)
    assert _error(X, W, sparse) < _error(X, W, wanda) < _error(X, W, magnitude)


def test_sparsegpt_compensation_is_the_least_squares_refit():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(100, 4, generator=g, dtype=torch.float64)
    w = torch.tensor([[0.01, 1.0, -2.0, 0.5]], dtype=torch.float64)  # the first weight is the cheapest to remove
    pruned, keep = prune.sparsegpt_prune(w, X.T @ X, 0.25, blocksize=4, percdamp=0.0)
    assert keep.tolist() == [[False, True, True, True]]
    rest = X[:, 1:]
    refit = w[0, 1:] + torch.linalg.solve(rest.T @ rest, rest.T @ X[:, :1] * w[0, 0]).flatten()
    assert torch.allclose(pruned[0, 1:], refit, atol=1e-10)


def test_nothing_to_prune_changes_nothing_and_blocks_are_exact():
    X, W = _problem(2)
    same, keep = prune.sparsegpt_prune(W, X.T @ X, 0.0)
    assert keep.all() and torch.allclose(same, W, atol=1e-12)
    _, keep = prune.sparsegpt_prune(W, X.T @ X, 0.3, blocksize=16)
    for start in range(0, 48, 16):
        assert int((~keep[:, start:start + 16]).sum()) == round(0.3 * 20 * 16)


def test_wanda_prunes_each_row_exactly_and_equals_magnitude_for_equal_inputs():
    X, W = _problem(3)
    keep = prune.wanda_mask(W, X.pow(2).sum(0), 0.5)
    assert torch.all((~keep).sum(1) == 24)
    uniform = prune.wanda_mask(W, torch.ones(48), 0.5)
    assert torch.equal(uniform, _row_magnitude(W, 24))


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("method", ["wanda_", "sparsegpt_"])
def test_one_shot_pruning_of_a_decoder(method, tmp_path):
    model = _tiny_llama()
    blocks = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(0))
    head = model.lm_head.weight.clone()
    getattr(prune, method)(model, prune.lm_batches(blocks, 4), 0.5)
    masks = prune.masks(model)
    assert len(masks) == 2 * 7 and "lm_head" not in masks  # q, k, v, o, gate, up, down per layer
    assert sum(int((~m).sum()) for m in masks.values()) == sum(round(0.5 * m.numel()) for m in masks.values())
    assert torch.equal(model.lm_head.weight, head)
    loaded = shrinklib.load(shrinklib.save(model, tmp_path / "m"))
    x = blocks[:2]
    assert torch.equal(loaded(x).logits, model(x).logits)


@pytest.mark.parametrize("call, message", [
    (lambda: prune.sparsegpt_prune(torch.zeros(3, 4), torch.eye(5), 0.5), r"gram must be \(4, 4\)"),
    (lambda: prune.sparsegpt_prune(torch.zeros(3, 4), torch.eye(4), 1.0), r"sparsity must be a number in \[0, 1\)"),
    (lambda: prune.wanda_(_tiny_llama(), [], 0.5), "no calibration batch"),
    (lambda: prune.lm_batches(torch.zeros(5)), "token_blocks must be"),
])
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
