"""Shared test fixtures (kept small and generic)."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).parent.parent.parent / "shared" / "data"


@pytest.fixture
def shared_data():
    """``name -> Path`` of a scene in ``../shared/data``; skips the test when it is absent."""

    def scene(name: str) -> Path:
        path = SHARED_DATA / name
        if not path.is_dir():
            pytest.skip(f"development data {path} not available")
        return path

    return scene
