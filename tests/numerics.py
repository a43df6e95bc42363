"""Comparisons that hold on every CPU: what two computation paths may legitimately differ in.

Two compiled programs for the same maths (a member trained alone or in a population,
vmapped or looped, on 1 or 4 devices) round differently: XLA fuses and orders sums per
program and per CPU (SIMD width, thread count). Continuous outputs then agree to a
tolerance, but a quantity behind an ``argmax`` can flip where two logits are nearly tied:
an accuracy may move by one example. These helpers allow exactly that, no more.
"""

import numpy as np

MAX_FLIPS = 2
"""Near-tied predictions that may flip between two roundings of the same network."""


def assert_same_accuracy(a, b, num_examples: int, max_flips: int = MAX_FLIPS, err_msg=""):
    """Accuracies (fractions over ``num_examples``) equal up to ``max_flips`` examples.

    A real difference between two paths (another network, other weights, a wrong member)
    moves an accuracy by many examples; a rounding difference by at most one or two.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    flips = np.abs(a - b) * num_examples
    assert np.all(flips <= max_flips + 1e-6), (
        f"{err_msg}: accuracies differ by {flips.max():.0f} of {num_examples} examples "
        f"(at most {max_flips} near-ties may flip): {a.tolist()} vs {b.tolist()}"
    )
