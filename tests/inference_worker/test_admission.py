"""The admission queue in front of the batch: pure logic, no model."""

import pytest

from inference_worker.engine.admission import AdmissionQueue


def test_requests_beyond_the_limit_wait_in_the_order_they_came():
    queue: AdmissionQueue[str] = AdmissionQueue(max_active=2)
    assert queue.submit("a", "A") == [("a", "A")]
    assert queue.submit("b", "B") == [("b", "B")]
    assert queue.submit("c", "C") == []
    assert queue.submit("d", "D") == []
    assert queue.positions() == {"c": 1, "d": 2}
    assert queue.release("b") == [("c", "C")]
    assert queue.positions() == {"d": 1}
    assert queue.release("a") == [("d", "D")]
    assert queue.active_count == 2 and queue.waiting_count == 0


def test_waiting_requests_keep_the_order_their_messages_arrived_in_not_the_order_of_submits():
    """Task threads reach the engine in either order, and a rerun answer (its engine died)
    comes back later with its first arrival: each waits in its place by arrival."""
    queue: AdmissionQueue[str] = AdmissionQueue(max_active=1)
    assert queue.submit("running", "R", arrival=10.0) == [("running", "R")]
    queue.submit("third", "C", arrival=13.0)
    queue.submit("second", "B", arrival=12.0)
    queue.submit("also-third", "D", arrival=13.0)  # the same instant: the earlier submit goes first
    assert queue.positions() == {"second": 1, "third": 2, "also-third": 3}
    queue.submit("rerun", "A", arrival=11.0)
    assert queue.positions() == {"rerun": 1, "second": 2, "third": 3, "also-third": 4}
    assert queue.release("second") == []  # cancelled while waiting
    assert queue.release("running") == [("rerun", "A")]
    assert queue.release("rerun") == [("third", "C")]
    assert queue.positions() == {"also-third": 1}


def test_releasing_a_waiting_request_moves_the_others_up():
    queue: AdmissionQueue[int] = AdmissionQueue(max_active=1)
    queue.submit("a", 1)
    queue.submit("b", 2)
    queue.submit("c", 3)
    assert queue.release("b") == []
    assert queue.positions() == {"c": 1}


def test_a_request_cannot_be_submitted_twice():
    queue: AdmissionQueue[int] = AdmissionQueue(max_active=1)
    queue.submit("a", 1)
    with pytest.raises(ValueError):
        queue.submit("a", 1)


def test_limit_must_be_positive():
    with pytest.raises(ValueError):
        AdmissionQueue(max_active=0)
