from __future__ import annotations

import pytest

from ovseg_training.synthetic import write_dataset


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("synthetic"), num_train=48, num_val=12, size=64, seed=0)
