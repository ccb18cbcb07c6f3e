"""
Exact checkpoints of a training run, so that a long run can stop and continue in another process with results
identical to an uninterrupted run.

A checkpoint holds the agent (SB3's ``save``: networks, optimizers, normaliser statistics, ``_last_obs``...), its
replay buffer, the global random states (Python, NumPy, torch), and the state of the training and evaluation
environments: every plain attribute of each wrapper layer (Monitor statistics, TimeLimit step count, the env's
random generator, classic-control ``state``...) and, for MuJoCo environments, the simulator's full integration
state. It works for any SB3 off-policy algorithm, S2VG and SAC alike.

This is the benchmarks' tool (``compare.py --checkpoint-every N --resume``). SB3's ``CheckpointCallback`` (with
``save_replay_buffer=True``) already saves the agent and its replay buffer, from which a run continues with the same
networks, optimizers and data; what this module adds is that the continued run is bit-for-bit the uninterrupted one
(random states, the environments mid-episode), which a benchmark needs and a user rarely does.
"""

import copy
import pickle
import random
from collections import deque
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

#: Attributes never captured: sub-environments, simulator handles (captured separately), renderers, spaces, specs.
_SKIPPED_ATTRIBUTES = {
    "env",
    "envs",
    "model",
    "data",
    "mujoco_renderer",
    "spec",
    "_cached_spec",
    "metadata",
    "_metadata",
    "action_space",
    "observation_space",
    "_action_space",
    "_observation_space",
    "single_action_space",
    "single_observation_space",
    "_saved_kwargs",
    "_ezpickle_args",
    "_ezpickle_kwargs",
    "render_mode",
}
_PLAIN_SCALARS = (bool, int, float, str, bytes, type(None), np.generic)


def _is_plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is data (numbers, arrays, random generators, containers of them) rather than a handle."""
    if depth > 4:
        return False
    if isinstance(value, (*_PLAIN_SCALARS, np.ndarray, np.random.Generator, np.random.RandomState)):
        return True
    if isinstance(value, (list, tuple, deque)):
        return all(_is_plain(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, (str, int)) and _is_plain(item, depth + 1) for key, item in value.items())
    return False


def _layers(env: gym.Env) -> list[Any]:
    layers = [env]
    while hasattr(layers[-1], "env"):
        layers.append(layers[-1].env)
    return layers


def _mujoco_state(layer: Any) -> np.ndarray | None:
    import mujoco

    if not (hasattr(layer, "model") and hasattr(layer, "data") and isinstance(layer.data, mujoco.MjData)):
        return None
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(layer.model, spec))
    mujoco.mj_getState(layer.model, layer.data, state, spec)
    return state


def _set_mujoco_state(layer: Any, state: np.ndarray) -> None:
    import mujoco

    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    mujoco.mj_setState(layer.model, layer.data, state, spec)
    mujoco.mj_forward(layer.model, layer.data)  # derived quantities (positions, contacts) for observations
    mujoco.mj_setState(layer.model, layer.data, state, spec)  # and the exact integration state (warm start) again


def capture_env_state(env: gym.Env | VecEnv) -> dict[str, Any]:
    """
    Snapshot of an environment (a ``DummyVecEnv`` or a gymnasium env with its wrappers).

    :param env: The environment
    :return: A picklable snapshot for ``restore_env_state``
    """
    if isinstance(env, VecEnv) and not isinstance(env, DummyVecEnv):
        raise TypeError(f"Exact checkpoints support DummyVecEnv (and plain gymnasium envs), not {type(env).__name__}")
    own = {key: copy.deepcopy(value) for key, value in vars(env).items() if key not in _SKIPPED_ATTRIBUTES and _is_plain(value)}
    if isinstance(env, DummyVecEnv):
        return {"own": own, "envs": [capture_env_state(sub_env) for sub_env in env.envs]}
    layers = []
    for layer in _layers(env):
        attributes = {
            key: copy.deepcopy(value) for key, value in vars(layer).items() if key not in _SKIPPED_ATTRIBUTES and _is_plain(value)
        }
        layers.append({"attributes": attributes, "mujoco": _mujoco_state(layer)})
    return {"own": {}, "layers": layers}


def restore_env_state(env: gym.Env | VecEnv, state: dict[str, Any]) -> None:
    """
    Put ``env`` (built the same way as the captured one) back into the captured state.

    :param env: A fresh environment of the same construction
    :param state: A snapshot from ``capture_env_state``
    """
    if isinstance(env, DummyVecEnv):
        vars(env).update(copy.deepcopy(state["own"]))
        for sub_env, sub_state in zip(env.envs, state["envs"], strict=True):
            restore_env_state(sub_env, sub_state)
        return
    for layer, layer_state in zip(_layers(env), state["layers"], strict=True):
        vars(layer).update(copy.deepcopy(layer_state["attributes"]))
        if layer_state["mujoco"] is not None:
            _set_mujoco_state(layer, layer_state["mujoco"])


def _buffer_arrays(buffer: Any) -> dict[str, Any]:
    """The replay buffer's per-transition arrays (first dimension ``buffer_size``), dict observations included."""
    arrays: dict[str, Any] = {}
    for name, value in vars(buffer).items():
        if isinstance(value, np.ndarray) and value.shape[:1] == (buffer.buffer_size,):
            arrays[name] = value
        elif isinstance(value, dict) and value and all(isinstance(v, np.ndarray) for v in value.values()):
            arrays[name] = value
    return arrays


def save_replay_buffer_compact(buffer: Any, path: Path) -> None:
    """
    Save only the filled part of a replay buffer, gzip-compressed (SB3's ``save_replay_buffer`` pickles every
    preallocated row: 300 MB for a 1M-transition HalfCheetah buffer holding 60k).
    """
    import gzip

    filled = buffer.buffer_size if buffer.full else buffer.pos
    arrays = {
        name: {key: array[:filled] for key, array in value.items()} if isinstance(value, dict) else value[:filled]
        for name, value in _buffer_arrays(buffer).items()
    }
    with gzip.open(path, "wb", compresslevel=3) as file:
        pickle.dump({"pos": buffer.pos, "full": buffer.full, "filled": filled, "arrays": arrays}, file)


def read_replay_buffer_compact(path: Path) -> dict[str, Any]:
    """
    What ``save_replay_buffer_compact`` wrote: ``pos``, ``full``, ``filled`` and ``arrays`` (each buffer array's
    first ``filled`` rows, by attribute name; dict observations as dicts of arrays).
    """
    import gzip

    with gzip.open(path, "rb") as file:
        return pickle.load(file)


def load_replay_buffer_compact(buffer: Any, path: Path) -> None:
    """Fill a freshly created replay buffer of the same size from ``save_replay_buffer_compact``."""
    saved = read_replay_buffer_compact(path)
    current = _buffer_arrays(buffer)
    for name, value in saved["arrays"].items():
        if isinstance(value, dict):
            for key, array in value.items():
                current[name][key][: saved["filled"]] = array
        else:
            current[name][: saved["filled"]] = value
    buffer.pos, buffer.full = saved["pos"], saved["full"]


def save_checkpoint(directory: str | Path, model: OffPolicyAlgorithm, eval_env: gym.Env | None = None, extra: Any = None) -> None:
    """
    Write an exact checkpoint of a run to ``directory`` (``agent.zip``, ``replay_buffer.pkl.gz``, ``state.pkl``).

    :param directory: Where to write (created if needed; previous files are replaced)
    :param model: The agent; its environment must be a ``DummyVecEnv``
    :param eval_env: A separate evaluation environment to snapshot as well
    :param extra: Anything picklable the caller needs to continue (e.g. the evaluation rows so far)
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / "agent.zip")
    save_replay_buffer_compact(model.replay_buffer, directory / "replay_buffer.pkl.gz")
    state = {
        "env": capture_env_state(model.get_env()),
        "eval_env": capture_env_state(eval_env) if eval_env is not None else None,
        "python_random": random.getstate(),
        "numpy_random": np.random.get_state(),
        "torch_random": th.get_rng_state(),
        "cuda_random": th.cuda.get_rng_state_all() if th.cuda.is_available() else None,
        "extra": extra,
    }
    with open(directory / "state.tmp", "wb") as file:
        pickle.dump(state, file)
    (directory / "state.tmp").replace(directory / "state.pkl")  # the checkpoint is complete only once this exists


def load_checkpoint(
    directory: str | Path,
    algorithm: type[OffPolicyAlgorithm],
    env: VecEnv,
    eval_env: gym.Env | None = None,
    device: str = "auto",
) -> tuple[OffPolicyAlgorithm, Any]:
    """
    Continue a run from ``save_checkpoint``: call ``model.learn(remaining, reset_num_timesteps=False)`` next.

    :param directory: The checkpoint directory
    :param algorithm: The agent's class (``S2VG``, ``SAC``...)
    :param env: A fresh training environment built like the original (a ``DummyVecEnv``)
    :param eval_env: A fresh evaluation environment built like the original, or None
    :param device: Device of the agent
    :return: The agent and the ``extra`` object that was saved
    """
    directory = Path(directory)
    with open(directory / "state.pkl", "rb") as file:
        state = pickle.load(file)
    model = algorithm.load(directory / "agent.zip", env=env, device=device, force_reset=False)
    if (directory / "replay_buffer.pkl.gz").exists():
        load_replay_buffer_compact(model.replay_buffer, directory / "replay_buffer.pkl.gz")
    else:  # a checkpoint written with SB3's save_replay_buffer
        model.load_replay_buffer(directory / "replay_buffer.pkl")
    restore_env_state(model.get_env(), state["env"])
    if eval_env is not None and state["eval_env"] is not None:
        restore_env_state(eval_env, state["eval_env"])
    random.setstate(state["python_random"])
    np.random.set_state(state["numpy_random"])
    th.set_rng_state(state["torch_random"])
    if state["cuda_random"] is not None and th.cuda.is_available():
        th.cuda.set_rng_state_all(state["cuda_random"])
    return model, state["extra"]
