"""S2VG (Soft Stochastic Value Gradient) as a Stable-Baselines3 algorithm."""

from sb3_s2vg.policies import MlpPolicy, MultiInputPolicy, S2VGPolicy
from sb3_s2vg.presets import get_hyperparameters
from sb3_s2vg.s2vg import S2VG
from sb3_s2vg.world_model import WorldModel

__version__ = "0.1.0"

__all__ = ["S2VG", "MlpPolicy", "MultiInputPolicy", "S2VGPolicy", "WorldModel", "__version__", "get_hyperparameters"]
