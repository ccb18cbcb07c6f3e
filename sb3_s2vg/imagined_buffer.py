"""
A ring buffer of imagined transitions: MBPO's model buffer (Janner et al., 2019) and DHMBPO's "distribution rollouts"
(Kubo et al., 2025), an option of S2VG (``imagined_ratio``). Short rollouts of the current policy in the world model,
branched from real states, are stored here; a fraction of each actor-critic batch is then drawn from them instead of
the replay buffer. The paper trains on real transitions only.

Transitions are kept as flat float tensors on the algorithm's device (observations as the world model's
``ObservationFlattener`` gives them); nothing here knows the algorithm.
"""

import torch as th


class ImaginedTransitions:
    """
    The last ``capacity`` imagined transitions (s, a, r, s', d).

    :param capacity: Most transitions kept (the oldest are overwritten)
    :param obs_dim: Dimension of the flat observations
    :param action_dim: Dimension of the actions
    :param device: Where the tensors live
    """

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, device: th.device | str = "cpu"):
        self.capacity = capacity
        self.observations = th.zeros(capacity, obs_dim, device=device)
        self.actions = th.zeros(capacity, action_dim, device=device)
        self.rewards = th.zeros(capacity, 1, device=device)
        self.next_observations = th.zeros(capacity, obs_dim, device=device)
        self.dones = th.zeros(capacity, 1, device=device)
        self.pos = 0
        self.size = 0

    def add(
        self, observations: th.Tensor, actions: th.Tensor, rewards: th.Tensor, next_observations: th.Tensor, dones: th.Tensor
    ) -> None:
        """
        :param observations: Flat observations, shape (n, obs_dim)
        :param actions: Shape (n, action_dim), scaled to [-1, 1]
        :param rewards: Shape (n, 1)
        :param next_observations: Shape (n, obs_dim)
        :param dones: Termination indicators or probabilities, shape (n, 1)
        """
        n = observations.shape[0]
        rows = th.arange(self.pos, self.pos + n, device=self.observations.device) % self.capacity
        for storage, values in [
            (self.observations, observations),
            (self.actions, actions),
            (self.rewards, rewards),
            (self.next_observations, next_observations),
            (self.dones, dones),
        ]:
            storage[rows] = values.detach().to(storage.dtype)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        """
        :param n: Number of transitions, drawn uniformly with replacement (torch's generator)
        :return: Observations (n, obs_dim), actions (n, action_dim), rewards (n, 1), next observations (n, obs_dim)
            and dones (n, 1)
        """
        if self.size == 0:
            raise RuntimeError("no imagined transitions yet")
        rows = th.randint(self.size, (n,), device=self.observations.device)
        return self.observations[rows], self.actions[rows], self.rewards[rows], self.next_observations[rows], self.dones[rows]
