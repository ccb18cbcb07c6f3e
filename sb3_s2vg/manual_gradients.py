"""
Hand-derived forward and backward passes of one S2VG actor-critic update (eq. 7, 8 and 10-11 of the paper).

Autograd records every operation of the update and replays it backwards, which on a CPU costs about as much
as the arithmetic itself for networks of this size (hundreds of small operations per update). This module
computes the same losses and the same gradients with explicit matrix products:

- the gradients are written in place into each parameter's ``.grad`` (no accumulation, no ``zero_grad``);
- ReLU backward masks the incoming gradient in place, and biases are added in place after each product
  (no broadcast copy of the bias into every output);
- the policy gradient of eq. 11 passes through the world model and V as input gradients only (their weight
  gradients are never formed, as with autograd and frozen parameters).

It covers the common configuration: vector observations (a ``Box``, or a ``Dict`` of them) read through SB3's
``FlattenExtractor`` or ``CombinedExtractor``, ReLU networks, no gSDE, any horizon H, and a termination signal that
is absent, learned (a classifier) or a known function whose output carries no gradient.
``ManualActorCriticGradients.unsupported_reason`` says why another configuration falls back to autograd.
``tests/test_manual_gradients.py`` checks losses and gradients against autograd.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import torch as th
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, FlattenExtractor
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN, Actor
from torch import nn
from torch.nn import functional as F

from sb3_s2vg.layers import BatchedMLP
from sb3_s2vg.policies import BatchedContinuousCritic, ValueNetwork
from sb3_s2vg.world_model import MAX_LOG_STD, MIN_LOG_STD, RunningNormalizer, WorldModel

#: log √(2π), the constant of the Gaussian log-density
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class SquashedGaussianSample(NamedTuple):
    """
    A reparameterised action a = tanh(μ + σ η) of SAC's squashed Gaussian policy, with what its gradient needs.

    :param actions: a, shape (batch, action_dim), in (-1, 1)
    :param log_prob: log π(a|s), shape (batch, 1)
    :param noise: η ~ N(0, 1), shape (batch, action_dim)
    :param std: σ, shape (batch, action_dim)
    :param squash_term: 1 − a² + 1e-6, shape (batch, action_dim)
    """

    actions: th.Tensor
    log_prob: th.Tensor
    noise: th.Tensor
    std: th.Tensor
    squash_term: th.Tensor


def squashed_gaussian_sample(mean: th.Tensor, log_std: th.Tensor) -> SquashedGaussianSample:
    """
    The same numbers (and random stream) as SB3's ``Actor.action_log_prob``, without ``torch.distributions``: the
    Gaussian log-density of the pre-squash sample, then SAC's tanh correction (epsilon 1e-6 as in SB3).

    :param mean: μ, shape (batch, action_dim)
    :param log_std: log σ (already clamped), shape (batch, action_dim)
    """
    noise = th.empty_like(mean).normal_()
    std = log_std.exp()
    actions = th.tanh(mean + std * noise)
    squash_term = 1.0 - actions.square() + 1e-6
    log_prob = (-0.5 * noise.square() - log_std - HALF_LOG_2PI).sum(dim=1, keepdim=True)
    log_prob = log_prob - th.log(squash_term).sum(dim=1, keepdim=True)
    return SquashedGaussianSample(actions, log_prob, noise, std, squash_term)


class CriticRegression(NamedTuple):
    """
    The regression of eq. 7 for one update, computed without gradient.

    :param observations: Inputs ŝ_t of the Q networks, the H steps stacked: (n, ...) with n = H * batch
    :param actions: Their actions â_t, shape (n, action_dim)
    :param targets: Regression targets, shape (n, 1)
    :param weights: Weight of each row (the probability that no earlier imagined step terminated), shape (n, 1), or
        None when all are one (H = 1)
    """

    observations: PyTorchObs
    actions: th.Tensor
    targets: th.Tensor
    weights: th.Tensor | None


def _linear_layers(sequential: nn.Module) -> tuple[list[nn.Linear], bool] | None:
    """
    :param sequential: A network
    :return: The ``nn.Linear`` layers (with biases) of ``Linear, ReLU, Linear, ReLU, ..., Linear[, ReLU]`` and whether
        it ends with a ReLU, or None for any other network
    """
    if not isinstance(sequential, nn.Sequential):
        return None
    modules = list(sequential)
    linears, activations = modules[0::2], modules[1::2]
    if not all(type(m) is nn.Linear and m.bias is not None for m in linears):
        return None
    if not all(type(m) is nn.ReLU for m in activations):
        return None
    return linears, len(activations) == len(linears) > 0  # type: ignore[return-value]


def _reads_flat_vectors(extractor: BaseFeaturesExtractor) -> bool:
    """
    Whether the features are the flat observation vector (``S2VGPolicy.flatten_obs``): SB3's ``FlattenExtractor``, or
    its ``CombinedExtractor`` over vector boxes (each key flattened, concatenated in the space's key order).
    """
    if type(extractor) is FlattenExtractor:
        return True
    return type(extractor) is CombinedExtractor and all(type(m) is nn.Flatten for m in extractor.extractors.values())


def _mlp_of(sequential: nn.Module) -> "_Mlp":
    """The ``_Mlp`` view of a ``Linear, ReLU, ..., Linear[, ReLU]`` network (checked by ``unsupported_reason``)."""
    layers = _linear_layers(sequential)
    assert layers is not None, f"not a plain Linear/ReLU MLP: {sequential}"
    return _Mlp(*layers)


class _Mlp:
    """
    A ReLU MLP seen as its weight and bias tensors (shared with the module, so always current).

    :param linears: Its ``nn.Linear`` layers, a ReLU after each but the last (and after the last with
        ``final_relu``)
    :param final_relu: Whether the network ends with a ReLU
    """

    def __init__(self, linears: list[nn.Linear], final_relu: bool = False):
        self.weights = [layer.weight for layer in linears]  # (out, in) each
        self.biases = [layer.bias for layer in linears]  # (out,) each
        self.final_relu = final_relu

    def forward(self, x: th.Tensor, saved: list[th.Tensor] | None = None) -> th.Tensor:
        """
        :param x: Input of shape (batch, in)
        :param saved: When given, receives the input of every layer (what the backward pass needs)
        :return: Output of shape (batch, out)
        """
        last = len(self.weights) - 1
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            if saved is not None:
                saved.append(x)
            x = F.linear(x, weight).add_(bias)
            if index < last or self.final_relu:
                x = x.relu_()
        return x

    def _backward(self, grad: th.Tensor, saved: list[th.Tensor], weight_grads: bool, input_grad: bool) -> th.Tensor | None:
        for index in reversed(range(len(self.weights))):
            layer_input = saved[index]
            if weight_grads:
                th.mm(grad.t(), layer_input, out=_grad_of(self.weights[index]))
                th.sum(grad, dim=0, out=_grad_of(self.biases[index]))
            if index == 0 and not input_grad:
                return None
            grad = th.mm(grad, self.weights[index])
            if index > 0:  # through the ReLU whose output is this layer's input
                _relu_backward_(grad, layer_input)
        return grad

    def backward_weights(self, grad: th.Tensor, saved: list[th.Tensor]) -> None:
        """
        Write the weight and bias gradients into their ``.grad``.

        :param grad: Gradient of the loss with respect to the last product's output (before a final ReLU),
            shape (batch, out); consumed (modified in place)
        :param saved: The layer inputs saved by ``forward``
        """
        self._backward(grad, saved, weight_grads=True, input_grad=False)

    def backward_input(self, grad: th.Tensor, saved: list[th.Tensor], weight_grads: bool = False) -> th.Tensor:
        """
        :param grad: Gradient of the loss with respect to the last product's output (before a final ReLU),
            shape (batch, out); consumed (modified in place)
        :param saved: The layer inputs saved by ``forward``
        :param weight_grads: Also write the weight and bias gradients into their ``.grad`` (otherwise the weights
            are treated as constants, as frozen parameters are by autograd)
        :return: The gradient with respect to the input, shape (batch, in)
        """
        input_grad = self._backward(grad, saved, weight_grads, input_grad=True)
        assert input_grad is not None
        return input_grad


class _BatchedMlp:
    """
    ``BatchedMLP`` seen as its stacked weight (members, in, out) and bias (members, 1, out) tensors.

    :param module: The batched networks
    """

    def __init__(self, module: BatchedMLP):
        self.weights = list(module.weights)
        self.biases = list(module.biases)
        self.n_members = module.n_members

    def forward(self, x: th.Tensor, saved: list[th.Tensor] | None = None) -> th.Tensor:
        """
        :param x: Input shared by every member, shape (batch, in)
        :param saved: When given, receives the input of every layer
        :return: Output of shape (members, batch, out)
        """
        x = x.unsqueeze(0).expand(self.n_members, *x.shape)
        last = len(self.weights) - 1
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            if saved is not None:
                saved.append(x)
            x = th.bmm(x, weight).add_(bias)
            if index < last:
                x = x.relu_()
        return x

    def backward_weights(self, grad: th.Tensor, saved: list[th.Tensor]) -> None:
        """
        Write the weight and bias gradients into their ``.grad``.

        :param grad: Gradient with respect to the output, shape (members, batch, out); consumed
        :param saved: The layer inputs saved by ``forward``
        """
        for index in reversed(range(len(self.weights))):
            layer_input = saved[index]
            th.bmm(layer_input.transpose(1, 2), grad, out=_grad_of(self.weights[index]))
            th.sum(grad, dim=1, keepdim=True, out=_grad_of(self.biases[index]))
            if index == 0:
                return
            grad = th.bmm(grad, self.weights[index].transpose(1, 2))
            _relu_backward_(grad, layer_input)


def _grad_of(parameter: th.Tensor) -> th.Tensor:
    """The parameter's ``.grad`` buffer, created (zeros) when it does not exist yet."""
    if parameter.grad is None:
        parameter.grad = th.zeros_like(parameter)
    return parameter.grad


def _relu_backward_(grad: th.Tensor, relu_output: th.Tensor) -> None:
    """In place: zero ``grad`` where the ReLU output is zero (the ReLU derivative, as autograd computes it)."""
    th.ops.aten.threshold_backward.grad_input(grad, relu_output, 0.0, grad_input=grad)


def _soft_clamp_log_std(raw_log_std: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """
    ``GaussianHead``'s soft clamp into [``MIN_LOG_STD``, ``MAX_LOG_STD``] and its derivative.

    :param raw_log_std: Shape (batch, dim)
    :return: The clamped log standard deviation and d(clamped)/d(raw), both of shape (batch, dim)
    """
    upper = MAX_LOG_STD - F.softplus(MAX_LOG_STD - raw_log_std)
    log_std = MIN_LOG_STD + F.softplus(upper - MIN_LOG_STD)
    # softplus'(x) = sigmoid(x) (softplus is linear above its threshold 20, where sigmoid rounds to 1 in fp32)
    derivative = th.sigmoid(upper - MIN_LOG_STD).mul_(th.sigmoid(MAX_LOG_STD - raw_log_std))
    return log_std, derivative


class _GaussianHeadPass:
    """
    One reparameterised sample of a ``GaussianHead`` with what its backward pass needs.

    :param head: The head's MLP (outputs the mean and the raw log standard deviation side by side)
    :param output_dim: Dimension of the predicted Gaussian
    :param inputs: Input of shape (batch, in)
    """

    def __init__(self, head: _Mlp, output_dim: int, inputs: th.Tensor):
        self.mlp = head
        self.saved: list[th.Tensor] = []
        self.mean, raw_log_std = head.forward(inputs, self.saved).split(output_dim, dim=-1)
        log_std, self.log_std_derivative = _soft_clamp_log_std(raw_log_std)
        self.std = log_std.exp()

    def sample(self) -> th.Tensor:
        """:return: ``mean + std * ζ``, ζ ~ N(0, 1), shape (batch, dim) (draws ζ)"""
        self.noise = th.randn_like(self.mean)
        return self.mean + self.std * self.noise

    def input_grad(self, grad_sample: th.Tensor) -> th.Tensor:
        """
        :param grad_sample: Gradient with respect to the sample, shape (batch, dim)
        :return: Gradient with respect to the head's input, shape (batch, in)
        """
        grad_raw_log_std = grad_sample * self.std * self.noise * self.log_std_derivative
        grad_output = th.cat([grad_sample, grad_raw_log_std], dim=1)
        return self.mlp.backward_input(grad_output, self.saved)


def _normalizer_scale(normalizer: RunningNormalizer) -> th.Tensor | None:
    return normalizer.std if normalizer.enabled else None


class ManualActorCriticGradients:
    """
    The gradients of one S2VG actor-critic update, computed by hand: eq. 7 into the Q networks, eq. 8 into V
    and eq. 11 into the policy, left in each parameter's ``.grad``. Same numbers as autograd on the same
    batch and random stream (up to floating-point summation order).

    :param actor: SB3's SAC actor (ReLU ``latent_pi``, ``mu`` and ``log_std`` heads, no gSDE)
    :param critic_networks: The twin Q networks (``BatchedContinuousCritic.q_networks``)
    :param value_net: V's MLP (``ValueNetwork.v_net``)
    :param world_model: The world model (its ``termination_fn`` is read at every call)
    """

    def __init__(
        self,
        actor: Actor,
        critic_networks: BatchedMLP,
        value_net: nn.Sequential,
        world_model: WorldModel,
    ):
        self.actor = _mlp_of(actor.latent_pi)  # Linear, ReLU, ..., Linear, ReLU
        self.mean_head = _mlp_of(nn.Sequential(actor.mu))
        self.log_std_head = _mlp_of(nn.Sequential(actor.log_std))
        self.critic = _BatchedMlp(critic_networks)
        self.value = _mlp_of(value_net)
        self.world_model = world_model
        self.dynamics = _mlp_of(world_model.dynamics.net)
        self.reward = _mlp_of(world_model.reward.net)
        self.termination = _mlp_of(world_model.termination) if world_model.termination is not None else None

    @staticmethod
    def unsupported_reason(
        actor: Actor, critic: BatchedContinuousCritic, value_net: ValueNetwork, world_model: WorldModel
    ) -> str | None:
        """
        :param actor: The policy's actor
        :param critic: The twin Q networks
        :param value_net: V
        :param world_model: The world model, with its ``termination_fn`` set
        :return: Why this configuration needs autograd, or None when the hand-derived update covers it
        """
        if actor.use_sde:
            return "gSDE"
        for name, module in [("actor", actor), ("critic", critic), ("value", value_net)]:
            if not _reads_flat_vectors(module.features_extractor):
                return f"the {name}'s features extractor does more than flatten the observations"
        # Networks that end with a product; the actor's latent_pi ends with a ReLU (or is empty)
        networks = [value_net.v_net, world_model.dynamics.net, world_model.reward.net]
        networks += [nn.Sequential(actor.mu), nn.Sequential(actor.log_std)]
        if world_model.termination is not None:
            networks.append(world_model.termination)
        layers = [_linear_layers(network) for network in networks]
        latent_layers = _linear_layers(actor.latent_pi)
        if (
            any(layer is None or layer[1] for layer in layers)
            or latent_layers is None
            or latent_layers[1] != bool(latent_layers[0])
            or type(critic.q_networks.activation) is not nn.ReLU
        ):
            return "a network is not a plain Linear/ReLU MLP"
        if world_model.termination_fn is not None:
            device = world_model.obs_normalizer.mean.device
            probe = th.zeros(2, world_model.obs_dim, device=device, requires_grad=True)
            try:
                done = world_model.termination_fn(probe, th.zeros(2, world_model.action_dim, device=device), probe)
            except Exception as error:  # the autograd path will call it on real data and report a real error
                return f"termination_fn could not be probed ({error!r})"
            if isinstance(done, th.Tensor) and done.requires_grad:
                return "termination_fn is differentiable"
        return None

    @th.no_grad()
    def __call__(
        self,
        observations: th.Tensor,
        critic_regression: Callable[[], CriticRegression],
        ent_coef: th.Tensor,
        gamma: float,
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        """
        Losses and gradients of one update on a batch of real states.

        :param observations: Flat real observations, shape (batch, obs_dim), float32
        :param critic_regression: Returns the inputs (flat, float32), targets and weights of eq. 7. It is called
            once, after the policy's action noise is drawn and before the world model's, the order in which the
            autograd path draws them (the imagined rollout of H > 1 draws in between), so that both paths see the
            same random numbers
        :param ent_coef: α, a scalar tensor
        :param gamma: Discount factor γ
        :return: Critic, value and actor losses (scalars) and the log-probabilities of the sampled policy
            actions, shape (batch, 1)
        """
        batch_size = observations.shape[0]
        # ----- the policy's reparameterised action a = tanh(μ + σ η) and log π(a|s), as S2VG._sample_actions
        actor_saved: list[th.Tensor] = []
        latent = self.actor.forward(observations, actor_saved)
        mean = self.mean_head.forward(latent)
        raw_log_std = self.log_std_head.forward(latent)
        log_std = raw_log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        actions_pi, log_prob, noise, std, squash_term = squashed_gaussian_sample(mean, log_std)

        # ----- eq. 7: ½ Σ_i Σ_rows w (Q_i − y)² / n, gradient w (Q_i − y) / n into each Q network
        regression = critic_regression()
        critic_saved: list[th.Tensor] = []
        q_inputs = th.cat([regression.observations, regression.actions], dim=1)  # type: ignore[list-item]
        residuals = self.critic.forward(q_inputs, critic_saved) - regression.targets
        weighted = residuals if regression.weights is None else regression.weights * residuals
        n_rows = regression.targets.shape[0]
        critic_loss = 0.5 * (weighted * residuals).sum() / n_rows
        self.critic.backward_weights(weighted.div_(n_rows), critic_saved)

        # ----- eq. 8: ½ E[(V(s) − (min_i Q_i(s, a) − α log π(a|s)))²] with a ~ π(s), gradient into V
        q_pi = self.critic.forward(th.cat([observations, actions_pi], dim=1))
        value_targets = q_pi.min(dim=0).values - ent_coef * log_prob
        value_saved: list[th.Tensor] = []
        value_residuals = self.value.forward(observations, value_saved) - value_targets
        value_loss = 0.5 * value_residuals.square().mean()
        self.value.backward_weights(value_residuals.div_(batch_size), value_saved)

        # ----- eq. 10-11: −E[r̂(s, a) − α log π(a|s) + γ (1 − d̂) V(f(s, a))], through the model and V into π
        world_model = self.world_model
        model_inputs = th.cat([world_model.obs_normalizer.normalize(observations), actions_pi], dim=1)
        dynamics = _GaussianHeadPass(self.dynamics, world_model.obs_dim, model_inputs)
        reward = _GaussianHeadPass(self.reward, 1, model_inputs)
        model_next_observations = world_model.dynamics_target_normalizer.denormalize(dynamics.sample())
        if world_model.predict_delta:
            model_next_observations = model_next_observations + observations
        model_rewards = world_model.reward_normalizer.denormalize(reward.sample())
        termination_saved: list[th.Tensor] = []
        done_probabilities = None
        model_dones = None
        if world_model.termination_fn is not None:
            model_dones = world_model.termination_fn(observations, actions_pi, model_next_observations)
            model_dones = model_dones.reshape(-1, 1).to(model_rewards.dtype)
        elif self.termination is not None:
            done_probabilities = th.sigmoid(self.termination.forward(model_inputs, termination_saved))
            model_dones = done_probabilities
        next_value_saved: list[th.Tensor] = []
        next_values = self.value.forward(model_next_observations, next_value_saved)
        alive = None if model_dones is None else 1.0 - model_dones
        discounted = gamma * (next_values if alive is None else alive * next_values)
        actor_loss = -(model_rewards - ent_coef * log_prob + discounted).mean()

        grad_next_values = th.full_like(next_values, -gamma / batch_size)
        if alive is not None:
            grad_next_values = grad_next_values * alive
        grad_next_observations = self.value.backward_input(grad_next_values, next_value_saved)
        dynamics_scale = _normalizer_scale(world_model.dynamics_target_normalizer)
        if dynamics_scale is not None:
            grad_next_observations = grad_next_observations * dynamics_scale
        grad_inputs = dynamics.input_grad(grad_next_observations)
        grad_rewards = th.full_like(model_rewards, -1.0 / batch_size)
        reward_scale = _normalizer_scale(world_model.reward_normalizer)
        if reward_scale is not None:
            grad_rewards = grad_rewards * reward_scale
        grad_inputs = grad_inputs + reward.input_grad(grad_rewards)
        if done_probabilities is not None:
            assert self.termination is not None
            # d(−γ (1 − p) V / n)/dp = γ V / n, and dp/dlogit = p (1 − p)
            grad_logits = next_values * (gamma / batch_size) * done_probabilities * (1.0 - done_probabilities)
            grad_inputs = grad_inputs + self.termination.backward_input(grad_logits, termination_saved)

        # through the squashed Gaussian: a = tanh(u), u = μ + σ η, log π = Σ(−η²/2 − log σ − c) − Σ log(1 − a² + ε)
        grad_log_prob = ent_coef / batch_size
        grad_actions = grad_inputs[:, world_model.obs_dim :] + grad_log_prob * 2.0 * actions_pi / squash_term
        grad_pre_squash = grad_actions * (1.0 - actions_pi.square())
        grad_log_std = grad_pre_squash * std * noise - grad_log_prob
        grad_log_std = grad_log_std * ((raw_log_std >= LOG_STD_MIN) & (raw_log_std <= LOG_STD_MAX))
        latent_saved = [latent]
        grad_latent = self.mean_head.backward_input(grad_pre_squash, latent_saved, weight_grads=True)
        grad_latent = grad_latent + self.log_std_head.backward_input(grad_log_std, latent_saved, weight_grads=True)
        if self.actor.weights:  # no hidden layers (net_arch pi=[]): the heads read the observations directly
            _relu_backward_(grad_latent, latent)
            self.actor.backward_weights(grad_latent, actor_saved)
        return critic_loss, value_loss, actor_loss, log_prob
