"""bench.jsonio.write_json: plain JSON from numpy values, atomic replacement, no temporary file left behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.jsonio import write_json


def test_writes_numpy_scalars_and_tuples_as_plain_json(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "r.json"
    write_json(path, {"mre": np.float32(1.5), "n": np.int64(3), "size": (256, 320)})
    assert json.loads(path.read_text()) == {"mre": 1.5, "n": 3, "size": [256, 320]}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    write_json(path, {"a": 1})
    with pytest.raises(TypeError, match="not JSON: object"):
        write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
