import pytest


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Keep the decoded-image cache of every test in its own temporary folder."""
    monkeypatch.setenv("SQUEEZELAB_CACHE", str(tmp_path / "cache"))
