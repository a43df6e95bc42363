"""Input shapes and class counts of the datasets a network can be built for.

Kept apart from ``nasjax.data`` so that building a network (``nasjax info``) needs no data.
"""

from __future__ import annotations

from typing import NamedTuple

from nasjax.errors import check_choice


class Task(NamedTuple):
    """What a classifier for a dataset looks like from outside."""

    input_shape: tuple[int, ...]  # one example, channels last
    num_classes: int

    @property
    def ndim(self) -> int:
        """Spatial dimensions: 1 for signals, 2 for images."""
        return len(self.input_shape) - 1


TASKS: dict[str, Task] = {
    "cifar10": Task((32, 32, 3), 10),
    "cifar100": Task((32, 32, 3), 100),
    "imagenet16": Task((16, 16, 3), 120),  # ImageNet16-120 of NAS-Bench-201
    "mnist1d": Task((40, 1), 10),
    "digits": Task((8, 8, 1), 10),
}


def get_task(dataset: str | Task) -> Task:
    """The ``Task`` of a dataset name (a clear error for unknown names), or ``dataset``
    itself when it already is one (your own data: ``nasjax.data.Dataset.task``)."""
    if isinstance(dataset, Task):
        return dataset
    check_choice("dataset", dataset, TASKS)
    return TASKS[dataset]
