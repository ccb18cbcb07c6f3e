"""
World model of S2VG (section 3.1 of the paper): Gaussian dynamics f(s, a) and reward r̂(s, a) heads sampled
with the reparameterisation trick (eq. 6), an optional termination classifier, and running normalisers.

The world model takes and returns observations as SB3 gives them to the networks (a tensor, or a dict of tensors
for ``Dict`` spaces), batch first; inside, it works on flat vectors of shape (batch, obs_dim). Actions are scaled to
[-1, 1] (the form SB3 stores in its replay buffer and the SAC actor outputs).
"""

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn
from torch.nn import functional as F

from sb3_s2vg.layers import BatchedMLP, make_mlp

#: ``termination_fn(obs, action, next_obs) -> done``: tensors of shape (batch, obs_dim), (batch, action_dim),
#: (batch, obs_dim) in, a bool or float tensor of shape (batch, 1) or (batch,) out (1 where the episode ends).
TerminationFn = Callable[[th.Tensor, th.Tensor, th.Tensor], th.Tensor]

#: Bounds of the predicted log standard deviation, in normalised target units (soft-clamped, as in PETS).
MIN_LOG_STD = -10.0
MAX_LOG_STD = 0.5
MODEL_LOSSES = ("mse", "nll")
#: How an ensemble predicts: one random member per sample, or the members' average
ENSEMBLE_PREDICTIONS = ("random", "mean")


class RunningNormalizer(nn.Module):
    """
    Running mean and variance of a vector quantity, kept as buffers so that they travel with ``state_dict``
    (and therefore with SB3's ``save``/``load``). Statistics are merged batch by batch (Chan et al.'s
    parallel algorithm), so every sample ever seen weighs the same.

    :param size: Dimension of the normalised vectors
    :param epsilon: Added to the variance before taking the square root
    :param enabled: When False, ``normalize`` and ``denormalize`` are the identity (the statistics are still
        kept, for diagnostics)
    """

    mean: th.Tensor
    var: th.Tensor
    count: th.Tensor
    std: th.Tensor  # sqrt(var + epsilon), kept in step with var

    def __init__(self, size: int, epsilon: float = 1e-6, enabled: bool = True):
        super().__init__()
        self.epsilon = epsilon
        self.enabled = enabled
        self.register_buffer("mean", th.zeros(size))
        self.register_buffer("var", th.ones(size))
        self.register_buffer("count", th.zeros(()))
        self.register_buffer("std", th.ones(size))

    @th.no_grad()
    def update(self, batch: th.Tensor) -> None:
        """
        :param batch: Samples of shape (batch, size)
        """
        batch = batch.reshape(-1, self.mean.shape[0]).to(self.mean.dtype)
        batch_count = batch.shape[0]
        batch_mean = batch.mean(dim=0)
        batch_var = batch.var(dim=0, unbiased=False)
        total = self.count + batch_count
        delta = batch_mean - self.mean
        new_mean = self.mean + delta * (batch_count / total)
        m2 = self.var * self.count + batch_var * batch_count + delta.square() * (self.count * batch_count / total)
        self.mean.copy_(new_mean)
        self.var.copy_(m2 / total)
        self.count.copy_(total)
        self.std.copy_(th.sqrt(self.var + self.epsilon))

    def normalize(self, x: th.Tensor) -> th.Tensor:
        """:param x: Tensor of shape (batch, size)"""
        if not self.enabled:
            return x
        return (x - self.mean) / self.std

    def denormalize(self, x: th.Tensor) -> th.Tensor:
        """:param x: Tensor of shape (batch, size) in normalised units"""
        if not self.enabled:
            return x
        return x * self.std + self.mean

    def denormalize_backward(self, grad: th.Tensor) -> th.Tensor:
        """
        The chain rule through ``denormalize``: the gradient with respect to its input.

        :param grad: Gradient with respect to the denormalised output, shape (batch, size)
        :return: Gradient with respect to the normalised input, shape (batch, size)
        """
        return grad * self.std if self.enabled else grad


class ObservationFlattener:
    """
    Between SB3's observations (a tensor of the space's shape, or a dict of them for ``Dict`` spaces) and the flat
    vectors the world model predicts: each part reshaped to (batch, -1) as float32, concatenated in the space's key
    order (the order of SB3's ``CombinedExtractor``).

    :param observation_space: A ``Box``, or a ``Dict`` of boxes
    """

    def __init__(self, observation_space: spaces.Space):
        spaces_by_key = observation_space.spaces if isinstance(observation_space, spaces.Dict) else {None: observation_space}
        #: Each part's shape, by key (None: a single ``Box``)
        self.shapes: dict[str | None, tuple[int, ...]] = {key: tuple(space.shape or ()) for key, space in spaces_by_key.items()}
        self.sizes = [int(np.prod(shape)) for shape in self.shapes.values()]
        self.dim = sum(self.sizes)

    def flatten(self, obs: PyTorchObs) -> th.Tensor:
        """
        :param obs: Observations, batch first (a tensor, or a dict of tensors)
        :return: Flat observation vectors, shape (batch, obs_dim)
        """
        if isinstance(obs, dict):
            parts = [obs[key] for key in self.shapes if key is not None]
            return th.cat([part.reshape(part.shape[0], -1).float() for part in parts], dim=1)
        return obs.reshape(obs.shape[0], -1).float()

    def unflatten(self, flat_obs: th.Tensor) -> PyTorchObs:
        """
        :param flat_obs: Flat observation vectors, shape (batch, obs_dim)
        :return: Observations in the form of the observation space (a tensor, or a dict of tensors)
        """
        batch_size = flat_obs.shape[0]
        if None in self.shapes:
            return flat_obs.reshape(batch_size, *self.shapes[None])
        parts = flat_obs.split(self.sizes, dim=1)
        return {key: part.reshape(batch_size, *shape) for (key, shape), part in zip(self.shapes.items(), parts)}  # type: ignore[misc]


def soft_clamp_log_std(raw_log_std: th.Tensor) -> th.Tensor:
    """
    The soft clamp of a predicted log standard deviation into [``MIN_LOG_STD``, ``MAX_LOG_STD``] (PETS):
    ``MIN + softplus(MAX − softplus(MAX − x) − MIN)``, smooth, so that the bounds still pass a gradient.

    :param raw_log_std: Shape (batch, dim)
    :return: Shape (batch, dim)
    """
    upper = MAX_LOG_STD - F.softplus(MAX_LOG_STD - raw_log_std)
    return MIN_LOG_STD + F.softplus(upper - MIN_LOG_STD)


def soft_clamp_log_std_derivative(raw_log_std: th.Tensor) -> th.Tensor:
    """
    d ``soft_clamp_log_std`` / dx, elementwise: σ(MAX − softplus(MAX − x) − MIN) · σ(MAX − x), with σ the sigmoid
    (softplus' = sigmoid; above softplus' linear threshold 20 the sigmoid rounds to 1 in fp32, the same value).

    :param raw_log_std: Shape (batch, dim)
    :return: Shape (batch, dim)
    """
    upper = MAX_LOG_STD - F.softplus(MAX_LOG_STD - raw_log_std)
    return th.sigmoid(upper - MIN_LOG_STD).mul_(th.sigmoid(MAX_LOG_STD - raw_log_std))


def make_network(
    n_members: int, input_dim: int, output_dim: int, net_arch: list[int], activation_fn: type[nn.Module], layer_norm: bool
) -> nn.Module:
    """One ``make_mlp`` network, or ``n_members`` of them as one ``BatchedMLP`` (the same networks, batched)."""
    if n_members == 1:
        return make_mlp(input_dim, output_dim, net_arch, activation_fn, layer_norm)
    return BatchedMLP(n_members, input_dim, output_dim, net_arch, activation_fn, layer_norm)


class GaussianHead(nn.Module):
    """
    MLP that maps its input to the mean and log standard deviation of a diagonal Gaussian.
    The log standard deviation is soft-clamped into [``MIN_LOG_STD``, ``MAX_LOG_STD``] (``soft_clamp_log_std``).

    :param input_dim: Input dimension
    :param output_dim: Dimension of the predicted Gaussian
    :param net_arch: Hidden layer sizes
    :param activation_fn: Activation function between hidden layers
    :param layer_norm: Layer norm after each hidden product
    :param n_members: Independent members (an ensemble, evaluated as one ``BatchedMLP``); 1 is one ``make_mlp``
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        net_arch: list[int],
        activation_fn: type[nn.Module],
        layer_norm: bool = False,
        n_members: int = 1,
    ):
        super().__init__()
        self.output_dim = output_dim
        self.net = make_network(n_members, input_dim, 2 * output_dim, net_arch, activation_fn, layer_norm)

    def forward(self, x: th.Tensor, members: th.Tensor | None = None) -> tuple[th.Tensor, th.Tensor]:
        """
        :param x: Input of shape (batch, input_dim); an ensemble also takes (members, batch, input_dim)
        :param members: An ensemble's members to evaluate, indices of shape (k,), or None for all
        :return: Mean and log standard deviation, each of shape (batch, output_dim), or (members, batch, output_dim)
            for an ensemble
        """
        output = self.net(x) if members is None else self.net(x, members)
        mean, raw_log_std = output.split(self.output_dim, dim=-1)
        return mean, soft_clamp_log_std(raw_log_std)


def gaussian_head_losses(mean: th.Tensor, log_std: th.Tensor, target: th.Tensor, loss: str, sample: bool = True) -> th.Tensor:
    """
    Regression loss of a Gaussian head per sample, summed over output dimensions.

    ``"mse"`` is the paper's eq. 6: ½ E_ζ[(μ + σζ − y)²] on a reparameterised sample (``sample=False``: on the mean,
    ½ (μ − y)², the held-out score of ``WorldModel.member_losses``). ``"nll"`` is the Gaussian negative
    log-likelihood ½ ((μ − y)/σ)² + log σ (without its constant).

    :param mean: Predicted mean, shape (..., dim)
    :param log_std: Predicted log standard deviation, shape (..., dim)
    :param target: Regression target, shape (..., dim)
    :param loss: ``"mse"`` or ``"nll"``
    :param sample: With ``"mse"``: on a reparameterised sample (eq. 6), or on the mean
    :return: Shape (...)
    """
    if loss == "mse":
        prediction = mean + log_std.exp() * th.randn_like(mean) if sample else mean
        return 0.5 * (prediction - target).square().sum(dim=-1)
    return (0.5 * ((mean - target) * th.exp(-log_std)).square() + log_std).sum(dim=-1)


def gaussian_head_loss(mean: th.Tensor, log_std: th.Tensor, target: th.Tensor, loss: str) -> th.Tensor:
    """``gaussian_head_losses`` averaged over the batch (and the members of an ensemble): the scalar loss of eq. 6."""
    return gaussian_head_losses(mean, log_std, target, loss).mean()


class ModelPrediction(NamedTuple):
    """
    One imagined step of the world model.

    :param next_observations: Sampled next observations, batch first, in the form of the observation space
    :param rewards: Sampled rewards, shape (batch, 1)
    :param dones: Termination indicator or probability in [0, 1], shape (batch, 1), or None when the model has no
        notion of termination (imagined transitions never end)
    """

    next_observations: PyTorchObs
    rewards: th.Tensor
    dones: th.Tensor | None


class WorldModelLosses(NamedTuple):
    """Scalar losses of one world-model batch: dynamics, reward and termination (zero when not learned)."""

    dynamics: th.Tensor
    reward: th.Tensor
    termination: th.Tensor


class WorldModel(nn.Module):
    """
    Learned dynamics ``f(s, a)`` and reward ``r̂(s, a)`` of S2VG, two independent Gaussian MLPs (section 3.1),
    plus an optional termination classifier. Observations in and out are SB3's (``ObservationFlattener``).

    :param observation_space: The environment's observation space (a ``Box``, or a ``Dict`` of boxes)
    :param action_space: The environment's action space (a ``Box``)
    :param dynamics_arch: Hidden layers of the dynamics network
    :param reward_arch: Hidden layers of the reward network
    :param termination_arch: Hidden layers of the termination classifier
    :param activation_fn: Activation function of all three networks
    :param predict_delta: Predict ``s' − s`` instead of ``s'``
    :param normalize: Normalise the observation input and the dynamics / reward targets with running statistics
    :param learn_termination: Learn a classifier of ``done`` from the replay buffer's terminations
    :param termination_fn: Known termination function ``(obs, action, next_obs) -> done`` on flat observation
        tensors; takes precedence over the learned classifier. Without either, imagined transitions never terminate.
    :param layer_norm: Layer norm after each hidden product of the three networks
    :param n_models: Members of the ensemble (each network has ``n_models`` independent copies, termination included;
        each member trains on its own bootstrap of every batch, as in PETS / MBPO); 1 is the paper's single model
    :param ensemble_prediction: ``"random"``: each sample of an imagined step goes to one random member (the batch is
        split in equal blocks of a random permutation, one block per member, so a step costs one member's compute),
        ``"mean"``: the members' average mean and standard deviation (termination probability)
    :param n_elites: Predict with the ``n_elites`` members of lowest held-out error only (MBPO's elites; ``set_elites``
        chooses them); None: all members
    """

    #: Set by the policy (``S2VGPolicy._build``)
    optimizer: th.optim.Optimizer

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        dynamics_arch: list[int],
        reward_arch: list[int],
        termination_arch: list[int],
        activation_fn: type[nn.Module] = nn.ReLU,
        predict_delta: bool = True,
        normalize: bool = True,
        learn_termination: bool = False,
        termination_fn: TerminationFn | None = None,
        layer_norm: bool = False,
        n_models: int = 1,
        ensemble_prediction: str = "random",
        n_elites: int | None = None,
    ):
        super().__init__()
        if ensemble_prediction not in ENSEMBLE_PREDICTIONS:
            raise ValueError(f"ensemble_prediction must be one of {ENSEMBLE_PREDICTIONS}, got {ensemble_prediction!r}")
        self.n_models = n_models
        self.ensemble_prediction = ensemble_prediction
        self.n_elites = n_models if n_elites is None else n_elites
        if not 1 <= self.n_elites <= n_models:
            raise ValueError(f"n_elites must be between 1 and n_models={n_models}, got {n_elites!r}")
        #: The members that predict (indices, saved with the model); all until ``set_elites`` chooses
        self.elites: th.Tensor
        self.register_buffer("elites", th.arange(self.n_elites))
        self.flattener = ObservationFlattener(observation_space)
        self.obs_dim = self.flattener.dim
        self.action_dim = get_action_dim(action_space)
        self.predict_delta = predict_delta
        self.learn_termination = learn_termination
        self.termination_fn = termination_fn
        input_dim = self.obs_dim + self.action_dim
        self.obs_normalizer = RunningNormalizer(self.obs_dim, enabled=normalize)
        self.dynamics_target_normalizer = RunningNormalizer(self.obs_dim, enabled=normalize)
        self.reward_normalizer = RunningNormalizer(1, enabled=normalize)
        self.dynamics = GaussianHead(input_dim, self.obs_dim, dynamics_arch, activation_fn, layer_norm, n_models)
        self.reward = GaussianHead(input_dim, 1, reward_arch, activation_fn, layer_norm, n_models)
        self.termination: nn.Module | None = None
        if learn_termination:
            self.termination = make_network(n_models, input_dim, 1, termination_arch, activation_fn, layer_norm)

    # ------------------------------------------------------------------ flat-vector helpers (also used by the
    # hand-derived update of sb3_s2vg.manual_gradients, so that it decodes and terminates exactly as here)

    def inputs(self, flat_obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """
        :param flat_obs: Flat observations, shape (batch, obs_dim)
        :param actions: Shape (batch, action_dim)
        :return: The networks' input, the normalised observation and the action side by side, (batch, obs_dim + action_dim)
        """
        return th.cat([self.obs_normalizer.normalize(flat_obs), actions], dim=-1)

    def _dynamics_target(self, flat_obs: th.Tensor, flat_next_obs: th.Tensor) -> th.Tensor:
        return flat_next_obs - flat_obs if self.predict_delta else flat_next_obs

    def decode(self, flat_obs: th.Tensor, dynamics_output: th.Tensor, reward_output: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        From the heads' outputs (normalised units) to a flat next observation and a reward; the gradient of this map
        is ``denormalize_backward`` of each normaliser (plus the identity into ``flat_obs`` with ``predict_delta``).

        :param flat_obs: Flat observations, shape (batch, obs_dim)
        :param dynamics_output: A sample (or the mean) of the dynamics head, shape (batch, obs_dim)
        :param reward_output: A sample (or the mean) of the reward head, shape (batch, 1)
        :return: Flat next observations (batch, obs_dim) and rewards (batch, 1)
        """
        next_obs = self.dynamics_target_normalizer.denormalize(dynamics_output)
        if self.predict_delta:
            next_obs = next_obs + flat_obs
        return next_obs, self.reward_normalizer.denormalize(reward_output)

    def known_dones(self, flat_obs: th.Tensor, actions: th.Tensor, flat_next_obs: th.Tensor) -> th.Tensor | None:
        """
        :return: ``termination_fn``'s verdict as a float tensor of shape (batch, 1), or None without a known function
        """
        if self.termination_fn is None:
            return None
        dones = self.termination_fn(flat_obs, actions, flat_next_obs)
        batch_size = flat_obs.shape[0]
        if not isinstance(dones, th.Tensor) or dones.shape not in ((batch_size,), (batch_size, 1)):
            got = f"a tensor of shape {tuple(dones.shape)}" if isinstance(dones, th.Tensor) else f"{type(dones).__name__}"
            raise ValueError(
                f"termination_fn must return a torch tensor of shape ({batch_size},) or ({batch_size}, 1) for a batch of "
                f"{batch_size} (obs, action, next_obs) tensors, got {got}; compute it with torch operations on its inputs"
            )
        # a verdict built with new tensors (th.full, th.zeros) lands on the default device: bring it to the batch's
        return dones.reshape(-1, 1).to(device=flat_next_obs.device, dtype=flat_next_obs.dtype)

    @property
    def termination_classifier(self) -> nn.Module | None:
        """The learned classifier when it decides termination: learned and no ``termination_fn`` (which wins)."""
        return self.termination if self.termination_fn is None else None

    # ------------------------------------------------------------------ SB3 observations in and out

    def update_normalizers(self, observations: PyTorchObs, next_observations: PyTorchObs, rewards: th.Tensor) -> None:
        """
        Merge a batch of real transitions into the running statistics.

        :param observations: Shape (batch, ...)
        :param next_observations: Shape (batch, ...)
        :param rewards: Shape (batch, 1)
        """
        flat_obs = self.flattener.flatten(observations)
        self.obs_normalizer.update(flat_obs)
        self.dynamics_target_normalizer.update(self._dynamics_target(flat_obs, self.flattener.flatten(next_observations)))
        self.reward_normalizer.update(rewards)

    def _regression_data(
        self, observations: PyTorchObs, actions: th.Tensor, next_observations: PyTorchObs, rewards: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        :return: The networks' inputs (batch, obs_dim + action_dim), and the dynamics (batch, obs_dim) and reward
            (batch, 1) targets in normalised units
        """
        flat_obs = self.flattener.flatten(observations)
        dynamics_target = self._dynamics_target(flat_obs, self.flattener.flatten(next_observations))
        return (
            self.inputs(flat_obs, actions),
            self.dynamics_target_normalizer.normalize(dynamics_target),
            self.reward_normalizer.normalize(rewards),
        )

    def loss(
        self,
        observations: PyTorchObs,
        actions: th.Tensor,
        next_observations: PyTorchObs,
        rewards: th.Tensor,
        dones: th.Tensor,
        loss: str = "mse",
    ) -> WorldModelLosses:
        """
        Losses of the paper's eq. 6 (or the Gaussian NLL) on real transitions, in normalised target units,
        and the binary cross-entropy of the termination classifier when it is learned.

        :param observations: Shape (batch, ...)
        :param actions: Shape (batch, action_dim), scaled to [-1, 1]
        :param next_observations: Shape (batch, ...)
        :param rewards: Shape (batch, 1)
        :param dones: Real terminations (not time-outs), shape (batch, 1)
        :param loss: ``"mse"`` (eq. 6) or ``"nll"``
        :return: Dynamics, reward and termination losses (averaged over the members of an ensemble)
        """
        inputs, dynamics_target, reward_target = self._regression_data(observations, actions, next_observations, rewards)
        if self.n_models > 1:  # each member its own bootstrap of the batch: (members, batch, ...)
            batch_size = inputs.shape[0]
            rows = th.randint(batch_size, (self.n_models, batch_size), device=inputs.device)
            inputs, dynamics_target, reward_target, dones = inputs[rows], dynamics_target[rows], reward_target[rows], dones[rows]
        dynamics_mean, dynamics_log_std = self.dynamics(inputs)
        reward_mean, reward_log_std = self.reward(inputs)
        dynamics_loss = gaussian_head_loss(dynamics_mean, dynamics_log_std, dynamics_target, loss)
        reward_loss = gaussian_head_loss(reward_mean, reward_log_std, reward_target, loss)
        if self.termination is not None:
            termination_loss = F.binary_cross_entropy_with_logits(self.termination(inputs), dones)
        else:
            termination_loss = th.zeros((), device=inputs.device)
        return WorldModelLosses(dynamics_loss, reward_loss, termination_loss)

    def forward(self, observations: PyTorchObs, actions: th.Tensor, deterministic: bool = False) -> ModelPrediction:
        """
        Sample one imagined step, differentiable with respect to ``observations`` and ``actions``
        (reparameterisation: ``μ + σ ζ`` with ``ζ ~ N(0, 1)``).

        :param observations: Shape (batch, ...)
        :param actions: Shape (batch, action_dim), scaled to [-1, 1]
        :param deterministic: Return the means instead of samples
        :return: Next observations (batch, ...), rewards (batch, 1), dones (batch, 1) or None
        """
        flat_obs = self.flattener.flatten(observations)
        inputs = self.inputs(flat_obs, actions)
        if self.n_models == 1:
            (dynamics_mean, dynamics_std), (reward_mean, reward_std) = self.dynamics(inputs), self.reward(inputs)
            dynamics_std, reward_std = dynamics_std.exp(), reward_std.exp()
            classifier = self.termination_classifier
            done_probabilities = th.sigmoid(classifier(inputs)) if classifier is not None else None
        else:
            dynamics_mean, dynamics_std, reward_mean, reward_std, done_probabilities = self._ensemble_prediction(inputs)
        if not deterministic:
            dynamics_mean = dynamics_mean + dynamics_std * th.randn_like(dynamics_mean)
            reward_mean = reward_mean + reward_std * th.randn_like(reward_mean)
        flat_next_obs, rewards = self.decode(flat_obs, dynamics_mean, reward_mean)
        dones = self.known_dones(flat_obs, actions, flat_next_obs)
        if done_probabilities is not None:
            dones = done_probabilities
        return ModelPrediction(self.flattener.unflatten(flat_next_obs), rewards, dones)

    def _ensemble_prediction(self, inputs: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor, th.Tensor | None]:
        """
        The members' prediction for each sample (``ensemble_prediction``): one random member per sample, or the
        members' average.

        :param inputs: The networks' input, shape (batch, obs_dim + action_dim)
        :return: Dynamics mean and standard deviation (batch, obs_dim), reward mean and standard deviation
            (batch, 1) in normalised units, and the termination probability (batch, 1) or None when the classifier
            does not decide
        """
        members = None if self.n_elites == self.n_models else self.elites
        if self.ensemble_prediction == "mean":  # every member on every sample: outputs of shape (members, batch, out)

            def gather(output: th.Tensor) -> th.Tensor:
                return output

        else:  # equal blocks of a random permutation, one per member; the last block is padded with repeats
            batch_size, n_members = inputs.shape[0], self.n_elites
            order = th.randperm(batch_size, device=inputs.device)
            block = -(-batch_size // n_members)
            padded = order[th.arange(block * n_members, device=inputs.device) % batch_size]
            inputs = inputs[padded].reshape(n_members, block, -1)
            restore = th.argsort(order)  # row i of the result is the sample at position restore[i] of ``order``

            def gather(output: th.Tensor) -> th.Tensor:  # (members, block, out) -> (1, batch, out), the batch's order
                return output.reshape(n_members * block, -1)[:batch_size][restore].unsqueeze(0)

        dynamics_mean, dynamics_log_std = (gather(output) for output in self.dynamics(inputs, members))
        reward_mean, reward_log_std = (gather(output) for output in self.reward(inputs, members))
        classifier = self.termination_classifier
        done_probabilities = th.sigmoid(gather(classifier(inputs, members))).mean(0) if classifier is not None else None
        return (
            dynamics_mean.mean(0),
            dynamics_log_std.exp().mean(0),
            reward_mean.mean(0),
            reward_log_std.exp().mean(0),
            done_probabilities,
        )

    @th.no_grad()
    def member_losses(
        self,
        observations: PyTorchObs,
        actions: th.Tensor,
        next_observations: PyTorchObs,
        rewards: th.Tensor,
        dones: th.Tensor,
        loss: str = "mse",
    ) -> th.Tensor:
        """
        Each member's loss on held-out transitions, without noise or bootstrap (the early-stopping score of
        ``sb3_s2vg.model_training.fit_world_model``): dynamics plus reward plus termination, in normalised target
        units; ``"mse"`` on the mean prediction, ½ (μ − y)², ``"nll"`` the Gaussian negative log-likelihood.

        :param observations: Shape (batch, ...)
        :param actions: Shape (batch, action_dim), scaled to [-1, 1]
        :param next_observations: Shape (batch, ...)
        :param rewards: Shape (batch, 1)
        :param dones: Real terminations, shape (batch, 1)
        :param loss: ``"mse"`` or ``"nll"``
        :return: Shape (n_models,)
        """
        inputs, dynamics_target, reward_target = self._regression_data(observations, actions, next_observations, rewards)
        total = th.zeros(self.n_models, device=inputs.device)
        for head, target in ((self.dynamics, dynamics_target), (self.reward, reward_target)):
            mean, log_std = head(inputs)
            total += gaussian_head_losses(mean, log_std, target, loss, sample=False).reshape(self.n_models, -1).mean(dim=-1)
        if self.termination is not None:
            logits = self.termination(inputs).reshape(self.n_models, -1)
            total += F.binary_cross_entropy_with_logits(logits, dones.reshape(1, -1).expand_as(logits), reduction="none").mean(-1)
        return total

    @th.no_grad()
    def member_errors(self, observations: PyTorchObs, actions: th.Tensor, next_observations: PyTorchObs) -> th.Tensor:
        """
        Each member's one-step error on real transitions: the next-observation MSE of its mean prediction divided by
        the variance of the dynamics target (as ``prediction_errors``' second column), for elites and logging.

        :return: Shape (n_models, batch)
        """
        flat_obs = self.flattener.flatten(observations)
        inputs = self.inputs(flat_obs, actions)
        (dynamics_mean, _), (reward_mean, _) = self.dynamics(inputs), self.reward(inputs)
        predicted, _ = self.decode(flat_obs, dynamics_mean, reward_mean)  # (members, batch, obs_dim) for an ensemble
        target_var = self.dynamics_target_normalizer.var + self.dynamics_target_normalizer.epsilon
        squared_error = (predicted - self.flattener.flatten(next_observations)).square() / target_var
        return squared_error.mean(dim=-1).reshape(self.n_models, -1)

    def set_elites(self, errors: th.Tensor) -> None:
        """
        :param errors: Held-out error of each member, shape (n_models,); the ``n_elites`` lowest become the elites
        """
        self.elites.copy_(th.argsort(errors.to(self.elites.device))[: self.n_elites])

    @th.no_grad()
    def prediction_errors(
        self, observations: PyTorchObs, actions: th.Tensor, next_observations: PyTorchObs, rewards: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        One-step errors of the mean prediction on real transitions.

        :return: Mean squared error of the next observation (averaged over dimensions), the same divided by the
            variance of the dynamics target (1.0 is as good as predicting the mean change) and the reward's mean
            squared error, each of shape (batch,)
        """
        prediction = self(observations, actions, deterministic=True)
        flatten = self.flattener.flatten
        squared_error = (flatten(prediction.next_observations) - flatten(next_observations)).square()
        target_var = self.dynamics_target_normalizer.var + self.dynamics_target_normalizer.epsilon
        return (
            squared_error.mean(dim=-1),
            (squared_error / target_var).mean(dim=-1),
            (prediction.rewards - rewards).square().squeeze(-1),
        )
