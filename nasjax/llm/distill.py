"""Knowledge distillation of a pruned LLaMA from its dense teacher, and the same shape
trained from scratch, with checkpoints and exact resume.

Minitron's recipe (Muralidharan et al. 2024, "Compact Language Models via Pruning and
Knowledge Distillation"; Sreenivas et al. 2024, "LLM Pruning and Distillation in
Practice: The Minitron Approach"): the pruned student learns the dense teacher's
next-token distribution with the logit-only loss

    ``KL(p_teacher || p_student) = sum_v p_t(v) (log p_t(v) - log p_s(v))``

at temperature 1, averaged over every token of the batch. The teacher's logits are
computed in the same jitted step as the student's (:func:`nasjax.llm.llama.forward`, no
gradient), so no ``[tokens, 49152]`` logits are ever stored. The student is any params
pytree :mod:`nasjax.llm.llama` runs (stacked blocks, or a list of differently shaped
blocks) with the teacher's :class:`~nasjax.llm.llama.LlamaConfig`. Minitron compares with
the same shape trained from random initialisation on the same tokens: :func:`init_like`.

Optimiser: AdamW (betas 0.9, 0.95) after global-norm clipping, a linear warm-up to the
peak learning rate then a cosine decay to ``final_lr`` x peak, read one step ahead
(step ``i`` uses the schedule at ``i + 1``) so that the first step is never a zero-lr
step and the last one is at the final rate. The defaults (peak 3e-4, 5 % warm-up, no
weight decay, clip 1.0) suit *repairing* a pruned 135M model on a few tens of thousands
of tokens; Minitron's 1e-4 peak is for billions. Tokens come from the calibration text
only (:func:`calibration_stream`; the validation text is never trained on), cut into
non-overlapping ``seq_len`` windows whose order is a fresh permutation per pass, drawn
from an explicit seed: batch ``i`` is a pure function of ``(seed, i)``, which with the
checkpointed optimiser state makes a resumed run bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from nasjax.errors import NasjaxError, check_choice, check_positive
from nasjax.llm.corpus import Encoder, Windows, calibration_corpus
from nasjax.llm.evaluate import evaluate
from nasjax.llm.llama import LlamaConfig, Params, count_params, forward
from nasjax.rundir import RunDir

LOG_FILE = "distill.jsonl"
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Settings of one distillation (or from-scratch) run; every field changes results.

    Attributes:
      tokens: the token budget; the run takes ``tokens // (batch * seq_len)`` steps.
      batch: windows per step.
      micro_batch: windows per forward/backward pass inside a step (gradients summed
        over ``batch // micro_batch`` passes): memory only, up to float rounding. 1 keeps
        a 135M student's step near 2.5 GB on a CPU; raise it on an accelerator.
      seq_len: tokens per window (every one is a distillation target).
      lr: peak learning rate.
      warmup: fraction of the steps spent warming up linearly, in [0, 0.5].
      final_lr: the cosine decay's end, as a fraction of ``lr``, in [0, 1].
      weight_decay: AdamW's decoupled weight decay (on every parameter).
      clip: global-norm gradient clipping (0: none).
      seed: the order of the training windows.
      eval_every: validation perplexity every this many steps (0: only after the last).
      save_every: a checkpoint every this many steps (and after the last).
      dtype: the matmuls' compute dtype, ``"float32"`` or ``"bfloat16"``.
    """

    tokens: int = 16_384
    batch: int = 4
    micro_batch: int = 1
    seq_len: int = 256
    lr: float = 3e-4
    warmup: float = 0.05
    final_lr: float = 0.1
    weight_decay: float = 0.0
    clip: float = 1.0
    seed: int = 0
    eval_every: int = 0
    save_every: int = 4
    dtype: str = "float32"

    def __post_init__(self) -> None:
        check_positive(tokens=self.tokens, batch=self.batch, seq_len=self.seq_len)
        check_positive(save_every=self.save_every, micro_batch=self.micro_batch)
        if self.batch % self.micro_batch:
            raise NasjaxError(
                f"micro_batch {self.micro_batch} must divide batch {self.batch}; valid: "
                + ", ".join(str(d) for d in range(1, self.batch + 1) if self.batch % d == 0)
            )
        check_choice("dtype", self.dtype, DTYPES)
        ranges = {
            "lr": (self.lr, 0.0, math.inf, "> 0"),
            "warmup": (self.warmup, 0.0, 0.5, "in [0, 0.5]"),
            "final_lr": (self.final_lr, 0.0, 1.0, "in [0, 1]"),
            "weight_decay": (self.weight_decay, 0.0, math.inf, ">= 0"),
            "clip": (self.clip, 0.0, math.inf, ">= 0 (0: no clipping)"),
        }
        for name, (value, low, high, valid) in ranges.items():
            ok = isinstance(value, (int, float)) and low <= value <= high and value == value
            if not ok or (name == "lr" and value == 0):
                raise NasjaxError(f"{name} must be {valid}, got {value!r}")
        if isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int):
            raise NasjaxError(f"eval_every must be an integer >= 0, got {self.eval_every!r}")
        if self.eval_every < 0:
            raise NasjaxError(f"eval_every must be an integer >= 0, got {self.eval_every!r}")
        if self.steps < 1:
            raise NasjaxError(
                f"tokens {self.tokens} is less than one step of batch {self.batch} x seq_len "
                f"{self.seq_len} = {self.batch * self.seq_len} tokens"
            )

    @property
    def steps(self) -> int:
        """Optimiser steps: ``tokens // (batch * seq_len)``."""
        return self.tokens // (self.batch * self.seq_len)


class DistillResult(NamedTuple):
    """What :func:`distill` returns.

    Attributes:
      params: the trained student.
      log: one record per step (``step``, ``tokens``, ``loss``, ``lr``, ``wall_s``, and
        ``val_ppl`` at evaluation steps), plus a step-0 record with the zero-shot
        ``val_ppl`` when ``eval_every > 0``: the distillation curve.
      ppl: validation perplexity after the last step.
      tokens_per_s: training tokens per second of this call's steps after its first
        (which compiles); NaN when it ran fewer than two.
    """

    params: Params
    log: list[dict]
    ppl: float
    tokens_per_s: float


def kl_to_teacher(teacher_logits: jax.Array, student_logits: jax.Array) -> jax.Array:
    """Forward KL ``KL(p_teacher || p_student)`` in nats at temperature 1, averaged over
    every position of ``[..., V]`` logits (exactly 0 when the logits are equal)."""
    log_t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32), axis=-1)
    log_s = jax.nn.log_softmax(student_logits.astype(jnp.float32), axis=-1)
    return jnp.mean(jnp.sum(jnp.exp(log_t) * (log_t - log_s), axis=-1))


def distill_loss(
    student: Params,
    teacher: Params,
    tokens: jax.Array,
    config: LlamaConfig,
    dtype: Any = jnp.float32,
) -> jax.Array:
    """The distillation loss of ``int32[B, T]`` tokens: :func:`kl_to_teacher` of both
    models' logits at every position, the teacher's without gradient."""
    teacher_logits = jax.lax.stop_gradient(forward(teacher, tokens, config, dtype))
    return kl_to_teacher(teacher_logits, forward(student, tokens, config, dtype))


def make_optimizer(config: DistillConfig) -> optax.GradientTransformation:
    """Clipping then AdamW on the warm-up + cosine schedule (see the module docstring)."""
    steps = config.steps
    base = optax.warmup_cosine_decay_schedule(
        0.0, config.lr, round(config.warmup * steps), steps, config.final_lr * config.lr
    )
    adamw = optax.adamw(
        lambda count: base(count + 1), b1=0.9, b2=0.95, weight_decay=config.weight_decay
    )
    return optax.chain(optax.clip_by_global_norm(config.clip), adamw) if config.clip else adamw


@functools.lru_cache(maxsize=16)
def _program(config: DistillConfig, llama_config: LlamaConfig) -> tuple[Any, Any]:
    """``(optimizer, jitted step)``; runs that differ only in budget-free settings (seed,
    eval/save periods) share one program."""
    opt = make_optimizer(config)
    dtype = DTYPES[config.dtype]

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(student: Params, opt_state: Any, teacher: Params, tokens: jax.Array) -> tuple:
        loss_and_grad = jax.value_and_grad(distill_loss)
        chunks = tokens.reshape(-1, config.micro_batch, tokens.shape[-1])

        def accumulate(total: tuple, chunk: jax.Array) -> tuple[tuple, None]:
            loss, grads = loss_and_grad(student, teacher, chunk, llama_config, dtype)
            return jax.tree.map(jnp.add, total, (loss, grads)), None

        zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, student))
        total, _ = jax.lax.scan(accumulate, zeros, chunks)
        loss, grads = jax.tree.map(lambda x: x / chunks.shape[0], total)
        updates, opt_state = opt.update(grads, opt_state, student)
        return optax.apply_updates(student, updates), opt_state, loss

    return opt, step


def _shared_program(config: DistillConfig, llama_config: LlamaConfig) -> tuple[Any, Any]:
    neutral = dataclasses.replace(config, seed=0, eval_every=0, save_every=1)
    return _program(neutral, llama_config)


def batch_windows(stream: np.ndarray, seq_len: int, batch: int, step: int, seed: int) -> np.ndarray:
    """The ``int32[batch, seq_len]`` training batch of ``step`` (from 0): the stream's
    non-overlapping windows in a fresh permutation per pass (pass ``p`` keyed by
    ``fold_in(key(seed), p)``), read ``batch`` at a time without crossing a pass."""
    count = len(stream) // seq_len
    if count < batch:
        raise NasjaxError(
            f"the training stream holds {len(stream)} tokens: {count} windows of {seq_len}, "
            f"fewer than one batch of {batch}"
        )
    per_pass = count // batch
    epoch, index = divmod(step, per_pass)
    order = jax.random.permutation(jax.random.fold_in(jax.random.key(seed), epoch), count)
    picked = np.asarray(order)[index * batch : (index + 1) * batch]
    return np.stack([stream[i * seq_len : (i + 1) * seq_len] for i in picked]).astype(np.int32)


def calibration_stream(tokenizer: Encoder) -> np.ndarray:
    """The calibration corpus (standard-library docstrings) as one ``int32`` token stream:
    the distillation data."""
    return np.asarray(tokenizer.encode(calibration_corpus().text), np.int32)


def init_like(key: jax.Array, params: Params, embed_std: float = 1.0) -> Params:
    """Fresh random params with ``params``' structure, shapes and dtypes, by the convention
    of :func:`nasjax.llm.llama.init_params`: the embedding ``N(0, 1)``, norms
    ``1 + N(0, 0.1)``, every matrix ``[.., in, out]`` ``N(0, 1/in)``; leaf ``i`` (in
    flattening order) drawn from ``fold_in(key, i)``.

    ``embed_std`` scales the embedding. With a tied head, ``N(0, 1)`` makes the initial
    logits ``N(0, dim)`` (std 24 for SmolLM2): a from-scratch student then starts at a
    KL of ~130 nats and is still at a perplexity of ~1e28 after 16k distillation tokens
    (peak lr 1e-3); GPT-2's 0.02 starts it near uniform."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    leaves = []
    for index, (path, leaf) in enumerate(paths):
        name = str(getattr(path[-1], "key", path[-1]))
        k = jax.random.fold_in(key, index)
        noise = jax.random.normal(k, leaf.shape, jnp.float32)
        if name == "embed":
            value = embed_std * noise
        elif name.endswith("norm"):
            value = 1.0 + 0.1 * noise
        elif leaf.ndim >= 2:
            value = noise * leaf.shape[-2] ** -0.5
        else:
            raise NasjaxError(
                f"init_like: no init rule for leaf {jax.tree_util.keystr(path)} of shape "
                f"{leaf.shape}; valid: embed, *norm, or a matrix"
            )
        leaves.append(value.astype(leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _digest(tree: Any) -> str:
    """16 hex digits of SHA-256 over a pytree's leaves (shapes, dtypes and bytes)."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        array = np.ascontiguousarray(leaf)
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def _check_models(teacher: Params, student: Params, config: DistillConfig, llama: LlamaConfig):
    vocab_t, vocab_s = teacher["embed"].shape[0], student["embed"].shape[0]
    if vocab_t != vocab_s:
        raise NasjaxError(f"student vocabulary {vocab_s} differs from the teacher's {vocab_t}")
    if config.seq_len > llama.max_context:
        raise NasjaxError(
            f"seq_len {config.seq_len} exceeds the model's max_context {llama.max_context}"
        )


def _fingerprint(
    config: DistillConfig,
    teacher: Params,
    student: Params,
    stream: np.ndarray,
    valid: Windows,
    run_config: dict | None,
) -> dict:
    """Every setting that changes the run's results, compared on resume: the config, and
    digests of both models' weights (a student of the same shapes but other weights, e.g.
    another genotype or :func:`init_like`, is another run) and of the data."""
    return {
        **dataclasses.asdict(config),
        "student_params": count_params(student),
        "student_weights": _digest(student),
        "teacher_weights": _digest(teacher),
        "train_tokens": _digest(stream),
        "valid_tokens": _digest(valid.tokens),
        **(run_config or {}),
    }


def _validation_ppl(params: Params, llama: LlamaConfig, valid: Windows, dtype: str) -> float:
    batch = min(4, len(valid.tokens))
    return evaluate(params, llama, valid, batch_size=batch, dtype=DTYPES[dtype]).ppl


def distill(
    teacher: Params,
    student: Params,
    config: DistillConfig,
    llama_config: LlamaConfig,
    train_tokens: np.ndarray,
    valid: Windows,
    out: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    quiet: bool = False,
    run_config: dict | None = None,
    stop_at: int | None = None,
) -> DistillResult:
    """Trains ``student`` to match ``teacher``'s next-token distribution (module docstring).

    Args:
      teacher: the dense model (not modified).
      student: the initial student: a pruned model, or :func:`init_like` for the
        from-scratch comparison; stacked or a list of blocks.
      config: the run's settings.
      llama_config: the teacher's config (the student's shapes are read from its arrays).
      train_tokens: ``int`` token stream to train on (:func:`calibration_stream`).
      valid: the validation windows scored every ``eval_every`` steps and at the end
        (a few windows keep this cheap).
      out: the run folder (:class:`nasjax.rundir.RunDir`: ``distill.jsonl``,
        ``checkpoints/``, ``run_config.json``); ``None`` keeps nothing.
      resume: continue the run in ``out``; refused if any setting changed.
      quiet: no progress bar or note lines.
      run_config: more settings to store and compare on resume (e.g. the student's name).
      stop_at: stop after this step (checkpointed), to continue later with ``resume``.

    Returns:
      The student after the last step run, the log, the final perplexity and throughput.

    Raises:
      NasjaxError: bad settings or data, a vocabulary mismatch, or a refused ``out``.
      nasjax.errors.Interrupted: on Ctrl-C, naming the step to resume from.
    """
    _check_models(teacher, student, config, llama_config)
    if stop_at is not None:
        check_positive(stop_at=stop_at)
    stream = np.asarray(train_tokens).astype(np.int32).reshape(-1)
    batch_windows(stream, config.seq_len, config.batch, 0, config.seed)  # enough tokens?
    steps = config.steps if stop_at is None else min(config.steps, stop_at)
    fingerprint = _fingerprint(config, teacher, student, stream, valid, run_config)
    opt, step_fn = _shared_program(config, llama_config)
    student = jax.tree.map(jnp.array, student)  # a copy: the step donates its buffers
    state = {"params": student, "opt_state": opt.init(student)}
    teacher = jax.tree.map(jnp.asarray, teacher)
    timing = [0, 0.0]  # steps timed (each after this call's first), their seconds
    with RunDir.open(out, fingerprint, resume=resume, log_name=LOG_FILE, quiet=quiet) as run:
        start, state = run.restore(state)
        log = run.read_log()
        t0 = time.perf_counter() - (log[-1]["wall_s"] if log else 0.0)
        if start == 0 and config.eval_every and not log:
            ppl = _validation_ppl(state["params"], llama_config, valid, config.dtype)
            log.append({"step": 0, "tokens": 0, "val_ppl": ppl, "wall_s": 0.0})
            run.append(log[-1:])
        with tqdm(total=config.steps, initial=start, desc="distill", disable=quiet) as bar:
            for i in range(start, steps):
                tic = time.perf_counter()
                tokens = batch_windows(stream, config.seq_len, config.batch, i, config.seed)
                params, opt_state, loss = step_fn(
                    state["params"], state["opt_state"], teacher, tokens
                )
                state, done = {"params": params, "opt_state": opt_state}, i + 1
                record = {"step": done, "tokens": done * config.batch * config.seq_len}
                record["loss"] = float(loss)
                if i > start:
                    timing = [timing[0] + 1, timing[1] + time.perf_counter() - tic]
                last = done == config.steps
                if last or (config.eval_every and done % config.eval_every == 0):
                    record["val_ppl"] = _validation_ppl(params, llama_config, valid, config.dtype)
                record["wall_s"] = round(time.perf_counter() - t0, 3)
                log.append(record)
                run.append([record])
                if last or done == steps or done % config.save_every == 0:
                    run.save(done, state)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                bar.update(1)
    tokens_per_s = timing[0] * config.batch * config.seq_len / timing[1] if timing[0] else math.nan
    ppls = [r["val_ppl"] for r in log if "val_ppl" in r and r["step"] == steps]
    ppl = ppls[-1] if ppls else _validation_ppl(state["params"], llama_config, valid, config.dtype)
    return DistillResult(state["params"], log, ppl, tokens_per_s)
