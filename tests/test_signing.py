"""Signatures across the broker: bound to the message and to the task id."""

import pytest

from daemon.errors import WireError
from daemon.remote.signing import signed, verified

KEY = b"k" * 32


def test_a_signed_message_verifies_and_comes_back_without_its_signature():
    message = {"kind": "done", "version": 1, "document": {"summary": "Appel d'une mère pour son fils", "score": 4.5}}
    assert verified(signed(message, KEY, "task-1"), KEY, "task-1") == message


@pytest.mark.parametrize("tamper", [
    lambda m: {**m, "document": {**m["document"], "score": 5}},  # a value changed
    lambda m: {**m, "extra": 1},  # a field added
    lambda m: {k: v for k, v in m.items() if k != "signature"},  # unsigned
    lambda m: {**m, "signature": 42},
])
def test_a_changed_or_unsigned_message_is_refused(tamper):
    message = signed({"kind": "done", "version": 1, "document": {"score": 4}}, KEY, "task-1")
    with pytest.raises(WireError, match="not signed"):
        verified(tamper(message), KEY, "task-1")


def test_a_result_cannot_be_replayed_for_another_task_or_signed_with_another_key():
    message = signed({"kind": "done"}, KEY, "task-1")
    with pytest.raises(WireError):
        verified(message, KEY, "task-2")
    with pytest.raises(WireError):
        verified(message, b"x" * 32, "task-1")
    with pytest.raises(WireError, match="not an object"):
        verified("not a result", KEY, "task-1")
