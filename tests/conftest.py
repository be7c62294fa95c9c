import os
import sys

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)                      # builders
sys.path.insert(0, os.path.dirname(HERE))     # the models/ zoo
os.environ.setdefault("OVPTQ_PROGRESS", "0")
# OpenVINO's telemetry forks a process from a worker thread on import and on convert_model; a fork while numpy's
# BLAS threads are busy can deadlock. CI=true is the variable that turns the telemetry off.
os.environ.setdefault("CI", "true")


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run the slow tests (benchmark_app smoke runs)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs only with --slow (benchmark_app smoke runs)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    import pytest
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
