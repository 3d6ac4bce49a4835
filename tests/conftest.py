"""Shared fixtures: keep every test off the real user cache."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EDGEFIT_HOME", str(tmp_path_factory.mktemp("edgefit-home")))
