import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _private_embedding_cache(tmp_path_factory, monkeypatch):
    # Commands cache embeddings under $ATTNVISION_CACHE: never the user's own cache in tests.
    monkeypatch.setenv("ATTNVISION_CACHE", str(tmp_path_factory.mktemp("attnvision-cache")))
