"""What the web and the rollback switch read from a worker's heartbeat (pure logic)."""

from chatbot.serving.heartbeats import WorkerStatus


def status(state: str, *, since: float = 1000.0, at: float = 1010.0) -> WorkerStatus:
    return WorkerStatus(
        name="w", variants={"v": {"state": state, "detail": "", "since": since}}, running=0, waiting=0, reported_at=at
    )


def test_a_loading_variant_takes_messages_for_a_while_but_is_not_a_switch_target(settings):
    settings.WORKER_LOADING_GRACE_S = 120
    assert status("loading", at=1010.0).takes_messages("v")  # they wait in its queue for the load
    assert not status("loading", at=1121.0).takes_messages("v")  # a load that hangs: customers are told
    assert not status("loading").can_serve("v")  # the switch and the admin want it loaded or checked


def test_ready_and_standby_serve_and_a_failed_or_unknown_variant_does_not():
    for state in ("ready", "standby"):
        assert status(state).can_serve("v") and status(state).takes_messages("v")
    assert not status("failed").takes_messages("v")
    assert not status("ready").takes_messages("other")


def test_a_heartbeat_reads_back_as_it_was_written_and_a_garbled_one_reads_as_none():
    written = status("ready")
    assert WorkerStatus.decode("w", written.encode()) == written
    assert WorkerStatus.decode("w", "not json") is None
    assert WorkerStatus.decode("w", '{"running": "many"}') is None
