import pytest

# Detailed assertion messages for the scenario helper's `then`.
pytest.register_assert_rewrite("tests.unit.scenario")
