"""Policies of S2VG: SB3's squashed-Gaussian SAC actor, twin Q critics, a state-value network V with its
Polyak target, and the world model (dynamics, reward, optional termination)."""

import math
from typing import Any, NamedTuple, Self

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BaseModel, BasePolicy
from stable_baselines3.common.preprocessing import get_action_dim, is_image_space
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.sac.policies import Actor
from torch import nn

from sb3_s2vg.layers import BatchedMLP, ValueScale, make_mlp
from sb3_s2vg.world_model import ObservationFlattener, RunningNormalizer, TerminationFn, WorldModel

#: Parts of the policy whose hidden layers ``net_arch`` can set, and their defaults (the paper's Table 2 general
#: setting: (256, 256) everywhere).
DEFAULT_NET_ARCH: dict[str, list[int]] = {
    "pi": [256, 256],
    "qf": [256, 256],
    "vf": [256, 256],
    "dynamics": [256, 256],
    "reward": [256, 256],
    "termination": [256, 256],
}


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
    An action of SB3's SAC ``Actor`` with its log-probability: the same numbers (and random stream) as
    ``Actor.action_log_prob``, without ``torch.distributions``: the Gaussian log-density of the pre-squash sample,
    then SAC's tanh correction (epsilon 1e-6 as in SB3).

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


def min_over_critics(q_values: th.Tensor, members: th.Tensor | None = None) -> th.Tensor:
    """
    min_i Q_i of eq. 8's target, over every Q network or over a subset of them (``S2VG(min_q_subset=M)``).

    :param q_values: Q values of every network, shape (n_critics, batch, 1)
    :param members: Indices of the networks to take the minimum over, shape (M,), or None for all
    :return: Shape (batch, 1)
    """
    if members is not None:
        q_values = q_values.index_select(0, members)
    return q_values.min(dim=0).values


class NormalizedFlattenExtractor(BaseFeaturesExtractor):
    """
    The flat observation vector standardised with running statistics kept elsewhere: the input of the actor, the Q
    networks and V with ``policy_kwargs=dict(normalize_input=True)``, which reads the world model's observation
    statistics (merged from the real transitions the model trains on). An option beyond the paper: DHMBPO's
    ``normalize_po_input`` standardises the actor's and critics' inputs the same way, and CrossQ standardises its
    inputs with batch renormalisation. No clipping, so that V(f(s, a))'s gradient reaches every dimension of f.

    :param observation_space: A ``Box``, or a ``Dict`` of boxes
    :param flattener: Flattens SB3's observations into vectors of shape (batch, obs_dim)
    :param normalizer: Running statistics of those vectors; its ``mean`` and ``std`` (shape (obs_dim,)) are read
        whether or not it normalises the world model's input (``normalize_model``)
    """

    def __init__(self, observation_space: spaces.Space, flattener: ObservationFlattener, normalizer: RunningNormalizer):
        super().__init__(observation_space, flattener.dim)
        self.flattener = flattener
        self.normalizer = normalizer

    def forward(self, observations: PyTorchObs) -> th.Tensor:  # type: ignore[override]
        """
        :param observations: Shape (batch, ...), or a dict of such tensors
        :return: (s − mean) / std, shape (batch, obs_dim)
        """
        return self.standardize(self.flattener.flatten(observations))

    def standardize(self, flat_obs: th.Tensor) -> th.Tensor:
        """
        :param flat_obs: Flat observations, shape (batch, obs_dim)
        :return: (s − mean) / std, shape (batch, obs_dim)
        """
        return (flat_obs - self.normalizer.mean) / self.normalizer.std


def check_observation_space(observation_space: spaces.Space) -> None:
    """
    S2VG's world model predicts the next observation as a real vector, so it needs a ``Box`` observation
    space that is not an image, or a ``Dict`` of such boxes.

    :param observation_space: The environment's observation space
    :raises ValueError: naming the unsupported space
    """
    boxes = observation_space.spaces.values() if isinstance(observation_space, spaces.Dict) else [observation_space]
    for space in boxes:
        if not isinstance(space, spaces.Box) or is_image_space(space, check_channels=False, normalized_image=False):
            raise ValueError(
                f"S2VG's world model predicts observations as real vectors and supports Box observation spaces "
                f"(not images) or Dict spaces of them; unsupported observation space: {observation_space}"
            )


def get_s2vg_net_arch(net_arch: list[int] | dict[str, list[int]] | None) -> dict[str, list[int]]:
    """
    Resolve ``net_arch`` into one list of hidden layer sizes per part.

    :param net_arch: ``None`` for the defaults; a list of ints for the same layers in every part; or a dict with
        any of the keys ``pi``, ``qf``, ``vf``, ``dynamics``, ``reward``, ``termination`` (missing keys keep
        their defaults)
    :return: A dict with every key of ``DEFAULT_NET_ARCH``
    """
    if net_arch is None:
        return {key: list(value) for key, value in DEFAULT_NET_ARCH.items()}
    if isinstance(net_arch, (list, tuple)):
        resolved = {key: list(net_arch) for key in DEFAULT_NET_ARCH}
    elif isinstance(net_arch, dict):
        unknown = set(net_arch) - set(DEFAULT_NET_ARCH)
        if unknown:
            raise ValueError(f"Unknown net_arch keys {sorted(unknown)}; expected some of {list(DEFAULT_NET_ARCH)}")
        resolved = {key: list(net_arch.get(key, default)) for key, default in DEFAULT_NET_ARCH.items()}
    else:
        raise ValueError(f"net_arch must be a list of layer sizes or a dict of them, got {net_arch!r}")
    for key, sizes in resolved.items():
        if not all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in sizes):
            raise ValueError(
                f"net_arch[{key!r}] = {sizes!r}: hidden layer sizes must be positive integers "
                "(a layer of 0 units cuts the network off from its input)"
            )
    return resolved


class BatchedContinuousCritic(BaseModel):
    """
    Twin (or ``n_critics``) Q networks Q(s, a) as one batched module: the same networks as SB3's
    ``ContinuousCritic``, evaluated with one batched product per layer.

    :param observation_space: Observation space
    :param action_space: Action space
    :param net_arch: Hidden layer sizes of each Q network
    :param features_extractor: Network to extract features (a ``nn.Flatten()`` layer for vector observations)
    :param features_dim: Number of features
    :param activation_fn: Activation function
    :param normalize_images: Whether to divide images by 255
    :param n_critics: Number of Q networks
    :param layer_norm: Layer norm after each hidden product (``BatchedMLP``)
    :param dropout: Dropout rate after each hidden product, in training mode (``BatchedMLP``)
    :param value_scale: The policy's shared ``ValueScale`` (``value_scaling=True``): the outputs are scaled by it and
        the last product starts at zero (so every Q starts at the range's center), as DHMBPO's critics; None for none
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        n_critics: int = 2,
        layer_norm: bool = False,
        dropout: float = 0.0,
        value_scale: ValueScale | None = None,
    ):
        super().__init__(
            observation_space, action_space, features_extractor=features_extractor, normalize_images=normalize_images
        )
        self.n_critics = n_critics
        input_dim = features_dim + get_action_dim(action_space)
        self.q_networks = BatchedMLP(n_critics, input_dim, 1, net_arch, activation_fn, layer_norm, dropout)
        self.value_scale = value_scale
        if value_scale is not None:
            with th.no_grad():
                self.q_networks.weights[-1].zero_()
                self.q_networks.biases[-1].zero_()

    def stacked(self, obs: PyTorchObs, actions: th.Tensor) -> th.Tensor:
        """
        :param obs: Observations (batch, ...)
        :param actions: Actions (batch, action_dim)
        :return: Q values of every network, shape (n_critics, batch, 1)
        """
        assert self.features_extractor is not None
        features = self.extract_features(obs, self.features_extractor)
        q_values = self.q_networks(th.cat([features, actions], dim=1))
        return q_values if self.value_scale is None else self.value_scale(q_values)

    def forward(self, obs: PyTorchObs, actions: th.Tensor) -> tuple[th.Tensor, ...]:
        """As SB3's ``ContinuousCritic``: a tuple of ``n_critics`` tensors of shape (batch, 1)."""
        return tuple(self.stacked(obs, actions).unbind(0))


class ValueNetwork(BaseModel):
    """
    State-value function V(s) of S2VG (eq. 8).

    :param observation_space: Observation space
    :param action_space: Action space (unused by the network, kept for SB3's ``BaseModel``)
    :param net_arch: Hidden layer sizes
    :param features_extractor: Network to extract features (a ``nn.Flatten()`` layer for vector observations)
    :param features_dim: Number of features
    :param activation_fn: Activation function
    :param normalize_images: Whether to divide images by 255
    :param layer_norm: Layer norm after each hidden product (``make_mlp``)
    :param dropout: Dropout rate after each hidden product, in training mode (``make_mlp``)
    :param value_scale: The policy's shared ``ValueScale``, as ``BatchedContinuousCritic``'s; None for none
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        layer_norm: bool = False,
        dropout: float = 0.0,
        value_scale: ValueScale | None = None,
    ):
        super().__init__(
            observation_space, action_space, features_extractor=features_extractor, normalize_images=normalize_images
        )
        self.v_net = make_mlp(features_dim, 1, net_arch, activation_fn, layer_norm, dropout)
        self.value_scale = value_scale
        if value_scale is not None:
            last = self.v_net[-1]
            assert isinstance(last, nn.Linear)
            with th.no_grad():
                last.weight.zero_()
                last.bias.zero_()

    def forward(self, obs: PyTorchObs) -> th.Tensor:
        """
        :param obs: Observations, batch first
        :return: State values of shape (batch, 1)
        """
        assert self.features_extractor is not None
        values = self.v_net(self.extract_features(obs, self.features_extractor))
        return values if self.value_scale is None else self.value_scale(values)


class S2VGPolicy(BasePolicy):
    """
    Policy class of S2VG: the actor (SB3's SAC actor), twin Q critics (``BatchedContinuousCritic``, SB3's
    ``ContinuousCritic`` evaluated as one batched module), the value
    network V and its Polyak target, and the world model.

    :param observation_space: Observation space (a ``Box`` or a ``Dict`` of boxes)
    :param action_space: Action space (a ``Box``)
    :param lr_schedule: Learning rate schedule used to create every optimizer; the algorithm sets the learning rate
        of each optimizer (policy, value, model) before each update
    :param net_arch: Hidden layers: a list for every part, or a dict with keys ``pi``, ``qf``, ``vf``,
        ``dynamics``, ``reward``, ``termination``
    :param activation_fn: Activation function of every network
    :param use_sde: Whether to use State Dependent Exploration in the actor
    :param log_std_init: Initial value for the log standard deviation (gSDE)
    :param use_expln: Use ``expln()`` instead of ``exp()`` for the gSDE standard deviation
    :param clip_mean: Clip the mean output when using gSDE
    :param features_extractor_class: Features extractor of the actor, critics and value networks
    :param features_extractor_kwargs: Keyword arguments of the features extractor
    :param normalize_images: Whether to divide images by 255
    :param optimizer_class: The optimizer of every part, ``th.optim.Adam`` by default
    :param optimizer_kwargs: Keyword arguments of the optimizers, excluding the learning rate
    :param n_critics: Number of Q networks (2 in the paper)
    :param predict_delta: The dynamics model predicts ``s' − s`` instead of ``s'``
    :param normalize_model: Normalise the world model's observation input and regression targets with running
        statistics (saved with the model)
    :param learn_termination: Learn a termination classifier (for environments that end, e.g. Hopper)
    :param termination_fn: Known termination function of the world model (see ``WorldModel``)
    :param layer_norm: Layer norm after each hidden product of the Q networks, V, the target V and the world model's
        networks (not the actor), as in DroQ and DHMBPO; an option, not the paper's
    :param n_models: Members of the world model's ensemble (see ``WorldModel``)
    :param ensemble_prediction: How the ensemble predicts, ``"random"`` or ``"mean"`` (see ``WorldModel``)
    :param n_elites: The ensemble members that predict (see ``WorldModel``)
    :param normalize_input: Standardise the observations at the input of the actor, the Q networks and V with the
        world model's running observation statistics (``NormalizedFlattenExtractor``); an option, not the paper's
    :param critic_dropout: Dropout of this rate after each hidden product of the Q networks and V (before the layer
        norm, DroQ's order), active only where they are trained: Q in eq. 7's regression, V in eq. 8's; the Q values
        of eq. 8's target, the target V and the V of the policy objective (eq. 10-11) are evaluated without it (as
        DHMBPO's code evaluates its critics for the policy). DroQ (Hiraoka et al., 2022) and DHMBPO's critics; an
        option, not the paper's. In [0, 1); 0 (the default) adds none
    :param value_scaling: DHMBPO's scaled and bounded critic (``ValueScale``): the Q networks, V and the target V
        output ``raw * width + center`` over a running range of values estimated from the soft rewards, their last
        products start at zero, and the target V in eq. 7's targets is clipped into the range. An option, not the paper's
    """

    actor: Actor
    critic: BatchedContinuousCritic
    value_net: ValueNetwork
    value_target: ValueNetwork
    world_model: WorldModel

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        use_sde: bool = False,
        log_std_init: float = -3,
        use_expln: bool = False,
        clip_mean: float = 2.0,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        predict_delta: bool = True,
        normalize_model: bool = True,
        learn_termination: bool = False,
        termination_fn: TerminationFn | None = None,
        layer_norm: bool = False,
        n_models: int = 1,
        ensemble_prediction: str = "random",
        n_elites: int | None = None,
        normalize_input: bool = False,
        critic_dropout: float = 0.0,
        value_scaling: bool = False,
    ):
        check_observation_space(observation_space)
        if not isinstance(value_scaling, bool | np.bool_):
            raise ValueError(f"value_scaling must be True or False (DHMBPO's scaled critic), got {value_scaling!r}")
        is_rate = isinstance(critic_dropout, int | float | np.integer | np.floating) and not isinstance(critic_dropout, bool)
        if not is_rate or not 0.0 <= critic_dropout < 1.0:
            raise ValueError(
                f"critic_dropout must be a dropout rate in [0, 1) (0: no dropout in Q and V), got {critic_dropout!r}"
            )
        if normalize_input and features_extractor_class not in (FlattenExtractor, CombinedExtractor):
            raise ValueError(
                "normalize_input=True gives the actor, critics and V their features extractor (the standardised flat "
                f"observation), so it cannot be combined with features_extractor_class={features_extractor_class.__name__}"
            )
        if isinstance(n_critics, bool) or not isinstance(n_critics, int) or n_critics < 1:
            raise ValueError(f"n_critics must be an integer >= 1 (the Q networks of eq. 7), got {n_critics!r}")
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            squash_output=True,
            normalize_images=normalize_images,
        )
        self.net_arch = net_arch
        self.resolved_net_arch = get_s2vg_net_arch(net_arch)
        self.activation_fn = activation_fn
        self.n_critics = n_critics
        self.predict_delta = predict_delta
        self.normalize_model = normalize_model
        self.learn_termination = learn_termination
        self.termination_fn = termination_fn
        self.layer_norm = layer_norm
        self.n_models = n_models
        self.ensemble_prediction = ensemble_prediction
        self.n_elites = n_elites
        self.normalize_input = normalize_input
        self.critic_dropout = float(critic_dropout)
        self.value_scaling = bool(value_scaling)
        # Shared by the Q networks, V and the target V (built before them; its tensors are buffers, not parameters)
        self.value_scale = ValueScale() if self.value_scaling else None
        self.sde_kwargs = {"use_sde": use_sde, "log_std_init": log_std_init, "use_expln": use_expln, "clip_mean": clip_mean}
        self.net_args = {
            "observation_space": self.observation_space,
            "action_space": self.action_space,
            "activation_fn": self.activation_fn,
            "normalize_images": normalize_images,
        }
        self._build(lr_schedule)

    def _build(self, lr_schedule: Schedule) -> None:
        arch = self.resolved_net_arch
        if self.normalize_input:  # the actor, critics and V read the world model's observation statistics
            self.world_model = self._make_world_model()
        self.actor = Actor(**self._update_features_extractor({**self.net_args, **self.sde_kwargs, "net_arch": arch["pi"]}))
        self.critic = self._make_critic()
        self.value_net = self._make_value_net()
        self.value_target = self._make_value_net()
        self.value_target.load_state_dict(self.value_net.state_dict())
        self.value_target.set_training_mode(False)
        if not self.normalize_input:  # built after the actor-critic: the initialisation order of the paper's runs
            self.world_model = self._make_world_model()
        optimizer_kwargs = dict(self.optimizer_kwargs)
        if self.optimizer_class in (th.optim.Adam, th.optim.AdamW) and not {"fused", "foreach"} & set(optimizer_kwargs):
            # One fused kernel per step instead of a loop of elementwise passes over every tensor
            optimizer_kwargs["fused"] = True
        for module in (self.actor, self.critic, self.value_net, self.world_model):
            module.optimizer = self.optimizer_class(  # type: ignore[assignment]
                module.parameters(),
                lr=lr_schedule(1),
                **optimizer_kwargs,  # type: ignore[call-arg]
            )

    def _make_world_model(self) -> WorldModel:
        arch = self.resolved_net_arch
        return WorldModel(
            self.observation_space,
            self.action_space,  # type: ignore[arg-type]
            dynamics_arch=arch["dynamics"],
            reward_arch=arch["reward"],
            termination_arch=arch["termination"],
            activation_fn=self.activation_fn,
            predict_delta=self.predict_delta,
            normalize=self.normalize_model,
            learn_termination=self.learn_termination,
            termination_fn=self.termination_fn,
            layer_norm=self.layer_norm,
            n_models=self.n_models,
            ensemble_prediction=self.ensemble_prediction,
            n_elites=self.n_elites,
        )

    def make_features_extractor(self) -> BaseFeaturesExtractor:
        """The features extractor of the actor, the critics and V: SB3's, or the standardised flat observation."""
        if self.normalize_input:
            return NormalizedFlattenExtractor(self.observation_space, self.world_model.flattener, self.world_model.obs_normalizer)
        return super().make_features_extractor()

    def _make_critic(self) -> BatchedContinuousCritic:
        kwargs = {
            **self.net_args,
            "net_arch": self.resolved_net_arch["qf"],
            "n_critics": self.n_critics,
            "layer_norm": self.layer_norm,
            "dropout": self.critic_dropout,
            "value_scale": self.value_scale,
        }
        return BatchedContinuousCritic(**self._update_features_extractor(kwargs))

    def _make_value_net(self) -> ValueNetwork:
        kwargs = {
            **self.net_args,
            "net_arch": self.resolved_net_arch["vf"],
            "layer_norm": self.layer_norm,
            "dropout": self.critic_dropout,
            "value_scale": self.value_scale,
        }
        return ValueNetwork(**self._update_features_extractor(kwargs))

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                activation_fn=self.activation_fn,
                **self.sde_kwargs,
                n_critics=self.n_critics,
                predict_delta=self.predict_delta,
                normalize_model=self.normalize_model,
                learn_termination=self.learn_termination,
                termination_fn=self.termination_fn,
                layer_norm=self.layer_norm,
                n_models=self.n_models,
                ensemble_prediction=self.ensemble_prediction,
                n_elites=self.n_elites,
                normalize_input=self.normalize_input,
                critic_dropout=self.critic_dropout,
                value_scaling=self.value_scaling,
                lr_schedule=self._dummy_schedule,
                optimizer_class=self.optimizer_class,
                optimizer_kwargs=self.optimizer_kwargs,
                features_extractor_class=self.features_extractor_class,
                features_extractor_kwargs=self.features_extractor_kwargs,
            )
        )
        return data

    def reset_noise(self, batch_size: int = 1) -> None:
        """Sample new weights for the exploration matrix, when using gSDE."""
        self.actor.reset_noise(batch_size=batch_size)

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self.actor(observation, deterministic)

    def train(self, mode: bool = True) -> Self:
        """``nn.Module.train``, except that the value target stays in evaluation mode (no ``critic_dropout``)."""
        super().train(mode)
        value_target: nn.Module | None = self._modules.get("value_target")  # None while the policy is being built
        if value_target is not None:
            value_target.train(False)
        return self

    def set_training_mode(self, mode: bool) -> None:
        """
        Put the actor, critics, value network and world model in training or evaluation mode
        (the value target stays in evaluation mode).

        :param mode: if true, set to training mode, else set to evaluation mode
        """
        for module in (self.actor, self.critic, self.value_net, self.world_model):
            module.train(mode)
        self.training = mode


MlpPolicy = S2VGPolicy


class MultiInputPolicy(S2VGPolicy):
    """
    S2VG policy for ``Dict`` observation spaces of vector boxes; same parameters as ``S2VGPolicy`` with
    ``CombinedExtractor`` as the default features extractor.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor,
        **kwargs: Any,
    ):
        super().__init__(
            observation_space, action_space, lr_schedule, features_extractor_class=features_extractor_class, **kwargs
        )
