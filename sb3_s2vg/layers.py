"""Network building blocks shared by the policy and the world model."""

from itertools import pairwise

import torch as th
from stable_baselines3.common.torch_layers import create_mlp
from torch import nn
from torch.nn import functional as F


def inplace_activation(activation_fn: type[nn.Module]) -> nn.Module:
    """An instance of ``activation_fn`` that works in place when it can (saves a pass over each hidden layer)."""
    try:
        return activation_fn(inplace=True)  # type: ignore[call-arg]
    except TypeError:
        return activation_fn()


def make_mlp(
    input_dim: int,
    output_dim: int,
    net_arch: list[int],
    activation_fn: type[nn.Module],
    layer_norm: bool = False,
    dropout: float = 0.0,
) -> nn.Sequential:
    """
    SB3's ``create_mlp`` (Linear, activation, ..., Linear) with in-place activations where possible.

    :param layer_norm: ``nn.LayerNorm`` after each hidden product, before its activation (Linear, LayerNorm,
        activation, ..., Linear), as in DroQ (Hiraoka et al., 2022) and DHMBPO's critics and model
    :param dropout: ``nn.Dropout`` of this rate after each hidden product, before the layer norm (DroQ's order:
        Linear, Dropout, LayerNorm, activation); 0 adds none
    """
    modules = create_mlp(input_dim, output_dim, net_arch, activation_fn)
    layers: list[nn.Module] = []
    for module in modules:
        if isinstance(module, activation_fn):
            width = layers[-1].out_features
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            if layer_norm:
                layers.append(nn.LayerNorm(width))  # type: ignore[arg-type]
            module = inplace_activation(activation_fn)
        layers.append(module)
    return nn.Sequential(*layers)


class BatchedMLP(nn.Module):
    """
    ``n_members`` independent MLPs of the same shape evaluated together: each layer is one batched matrix product
    (``baddbmm``) over stacked weights instead of one product per member. Mathematically the same as ``n_members``
    ``nn.Sequential(*create_mlp(...))`` networks, and initialised like them (``nn.Linear``'s default).

    :param n_members: Number of independent networks
    :param input_dim: Input dimension
    :param output_dim: Output dimension of each member
    :param net_arch: Hidden layer sizes
    :param activation_fn: Activation function between layers
    :param layer_norm: Each member's own layer norm (affine, initialised as ``nn.LayerNorm``) after each hidden
        product, before the activation, as ``make_mlp(..., layer_norm=True)``
    :param dropout: Dropout of this rate after each hidden product, before the layer norm, in training mode only
        (as ``make_mlp(..., dropout=...)``); 0 adds none
    """

    def __init__(
        self,
        n_members: int,
        input_dim: int,
        output_dim: int,
        net_arch: list[int],
        activation_fn: type[nn.Module],
        layer_norm: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.n_members = n_members
        self.layer_norm = layer_norm
        self.dropout = dropout
        sizes = [input_dim, *net_arch, output_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in pairwise(sizes):
            layers = [nn.Linear(fan_in, fan_out) for _ in range(n_members)]
            self.weights.append(nn.Parameter(th.stack([layer.weight.detach().T for layer in layers])))
            self.biases.append(nn.Parameter(th.stack([layer.bias.detach().unsqueeze(0) for layer in layers])))
        # Layer-norm gains and shifts per member and hidden layer, shape (members, 1, width)
        self.norm_weights = nn.ParameterList([nn.Parameter(th.ones(n_members, 1, width)) for width in net_arch if layer_norm])
        self.norm_biases = nn.ParameterList([nn.Parameter(th.zeros(n_members, 1, width)) for width in net_arch if layer_norm])
        self.activation = inplace_activation(activation_fn)

    def forward(self, x: th.Tensor, members: th.Tensor | None = None) -> th.Tensor:
        """
        :param x: Input shared by the members, shape (batch, input_dim), or one per member, (members, batch, input_dim)
        :param members: Indices of the members to evaluate, shape (k,), or None for all
        :return: Shape (members, batch, output_dim)
        """

        def select(parameter: th.Tensor) -> th.Tensor:
            return parameter if members is None else parameter.index_select(0, members)

        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n_members if members is None else len(members), *x.shape)
        last = len(self.weights) - 1
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            x = th.baddbmm(select(bias), x, select(weight))
            if index < last:
                if self.dropout > 0:
                    x = F.dropout(x, self.dropout, self.training)
                if self.layer_norm:
                    gain, shift = select(self.norm_weights[index]), select(self.norm_biases[index])
                    x = th.addcmul(shift, F.layer_norm(x, x.shape[-1:]), gain)
                x = self.activation(x)
        return x


class ValueScale(nn.Module):
    """
    DHMBPO's scaled and bounded critic (4kubo/erl_lib, ``agent/sac.py``: ``scaled_critic``, ``bounded_critic``,
    ``update_critic_bound``): the Q networks and V output ``raw * width + center``, where ``[center - width,
    center + width]`` is a running estimate of the range of values, the ``quantile`` and ``1 - quantile`` quantiles of
    a batch's soft rewards r − α log π divided by 1 − γ, set by the first batch and then moved toward each batch's by
    ``rate`` (an exponential moving average). The same range bounds the target V in eq. 7's targets (``clip``). Shared by the Q
    networks, V and the target V, so that all three read one range; its tensors are buffers (saved with the policy,
    not trained, not averaged). No host-device synchronisation.

    :param quantile: Lower quantile of the soft rewards (DHMBPO's ``reward_q_th_lb``, 0.01)
    :param rate: Step of the moving average toward each batch's range (DHMBPO's learning rate, 3e-4)
    """

    center: th.Tensor
    width: th.Tensor
    lower: th.Tensor
    upper: th.Tensor
    initialized: th.Tensor
    levels: th.Tensor

    def __init__(self, quantile: float = 0.01, rate: float = 3e-4):
        super().__init__()
        self.quantile = quantile
        self.rate = rate
        self.register_buffer("center", th.zeros(()))
        self.register_buffer("width", th.ones(()))
        self.register_buffer("lower", th.tensor(-float("inf")))
        self.register_buffer("upper", th.tensor(float("inf")))
        self.register_buffer("initialized", th.tensor(False))
        self.register_buffer("levels", th.tensor([quantile, 1.0 - quantile]), persistent=False)

    def forward(self, raw: th.Tensor) -> th.Tensor:
        """
        :param raw: A network's outputs, any shape
        :return: ``raw * width + center``, the same shape
        """
        return th.addcmul(self.center, raw, self.width)

    def clip(self, values: th.Tensor) -> th.Tensor:
        """
        :param values: Value targets, any shape
        :return: The values clipped into the running range ``[lower, upper]`` (unchanged before the first update)
        """
        return values.clamp(self.lower, self.upper)

    @th.no_grad()
    def update(self, soft_rewards: th.Tensor, gamma: float) -> None:
        """
        Move the range toward this batch's: ``quantile`` and ``1 - quantile`` quantiles of the soft rewards over
        1 − γ (set to them on the first call).

        :param soft_rewards: r − α log π(a|s) of a batch, shape (batch, 1)
        :param gamma: The discount γ, below 1
        """
        batch_lower, batch_upper = (
            th.quantile(soft_rewards.flatten(), self.levels.to(soft_rewards.dtype)) / (1.0 - gamma)
        ).unbind()
        self.lower.copy_(th.where(self.initialized, self.lower.lerp(batch_lower, self.rate), batch_lower))
        self.upper.copy_(th.where(self.initialized, self.upper.lerp(batch_upper, self.rate), batch_upper))
        self.initialized.fill_(True)
        self.center.copy_((self.upper + self.lower) / 2)
        # A batch of equal soft rewards has no range; the floor keeps the networks' outputs from vanishing
        self.width.copy_(((self.upper - self.lower) / 2).clamp(min=1e-6))
