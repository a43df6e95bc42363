"""Typed flags, one-line parse errors, the entry wrapper's exit statuses, the memory check."""

import argparse
import gc
import math
import time

import pytest

from nasjax import flags
from nasjax.errors import Interrupted, NasjaxError


@pytest.mark.parametrize(
    "parse, text, value",
    [
        (flags.positive_int, "1", 1),
        (flags.nonneg_int, "0", 0),
        (flags.at_least(3), "3", 3),
        (flags.seed, "4294967295", 2**32 - 1),
        (flags.positive_float, "1e-9", 1e-9),
        (flags.nonneg_float, "0", 0.0),
        (flags.fraction, "1", 1.0),
        (flags.float_in(-1.0, 1.0), "-1", -1.0),
        (flags.list_of(flags.nonneg_float), "0.5, 2", [0.5, 2.0]),
    ],
)
def test_types_accept_their_range(parse, text, value):
    assert parse(text) == value


@pytest.mark.parametrize(
    "parse, text, message",
    [
        (flags.positive_int, "0", "must be >= 1, got 0"),
        (flags.positive_int, "1.5", "must be an integer >= 1, got '1.5'"),
        (flags.at_least(2), "-3", "must be >= 2, got -3"),
        (flags.seed, "-1", "must be in 0..4294967295, got -1"),
        (flags.seed, "4294967296", "must be in 0..4294967295, got 4294967296"),
        (flags.positive_float, "-1", "must be > 0, got -1"),
        (flags.positive_float, "0", "must be > 0, got 0"),
        (flags.positive_float, "nan", "must be a finite number > 0, got nan"),
        (flags.nonneg_float, "-inf", "must be a finite number >= 0, got -inf"),
        (flags.positive_float, "fast", "must be a number > 0, got 'fast'"),
        (flags.fraction, "0", "must be in (0, 1], got 0"),
        (flags.fraction, "1.5", "must be in (0, 1], got 1.5"),
        (flags.list_of(flags.nonneg_float), "1,-2", "must be >= 0, got -2 (in '1,-2')"),
        (flags.list_of(flags.nonneg_float), "1,,2", "must be a comma-separated list, got '1,,2'"),
    ],
)
def test_types_refuse_with_the_value_and_the_range(parse, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse(text)
    assert str(info.value) == message


def parser():
    p = flags.OneLineErrorParser(prog="t")
    p.add_argument("--steps", type=flags.positive_int, default=10)
    p.add_argument("--lr", type=flags.positive_float, default=0.1)
    p.add_argument("--smoke", action="store_true")
    return p


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
        (["--lr"], "argument --lr: expected one argument"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_parse_errors_are_one_nasjax_error(argv, message):
    with pytest.raises(NasjaxError) as info:
        parser().parse_args(argv)
    assert str(info.value) == message


def test_parse_sized_caps_smoke_sizes_after_the_checks():
    assert parser().parse_sized(["--steps", "50", "--smoke"], {"steps": 2}).steps == 2
    assert parser().parse_sized(["--steps", "50"], {"steps": 2}).steps == 50


def run(body, capsys, **kw):
    status = flags.run_entry(body, **kw)
    return status, capsys.readouterr().err.strip().splitlines()


def raising(error):
    def body():
        raise error

    return body


def test_run_entry_statuses_and_lines(capsys):
    assert run(lambda: None, capsys) == (0, [])
    assert run(raising(NasjaxError("bad")), capsys, prefix="nasjax: ") == (
        2,
        ["nasjax: error: bad"],
    )
    assert run(raising(KeyboardInterrupt()), capsys) == (130, ["interrupted"])
    assert run(raising(KeyboardInterrupt()), capsys, resumable=lambda: True) == (
        130,
        ["interrupted; resume with --resume"],
    )
    line = "interrupted at generation 3 (2 saved in OUT); resume with --resume"
    assert run(raising(Interrupted(line)), capsys, prefix="nasjax: ") == (
        130,
        [f"nasjax: {line}"],
    )


def test_a_ctrl_c_swallowed_by_a_gc_callback_still_stops_the_run(capsys):
    """Python drops an exception raised in a gc callback (JAX runs one at every
    collection) with an 'Exception ignored' traceback; the entry raises it again."""
    pending = [True]

    def callback(phase, info):
        if phase == "start" and pending:
            pending.clear()
            raise KeyboardInterrupt  # where a Ctrl-C can land

    def body():
        gc.collect()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the re-raised Ctrl-C stops this loop
            pass

    gc.callbacks.append(callback)
    try:
        status, err = run(body, capsys)
    finally:
        gc.callbacks.remove(callback)
    assert (status, err) == (130, ["interrupted"])


def test_check_memory_refuses_what_does_not_fit():
    flags.check_memory("--seeds", 10, 1024)  # 10 KiB fit
    available = flags.available_memory()
    count = math.ceil(available / 2**20)  # MiB each: twice half of what is available
    with pytest.raises(NasjaxError) as info:
        flags.check_memory("--seeds", count, 2**20)
    message = str(info.value)
    assert message.startswith(f"--seeds {count} would need ~")
    assert f"GiB; at most {int(available / 2 // 2**20)} fit in half of the " in message
