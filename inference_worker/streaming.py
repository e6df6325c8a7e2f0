"""Streaming one answer to its conversation's sockets: deltas coalesced into one event per flush
interval, the reasoning apart from the answer (to the staff group only), every frame marked with
the generation's attempt so that a page drops what a lost attempt streamed."""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chatbot.conversations import protocol
from inference_worker.engine.stream import IncrementalDecoder
from inference_worker.engine.types import EngineEvent

if TYPE_CHECKING:
    from inference_worker.publisher import EventPublisher


@dataclass
class AnswerStream:
    """Coalesces deltas: one event per flush interval instead of one per token. A bot answer
    streams to the customer's group (its reasoning to the staff group); an agent's suggested
    reply streams to the staff group only, and its reasoning nowhere."""

    publisher: EventPublisher
    group: str
    staff_group: str
    generation_id: int
    attempt: int
    interval_s: float
    suggestion: bool = False
    answer: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    last_flush: float = 0.0
    thinking_sent: bool = False
    # Whether a desk socket follows the conversation (`chatbot.desk.presence`, read with the
    # cancellation flags): the reasoning goes to the staff group only then, never to a channel
    # nobody reads. True until first read, so a follower misses nothing at the start.
    staff_watching: bool = True

    def set_staff_watching(self, watching: bool) -> None:
        self.staff_watching = watching

    def add(self, reasoning: str, answer: str) -> None:
        if reasoning:
            self.reasoning.append(reasoning)
        if answer:
            self.answer.append(answer)

    def send(self, frame: dict) -> Future | None:
        """A frame about the answer for whoever it streams to (built by the protocol module);
        a suggestion's customer-side frames (queued, started) go nowhere. Returns the publish's
        future, to wait on where an event must not be overtaken."""
        if self.suggestion:
            return None
        return self.publisher.publish(self.group, frame)

    def maybe_flush(self, *, force: bool = False) -> None:
        if not self.reasoning and not self.answer:
            return  # nothing to send: the next piece goes out as soon as it comes
        now = time.monotonic()
        if not force and now - self.last_flush < self.interval_s:
            return
        self.last_flush = now
        ids = {"generation_id": self.generation_id, "attempt": self.attempt}
        if self.suggestion:
            self.reasoning.clear()
            if self.answer:
                text = "".join(self.answer)
                self.publisher.publish(
                    self.staff_group, protocol.suggestion_delta(generation_id=self.generation_id, text=text)
                )
                self.answer.clear()
            return
        if self.reasoning:
            if not self.thinking_sent and not self.answer:
                self.send(protocol.answer_thinking(**ids))
                self.thinking_sent = True
            if self.staff_watching:
                self.publisher.publish(self.staff_group, protocol.reasoning_delta(text="".join(self.reasoning), **ids))
            self.reasoning.clear()
        if self.answer:
            self.send(protocol.answer_delta(text="".join(self.answer), **ids))
            self.answer.clear()


@dataclass
class GenerationSink:
    """Where the worker's stream pump hands one generation's progress (on the pump's thread)."""

    stream: AnswerStream
    decoder: IncrementalDecoder
    first_token_wall: float | None = None
    first_answer_wall: float | None = None  # the first answer text, after the reasoning
    admitted_wall: float | None = None

    def on_event(self, event: EngineEvent) -> None:
        if event.kind == "queued":
            self.stream.send(
                protocol.generation_queued(
                    generation_id=self.stream.generation_id, position=event.position, attempt=self.stream.attempt
                )
            )
        elif event.kind == "started":
            self.admitted_wall = time.time()

    def on_tokens(self, tokens: tuple[int, ...], *, final: bool) -> None:
        if self.first_token_wall is None and tokens:
            self.first_token_wall = time.time()
        reasoning, answer = self.decoder.update(tokens, final=final)
        if self.first_answer_wall is None and answer:
            self.first_answer_wall = time.time()
        self.stream.add(reasoning, answer)
        if final:
            self.stream.maybe_flush(force=True)

    def flush(self) -> None:
        self.stream.maybe_flush()
