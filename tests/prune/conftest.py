"""What several pruning test files share: a small BERT with its batches, and a least-squares layer problem."""
import torch

from shrinklib import zoo


def small_bert():
    """A 3-layer BERT with 4 heads and FFNs of 40 neurons."""
    return zoo.tiny_bert(hidden_size=24, num_heads=4, num_layers=3, intermediate_size=40, seed=2)


def labelled_batches(n=3):
    """``n`` batches of 4 random sentences with labels (importance differentiates the loss)."""
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(1, 1000, (4, 11), generator=g), "labels": torch.randint(0, 2, (4,), generator=g)}
            for _ in range(n)]


X = torch.randint(1, 1000, (2, 13), generator=torch.Generator().manual_seed(5))


def gated_logits(model, module_of, units_of, zeroed: dict[int, list[int]]):
    """Reference: zero the chosen units' outputs with hooks, without changing any weight."""
    handles = []
    for layer, units in zeroed.items():
        module, n_units = module_of(layer), units_of(layer)

        def hook(mod, args, output, units=units, n_units=n_units):
            first = output[0] if isinstance(output, tuple) else output
            gate = torch.ones(n_units)
            gate[units] = 0
            gated = (first.reshape(*first.shape[:-1], n_units, -1) * gate[:, None]).reshape(first.shape)
            return (gated, *output[1:]) if isinstance(output, tuple) else gated

        handles.append(module.register_forward_hook(hook))
    with torch.no_grad():
        logits = model(X).logits
    for h in handles:
        h.remove()
    return logits


def layer_problem(seed=0, tokens=512, n_in=48, n_out=20):
    """``(X, W)``: float64 inputs whose features differ in scale by 100x, and a weight for them."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-1, 1, n_in)[torch.randperm(n_in, generator=g)]  # some features far louder than others
    X = torch.randn(tokens, n_in, generator=g, dtype=torch.float64) * scales.double()
    W = torch.randn(n_out, n_in, generator=g, dtype=torch.float64)
    return X, W


def row_magnitude_mask(W, pruned_per_row):
    """Reference magnitude mask: in each row, prune the ``pruned_per_row`` smallest |w|."""
    return torch.stack([torch.abs(r) > torch.abs(r).kthvalue(pruned_per_row).values for r in W])


def reconstruction_error(X, W, W2):
    """``||X W^T - X W2^T||^2``: what pruning a layer changes in its output."""
    return float((X @ W.T - X @ W2.T).pow(2).sum())
