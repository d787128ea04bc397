"""ModelServer.start starts Triton again when PyTriton's instances lose their start-up handshake race, and only then."""

import logging
from types import SimpleNamespace

import pytest

from runtime.pytriton_startup import LOAD_ATTEMPTS, handshake_race
from runtime.serve import ModelServer
from runtime.serve_config import ServeConfig
from tests.serve.conftest import INPUT, OUTPUT

InferenceServerException = pytest.importorskip("tritonclient.utils").InferenceServerException


def handshake_failure(stub_error: str) -> Exception:
    """Triton's answer when a second instance's stub fails to read instance 0's handshake socket (the CI log's text,
    2026-12-07, with the stub's error line given)."""
    return InferenceServerException(
        "[400] load failed for model 'r18': version 1 is at UNAVAILABLE state: Internal: TritonModelException: Model "
        'initialize error: Traceback (most recent call last):\n  File "/tmp/folderE1xH25/1/model.py", line 425, in '
        "initialize\n    inference_handler_config = get_config_from_handshake_server(handshake_socket)\n"
        f"{stub_error}\n"
    )


# what the suite's server fixture got on a busy 2-core machine, and the race's other outcome
REFUSED = handshake_failure("ConnectionRefusedError: [Errno 111] Connection refused")
LATE = handshake_failure("TimeoutError: Timeout occurred while waiting for config file /tmp/w/r18-config.sock")
REAL_FAILURE = InferenceServerException(
    "[400] load failed for model 'r18': version 1 is at UNAVAILABLE state: Internal: ModuleNotFoundError: "
    "No module named 'numpy'"
)


def test_only_the_handshake_race_counts_as_one():
    assert handshake_race(REFUSED) and handshake_race(LATE)
    assert not handshake_race(REAL_FAILURE)
    assert not handshake_race(ConnectionRefusedError("[Errno 111] Connection refused"))  # a client's, not the stubs'


def server_failing(monkeypatch, errors):
    """A ModelServer whose single start fails with each of ``errors`` in turn, then succeeds; and its list of calls."""
    runner = SimpleNamespace(input_spec=INPUT, output_spec=OUTPUT)
    server, calls, pending = ModelServer([runner], config=ServeConfig(model_name="m")), [], list(errors)

    def start_once():
        calls.append(len(calls) + 1)
        if pending:
            raise pending.pop(0)
        return server

    monkeypatch.setattr(server, "_start_once", start_once)
    return server, calls


def test_a_lost_race_is_started_again_with_a_warning(monkeypatch, caplog):
    server, calls = server_failing(monkeypatch, [REFUSED, LATE])
    with caplog.at_level(logging.WARNING, logger="runtime.serve"):
        assert server.start() is server
    assert calls == [1, 2, 3]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "handshake raced" in warnings[0] and f"attempt 3 of {LOAD_ATTEMPTS}" in warnings[1]


def test_a_real_load_failure_is_raised_at_once(monkeypatch):
    server, calls = server_failing(monkeypatch, [REAL_FAILURE])
    with pytest.raises(InferenceServerException, match="No module named"):
        server.start()
    assert calls == [1]


def test_the_race_lost_every_time_is_raised_after_the_last_attempt(monkeypatch):
    server, calls = server_failing(monkeypatch, [REFUSED] * LOAD_ATTEMPTS)
    with pytest.raises(InferenceServerException, match="Connection refused"):
        server.start()
    assert calls == list(range(1, LOAD_ATTEMPTS + 1))
