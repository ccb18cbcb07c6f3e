"""
World model of S2VG (section 3.1 of the paper): Gaussian dynamics f(s, a) and reward r̂(s, a) heads sampled
with the reparameterisation trick (eq. 6), an optional termination classifier, and running normalisers.

Everything here works on flat observation vectors of shape (batch, obs_dim) and actions already scaled to
[-1, 1] (the form SB3 stores in its replay buffer and the SAC actor outputs).
"""

from collections.abc import Callable
from typing import NamedTuple

import torch as th
from torch import nn
from torch.nn import functional as F

from sb3_s2vg.layers import make_mlp

#: ``termination_fn(obs, action, next_obs) -> done``: tensors of shape (batch, obs_dim), (batch, action_dim),
#: (batch, obs_dim) in, a bool or float tensor of shape (batch, 1) or (batch,) out (1 where the episode ends).
TerminationFn = Callable[[th.Tensor, th.Tensor, th.Tensor], th.Tensor]

#: Bounds of the predicted log standard deviation, in normalised target units (soft-clamped, as in PETS).
MIN_LOG_STD = -10.0
MAX_LOG_STD = 0.5
MODEL_LOSSES = ("mse", "nll")


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


class GaussianHead(nn.Module):
    """
    MLP that maps its input to the mean and log standard deviation of a diagonal Gaussian.
    The log standard deviation is soft-clamped into [``MIN_LOG_STD``, ``MAX_LOG_STD``].

    :param input_dim: Input dimension
    :param output_dim: Dimension of the predicted Gaussian
    :param net_arch: Hidden layer sizes
    :param activation_fn: Activation function between hidden layers
    """

    def __init__(self, input_dim: int, output_dim: int, net_arch: list[int], activation_fn: type[nn.Module]):
        super().__init__()
        self.output_dim = output_dim
        self.net = make_mlp(input_dim, 2 * output_dim, net_arch, activation_fn)

    def forward(self, x: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        :param x: Input of shape (batch, input_dim)
        :return: Mean and log standard deviation, each of shape (batch, output_dim)
        """
        mean, raw_log_std = self.net(x).split(self.output_dim, dim=-1)
        log_std = MAX_LOG_STD - F.softplus(MAX_LOG_STD - raw_log_std)
        log_std = MIN_LOG_STD + F.softplus(log_std - MIN_LOG_STD)
        return mean, log_std


def gaussian_head_loss(mean: th.Tensor, log_std: th.Tensor, target: th.Tensor, loss: str) -> th.Tensor:
    """
    Regression loss of a Gaussian head, averaged over the batch and summed over output dimensions.

    ``"mse"`` is the paper's eq. 6: ½ E_ζ[(μ + σζ − y)²] on a reparameterised sample. ``"nll"`` is the
    Gaussian negative log-likelihood ½ ((μ − y)/σ)² + log σ (without its constant).

    :param mean: Predicted mean, shape (batch, dim)
    :param log_std: Predicted log standard deviation, shape (batch, dim)
    :param target: Regression target, shape (batch, dim)
    :param loss: ``"mse"`` or ``"nll"``
    :return: Scalar loss
    """
    if loss == "mse":
        sample = mean + log_std.exp() * th.randn_like(mean)
        return 0.5 * (sample - target).square().sum(dim=-1).mean()
    return (0.5 * ((mean - target) * th.exp(-log_std)).square() + log_std).sum(dim=-1).mean()


class ModelPrediction(NamedTuple):
    """
    One imagined step of the world model.

    :param next_observations: Sampled next observations, shape (batch, obs_dim)
    :param rewards: Sampled rewards, shape (batch, 1)
    :param dones: Termination indicator or probability in [0, 1], shape (batch, 1), or None when the model has no
        notion of termination (imagined transitions never end)
    """

    next_observations: th.Tensor
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
    plus an optional termination classifier.

    :param obs_dim: Dimension of the flat observation vector
    :param action_dim: Dimension of the action
    :param dynamics_arch: Hidden layers of the dynamics network
    :param reward_arch: Hidden layers of the reward network
    :param termination_arch: Hidden layers of the termination classifier
    :param activation_fn: Activation function of all three networks
    :param predict_delta: Predict ``s' − s`` instead of ``s'``
    :param normalize: Normalise the observation input and the dynamics / reward targets with running statistics
    :param learn_termination: Learn a classifier of ``done`` from the replay buffer's terminations
    :param termination_fn: Known termination function ``(obs, action, next_obs) -> done``; takes precedence over
        the learned classifier. Without either, imagined transitions never terminate.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        dynamics_arch: list[int],
        reward_arch: list[int],
        termination_arch: list[int],
        activation_fn: type[nn.Module] = nn.ReLU,
        predict_delta: bool = True,
        normalize: bool = True,
        learn_termination: bool = False,
        termination_fn: TerminationFn | None = None,
    ):
        super().__init__()
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.predict_delta = predict_delta
        self.learn_termination = learn_termination
        self.termination_fn = termination_fn
        input_dim = obs_dim + action_dim
        self.obs_normalizer = RunningNormalizer(obs_dim, enabled=normalize)
        self.dynamics_target_normalizer = RunningNormalizer(obs_dim, enabled=normalize)
        self.reward_normalizer = RunningNormalizer(1, enabled=normalize)
        self.dynamics = GaussianHead(input_dim, obs_dim, dynamics_arch, activation_fn)
        self.reward = GaussianHead(input_dim, 1, reward_arch, activation_fn)
        self.termination: nn.Module | None = None
        if learn_termination:
            self.termination = make_mlp(input_dim, 1, termination_arch, activation_fn)

    def _inputs(self, observations: th.Tensor, actions: th.Tensor) -> th.Tensor:
        return th.cat([self.obs_normalizer.normalize(observations), actions], dim=-1)

    def _dynamics_target(self, observations: th.Tensor, next_observations: th.Tensor) -> th.Tensor:
        return next_observations - observations if self.predict_delta else next_observations

    def update_normalizers(self, observations: th.Tensor, next_observations: th.Tensor, rewards: th.Tensor) -> None:
        """
        Merge a batch of real transitions into the running statistics.

        :param observations: Shape (batch, obs_dim)
        :param next_observations: Shape (batch, obs_dim)
        :param rewards: Shape (batch, 1)
        """
        self.obs_normalizer.update(observations)
        self.dynamics_target_normalizer.update(self._dynamics_target(observations, next_observations))
        self.reward_normalizer.update(rewards)

    def loss(
        self,
        observations: th.Tensor,
        actions: th.Tensor,
        next_observations: th.Tensor,
        rewards: th.Tensor,
        dones: th.Tensor,
        loss: str = "mse",
    ) -> WorldModelLosses:
        """
        Losses of the paper's eq. 6 (or the Gaussian NLL) on real transitions, in normalised target units,
        and the binary cross-entropy of the termination classifier when it is learned.

        :param observations: Shape (batch, obs_dim)
        :param actions: Shape (batch, action_dim), scaled to [-1, 1]
        :param next_observations: Shape (batch, obs_dim)
        :param rewards: Shape (batch, 1)
        :param dones: Real terminations (not time-outs), shape (batch, 1)
        :param loss: ``"mse"`` (eq. 6) or ``"nll"``
        :return: Dynamics, reward and termination losses
        """
        inputs = self._inputs(observations, actions)
        dynamics_target = self.dynamics_target_normalizer.normalize(self._dynamics_target(observations, next_observations))
        dynamics_loss = gaussian_head_loss(*self.dynamics(inputs), dynamics_target, loss)
        reward_loss = gaussian_head_loss(*self.reward(inputs), self.reward_normalizer.normalize(rewards), loss)
        if self.termination is not None:
            termination_loss = F.binary_cross_entropy_with_logits(self.termination(inputs), dones)
        else:
            termination_loss = th.zeros((), device=inputs.device)
        return WorldModelLosses(dynamics_loss, reward_loss, termination_loss)

    def forward(self, observations: th.Tensor, actions: th.Tensor, deterministic: bool = False) -> ModelPrediction:
        """
        Sample one imagined step, differentiable with respect to ``observations`` and ``actions``
        (reparameterisation: ``μ + σ ζ`` with ``ζ ~ N(0, 1)``).

        :param observations: Shape (batch, obs_dim)
        :param actions: Shape (batch, action_dim), scaled to [-1, 1]
        :param deterministic: Return the means instead of samples
        :return: Next observations (batch, obs_dim), rewards (batch, 1), dones (batch, 1) or None
        """
        inputs = self._inputs(observations, actions)
        dynamics_mean, dynamics_log_std = self.dynamics(inputs)
        reward_mean, reward_log_std = self.reward(inputs)
        if not deterministic:
            dynamics_mean = dynamics_mean + dynamics_log_std.exp() * th.randn_like(dynamics_mean)
            reward_mean = reward_mean + reward_log_std.exp() * th.randn_like(reward_mean)
        next_observations = self.dynamics_target_normalizer.denormalize(dynamics_mean)
        if self.predict_delta:
            next_observations = next_observations + observations
        rewards = self.reward_normalizer.denormalize(reward_mean)
        if self.termination_fn is not None:
            dones = self.termination_fn(observations, actions, next_observations)
            dones = dones.reshape(-1, 1).to(rewards.dtype)
        elif self.termination is not None:
            dones = th.sigmoid(self.termination(inputs))
        else:
            dones = None
        return ModelPrediction(next_observations, rewards, dones)

    @th.no_grad()
    def prediction_errors(
        self, observations: th.Tensor, actions: th.Tensor, next_observations: th.Tensor, rewards: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        One-step errors of the mean prediction on real transitions.

        :return: Mean squared error of the next observation (averaged over dimensions), the same divided by the
            variance of the dynamics target (1.0 is as good as predicting the mean change) and the reward's mean
            squared error, each of shape (batch,)
        """
        prediction = self(observations, actions, deterministic=True)
        squared_error = (prediction.next_observations - next_observations).square()
        target_var = self.dynamics_target_normalizer.var + self.dynamics_target_normalizer.epsilon
        return (
            squared_error.mean(dim=-1),
            (squared_error / target_var).mean(dim=-1),
            (prediction.rewards - rewards).square().squeeze(-1),
        )
