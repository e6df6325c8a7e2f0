"""Writes about conversations, one module per actor. Consumers, views and the worker's tasks
call these; they hold the rules. Events to sockets leave after the commit
(`chatbot.events.send_event_on_commit`), and so do the generations handed to Celery.

- `customer`: what a customer's socket writes (their messages, stopping an answer).
- `generations`: a generation's life: enqueued, claimed and completed by a worker, cancelled,
  failed, given back to the queue when its worker or engine process died.
- `desk`: what staff write from the agents' desk (taking a conversation over).
"""
