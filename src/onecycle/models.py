"""Models for the built-in tasks, each exposing ``param_groups()`` for discriminative learning rates.

``param_groups()`` returns lists of parameters ordered from body (input side) to head, every
parameter in exactly one list: the optimizer can then give earlier layers smaller learning rates
(ULMFiT-style) without the models knowing anything about the schedule.

``create_model(name, in_shape, n_out, **kw)`` builds one of ``MODELS`` by name; ``in_shape`` is one
sample's input shape (no batch dimension) and ``n_out`` the number of classes or the vocabulary size.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_int, check_number

__all__ = [
    "MODELS", "create_model", "GroupedModule", "MLP", "MNIST1DConv", "BasicBlock", "ResNet1d",
    "CifarResNet", "LockedDropout", "WeightDropLSTM", "AWDLSTM", "embedding_dropout",
]


def _check_shape(in_shape: object, name: str = "in_shape") -> tuple[int, ...]:
    """A sample shape as a tuple of positive ints (an int is a 1-d shape)."""
    shape = (in_shape,) if isinstance(in_shape, int) else in_shape
    if not isinstance(shape, (tuple, list)) or not shape:
        raise TypeError(f"{name} must be a non-empty tuple of positive ints, got {in_shape!r}")
    for dim in shape:
        check_int(name, dim, 1)
    return tuple(shape)


def _channels_length(in_shape: tuple[int, ...]) -> tuple[int, int]:
    """(C, L) for 1-d signal models; a bare (L,) means one channel."""
    if len(in_shape) == 1:
        return 1, in_shape[0]
    if len(in_shape) == 2:
        return in_shape
    raise ValueError(f"in_shape must be (L,) or (C, L) for a 1-d model, got {in_shape!r}")


class GroupedModule(nn.Module):
    """Base class: subclasses list their layer groups (body to head) in ``layer_groups``."""

    def layer_groups(self) -> list[nn.Module | nn.Parameter]:
        raise NotImplementedError

    def param_groups(self) -> list[list[nn.Parameter]]:
        """Parameters per layer group, body to head; a shared (tied) parameter is listed once, in
        its first group, and any parameter no group names lands in the head group."""
        seen: set[int] = set()
        groups: list[list[nn.Parameter]] = []
        for group in self.layer_groups():
            params = [group] if isinstance(group, nn.Parameter) else list(group.parameters())
            fresh = [p for p in params if id(p) not in seen]
            seen.update(id(p) for p in fresh)
            if fresh:
                groups.append(fresh)
        rest = [p for p in self.parameters() if id(p) not in seen]
        if rest:
            if not groups:
                groups.append([])
            groups[-1].extend(rest)
        return groups


class MLP(GroupedModule):
    """Flatten, ``hidden`` Linear+ReLU(+Dropout) layers (their widths; an int: one layer), a linear
    head: the baseline for tabular input."""

    def __init__(self, in_shape: Sequence[int], n_out: int, hidden: int | Sequence[int] = (256, 256),
                 dropout: float = 0.0) -> None:
        super().__init__()
        check_number("dropout", dropout, low=0, high=1, high_open=True)
        if isinstance(hidden, int):
            hidden = [hidden]
        if isinstance(hidden, str) or not isinstance(hidden, Sequence):
            raise TypeError(f"hidden must be an int or a list of ints (layer widths), got {hidden!r}")
        n_in = math.prod(_check_shape(in_shape))
        layers = []
        for width in hidden:
            parts = [nn.Linear(n_in, check_int("hidden", width, 1)), nn.ReLU(inplace=True)]
            layers.append(nn.Sequential(*parts, *([nn.Dropout(dropout)] if dropout else [])))
            n_in = width
        self.body = nn.ModuleList(layers)
        self.head = nn.Linear(n_in, check_int("n_out", n_out, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.body:
            x = layer(x)
        return self.head(x)

    def layer_groups(self) -> list[nn.Module | nn.Parameter]:
        return [*self.body, self.head]


def _conv_len(length: int, conv: nn.Conv1d) -> int:
    """Output length of a Conv1d (no dilation): floor((L + 2p - k) / s) + 1."""
    return (length + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1


class MNIST1DConv(GroupedModule):
    """The MNIST-1D paper's CNN: three strided Conv1d (k5/s2/p1, then k3/s2/p1 twice) with ReLU and a
    linear head. For length 40 the lengths go 40 -> 19 -> 10 -> 5, so the head sees 25 * 5 = 125
    features. About 5k parameters: trains an MNIST-1D epoch in a fraction of a second on a CPU."""

    def __init__(self, in_shape: Sequence[int], n_out: int, channels: int = 25) -> None:
        super().__init__()
        self.in_shape = _channels_length(_check_shape(in_shape))
        c_in, length = self.in_shape
        ch = check_int("channels", channels, 1)
        self.convs = nn.ModuleList([nn.Conv1d(c_in, ch, 5, stride=2, padding=1),
                                    nn.Conv1d(ch, ch, 3, stride=2, padding=1),
                                    nn.Conv1d(ch, ch, 3, stride=2, padding=1)])
        for conv in self.convs:
            length = _conv_len(length, conv)
        if length < 1:
            raise ValueError(f"in_shape {in_shape!r} is too short for three stride-2 convolutions")
        self.head = nn.Linear(ch * length, check_int("n_out", n_out, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.in_shape)  # (B, L) works as well as (B, C, L)
        for conv in self.convs:
            x = F.relu(conv(x))
        return self.head(x.flatten(1))

    def layer_groups(self) -> list[nn.Module | nn.Parameter]:
        return [*self.convs, self.head]


_CONV = {1: nn.Conv1d, 2: nn.Conv2d}
_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}


class _PadShortcut(nn.Module):
    """He et al.'s option A: subsample and zero-pad the new channels, adding no parameters."""

    def __init__(self, dim: int, stride: int, extra: int) -> None:
        super().__init__()
        self.dim, self.stride, self.extra = dim, stride, extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[(slice(None), slice(None)) + (slice(None, None, self.stride),) * self.dim]
        lo = self.extra // 2
        return F.pad(x, [0, 0] * self.dim + [lo, self.extra - lo])


class BasicBlock(nn.Module):
    """Two 3-wide conv+BN layers with a residual connection, for 1-d (``dim=1``) or 2-d signals.
    ``shortcut`` "A" pads (parameter-free), "B" projects with a 1x1 conv+BN when the shape changes."""

    def __init__(self, dim: int, c_in: int, c_out: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        conv, norm = _CONV[dim], _NORM[dim]
        self.conv1, self.bn1 = conv(c_in, c_out, 3, stride, 1, bias=False), norm(c_out)
        self.conv2, self.bn2 = conv(c_out, c_out, 3, 1, 1, bias=False), norm(c_out)
        if stride == 1 and c_in == c_out:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            if c_out < c_in:
                raise ValueError(f"shortcut 'A' cannot reduce channels ({c_in} -> {c_out})")
            self.shortcut = _PadShortcut(dim, stride, c_out - c_in)
        else:
            self.shortcut = nn.Sequential(conv(c_in, c_out, 1, stride, bias=False), norm(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def _stage(dim: int, c_in: int, c_out: int, n_blocks: int, stride: int, shortcut: str) -> nn.Sequential:
    blocks = [BasicBlock(dim, c_in, c_out, stride, shortcut)]
    blocks += [BasicBlock(dim, c_out, c_out, 1, shortcut) for _ in range(n_blocks - 1)]
    return nn.Sequential(*blocks)


class _ResNet(GroupedModule):
    """Stem conv+BN+ReLU, stages of basic blocks (stride 2 from the second on), global average pool,
    linear head. Groups: stem with the first stage, each later stage, the head."""

    def __init__(self, dim: int, c_in: int, n_out: int, widths: Sequence[int], n_blocks: int,
                 shortcut: str) -> None:
        super().__init__()
        if not widths:
            raise ValueError(f"widths must name at least one stage, got {widths!r}")
        check_int("n_blocks", n_blocks, 1)
        self.stem = nn.Sequential(_CONV[dim](c_in, widths[0], 3, 1, 1, bias=False), _NORM[dim](widths[0]),
                                  nn.ReLU(inplace=True))
        stages, prev = [], widths[0]
        for i, width in enumerate(widths):
            stages.append(_stage(dim, prev, check_int("widths", width, 1), n_blocks, 1 if i == 0 else 2,
                                 shortcut))
            prev = width
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(prev, check_int("n_out", n_out, 1))
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x.flatten(2).mean(-1))

    def layer_groups(self) -> list[nn.Module | nn.Parameter]:
        return [nn.ModuleList([self.stem, self.stages[0]]), *self.stages[1:], self.head]


class ResNet1d(_ResNet):
    """A small 1-d ResNet (one projection-shortcut block per stage by default) for (C, L) signals."""

    def __init__(self, in_shape: Sequence[int], n_out: int, widths: Sequence[int] = (32, 64, 128),
                 n_blocks: int = 1) -> None:
        shape = _channels_length(_check_shape(in_shape))
        super().__init__(1, shape[0], n_out, widths, n_blocks, "B")
        self.in_shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(x.shape[0], *self.in_shape))


class CifarResNet(_ResNet):
    """He et al. (2016)'s CIFAR ResNets: depth 6n+2, three stages of n blocks with 16/32/64 channels,
    option-A (padding) shortcuts by default as in the paper; any (C, H, W) input."""

    def __init__(self, in_shape: Sequence[int], n_out: int, depth: int = 20,
                 widths: Sequence[int] = (16, 32, 64), shortcut: str = "A") -> None:
        shape = _check_shape(in_shape)
        if len(shape) != 3:
            raise ValueError(f"in_shape must be (C, H, W), got {in_shape!r}")
        if check_int("depth", depth) < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110), got {depth!r}")
        super().__init__(2, shape[0], n_out, widths, (depth - 2) // 6, shortcut)


class LockedDropout(nn.Module):
    """Variational dropout: one mask per sequence shared by all time steps of (B, T, C) input, so a
    dropped unit stays dropped for the whole sequence (per-step masks disrupt the recurrence)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        check_number("p", p, low=0, high=1, high_open=True)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1.0 - self.p)
        return x * mask.div_(1.0 - self.p)


def embedding_dropout(weight: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Drop whole rows (tokens) of an embedding matrix: every occurrence of a dropped token in the
    batch gets a zero vector, a stronger regulariser than dropping embedded units independently."""
    if not training or p == 0.0:
        return weight
    mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1.0 - p).div_(1.0 - p)
    return weight * mask


class WeightDropLSTM(nn.Module):
    """One batch-first LSTM layer with DropConnect on its hidden-to-hidden matrix (AWD-LSTM).

    The matrix is dropped once per forward and the dropped copy is handed to the fused LSTM kernel
    (``torch.lstm``), so every time step sees the same mask and no ``nn.LSTM`` internals are patched.
    """

    def __init__(self, input_size: int, hidden_size: int, weight_p: float = 0.0) -> None:
        super().__init__()
        check_number("weight_p", weight_p, low=0, high=1, high_open=True)
        self.input_size, self.hidden_size, self.weight_p = input_size, hidden_size, weight_p
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x: (B, T, input_size); state: (h, c), each (1, B, hidden_size), zeros when None."""
        if state is None:
            zeros = x.new_zeros(1, x.shape[0], self.hidden_size)
            state = (zeros, zeros)
        w_hh = F.dropout(self.weight_hh, self.weight_p, self.training)
        params = (self.weight_ih, w_hh, self.bias_ih, self.bias_hh)
        if not x.is_cuda:
            out, h, c = torch.lstm(x, state, params, True, 1, 0.0, self.training, False, True)
            return out, (h, c)
        with warnings.catch_warnings():
            # cuDNN warns that the weights are not in one flat buffer: expected with a fresh dropped copy.
            warnings.filterwarnings("ignore", message=".*contiguous chunk of memory.*")
            out, h, c = torch.lstm(x, state, params, True, 1, 0.0, self.training, False, True)
        return out, (h, c)


class AWDLSTM(GroupedModule):
    """A small AWD-LSTM language model (Merity et al. 2017): embedding dropout, locked dropout on
    inputs, between layers and on the output, weight-dropped recurrent matrices, tied embedding and
    decoder weights. Input (B, T) token ids, output (B, T, n_out) logits.

    The hidden state is carried across batches (detached each batch: truncated BPTT) and recreated when
    the batch size or device changes; call ``reset()`` at the start of each epoch and of each
    validation pass.
    """

    def __init__(self, in_shape: Sequence[int], n_out: int, emb_size: int = 64, hidden_size: int = 256,
                 n_layers: int = 2, embed_p: float = 0.02, input_p: float = 0.1, hidden_p: float = 0.1,
                 output_p: float = 0.2, weight_p: float = 0.2, tie_weights: bool = True) -> None:
        super().__init__()
        _check_shape(in_shape)
        n_out, n_layers = check_int("n_out", n_out, 1), check_int("n_layers", n_layers, 1)
        check_number("embed_p", embed_p, low=0, high=1, high_open=True)
        self.embed_p = embed_p
        self.encoder = nn.Embedding(n_out, check_int("emb_size", emb_size, 1))
        last = emb_size if tie_weights else check_int("hidden_size", hidden_size, 1)
        sizes = [emb_size] + [check_int("hidden_size", hidden_size, 1)] * (n_layers - 1) + [last]
        self.rnns = nn.ModuleList(WeightDropLSTM(sizes[i], sizes[i + 1], weight_p) for i in range(n_layers))
        self.input_drop, self.output_drop = LockedDropout(input_p), LockedDropout(output_p)
        self.hidden_drop = LockedDropout(hidden_p)
        self.decoder = nn.Linear(last, n_out)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if tie_weights:
            self.decoder.weight = self.encoder.weight
        self._state: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def reset(self) -> None:
        """Forget the carried hidden state (new epoch, validation pass, or unrelated text)."""
        self._state = None

    def _get_state(self, like: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        bs, state = like.shape[0], self._state
        if state is None or state[0][0].shape[1] != bs or state[0][0].device != like.device:
            state = [(like.new_zeros(1, bs, r.hidden_size), like.new_zeros(1, bs, r.hidden_size))
                     for r in self.rnns]
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = embedding_dropout(self.encoder.weight, self.embed_p, self.training)
        h = self.input_drop(F.embedding(x, weight))
        state, new_state = self._get_state(h), []
        for i, rnn in enumerate(self.rnns):
            h, s = rnn(h, state[i])
            new_state.append((s[0].detach(), s[1].detach()))
            if i < len(self.rnns) - 1:
                h = self.hidden_drop(h)
        self._state = new_state
        return self.decoder(self.output_drop(h))

    def layer_groups(self) -> list[nn.Module | nn.Parameter]:
        # The tied embedding is the decoder's weight, so it belongs with the head.
        return [*self.rnns, nn.ModuleList([self.encoder, self.decoder])]


def resnet20(in_shape: Sequence[int], n_out: int, **kw) -> CifarResNet:
    """ResNet-20 (3 blocks per stage, 0.27M parameters at 10 classes)."""
    return CifarResNet(in_shape, n_out, depth=20, **kw)


def resnet56(in_shape: Sequence[int], n_out: int, **kw) -> CifarResNet:
    """ResNet-56 (9 blocks per stage, 0.85M parameters at 10 classes)."""
    return CifarResNet(in_shape, n_out, depth=56, **kw)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "cnn": MNIST1DConv,
    "resnet1d": ResNet1d,
    "resnet20": resnet20,
    "resnet56": resnet56,
    "lstm": AWDLSTM,
}


def create_model(name: str, in_shape: Sequence[int], n_out: int, **kw) -> nn.Module:
    """Build ``MODELS[name]`` for samples of shape ``in_shape`` and ``n_out`` outputs; ``kw`` go to the
    model's constructor (e.g. ``hidden=(512,)`` for the MLP, ``shortcut="B"`` for the ResNets)."""
    if name not in MODELS:
        raise ValueError(f"name must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](_check_shape(in_shape), check_int("n_out", n_out, 1), **kw)
