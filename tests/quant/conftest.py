"""What several quantization test files share: a small stack whose later layer cannot be
calibrated, to prove that a transform failing half-way leaves the model as it was."""
import torch
from torch import nn


class Block(nn.Module):
    """``tanh(linear(x))``; ``breaks`` spoils what the next block reads: ``"nan"`` (every
    output nan) or ``"rank_one"`` (every feature a copy of the first: a singular Gram matrix)."""

    def __init__(self, width: int, breaks: str | None = None):
        super().__init__()
        self.linear, self.breaks = nn.Linear(width, width), breaks

    def forward(self, x):
        y = torch.tanh(self.linear(x))
        if self.breaks == "nan":
            return y * float("nan")
        if self.breaks == "rank_one":
            return y[..., :1].expand_as(y)
        return y


class Stack(nn.Module):
    """``depth`` blocks in an ``nn.ModuleList`` (what :func:`shrinklib.arch.blocks` finds), the
    block ``broken_at`` spoiling the inputs of the blocks after it: their statistics are
    only known once the blocks before them have run, so a transform meets them mid-way."""

    def __init__(self, width: int = 16, depth: int = 3, broken_at: int | None = None, breaks: str = "nan"):
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList([Block(width, breaks if i == broken_at else None) for i in range(depth)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def stack_batches(width: int = 16, n: int = 2, tokens: int = 48) -> list[dict]:
    """``n`` batches of ``tokens`` random inputs: more tokens than features, so a healthy Gram matrix is regular."""
    g = torch.Generator().manual_seed(0)
    return [{"x": torch.randn(tokens, width, generator=g)} for _ in range(n)]
