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

Its passes line up one for one with the autograd losses of ``S2VG``, which stay the definition:

==========================  ==================================================
``S2VG`` (autograd)         ``ManualActorCriticGradients``
==========================  ==================================================
``_sample_actions``         ``sample_actions``
``_critic_loss`` (eq. 7)    ``critic_gradients`` (targets computed by ``S2VG._critic_targets``, passed in)
``_value_loss`` (eq. 8)     ``value_gradients``
``_actor_loss`` (eq. 10-11) ``actor_gradients``
==========================  ==================================================

The world model's decoding (denormalisation, ``predict_delta``) and its termination precedence come from
``WorldModel``'s own helpers. The configurations covered are stated in one place,
``ManualActorCriticGradients.unsupported_reason``; every other configuration runs the autograd losses.
``tests/test_manual_gradients.py`` checks losses and gradients against autograd.
"""

from typing import NamedTuple, cast

import torch as th
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, FlattenExtractor
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN, Actor
from torch import nn
from torch.nn import functional as F

from sb3_s2vg.layers import BatchedMLP
from sb3_s2vg.policies import (
    BatchedContinuousCritic,
    NormalizedFlattenExtractor,
    SquashedGaussianSample,
    ValueNetwork,
    min_over_critics,
    squashed_gaussian_sample,
)
from sb3_s2vg.world_model import WorldModel, soft_clamp_log_std, soft_clamp_log_std_derivative


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
    Whether the features are the flat observation vector (``ObservationFlattener.flatten``): SB3's ``FlattenExtractor``, or
    its ``CombinedExtractor`` over vector boxes (each key flattened, concatenated in the space's key order).
    """
    if type(extractor) is FlattenExtractor:
        return True
    return type(extractor) is CombinedExtractor and all(type(m) is nn.Flatten for m in extractor.extractors.values())


def _standardizer(extractor: BaseFeaturesExtractor | None, world_model: WorldModel) -> NormalizedFlattenExtractor | None:
    """
    :return: ``extractor`` when it standardises the flat observation with the world model's observation statistics
        (``policy_kwargs=dict(normalize_input=True)``), else None
    """
    if type(extractor) is NormalizedFlattenExtractor and extractor.normalizer is world_model.obs_normalizer:
        return extractor
    return None


def _passes_of(sequential: nn.Module) -> "_LinearReLUPasses":
    """The passes of a ``Linear, ReLU, ..., Linear[, ReLU]`` network (checked by ``unsupported_reason``)."""
    layers = _linear_layers(sequential)
    assert layers is not None, f"not a plain Linear/ReLU MLP: {sequential}"
    return _LinearReLUPasses(*layers)


class _LinearReLUPasses:
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


class _BatchedLinearReLUPasses:
    """
    ``BatchedMLP`` (the Q networks) seen as its stacked weight (members, in, out) and bias (members, 1, out) tensors.

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


class _GaussianHeadPass:
    """
    One reparameterised sample of a ``GaussianHead`` with what its backward pass needs.

    :param head: The head's MLP (outputs the mean and the raw log standard deviation side by side)
    :param output_dim: Dimension of the predicted Gaussian
    :param inputs: Input of shape (batch, in)
    """

    def __init__(self, head: _LinearReLUPasses, output_dim: int, inputs: th.Tensor):
        self.mlp = head
        self.saved: list[th.Tensor] = []
        self.mean, raw_log_std = head.forward(inputs, self.saved).split(output_dim, dim=-1)
        self.log_std_derivative = soft_clamp_log_std_derivative(raw_log_std)
        self.std = soft_clamp_log_std(raw_log_std).exp()

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


class PolicySample(NamedTuple):
    """
    The policy's reparameterised actions on a batch of real states, with what the backward pass needs.

    :param observations: The flat real observations, shape (batch, obs_dim)
    :param features: The actor-critic's input, the observations standardised with ``normalize_input``, else the
        observations themselves; shape (batch, obs_dim)
    :param sample: Actions, log-probabilities and the noise behind them
    :param latent: The actor's latent features (``latent_pi``'s output), shape (batch, latent_dim)
    :param latent_saved: The inputs of ``latent_pi``'s layers
    :param raw_log_std: The log-std head's output before SB3's clamp, shape (batch, action_dim)
    """

    observations: th.Tensor
    features: th.Tensor
    sample: SquashedGaussianSample
    latent: th.Tensor
    latent_saved: list[th.Tensor]
    raw_log_std: th.Tensor


class ManualActorCriticGradients:
    """
    The gradients of one S2VG actor-critic update, computed by hand: eq. 7 into the Q networks, eq. 8 into V
    and eq. 11 into the policy, left in each parameter's ``.grad``. Same numbers as autograd on the same
    batch and random stream (up to floating-point summation order) when called in the autograd path's order:
    ``sample_actions``, ``critic_gradients``, ``value_gradients``, ``actor_gradients``.

    :param actor: SB3's SAC actor (ReLU ``latent_pi``, ``mu`` and ``log_std`` heads, no gSDE)
    :param critic: The Q networks
    :param value_net: V
    :param world_model: The world model (its ``termination_fn`` is read at every call)
    """

    def __init__(self, actor: Actor, critic: BatchedContinuousCritic, value_net: ValueNetwork, world_model: WorldModel):
        self.actor = _passes_of(actor.latent_pi)  # Linear, ReLU, ..., Linear, ReLU
        self.mean_head = _passes_of(nn.Sequential(cast(nn.Module, actor.mu)))
        self.log_std_head = _passes_of(nn.Sequential(cast(nn.Module, actor.log_std)))
        self.critic = _BatchedLinearReLUPasses(critic.q_networks)
        self.value = _passes_of(value_net.v_net)
        self.world_model = world_model
        self.dynamics = _passes_of(world_model.dynamics.net)
        self.reward = _passes_of(world_model.reward.net)
        self.termination = _passes_of(world_model.termination) if world_model.termination is not None else None
        #: The extractor that standardises the actor's, the critics' and V's input (``normalize_input``), or None
        self.input_standardizer = _standardizer(actor.features_extractor, world_model)

    def _features(self, flat_obs: th.Tensor) -> th.Tensor:
        """
        :param flat_obs: Flat observations, shape (batch, obs_dim)
        :return: The actor-critic's input, shape (batch, obs_dim)
        """
        return flat_obs if self.input_standardizer is None else self.input_standardizer.standardize(flat_obs)

    @staticmethod
    def unsupported_reason(
        actor: Actor,
        critic: BatchedContinuousCritic,
        value_net: ValueNetwork,
        world_model: WorldModel,
        policy_horizon: int = 1,
    ) -> str | None:
        """
        The scope of the hand-derived update, stated once: every configuration for which this returns a reason runs
        the autograd losses of ``S2VG`` instead (the same losses).

        :param actor: The policy's actor
        :param critic: The twin Q networks
        :param value_net: V
        :param world_model: The world model, with its ``termination_fn`` set
        :param policy_horizon: H_π of ``S2VG._actor_loss`` (the passes here are H_π = 1's)
        :return: Why this configuration needs autograd, or None when the hand-derived update covers it
        """
        if policy_horizon != 1:
            return f"policy_horizon={policy_horizon}"
        if critic.q_networks.dropout > 0:
            return f"critic_dropout={critic.q_networks.dropout}"
        if critic.q_networks.layer_norm:
            return "layer_norm=True"
        if critic.value_scale is not None:
            return "value_scaling=True"
        if world_model.n_models > 1:
            return f"an ensemble world model (n_models={world_model.n_models})"
        if actor.use_sde:
            return "gSDE"
        standardised = _standardizer(actor.features_extractor, world_model) is not None
        for name, module in [("actor", actor), ("critic", critic), ("value", value_net)]:
            extractor = module.features_extractor
            reads = (
                _standardizer(extractor, world_model) is not None
                if standardised
                else extractor is not None and _reads_flat_vectors(extractor)
            )
            if not reads:
                return f"the {name}'s features extractor does more than flatten the observations"
        # Networks that end with a product; the actor's latent_pi ends with a ReLU (or is empty)
        networks = [value_net.v_net, world_model.dynamics.net, world_model.reward.net]
        networks += [nn.Sequential(cast(nn.Module, actor.mu)), nn.Sequential(cast(nn.Module, actor.log_std))]
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
    def sample_actions(self, observations: PyTorchObs) -> PolicySample:
        """
        ``S2VG._sample_actions`` with the activations kept: a = tanh(μ + σ η) and log π(a|s) (draws η).

        :param observations: Real observations, batch first
        """
        flat_obs = self.world_model.flattener.flatten(observations)
        features = self._features(flat_obs)
        latent_saved: list[th.Tensor] = []
        latent = self.actor.forward(features, latent_saved)
        raw_log_std = self.log_std_head.forward(latent)
        sample = squashed_gaussian_sample(self.mean_head.forward(latent), raw_log_std.clamp(LOG_STD_MIN, LOG_STD_MAX))
        return PolicySample(flat_obs, features, sample, latent, latent_saved, raw_log_std)

    @th.no_grad()
    def critic_gradients(
        self, observations: PyTorchObs, actions: th.Tensor, targets: th.Tensor, weights: th.Tensor | None
    ) -> th.Tensor:
        """
        ``S2VG._critic_loss`` (eq. 7): ½ Σ_i Σ_rows w (Q_i − y)² / n; its gradient w (Q_i − y) / n into each Q network.

        :param observations: Inputs ŝ_t of the Q networks, n rows, batch first
        :param actions: Their actions, shape (n, action_dim)
        :param targets: Regression targets, shape (n, 1)
        :param weights: Row weights, shape (n, 1), or None (all one)
        :return: The loss (scalar)
        """
        saved: list[th.Tensor] = []
        q_inputs = th.cat([self._features(self.world_model.flattener.flatten(observations)), actions], dim=1)
        residuals = self.critic.forward(q_inputs, saved) - targets
        weighted = residuals if weights is None else weights * residuals
        n_rows = targets.shape[0]
        loss = 0.5 * (weighted * residuals).sum() / n_rows
        self.critic.backward_weights(weighted.div_(n_rows), saved)
        return loss

    @th.no_grad()
    def value_gradients(self, policy: PolicySample, ent_coef: th.Tensor, members: th.Tensor | None = None) -> th.Tensor:
        """
        ``S2VG._value_loss`` (eq. 8): ½ E[(V(s) − (min_i Q_i(s, a) − α log π(a|s)))²]; its gradient into V.

        :param policy: The policy's actions on the real states
        :param ent_coef: α, a scalar tensor
        :param members: The Q networks the minimum is taken over, shape (M,), or None for all
        :return: The loss (scalar)
        """
        features, sample = policy.features, policy.sample
        q_pi = self.critic.forward(th.cat([features, sample.actions], dim=1))
        targets = min_over_critics(q_pi, members) - ent_coef * sample.log_prob
        saved: list[th.Tensor] = []
        residuals = self.value.forward(features, saved) - targets
        loss = 0.5 * residuals.square().mean()
        self.value.backward_weights(residuals.div_(features.shape[0]), saved)
        return loss

    @th.no_grad()
    def actor_gradients(self, policy: PolicySample, ent_coef: th.Tensor, gamma: float) -> th.Tensor:
        """
        ``S2VG._actor_loss`` (eq. 10-11): −E[r̂(s, a) − α log π(a|s) + γ (1 − d̂) V(f(s, a))]; its gradient through
        the reward model, the dynamics model, the termination classifier (when it decides) and V into the policy
        (draws the world model's noise ζ).

        :param policy: The policy's actions on the real states
        :param ent_coef: α, a scalar tensor
        :param gamma: Discount factor γ
        :return: The loss (scalar)
        """
        observations, sample = policy.observations, policy.sample
        world_model, batch_size = self.world_model, observations.shape[0]
        inputs = world_model.inputs(observations, sample.actions)
        dynamics = _GaussianHeadPass(self.dynamics, world_model.obs_dim, inputs)
        reward = _GaussianHeadPass(self.reward, 1, inputs)
        next_observations, rewards = world_model.decode(observations, dynamics.sample(), reward.sample())
        dones = world_model.known_dones(observations, sample.actions, next_observations)
        termination_saved: list[th.Tensor] = []
        done_probabilities = None
        if world_model.termination_classifier is not None:
            assert self.termination is not None
            dones = done_probabilities = th.sigmoid(self.termination.forward(inputs, termination_saved))
        next_value_saved: list[th.Tensor] = []
        next_values = self.value.forward(self._features(next_observations), next_value_saved)
        alive = None if dones is None else 1.0 - dones
        loss = -(rewards - ent_coef * sample.log_prob + gamma * (next_values if alive is None else alive * next_values)).mean()

        grad_next_values = th.full_like(next_values, -gamma / batch_size)
        if alive is not None:
            grad_next_values = grad_next_values * alive
        grad_next_observations = self.value.backward_input(grad_next_values, next_value_saved)
        if self.input_standardizer is not None:  # through (s' − mean) / std
            grad_next_observations = grad_next_observations / self.input_standardizer.normalizer.std
        grad_inputs = dynamics.input_grad(world_model.dynamics_target_normalizer.denormalize_backward(grad_next_observations))
        grad_rewards = world_model.reward_normalizer.denormalize_backward(th.full_like(rewards, -1.0 / batch_size))
        grad_inputs = grad_inputs + reward.input_grad(grad_rewards)
        if done_probabilities is not None:
            assert self.termination is not None
            # d(−γ (1 − p) V / n)/dp = γ V / n, and dp/dlogit = p (1 − p)
            grad_logits = next_values * (gamma / batch_size) * done_probabilities * (1.0 - done_probabilities)
            grad_inputs = grad_inputs + self.termination.backward_input(grad_logits, termination_saved)
        self._policy_backward(policy, grad_inputs[:, world_model.obs_dim :], ent_coef / batch_size)
        return loss

    def _policy_backward(self, policy: PolicySample, grad_actions: th.Tensor, grad_log_prob: th.Tensor) -> None:
        """
        Through the squashed Gaussian into the actor's parameters: a = tanh(u), u = μ + σ η,
        log π = Σ(−η²/2 − log σ − c) − Σ log(1 − a² + ε).

        :param policy: The policy's sample
        :param grad_actions: Gradient of the loss with respect to a through the world model, shape (batch, action_dim)
        :param grad_log_prob: Gradient of the loss with respect to each log π(a|s) (α / batch), a scalar tensor
        """
        sample = policy.sample
        grad_actions = grad_actions + grad_log_prob * 2.0 * sample.actions / sample.squash_term
        grad_pre_squash = grad_actions * (1.0 - sample.actions.square())
        grad_log_std = grad_pre_squash * sample.std * sample.noise - grad_log_prob
        grad_log_std = grad_log_std * ((policy.raw_log_std >= LOG_STD_MIN) & (policy.raw_log_std <= LOG_STD_MAX))
        latent_saved = [policy.latent]
        grad_latent = self.mean_head.backward_input(grad_pre_squash, latent_saved, weight_grads=True)
        grad_latent = grad_latent + self.log_std_head.backward_input(grad_log_std, latent_saved, weight_grads=True)
        if self.actor.weights:  # no hidden layers (net_arch pi=[]): the heads read the observations directly
            _relu_backward_(grad_latent, policy.latent)
            self.actor.backward_weights(grad_latent, policy.latent_saved)
