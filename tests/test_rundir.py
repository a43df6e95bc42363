"""The run folder: refusals, the fingerprint, damaged checkpoints and logs, atomic JSON."""

import json
import os
import signal

import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import Interrupted, NasjaxError
from nasjax.rundir import (
    CHECKPOINT_DIR,
    RUN_CONFIG_FILE,
    RunDir,
    check_out_file,
    check_out_folder,
    write_json_atomic,
)

LOG = "results.jsonl"
CONFIG = {"seed": 3, "space": "nb201", "learning_rate": 0.05}


def tree(value=0):
    return {"a": jnp.arange(3) + value, "n": jnp.int32(2 + value)}


def open_run(out, config=CONFIG, resume=False, **kw):
    return RunDir.open(out, config, resume=resume, log_name=LOG, **kw)


def run_steps(out, steps, config=CONFIG, resume=False):
    """Opens ``out``, restores, logs one record and saves each of ``steps``."""
    with open_run(out, config, resume) as run:
        start, state = run.restore(tree())
        for step in steps:
            run.append([{"step": step}])
            run.save(step, tree(step))
    return start, state


def test_fresh_run_writes_its_config_with_the_first_checkpoint(tmp_path):
    with open_run(tmp_path) as run:
        assert run.restore(tree())[0] == 0
        assert not (tmp_path / RUN_CONFIG_FILE).exists()
        run.append([{"x": 1}])
        run.save(1, tree(1))
        saved = json.loads((tmp_path / RUN_CONFIG_FILE).read_text())
    assert saved["config"] == CONFIG and "nasjax_version" in saved
    assert (tmp_path / CHECKPOINT_DIR / "1").is_dir()


def test_folder_without_checkpoint_is_empty(tmp_path):
    (tmp_path / RUN_CONFIG_FILE).write_text('{"config": {"seed": 99}, "nasjax_version": "0"}')
    (tmp_path / LOG).write_text('{"stale": 1}\n')
    start, state = run_steps(tmp_path, [1], config={"seed": 5})
    assert start == 0
    assert json.loads((tmp_path / RUN_CONFIG_FILE).read_text())["config"] == {"seed": 5}
    assert (tmp_path / LOG).read_text() == '{"step": 1}\n'


def test_existing_run_is_refused_without_resume(tmp_path):
    run_steps(tmp_path, [1, 2])
    with pytest.raises(
        NasjaxError, match=r"already holds a run \(checkpoint of step 2\).*--resume"
    ):
        open_run(tmp_path)


def test_resume_with_changed_flags_names_each(tmp_path):
    run_steps(tmp_path, [1])
    changed = {**CONFIG, "seed": 5, "learning_rate": 0.1}
    with pytest.raises(NasjaxError) as err:
        open_run(tmp_path, changed, resume=True)
    message = str(err.value)
    assert "--seed 3 -> 5" in message and "--learning-rate 0.05 -> 0.1" in message
    assert "--space" not in message and "\n" not in message


def test_resume_continues_exactly(tmp_path):
    run_steps(tmp_path, [1, 2])
    with (tmp_path / LOG).open("a") as f:
        f.write('{"after the checkpoint": tr')  # a record past the last checkpoint
    with open_run(tmp_path, resume=True) as run:
        step, state = run.restore(tree())
        assert step == 2 and int(state["n"]) == 4
        np.testing.assert_array_equal(state["a"], [2, 3, 4])
        assert run.read_log() == [{"step": 1}, {"step": 2}]


def test_restored_arrays_are_placed_as_the_fresh_state(tmp_path):
    """Uncommitted where the fresh state is (jit would key another program on committed
    arguments: a resumed run would compile its step again), committed where it is."""
    import jax

    device = jax.devices()[0]
    fresh = {"a": jnp.arange(3), "key": jax.random.key(1), "on": jax.device_put(1.0, device)}
    with open_run(tmp_path) as run:
        run.save(1, fresh)
    with open_run(tmp_path, resume=True) as run:
        _, state = run.restore(fresh)
    assert not state["a"].committed and not state["key"].committed and state["on"].committed
    np.testing.assert_array_equal(state["a"], fresh["a"])
    assert jax.random.key_impl(state["key"]) == jax.random.key_impl(fresh["key"])
    np.testing.assert_array_equal(
        jax.random.key_data(state["key"]), jax.random.key_data(fresh["key"])
    )


def test_resume_without_checkpoint_starts_anew_with_a_note(tmp_path, capsys):
    out = tmp_path / "new"
    start, _ = run_steps(out, [1], resume=True)
    err = capsys.readouterr().err
    assert start == 0
    assert err == f"note: {out} holds no checkpoint; starting a new run\n"


def corrupt(out, step):
    """Garbage over every metadata file and truncated data files of one checkpoint."""
    for path in (out / CHECKPOINT_DIR / str(step)).rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage{" + path.read_bytes()[: path.stat().st_size // 3])


def test_damaged_latest_checkpoint_falls_back_to_the_older(tmp_path, capsys):
    run_steps(tmp_path, [1, 2])
    corrupt(tmp_path, 2)
    with open_run(tmp_path, resume=True) as run:
        step, state = run.restore(tree())
        assert step == 1 and int(state["n"]) == 3
        assert run.read_log() == [{"step": 1}]
        run.append([{"step": 2}])  # the loop goes on: saving over the damaged step works
        run.save(2, tree(2))
        run.save(3, tree(3))
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"warning: checkpoint 2 in {tmp_path} is damaged (")
    assert err[0].endswith("; restored step 1")
    step, state = run_steps(tmp_path, [], resume=True)
    assert step == 3 and int(state["n"]) == 5


def test_flipped_bytes_are_caught_by_the_checksum(tmp_path, capsys):
    weights = np.random.default_rng(0).normal(size=(2, 3000)).astype(np.float32)
    with open_run(tmp_path) as run:
        for step in (1, 2):
            run.save(step, {"w": jnp.asarray(weights[step - 1])})
    files = [p for p in (tmp_path / CHECKPOINT_DIR / "2").rglob("*") if p.parent.name == "d"]
    data = max(files, key=lambda p: p.stat().st_size)  # the array's bytes, read silently
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    with open_run(tmp_path, resume=True) as run:
        step, state = run.restore({"w": jnp.zeros(3000)})
    err = capsys.readouterr().err
    assert step == 1
    np.testing.assert_array_equal(state["w"], weights[0])
    assert "checkpoint 2" in err and "checksum mismatch" in err


def test_every_checkpoint_damaged_is_one_line(tmp_path):
    run_steps(tmp_path, [1, 2])
    corrupt(tmp_path, 1)
    corrupt(tmp_path, 2)
    with open_run(tmp_path, resume=True) as run:
        with pytest.raises(NasjaxError, match="every checkpoint in .*checkpoints is damaged"):
            run.restore(tree())


def test_garbage_log_line_is_named(tmp_path):
    run_steps(tmp_path, [1, 2, 3])
    lines = (tmp_path / LOG).read_text().splitlines()
    lines[1] = "not json at all"
    (tmp_path / LOG).write_text("\n".join(lines) + "\n")
    with open_run(tmp_path, resume=True) as run:
        with pytest.raises(NasjaxError, match=r"results.jsonl line 2 is not valid JSON: not json"):
            run.restore(tree())


def test_truncate_keeps_the_first_lines(tmp_path):
    with open_run(tmp_path) as run:
        run.append([{"i": i} for i in range(5)])
        run.truncate(2)
        assert run.read_log() == [{"i": 0}, {"i": 1}] and run.num_lines == 2
        with pytest.raises(NasjaxError, match="has 2 lines but"):
            run.truncate(4)


def test_out_must_be_a_writable_folder(tmp_path):
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(NasjaxError, match="file is a file; choose another --out"):
        open_run(file)
    with pytest.raises(NasjaxError, match="cannot use .*file/sub as a folder: .*file is a file"):
        open_run(file / "sub")


def test_no_folder_keeps_nothing(tmp_path):
    with open_run(None) as run:
        step, state = run.restore(tree(1))
        assert step == 0 and int(state["n"]) == 3
        run.append([{"x": 1}])
        run.save(1, tree())
        assert run.read_log() == []


def test_check_is_silent_and_leaves_no_files(tmp_path, capsys):
    RunDir.check(tmp_path / "a", CONFIG, resume=True)
    assert capsys.readouterr().err == ""
    assert {p.name for p in (tmp_path / "a").iterdir()} <= {CHECKPOINT_DIR}
    run_steps(tmp_path / "a", [1])
    with pytest.raises(NasjaxError, match="--seed 3 -> 4"):
        RunDir.check(tmp_path / "a", {**CONFIG, "seed": 4}, resume=True)


def test_write_json_atomic_leaves_no_partial_file(tmp_path):
    path = tmp_path / "summary.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})  # not serialisable: fails before rename
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_ctrl_c_in_the_loop_is_one_line_naming_the_step(tmp_path):
    with pytest.raises(Interrupted) as info:
        with open_run(tmp_path, unit="generation") as run:
            run.save(1, tree(1))
            raise KeyboardInterrupt
    assert str(info.value) == (
        f"interrupted at generation 2 (1 saved in {tmp_path}); resume with --resume"
    )
    step, _ = run_steps(tmp_path, [], resume=True)
    assert step == 1
    with pytest.raises(KeyboardInterrupt) as info:  # no folder: nothing to name
        with open_run(None):
            raise KeyboardInterrupt
    assert not isinstance(info.value, Interrupted)


def test_ctrl_c_during_a_checkpoint_waits_for_it(tmp_path, monkeypatch):
    """SIGINT arriving while orbax writes is held until the checkpoint is complete."""
    with open_run(tmp_path) as run:
        manager_save = run._manager.save

        def save_hit_by_ctrl_c(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGINT)
            return manager_save(*args, **kwargs)

        monkeypatch.setattr(run._manager, "save", save_hit_by_ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            run.save(1, tree(1))
        assert run.latest == 1
    step, state = run_steps(tmp_path, [], resume=True)
    assert step == 1 and int(state["n"]) == 3


def test_out_checks_before_any_work_leave_nothing(tmp_path):
    check_out_folder(tmp_path / "a" / "b", create=False)
    check_out_file(tmp_path / "c" / "results.json")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(NasjaxError, match="it is a folder; choose another --out"):
        check_out_file(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NasjaxError, match="file is a file"):
        check_out_file(tmp_path / "file" / "results.json")
