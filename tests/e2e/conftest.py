"""
Fixtures for the end-to-end tests: the hearth binary, a clean environment,
servers started on 127.0.0.1 with free ports and per-test directories.

Every server a test starts is stopped in the fixture's teardown, whatever
happened in the test. Nothing here listens on anything but 127.0.0.1.
"""
import os
import pathlib
import subprocess

import pytest

from hearthtest import Server, clean_env, make_static_tree

REPO = pathlib.Path(__file__).resolve().parents[2]


def hearth_bin():
    return os.environ.get("HEARTH_BIN") or str(REPO / "build" / "hearth")


@pytest.fixture(scope="session")
def bin_path():
    path = hearth_bin()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"hearth binary not found at {path} (set HEARTH_BIN or run `make e2e`)")
    return path


@pytest.fixture
def workdir(tmp_path):
    """A fresh directory to run commands in, so no ./hearth.conf is picked up."""
    d = tmp_path / "work"
    d.mkdir()
    return d


@pytest.fixture
def cli(bin_path, tmp_path, workdir):
    """Run `hearth ...` with a private data_dir; returns CompletedProcess."""
    data_dir = tmp_path / "data"

    def run(*args, input=None, env=None, timeout=30, cwd=None):
        e = clean_env()
        e["HEARTH_STORAGE_DATA_DIR"] = str(data_dir)
        if env:
            for k, v in env.items():
                if v is None:
                    e.pop(k, None)
                else:
                    e[k] = v
        return subprocess.run(
            [bin_path, *args],
            input=input,
            env=e,
            cwd=str(cwd or workdir),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    run.data_dir = data_dir
    return run


@pytest.fixture
def static_tree(tmp_path):
    """static/ with test files, and secret.txt NEXT TO it that must never be served."""
    return make_static_tree(tmp_path)


@pytest.fixture
def start_server(bin_path, tmp_path, static_tree):
    """Factory: start_server(**env_overrides) -> Server; all are stopped at teardown."""
    started = []

    def start(env=None, wait=True):
        n = len(started)
        srv = Server(
            bin_path,
            tmp_path / f"srv{n}",
            static_dir=static_tree.static_dir,
            env=env or {},
        )
        started.append(srv)
        srv.start(wait=wait)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture(scope="module")
def shared_server(bin_path, tmp_path_factory):
    """One server for the tests that do not change its configuration."""
    base = tmp_path_factory.mktemp("shared")
    tree = make_static_tree(base)
    srv = Server(bin_path, base / "srv", static_dir=tree.static_dir, env={})
    srv.tree = tree
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def server(shared_server):
    """The shared server; fails the test if the server died during it."""
    assert shared_server.alive(), "server died before this test:\n" + shared_server.log_tail()
    yield shared_server
    assert shared_server.alive(), "server died during this test:\n" + shared_server.log_tail()



# --- the live pipeline (test_live.py, test_rtmp_robustness.py) -----------------


@pytest.fixture(scope="session")
def live_clip(tmp_path_factory):
    """The test clip, made once per session: 1080p60 H.264 High, 2 s GOP, AAC 48 kHz, FLV."""
    from livetools import make_clip

    return make_clip(tmp_path_factory.mktemp("clip") / "clip.flv")


@pytest.fixture
def live_server(bin_path, live_clip, tmp_path):
    """Factory: live_server(**env) -> livetools.LiveServer; stopped (publishers too) at teardown."""
    from livetools import LiveServer

    started = []

    def start(env=None):
        ls = LiveServer(bin_path, tmp_path / f"live{len(started)}", live_clip, env)
        started.append(ls)
        return ls

    yield start
    for ls in started:
        ls.close()
