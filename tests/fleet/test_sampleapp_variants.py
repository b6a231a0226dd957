"""The sample app's web roots, served by the same busybox httpd the image runs (no Docker): a normal version
answers its version on `/`, a `*-bad` one passes /health but answers `/` with a 500 (issue 12)."""

import subprocess

import pytest

from localcloud import sampleapp
from localcloud.fleet.load import get_once
from localcloud.ports import free_port
from tests.helpers import wait_until


@pytest.fixture
def serve(tmp_path):
    started = []

    def run(version):
        folder = str(tmp_path / version)
        (tmp_path / version).mkdir()
        sampleapp._context(folder, version, healthy=True)
        port = free_port(set())
        started.append(subprocess.Popen([sampleapp.BUSYBOX, "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h",
                                         f"{folder}/www"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: get_once(url + "/health")[0] == "ok", f"httpd on {url}")
        return url

    yield run
    for proc in started:
        proc.kill()
        proc.wait(10)


def test_a_bad_version_passes_its_health_check_and_fails_real_requests(serve):
    assert sampleapp.failing("2.0-bad") and not sampleapp.failing("2.0")
    url = serve("2.0-bad")
    assert get_once(url + "/health") == ("ok", None)
    assert get_once(url + "/") == (None, "HTTP 500")


def test_a_normal_version_answers_its_version(serve):
    url = serve("2.0")
    assert get_once(url + "/") == ("2.0", None)
