"""Training budgets (``--epochs``, ``--max_steps``, ``--max_minutes``) as one fixed step count.

The learning-rate schedule needs to know how many steps the run will take. With ``--epochs`` or
``--max_steps`` that is known up front. With ``--max_minutes`` it is not, and letting the schedule
follow the wall clock would make the result depend on how busy the machine was. So the budget
is turned into a step count **once**:

1. the first ``CALIBRATION_STEPS`` steps (or up to ``calibrate_until``, e.g. the end of the warm-up) are timed
   (the median step, so a burst of load from another process does not shrink the plan) (their LR does not
   depend on the length: under a time budget the warm-up is at least that long for schedules whose early LR
   depends on it);
2. ``planned = steps so far + (time left / time per step)``, less a small margin and the estimated
   evaluation time, capped by ``--epochs`` and ``--max_steps``; the schedule spans ``planned`` steps;
3. the run stops at ``planned`` steps, or earlier if the wall clock really runs out.

``planned`` is stored in the checkpoint (a resumed run keeps it) and in the result file, with a
command that reproduces the run on any machine without a clock: ``--max_steps S --schedule_steps P``.
"""
from __future__ import annotations

import statistics

CALIBRATION_STEPS = 20
MARGIN = 0.97  # plan for 97% of the time left: the estimate is a mean, some steps are slower
LENGTH_DEPENDENT = ("cosine", "linear")  # schedules whose very first steps depend on the total length


def schedule_warmup(schedule: str, warmup_steps: int, max_minutes: float) -> int:
    """The warm-up actually used: under a time budget at least ``CALIBRATION_STEPS`` for cosine/linear."""
    if max_minutes and schedule in LENGTH_DEPENDENT:
        return max(warmup_steps, CALIBRATION_STEPS)
    return warmup_steps


class Budget:
    """Decides the schedule length and when to stop; its :meth:`state` goes into checkpoints.

    ``steps_per_epoch`` may be ``None`` when an epoch has no fixed length (then ``epochs`` does not
    bound the step count). ``schedule_steps`` (> 0) fixes the length explicitly (reproduction runs).
    """

    def __init__(self, *, epochs: int, steps_per_epoch: int | None, max_steps: int = 0,
                 max_minutes: float = 0.0, schedule_steps: int = 0, state: dict | None = None,
                 calibrate_until: int = CALIBRATION_STEPS):
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        # the plan is made at this step (at least CALIBRATION_STEPS): a stage may pass its warm-up length, whose
        # learning rates do not depend on the plan, for a longer and steadier timing window
        self.calibrate_until = max(CALIBRATION_STEPS, calibrate_until)
        self.max_steps, self.max_minutes, self.schedule_steps = max_steps, max_minutes, schedule_steps
        self.planned: int | None = None
        self.calibration: dict | None = None
        self._window_start: tuple[int, float] | None = None
        self._step_s = 0.0  # running estimate of one step's duration (for the last-step check)
        self._samples: list[float] = []  # durations of the steps in the timing window
        if state:
            self.planned, self.calibration = state.get("planned"), state.get("calibration")
            window = state.get("window")
            self._window_start = tuple(window) if window else None
            self._samples = list(state.get("samples") or [])

    # ----- the step count ----------------------------------------------------------------
    def step_limit(self) -> int | None:
        """The most steps the flags allow (``None`` = unbounded)."""
        limits = [n for n in (self.max_steps or None,
                              self.epochs * self.steps_per_epoch if self.steps_per_epoch else None) if n]
        return min(limits) if limits else None

    def total_steps(self) -> int:
        """The schedule's length: explicit ``--schedule_steps``, else the calibrated plan, else the step limit."""
        if self.schedule_steps:
            return self.schedule_steps
        if self.planned is not None:
            return self.planned
        return self.step_limit() or 1

    def observe(self, step: int, elapsed_s: float, step_s: float, eval_s_per_step: float = 0.0) -> None:
        """Call after every optimizer step (``step`` = steps done, ``elapsed_s`` = training time so far).

        ``eval_s_per_step``: the stage's estimate of evaluation time per training step, used once,
        when the plan is made (e.g. one validation pass's time / ``--eval_every``).
        """
        self._step_s = max(step_s, 0.9 * self._step_s + 0.1 * step_s)  # follows slow steps at once
        if not self.max_minutes or self.planned is not None or self.schedule_steps:
            return
        if self._window_start is None and step >= CALIBRATION_STEPS // 4:  # skip the first, slow steps
            self._window_start = (step, elapsed_s)  # (a run resumed after step 5 opens it where it resumed)
            return
        if self._window_start is None:
            return
        self._samples.append(step_s)
        if self._window_start is not None and step >= max(self.calibrate_until, self._window_start[0] + 5):
            s0, t0 = self._window_start
            # the median step is robust to a burst of load from another process during the window; the ratio
            # of wall time to summed step times adds back what happens between steps (logging, data)
            per_step = (elapsed_s - t0) / max(1, step - s0)
            mean_sample = sum(self._samples) / len(self._samples)
            if mean_sample > 0:
                per_step = statistics.median(self._samples) * max(1.0, per_step / mean_sample)
            left = self.max_minutes * 60 - elapsed_s
            fit = int(MARGIN * left / (per_step + eval_s_per_step)) if per_step > 0 else 0
            planned = step + max(0, fit)
            limit = self.step_limit()
            self.planned = min(planned, limit) if limit else planned
            self.calibration = {"at_step": step, "s_per_step": per_step, "eval_s_per_step": eval_s_per_step,
                                "elapsed_s": elapsed_s}

    def needs_calibration(self, step: int) -> bool:
        """True at the step where the plan is about to be made (a stage may time an evaluation then)."""
        if not self.max_minutes or self.planned is not None or self.schedule_steps:
            return False
        start = self._window_start[0] if self._window_start else max(step + 1, CALIBRATION_STEPS // 4)
        return step + 1 == max(self.calibrate_until, start + 5)

    # ----- stopping ----------------------------------------------------------------------
    def stop_reason(self, step: int, elapsed_s: float) -> str | None:
        """Why the next step must not start (``None``: go on). Epoch ends are the stage's own loop."""
        if self.max_steps and step >= self.max_steps:
            return "max_steps"
        if self.schedule_steps and step >= self.schedule_steps:
            return "schedule_steps"
        if self.planned is not None and step >= self.planned:
            return "max_minutes"
        if self.max_minutes and elapsed_s + self._step_s >= 60 * self.max_minutes:
            return "max_minutes (wall clock)"
        return None

    def state(self) -> dict:
        return {"planned": self.planned, "calibration": self.calibration,
                "window": list(self._window_start) if self._window_start else None,
                "samples": list(self._samples) if self.planned is None else []}

    def summary(self, steps_done: int) -> dict:
        """What the result file records: steps done, the schedule's length and how it was fixed."""
        return {"steps": steps_done, "schedule_steps": self.total_steps(), "calibration": self.calibration}


def reproduce_argv(argv: list[str], steps_done: int, schedule_steps: int, max_minutes: float,
                   warmup_steps: int | None = None) -> list[str]:
    """``argv`` with ``--max_minutes X`` (and ``--resume``) replaced by ``--max_steps S --schedule_steps P``:
    no clock involved, so it gives the same numbers on any machine. Without a time budget only ``--resume`` goes.
    ``warmup_steps``: the warm-up the run really used (see :func:`schedule_warmup`), kept as ``--warmup_steps W``."""
    out, skip = [], False
    drop = ("--max_minutes", "--max_steps", "--schedule_steps") if max_minutes else ()
    if max_minutes and warmup_steps is not None:
        drop += ("--warmup_steps",)
    for w in argv:
        if skip:
            skip = False
        elif w in drop:
            skip = True
        elif w == "--resume" or (drop and w.startswith(tuple(d + "=" for d in drop))):
            continue
        else:
            out.append(w)
    if not max_minutes:
        return out
    return out + ["--max_steps", str(steps_done), "--schedule_steps", str(schedule_steps)] + (
        ["--warmup_steps", str(warmup_steps)] if warmup_steps is not None else [])

