"""
Per-environment settings for Python users: the constructor keyword arguments that ``hyperparams/s2vg.yml`` (the
rl-zoo3 file) gives each environment it knows, termination settings included.

    from sb3_s2vg import S2VG, get_hyperparameters

    model = S2VG("MlpPolicy", "Hopper-v5", **get_hyperparameters("Hopper-v5"))
"""

from pathlib import Path
from typing import Any

import yaml
from torch import nn

#: The rl-zoo3 file of S2VG's settings, also rl-zoo3's default config for ``--algo s2vg`` (``sb3_s2vg.zoo``)
HYPERPARAMS_PATH = Path(__file__).parent / "hyperparams" / "s2vg.yml"

#: Keys of an rl-zoo3 entry that are not ``S2VG`` constructor arguments (the zoo's training script reads them)
ZOO_ONLY_KEYS = ("n_timesteps", "policy", "n_envs", "normalize", "env_wrapper", "vec_env_wrapper", "frame_stack",
                 "callback", "normalize_kwargs", "env_kwargs")  # fmt: skip


def load_hyperparams(env_id: str, path: Path | str = HYPERPARAMS_PATH) -> dict[str, Any]:
    """
    S2VG's constructor arguments for ``env_id`` from the rl-zoo file, with ``policy_kwargs`` evaluated
    (``termination_fn`` stays an import path, which ``S2VG`` resolves); ``{}`` for an environment the file does not list.

    :param env_id: Gymnasium environment id, e.g. ``"HalfCheetah-v5"``
    :param path: The YAML file
    :return: Keyword arguments (``n_timesteps`` and ``policy`` included)
    """
    with open(path) as file:
        hyperparams = dict(yaml.safe_load(file).get(env_id, {}))
    if isinstance(hyperparams.get("policy_kwargs"), str):
        hyperparams["policy_kwargs"] = eval(hyperparams["policy_kwargs"], {"dict": dict, "nn": nn})
    return hyperparams


def known_env_ids() -> list[str]:
    """:return: The environment ids that have settings in the package's YAML file"""
    with open(HYPERPARAMS_PATH) as file:
        return sorted(yaml.safe_load(file))


def get_hyperparameters(env_id: str) -> dict[str, Any]:
    """
    ``S2VG`` keyword arguments for ``env_id``: the package's rl-zoo3 settings without the zoo-only keys
    (``n_timesteps``, ``policy``, ...), ``policy_kwargs`` evaluated, ``termination_fn`` an import path.

    :param env_id: A Gymnasium id listed by ``known_env_ids()``, e.g. ``"Hopper-v5"``
    :return: Keyword arguments for ``S2VG("MlpPolicy", env_id, **kwargs)`` (a new dict at every call)
    :raises ValueError: for an environment without settings, naming those that have them
    """
    hyperparams = load_hyperparams(env_id)
    if not hyperparams:
        raise ValueError(
            f"No S2VG settings for env_id={env_id!r}; the package has settings for {known_env_ids()}. "
            "For another environment start from the constructor defaults, S2VG('MlpPolicy', env)."
        )
    return {key: value for key, value in hyperparams.items() if key not in ZOO_ONLY_KEYS}


def terminates(env_id: str) -> bool:
    """:return: Whether the package's settings for ``env_id`` model termination (a known function or a classifier)"""
    hyperparams = load_hyperparams(env_id)
    return bool(hyperparams.get("termination_fn") or hyperparams.get("learn_termination"))
