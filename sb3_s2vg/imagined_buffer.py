"""
A ring buffer of imagined transitions: MBPO's model buffer (Janner et al., 2019) and DHMBPO's "distribution rollouts"
(Kubo et al., 2025), an option of S2VG (``imagined_ratio``). Short rollouts of the current policy in the world model,
branched from real states, are stored here; a fraction of each actor-critic batch is then drawn from them instead of
the replay buffer. The paper trains on real transitions only.

Transitions are kept as flat float tensors on the algorithm's device (observations as the world model's
``ObservationFlattener`` gives them) and come back as SB3's ``ReplayBufferSamples`` (``DictReplayBufferSamples`` for
dict observations); the flattening and the mixing of real and imagined batches live here, and nothing here knows the
algorithm.
"""

from typing import cast

import torch as th
from stable_baselines3.common.type_aliases import DictReplayBufferSamples, PyTorchObs, ReplayBufferSamples

from sb3_s2vg.world_model import ObservationFlattener


class ImaginedTransitions:
    """
    The last ``capacity`` imagined transitions (s, a, r, s', d).

    :param capacity: Most transitions kept (the oldest are overwritten)
    :param flattener: Between the observation space's form and the flat vectors stored (the world model's)
    :param action_dim: Dimension of the actions
    :param device: Where the tensors live
    """

    def __init__(self, capacity: int, flattener: ObservationFlattener, action_dim: int, device: th.device | str = "cpu"):
        self.capacity = capacity
        self.flattener = flattener
        obs_dim = flattener.dim
        self.observations = th.zeros(capacity, obs_dim, device=device)
        self.actions = th.zeros(capacity, action_dim, device=device)
        self.rewards = th.zeros(capacity, 1, device=device)
        self.next_observations = th.zeros(capacity, obs_dim, device=device)
        self.dones = th.zeros(capacity, 1, device=device)
        self.pos = 0
        self.size = 0

    def add(
        self, observations: PyTorchObs, actions: th.Tensor, rewards: th.Tensor, next_observations: PyTorchObs, dones: th.Tensor
    ) -> None:
        """
        :param observations: Observations in the space's form, batch first (n, ...) (a tensor, or a dict of tensors)
        :param actions: Shape (n, action_dim), scaled to [-1, 1]
        :param rewards: Shape (n, 1)
        :param next_observations: As ``observations``
        :param dones: Termination indicators or probabilities, shape (n, 1)
        """
        n = actions.shape[0]
        rows = th.arange(self.pos, self.pos + n, device=self.observations.device) % self.capacity
        for storage, values in [
            (self.observations, self.flattener.flatten(observations)),
            (self.actions, actions),
            (self.rewards, rewards),
            (self.next_observations, self.flattener.flatten(next_observations)),
            (self.dones, dones),
        ]:
            storage[rows] = values.detach().to(storage.dtype)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int) -> ReplayBufferSamples:
        """
        :param n: Number of transitions, drawn uniformly with replacement (torch's generator)
        :return: Observations (n, ...) in the space's form, actions (n, action_dim), next observations (n, ...),
            dones (n, 1) and rewards (n, 1)
        """
        if self.size == 0:
            raise RuntimeError("no imagined transitions yet")
        rows = th.randint(self.size, (n,), device=self.observations.device)
        unflatten = self.flattener.unflatten
        return make_samples(
            unflatten(self.observations[rows]),
            self.actions[rows],
            unflatten(self.next_observations[rows]),
            self.dones[rows],
            self.rewards[rows],
        )


def make_samples(
    observations: PyTorchObs, actions: th.Tensor, next_observations: PyTorchObs, dones: th.Tensor, rewards: th.Tensor
) -> ReplayBufferSamples:
    """SB3's batch of transitions: ``ReplayBufferSamples``, or ``DictReplayBufferSamples`` for dict observations."""
    if isinstance(observations, dict):
        return cast(ReplayBufferSamples, DictReplayBufferSamples(observations, actions, next_observations, dones, rewards))  # type: ignore[arg-type]
    return ReplayBufferSamples(observations, actions, cast(th.Tensor, next_observations), dones, rewards)


def cat_observations(observations: list[PyTorchObs]) -> PyTorchObs:
    """
    :param observations: Observation batches (tensors, or dicts of tensors), each batch first
    :return: Them concatenated along the batch dimension
    """
    if isinstance(observations[0], dict):
        return {key: th.cat([obs[key] for obs in observations]) for key in observations[0]}  # type: ignore[index]
    return th.cat(observations)  # type: ignore[arg-type]


def select_observations(observations: PyTorchObs, rows: th.Tensor) -> PyTorchObs:
    """
    :param observations: An observation batch (a tensor, or a dict of tensors), batch first (n, ...)
    :param rows: Boolean mask (n,) or indices of the rows to keep
    :return: Those rows, in the same form
    """
    if isinstance(observations, dict):
        return {key: obs[rows] for key, obs in observations.items()}
    return observations[rows]


def cat_samples(first: ReplayBufferSamples, second: ReplayBufferSamples) -> ReplayBufferSamples:
    """
    :param first: A batch of transitions (n₁,)
    :param second: Another, with observations of the same form (n₂,)
    :return: The two concatenated, ``first``'s rows first (n₁ + n₂,)
    """
    return make_samples(
        cat_observations([first.observations, second.observations]),
        th.cat([first.actions, second.actions]),
        cat_observations([first.next_observations, second.next_observations]),
        th.cat([first.dones, second.dones]),
        th.cat([first.rewards, second.rewards]),
    )
