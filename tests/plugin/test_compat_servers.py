"""Servers that fixtures start in threads of the pytest process (pytest-httpserver, an httpbin-style
fixture) and session-scoped fixtures, used from sandboxed tests under ``--sandlock-strict``."""

from __future__ import annotations

import time

import pytest

MODES = {"serial": (), "xdist": ("-n", "2")}


@pytest.fixture(params=sorted(MODES))
def mode(request: pytest.FixtureRequest) -> tuple[str, ...]:
    return MODES[request.param]


# pytest-httpserver's server and its expectations live in the pytest process. A sandboxed test body runs in a
# forked child: what it changes in Python objects changes the child's copy only. So expectations are set
# in a fixture (setup runs in the pytest process); the test body makes the requests; the fixture's
# teardown (pytest process again) checks what the server saw. An expectation set in the test body does not
# reach the server: the last test pins that documented limitation.
HTTPSERVER_CONFTEST = """
import pytest

SERVERS = []

@pytest.fixture
def api(httpserver):
    SERVERS.append(httpserver)
    httpserver.expect_request("/hello", method="GET").respond_with_json({"from": "pytest process"})
    httpserver.expect_oneshot_request("/one").respond_with_data("1")
    httpserver.expect_oneshot_request("/two", method="POST", data="payload").respond_with_data("2")
    httpserver.expect_request("/port").respond_with_data(str(httpserver.port))
    yield httpserver
    assert [entry[0].path for entry in httpserver.log] == ["/hello", "/one", "/two", "/port"]
    httpserver.check_assertions()
"""

HTTPSERVER_TESTS = """
import json, os, urllib.error, urllib.request, pytest
import conftest

PARENT = os.getpid()

def get(url, data=None):
    try:
        with urllib.request.urlopen(url, data=data, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, None

@pytest.mark.parametrize("n", range(3))
def test_expectations_from_the_fixture(api, n):
    assert os.getpid() != PARENT
    status, body = get(api.url_for("/hello"))
    assert (status, json.loads(body)) == (200, {"from": "pytest process"})
    assert get(api.url_for("/one")) == (200, b"1")
    assert get(api.url_for("/two"), data=b"payload") == (200, b"2")
    # pytest-httpserver's server is session-scoped: one server, one port, for every test of this process.
    assert get(api.url_for("/port")) == (200, str(api.port).encode())
    assert {srv.port for srv in conftest.SERVERS} == {api.port}

def test_expectation_set_in_the_body_stays_in_the_child(httpserver):
    httpserver.expect_request("/late").respond_with_data("never served")
    assert get(httpserver.url_for("/late")) == (500, None)  # "No handler found" from the real server
    httpserver.clear()
"""


def test_pytest_httpserver_from_sandboxed_tests(pytester, mode):
    pytest.importorskip("pytest_httpserver")
    pytester.makeconftest(HTTPSERVER_CONFTEST)
    pytester.makepyfile(test_httpserver=HTTPSERVER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sandlock-strict", *mode)
    result.assert_outcomes(passed=4)
    assert "sandlock denials" not in result.stdout.str()


HTTPBIN_CONFTEST = """
import json, threading, pytest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CREATED = []

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.server.seen.append(self.path)
        if self.path.startswith("/status/"):
            self._send(int(self.path.rsplit("/", 1)[1]), {})
        elif self.path == "/seen":
            self._send(200, {"seen": self.server.seen})
        else:
            self._send(200, {"path": self.path, "headers": dict(self.headers)})

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append(self.path)
        self._send(200, {"data": body.decode()})

@pytest.fixture(scope="session")
def httpbin():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.seen = []
    CREATED.append(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()

@pytest.fixture(scope="session")
def session_token():
    CREATED.append("token")
    return object()
"""

HTTPBIN_TESTS = """
import json, os, urllib.error, urllib.request, pytest
import conftest

def fetch(url, data=None):
    try:
        with urllib.request.urlopen(url, data=data, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None

@pytest.mark.parametrize("n", range(4))
def test_get(httpbin, session_token, n):
    status, body = fetch(f"{{httpbin}}/get?n={{n}}")
    assert (status, body["path"]) == (200, f"/get?n={{n}}")
    # Session fixtures are created once per pytest process (once per xdist worker), never per test: the
    # sandboxed child sees the pytest process's objects as they were when it was forked.
    assert [c for c in conftest.CREATED if c == "token"] == ["token"]
    assert len(conftest.CREATED) == 2

def test_post_and_status(httpbin):
    sent = b"sent from the sandbox"
    assert fetch(f"{{httpbin}}/post", data=sent) == (200, {{"data": sent.decode()}})
    assert fetch(f"{{httpbin}}/status/418") == (418, None)

def test_server_state_lives_in_the_pytest_process(httpbin):
    fetch(f"{{httpbin}}/get?mark")
    status, body = fetch(f"{{httpbin}}/seen")
    assert "/get?mark" in body["seen"]

def test_outside_is_denied_and_named(httpbin):
    try:
        urllib.request.urlopen("http://127.0.0.2:{outside_port}/", timeout=5)
    except OSError:
        pass  # swallowed: strict mode fails the test anyway
"""


def test_httpbin_style_session_fixture(pytester, mode, outside):
    pytester.makeini("[pytest]\nsandlock_net = 127.0.0.1\n")
    pytester.makeconftest(HTTPBIN_CONFTEST)
    pytester.makepyfile(test_httpbin=HTTPBIN_TESTS.format(outside_port=outside.port))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sandlock-strict", *mode)
    result.assert_outcomes(passed=6, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_outside_is_denied_and_named _*",
            "sandlock strict: the test was denied 1 operation(s):",
            f"  connect tcp 127.0.0.2:{outside.port} pid * denied (EACCES: not in net policy)",
            "*sandlock denials*",
            "test_httpbin.py::test_outside_is_denied_and_named:",
            "FAILED test_httpbin.py::test_outside_is_denied_and_named - *",
        ]
    )
    time.sleep(0.1)
    assert outside.received == []
