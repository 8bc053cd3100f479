"""A client never runs the same (session, round) twice (RoundGuard)."""

from __future__ import annotations

import json

import pytest

from securefed.errors import ConfigError, LocalProtocolError
from securefed.secagg import RoundGuard, SecAggClient, Stage
from tests.secagg.conftest import SESSION, config_for, federation, inputs_for


def test_claims_must_increase_per_session() -> None:
    guard = RoundGuard()
    guard.claim(SESSION, 3)
    for replay in (3, 2, 0):
        with pytest.raises(LocalProtocolError, match="already started"):
            guard.claim(SESSION, replay)
    assert guard.highest(SESSION) == 3
    guard.claim(SESSION, 4)
    guard.claim(bytes(32), 0)  # another session is independent
    assert guard.highest(SESSION) == 4


def test_state_survives_a_restart_as_json() -> None:
    guard = RoundGuard()
    guard.claim(SESSION, 7)
    restored = RoundGuard()
    restored.load_state_dict(json.loads(json.dumps(guard.state_dict())))
    with pytest.raises(LocalProtocolError):
        restored.claim(SESSION, 7)


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"version": 2, "highest_round": {}},
        {"version": 1},
        {"version": 1, "highest_round": {"zz": 1}},
        {"version": 1, "highest_round": {"00": 1}},
        {"version": 1, "highest_round": {SESSION.hex(): -1}},
        {"version": 1, "highest_round": {SESSION.hex(): True}},
    ],
)
def test_malformed_state_is_refused_and_leaves_the_guard_intact(state: dict[str, object]) -> None:
    guard = RoundGuard()
    guard.claim(SESSION, 1)
    with pytest.raises(ConfigError):
        guard.load_state_dict(state)
    assert guard.highest(SESSION) == 1


def test_client_with_a_guard_refuses_to_start_a_round_twice() -> None:
    fed = federation(5)
    config = config_for(fed)
    guard = RoundGuard()
    SecAggClient(config, index=0, identity=fed.client_keys[0], guard=guard).start(inputs_for(5)[0])
    again = SecAggClient(config, index=0, identity=fed.client_keys[0], guard=guard)
    with pytest.raises(LocalProtocolError, match="already started"):
        again.start(inputs_for(5)[0])
    assert again.stage is Stage.IDLE
