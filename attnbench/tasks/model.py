"""The small language model a task trains: the same for every mechanism but its token mixer.

    tokens → embedding → layers × [ x + mixer(short causal conv(norm(x))),  x + MLP(norm(x)) ] → norm → logits

The mixer is any registered mechanism's layer, built from the registry alone: its `make_tensors` at the layer
level draws the input projections, the learned core parameters and the output projection (everything but the
input `x`), which become `nn.Parameter`s, and `Mechanism.apply` runs the chosen implementation's core between
the projections. Only the mixer differs between two models of one cell; the embedding, the short convolution
(depthwise, causal, as Zoology puts before every mixer: it lets a value's position see its key), the MLP, the
norms and their initialisation are drawn from the same seed.

No position embedding: the convolution gives the local order MQAR needs, and a mechanism with its own
positions (TPA's rotary embedding, AFT's position biases) keeps them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional

from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import Problem

MLP_EXPANSION = 4  # hidden width of the MLP over the model width, as in a standard Transformer block


class RegistryMixer(nn.Module):
    """One mechanism's layer as a module: its learned tensors as parameters, its core `impl` between them.

    `problem` is the layer's problem at the training shape (its B is replaced by each batch's own size; the
    mechanism's learned tensors depend on T and the widths, never on B)."""

    def __init__(self, problem: Problem, impl: str, generator: torch.Generator):
        super().__init__()
        self.mechanism = registry.get(problem.mechanism)
        self.problem = problem
        self.core: Callable = self.mechanism.impl(impl).load()
        drawn = self.mechanism.make_tensors(problem.with_(B=1), torch.float32, "cpu", generator)
        drawn.pop("x")
        self.weights = nn.ParameterDict({name: nn.Parameter(tensor.clone()) for name, tensor in drawn.items()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        problem = self.problem.with_(B=x.shape[0])
        return self.mechanism.apply(self.core, problem, {"x": x, **self.weights})


class ShortConv(nn.Module):
    """A depthwise causal convolution over time of `kernel` taps: position t sees t-kernel+1 .. t.

    Written as a sum of shifted copies: at a few taps that is several times faster on the CPU than a grouped
    `conv1d`, whose depthwise kernels dominated a small model's training step."""

    def __init__(self, width: int, kernel: int):
        super().__init__()
        # Initialised as `nn.Conv1d` would be for a depthwise kernel (fan-in = kernel): U(±1/sqrt(kernel)).
        bound = kernel**-0.5
        self.taps = nn.Parameter(torch.empty(kernel, width).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(width).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length, kernel = x.shape[1], self.taps.shape[0]
        padded = functional.pad(x, (0, 0, kernel - 1, 0))  # kernel-1 zero positions before the first token
        out = self.bias + padded[:, kernel - 1 :] * self.taps[kernel - 1]
        for lag in range(1, kernel):  # tap kernel-1-lag looks `lag` positions back
            out = out + padded[:, kernel - 1 - lag : kernel - 1 - lag + length] * self.taps[kernel - 1 - lag]
        return out


class Block(nn.Module):
    """A pre-norm residual block: the sequence mixer (short convolution, then the mechanism), then an MLP."""

    def __init__(self, problem: Problem, impl: str, conv_kernel: int, generator: torch.Generator):
        super().__init__()
        width = problem.D
        self.mix_norm = nn.LayerNorm(width)
        self.conv = ShortConv(width, conv_kernel)
        self.mixer = RegistryMixer(problem, impl, generator)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, MLP_EXPANSION * width), nn.GELU(), nn.Linear(MLP_EXPANSION * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.conv(self.mix_norm(x)))
        return x + self.mlp(self.mlp_norm(x))


class RecallModel(nn.Module):
    """Token ids `[B, T]` → next-token logits `[B, T, vocab]`, with `layers` blocks around one mechanism."""

    def __init__(self, problem: Problem, impl: str, vocab: int, layers: int, conv_kernel: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)  # the embedding, convolutions, norms, MLPs and head: the same for every mechanism
        generator = torch.Generator().manual_seed(seed + 1)  # the mixers' own tensors
        width = problem.D
        self.embedding = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(Block(problem, impl, conv_kernel, generator) for _ in range(layers))
        self.final_norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x))


def parameter_count(model: nn.Module) -> int:
    """Learned numbers of the model (every parameter element once)."""
    return sum(parameter.numel() for parameter in model.parameters())
