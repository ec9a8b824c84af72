"""The suite runs on every core (pytest-xdist, `make test`): tests that share a module-scoped
fixture are kept in one process, so what it builds is built once."""

from __future__ import annotations

import pytest
from conftest import xdist_group_of


@pytest.fixture(scope="module")
def built_once() -> list[str]:
    return []


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def per_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def group(request: pytest.FixtureRequest) -> str | None:
    marker = request.node.get_closest_marker("xdist_group")
    return None if marker is None else str(marker.args[0])


def test_a_test_using_a_module_fixture_runs_with_the_rest_of_its_module(
    built_once: list[str], request: pytest.FixtureRequest
) -> None:
    assert group(request) == xdist_group_of(request.node) == "test_parallel"


def test_a_parametrized_module_fixture_groups_by_its_parameter(
    per_backend: str, request: pytest.FixtureRequest
) -> None:
    assert group(request) == f"test_parallel[{per_backend}]"


def test_a_test_with_function_fixtures_only_has_no_group(tmp_path: object, request: pytest.FixtureRequest) -> None:
    assert group(request) is None and xdist_group_of(request.node) is None
