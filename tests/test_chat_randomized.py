"""Randomized delivery check (PROTOCOL.md §5.2-5.4) on one node: one agent and two
customers, every participant on two connections, concurrent senders with random small
delays, while each customer's second connection disconnects and reconnects over and
over (sending `delivered` for what it saw before leaving, or not).  The scenario and
its checks are in harness/randomized.py.

The seed is printed; set CHAT_RANDOM_SEED to repeat a run (each task draws from its
own generator, so the choices do not depend on how the tasks interleave) and
CHAT_RANDOM_ROUNDS for the number of rounds (default 3).
"""

from __future__ import annotations

import pytest

from harness import randomized
from harness.chat import MANUAL

BASE_SEED = randomized.base_seed()
ROUNDS = randomized.rounds("CHAT_RANDOM_ROUNDS")
LOAD = randomized.Load(agent_sends=((40, 50), (30, 40)), customer_sends=(20, 28), flap_quota=15,
                       min_reconnects=10, min_total=120)


@pytest.mark.deadline(75)
@pytest.mark.parametrize("round_no", range(ROUNDS))
async def test_randomized_concurrent_senders_and_reconnects(pool, round_no):
    await randomized.run_round("randomized chat", randomized.one_node(pool(MANUAL)), LOAD, BASE_SEED, round_no)
