"""The runtimes a search can time a model on (prunetune.runtimes.names)."""

from __future__ import annotations

import pytest

from prunetune.errors import UnknownNameError
from prunetune.runtimes.names import RUNTIME_DESCRIPTIONS, RUNTIMES, check_runtime


def test_every_runtime_is_described_and_checked_by_name():
    assert RUNTIMES == ("torch", "onnxruntime", "onnxruntime-int8")
    assert all(RUNTIME_DESCRIPTIONS[r] for r in RUNTIMES)
    assert [check_runtime(r) for r in RUNTIMES] == list(RUNTIMES)
    with pytest.raises(UnknownNameError, match="unknown runtime 'tensorrt'; known: onnxruntime"):
        check_runtime("tensorrt")
