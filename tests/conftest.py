"""Shared fixtures: small synthetic corpora, built once per test session."""

import os

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per worker (and per process it starts): the tiny models' small operations gain nothing from a
    # second thread, so two workers on two cores finish the suite in about two thirds of one worker's time.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from common.synthetic import generate, write_bio  # noqa: E402


@pytest.fixture(scope="session")
def corpus20(tmp_path_factory):
    """(root, ground truth) of a 3-session synthetic KEMDy20."""
    root = tmp_path_factory.mktemp("kemdy20")
    truth = generate("20", root, sessions=3, utterances_per_session=40, seed=7)
    write_bio(root, "20", seed=7)  # with the bio-signal files' quirks
    return root, truth


@pytest.fixture(scope="session")
def corpus19(tmp_path_factory):
    """(root, ground truth) of a 3-session synthetic KEMDy19 with odd sample rates and stereo files."""
    root = tmp_path_factory.mktemp("kemdy19")
    truth = generate("19", root, sessions=3, utterances_per_session=40, seed=11, odd_audio=True)
    write_bio(root, "19", seed=11)
    return root, truth


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Folder with text/ and speech/ tiny encoders, written by the same code as the demo's."""
    from common.synthetic import write_tiny_models

    return write_tiny_models(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session")
def demo20(tmp_path_factory):
    """The demo's KEMDy20 corpus (800 utterances), written by the same code as the demo's."""
    from common.synthetic import demo_corpus

    return demo_corpus("20", demo_dir=tmp_path_factory.mktemp("demo"))


# The files that take longest, longest first: each file runs whole on one worker (--dist loadfile), in this
# order (--no-loadscope-reorder), so that no worker is left alone with a long file at the end. The others
# follow in their usual order.
SLOWEST_FIRST = [
    "test_docs.py",
    "test_reliability.py",
    "test_gpucheck.py",
    "test_fusion.py",
    "test_fusion_guarantees.py",
    "test_unmoved.py",
    "test_docs_pages.py",
    "test_cross_corpus.py",
    "test_workflow.py",
    "test_encoder_families.py",
    "test_learning.py",
    "test_train.py",
    "test_layers.py",
    "test_rundir.py",
    "test_ownership.py",
]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core this process may run on (not the host's count in a container), at most 4
    (each worker builds the session's corpora and encoders again)."""
    return max(1, min(4, len(os.sched_getaffinity(0))))
