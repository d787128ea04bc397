"""The runner interface under shared use: OpenVINO from two threads, NaN into OpenVINO, torch's process-wide
threads with runners closed in any order, the weights a bare file records, and the threads option's type."""

import threading
import time

import numpy as np
import pytest

import runtime
from export.artifacts import TensorSpec
from runtime.backends.base import InputMismatchError, Runner


def errors_from_threads(work, args) -> list[Exception]:
    """Run ``work(arg)`` on one thread per arg, all at once; what they raised (a thread's exception would otherwise
    only be a warning, and the test's own assert would pass)."""
    errors = []

    def guarded(arg):
        try:
            work(arg)
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=guarded, args=(arg,)) for arg in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


class SlowRequest:
    """An InferRequest that pauses after each inference, before its outputs are read: without the runner's lock,
    the other thread's call lands in that gap and the outputs read are its own."""

    def __init__(self, request):
        self._request = request

    def infer(self, *args, **kwargs):
        result = self._request.infer(*args, **kwargs)
        time.sleep(0.005)
        return result

    def __getattr__(self, name):
        return getattr(self._request, name)


def test_openvino_from_two_threads_returns_each_call_its_own_outputs(artifact, photos):
    pytest.importorskip("openvino")
    batches = [photos[:1], photos[1:5]]
    with runtime.load(artifact, "openvino", threads=1) as runner:
        expected = [runner.infer(b) for b in batches]
        runner._request = SlowRequest(runner._request)
        wrong = []

        def hammer(index):
            for _ in range(40):
                out = runner.infer(batches[index])
                if out.shape != expected[index].shape or not np.allclose(out, expected[index], atol=1e-5):
                    wrong.append(index)

        errors = errors_from_threads(hammer, (0, 1))
    assert errors == [] and wrong == []  # one shared InferRequest returned the other thread's outputs before the lock


def test_openvino_refuses_nan_input_it_would_turn_into_finite_logits(artifact, photos):
    pytest.importorskip("openvino")
    batch = photos[:2].copy()
    batch[0, 0, 5, 5] = np.nan
    with runtime.load(artifact, "openvino") as runner, pytest.raises(InputMismatchError, match="1 NaN/Inf values"):
        runner.infer(batch)


@pytest.mark.parametrize("first_closes", ["first-opened", "last-opened"])
def test_torch_threads_come_back_whatever_order_runners_close(artifact, first_closes):
    torch = pytest.importorskip("torch")
    outside = torch.get_num_threads()
    torch.set_num_threads(3)  # a count no runner asks for: a wrong restore cannot land on it by chance
    try:
        first = runtime.load(artifact, "torch", threads=2).activate()
        second = runtime.load(artifact, "torch", threads=1).activate()
        closing, staying = (first, second) if first_closes == "first-opened" else (second, first)
        closing.deactivate()
        assert torch.get_num_threads() == staying.threads  # the runner still open runs on the count it asked for
        staying.deactivate()
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(outside)


def test_a_shared_setting_holds_the_latest_open_runners_value_and_restores_the_one_before():
    from runtime.backends.pt import SharedSetting

    value = ["before"]
    setting = SharedSetting(lambda: value[0], lambda v: value.__setitem__(0, v))
    a, b, c = object(), object(), object()
    setting.hold(a, "a")
    setting.hold(b, "b")
    setting.hold(c, "c")
    setting.release(b)
    assert value == ["c"]
    setting.release(c)
    assert value == ["a"]
    setting.release(c)  # released twice, or never held: nothing changes
    assert value == ["a"]
    setting.release(a)
    assert value == ["before"]


def test_a_shared_setting_held_and_released_on_two_threads_comes_back_to_the_value_before():
    """Runners open and close on any thread. Without the lock, a runner opened while the last one was still writing
    back the value from before read the closing runner's value as its own "before", and restored that."""
    import time

    from runtime.backends.pt import SharedSetting

    value = ["before"]

    def slow_write(v):
        time.sleep(0.0002)  # a closing runner is still writing the value back while the other thread opens
        value[0] = v

    setting = SharedSetting(lambda: value[0], slow_write)

    def open_and_close(i):
        for _ in range(200):
            owner = object()
            setting.hold(owner, i)
            time.sleep(0.0001)
            setting.release(owner)

    assert errors_from_threads(open_and_close, range(2)) == []
    assert value == ["before"] and setting._holders == []


@pytest.mark.parametrize("threads", [2.5, True, "2", 0])
def test_threads_must_be_a_whole_number_on_every_backend(artifact, threads):
    for backend in ("onnxruntime", "openvino", "torch"):
        with pytest.raises(ValueError, match="threads must be an integer ≥ 1"):
            runtime.load(artifact, backend, threads=threads)


def test_threads_past_the_usable_cpus_are_capped_with_one_warning(artifact, caplog):
    from runtime.backends.source_runner import usable_cpus

    cpus = usable_cpus()
    for backend in ("onnxruntime", "openvino"):
        caplog.clear()
        assert runtime.load(artifact, backend, threads=cpus + 998).threads == cpus
        assert [r.getMessage() for r in caplog.records] == [
            f"{cpus + 998} threads asked for, on {cpus} usable CPUs: using {cpus}"
        ]
        assert runtime.load(artifact, backend, threads=cpus).threads == cpus


class SharedBufferRunner(Runner):
    """One output buffer for every call, filled, then read back after a pause: the state a GPU runner shares."""

    name = "shared-buffer"
    shares_call_state = True

    input_spec = TensorSpec("input", ("batch", 1, 1, 1))
    output_spec = TensorSpec("output", ("batch", 1))

    def _activate_impl(self):
        self._buffer = np.zeros((8, 1), np.float32)

    def _infer_impl(self, batch):
        self._buffer[: len(batch)] = batch.reshape(len(batch), 1)
        time.sleep(0.002)
        return self._buffer[: len(batch)].copy()


class AnnouncingLock:
    """The runner's call lock, announcing when a thread starts to wait on it (sleeping instead left a thread on a
    busy machine short of the lock, testing another path)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.waited_on = threading.Event()

    def __enter__(self):
        if not self._lock.acquire(blocking=False):
            self.waited_on.set()
            self._lock.acquire()
        return self

    def __exit__(self, *exc):
        self._lock.release()


def test_a_runner_that_shares_call_state_takes_calls_one_at_a_time_and_closes_after_them():
    runner = SharedBufferRunner().activate()
    runner._call_lock = AnnouncingLock()
    wrong = []

    def call(value):
        for _ in range(20):
            if not (runner.infer(np.full((2, 1, 1, 1), value, np.float32)) == value).all():
                wrong.append(value)

    assert errors_from_threads(call, (1.0, 2.0)) == [] and wrong == []
    closing = threading.Thread(target=runner.deactivate)
    with runner._call_lock:  # a call in flight: the close waits for it; a call after the close is refused
        closing.start()
        assert runner._call_lock.waited_on.wait(timeout=60)
        assert runner.is_active
    closing.join()
    with pytest.raises(RuntimeError, match="not active"):
        runner.infer(np.zeros((1, 1, 1, 1), np.float32))


def test_a_call_waiting_on_a_runner_closed_meanwhile_is_refused():
    runner = SharedBufferRunner().activate()
    runner._call_lock = AnnouncingLock()
    batch = np.ones((1, 1, 1, 1), np.float32)
    errors = []

    def call():
        try:
            runner.infer(batch)
        except RuntimeError as err:
            errors.append(err)

    with runner._call_lock:  # a call in flight; the next one passes the active check and waits here
        waiting = threading.Thread(target=call)
        waiting.start()
        assert runner._call_lock.waited_on.wait(timeout=60)
        runner.is_active = False  # what deactivate does, under the same lock, while the call waits
    waiting.join()
    assert len(errors) == 1 and "was closed while this call waited" in str(errors[0])
