"""A kill in the middle of training, for the resume tests: the n-th training step raises instead of running."""
import saol_core.step as step_mod


class Killed(Exception):
    """Stands for a SIGKILL: raised at a training step, after the checkpoints written before it."""


def kill_at_step(monkeypatch, n):
    """Make the n-th training step of the process (counted from 1, over the whole run) raise Killed before it
    runs. Patches TrainStep.__call__, so it also holds for a compiled step."""
    real, calls = step_mod.TrainStep.__call__, {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise Killed
        return real(*args, **kwargs)
    monkeypatch.setattr(step_mod.TrainStep, "__call__", dying)
