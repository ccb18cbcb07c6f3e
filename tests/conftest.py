import pytest
import torch as th


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small networks run as fast on one thread, and tests then leave the second core to the other worker."""
    previous = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _cpu_unless_marked_cuda(request, monkeypatch):
    """The suite's reference numbers were recorded on the CPU, and its tests build tensors there: on a machine with a
    GPU, ``device="auto"`` would put the models on it. Tests marked ``cuda`` run there; all others see no GPU."""
    if request.node.get_closest_marker("cuda") is None:
        monkeypatch.setattr(th.cuda, "is_available", lambda: False)
