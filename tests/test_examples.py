"""The MuJoCo example runs as documented: the Hopper preset, checkpoints, and a resumed run that continues."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent.parent / "examples" / "train_hopper.py"


@pytest.mark.slow
def test_hopper_example_checkpoints_and_resumes(tmp_path):
    command = [sys.executable, str(EXAMPLE), "--log-dir", str(tmp_path), "--checkpoint-every", "550"]
    first = subprocess.run([*command, "--timesteps", "1100"], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert (tmp_path / "s2vg_1100_steps.zip").exists() and (tmp_path / "s2vg_replay_buffer_1100_steps.pkl").exists()
    resumed = subprocess.run([*command, "--timesteps", "1200", "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout and "at step 1100" in resumed.stdout
    assert "S2VG after 1200 steps" in resumed.stdout
