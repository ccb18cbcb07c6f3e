"""
Known termination functions of gymnasium's MuJoCo ``*-v5`` environments, for ``S2VG(termination_fn=...)``.

Each takes flat observation tensors of the environment's default observation (``exclude_current_positions_from_
observation=True``, not normalised by ``VecNormalize``) and returns a float tensor of shape (batch, 1), 1 where
the episode ends. They reproduce the environments' default ``healthy`` conditions.
"""

import torch as th


def hopper_termination(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """
    Hopper-v5: healthy while z > 0.7, |angle| < 0.2 and every other state entry is within (-100, 100).
    ``next_obs[:, 0]`` is z, ``next_obs[:, 1]`` the torso angle, ``next_obs[:, 1:]`` the state checked for range.

    :param obs: Shape (batch, 11)
    :param action: Shape (batch, 3)
    :param next_obs: Shape (batch, 11)
    :return: Shape (batch, 1)
    """
    height, angle = next_obs[:, 0], next_obs[:, 1]
    healthy = (height > 0.7) & (angle.abs() < 0.2) & (next_obs[:, 1:].abs() < 100.0).all(dim=1)
    return (~healthy).float().unsqueeze(1)


def walker2d_termination(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """
    Walker2d-v5: healthy while 0.8 < z < 2.0 and |angle| < 1.0.

    :param obs: Shape (batch, 17)
    :param action: Shape (batch, 6)
    :param next_obs: Shape (batch, 17)
    :return: Shape (batch, 1)
    """
    height, angle = next_obs[:, 0], next_obs[:, 1]
    healthy = (height > 0.8) & (height < 2.0) & (angle.abs() < 1.0)
    return (~healthy).float().unsqueeze(1)


def inverted_pendulum_termination(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """
    InvertedPendulum-v5: the episode ends when the pole angle leaves (-0.2, 0.2) (``next_obs[:, 1]``), or the
    state is not finite.

    :param obs: Shape (batch, 4)
    :param action: Shape (batch, 1)
    :param next_obs: Shape (batch, 4)
    :return: Shape (batch, 1)
    """
    healthy = th.isfinite(next_obs).all(dim=1) & (next_obs[:, 1].abs() <= 0.2)
    return (~healthy).float().unsqueeze(1)
