import pytest
import torch as th


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small networks run as fast on one thread, and tests then leave the second core to the other worker."""
    previous = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(previous)
