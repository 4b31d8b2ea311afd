"""How an encoded event leaves the process."""

from __future__ import annotations

from typing import Any


class TaskPublisher:
    """Sends each list of encoded events as one message of the events task.

    :param task: the Celery task that processes a list of encoded events.
    :param queue: the queue it goes to.
    """

    def __init__(self, task: Any, queue: str) -> None:
        self.task = task
        self.queue = queue

    def __call__(self, messages: list[str]) -> None:
        self.task.apply_async(args=(messages,), queue=self.queue, serializer="json")
