from dataclasses import dataclass
from typing import Literal

import pytest

from neuralrender.config import from_dict, to_dict
from neuralrender.errors import ConfigError
from neuralrender.train.config import TrainConfig


@dataclass
class C:
    a: int = 1
    b: float = 2.0
    mode: Literal["x", "y"] = "x"
    pair: tuple[float, float] = (0.1, 0.2)
    name: str | None = None
    flag: bool = False


def test_round_trip_and_coercion():
    c = from_dict(C, {"a": "3", "b": "0.5", "mode": "y", "pair": "1 2", "flag": "true"})
    assert (c.a, c.b, c.mode, c.pair, c.flag) == (3, 0.5, "y", (1.0, 2.0), True)
    assert from_dict(C, to_dict(c)) == c


@pytest.mark.parametrize("data, needle", [
    ({"aa": 1}, "unknown key 'aa' (did you mean 'a'?)"),
    ({"mode": "z"}, "is not one of ['x', 'y']"),
    ({"a": "many"}, "cannot read 'many' as int"),
    ({"pair": [1, 2, 3]}, "needs 2 values"),
])
def test_errors_name_the_key(data, needle):
    with pytest.raises(ConfigError, match=None) as e:
        from_dict(C, data)
    assert needle in str(e.value)


def test_train_config_defaults():
    t = from_dict(TrainConfig, {})
    assert t.steps > 0 and t.seed == 0
