import os

import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits
from torch.utils.data import DataLoader, Dataset

from probekit.cli import main
from probekit.core import threads


def _blas_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


@pytest.fixture
def restore_threads(monkeypatch):
    """The counts and the configured flag as they were before the test."""
    torch_before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_configured", [])
    with threadpool_limits(limits=None):  # restores every pool's count on exit
        yield
    torch.set_num_threads(torch_before)


def test_prepare_environment_sets_only_what_the_user_left_unset():
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    added = threads.prepare_environment(environ)
    assert added == {"KMP_BLOCKTIME": "0"}
    assert environ == {"OMP_WAIT_POLICY": "ACTIVE", "KMP_BLOCKTIME": "0"}
    assert threads.prepare_environment(environ) == {}


def test_the_command_sets_the_wait_policy_before_it_parses(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("KMP_BLOCKTIME", raising=False)
    with pytest.raises(SystemExit):
        main(["--help"])
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert os.environ["KMP_BLOCKTIME"] == "0"


def test_available_cores_is_the_affinity_mask():
    assert threads.available_cores() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("value", "expected"), [("3", 3), ("2,1", 2), ("", None), ("zero", None), ("0", None)])
def test_intra_op_threads_follows_omp_num_threads_when_valid(value, expected):
    environ = {"OMP_NUM_THREADS": value}
    cores = len(os.sched_getaffinity(0))
    assert threads.intra_op_threads(64, environ) == (expected or cores)
    assert threads.intra_op_threads(1, environ) == (expected or 1)  # torch's own smaller default stays


def test_configure_gives_torch_and_blas_one_count_once(restore_threads, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.configure() == 1
    assert torch.get_num_threads() == 1
    assert _blas_threads() == {1}
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.configure() == 1  # the first call decided; later ones do not move the counts
    assert torch.get_num_threads() == 1


def test_one_thread_restores_the_count(restore_threads):
    torch.set_num_threads(2)
    with threads.one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with threads.one_thread(on_cpu=False):
        assert torch.get_num_threads() == 2


class _CountsInWorker(Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, item: int) -> tuple[int, list[int]]:
        return torch.get_num_threads(), sorted(_blas_threads())


def test_a_dataloader_worker_gets_one_torch_and_one_blas_thread(restore_threads):
    with threadpool_limits(limits=2, user_api="blas"):
        loader = DataLoader(
            _CountsInWorker(),
            batch_size=None,
            num_workers=1,
            worker_init_fn=threads.worker_init,
            collate_fn=lambda b: b,
        )
        torch_count, blas_counts = next(iter(loader))
    assert torch_count == 1
    assert blas_counts == [1]
