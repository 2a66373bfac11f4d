"""How the Python peers in this folder time a step, the way `memlab bench`
times memlab's: a few untimed steps, then at least STEPS timed ones and
at least MIN_SECONDS of them (its `bench.min_seconds`), tokens/s of the
median step. A state (the memory) is carried from step to step; inputs
are drawn outside the timed region.

Environment: WARM (3), STEPS (15), MIN_SECONDS (3).
"""
import os
import statistics
import time

WARM = int(os.environ.get("WARM", "3"))
STEPS = int(os.environ.get("STEPS", "15"))
MIN_SECONDS = float(os.environ.get("MIN_SECONDS", "3"))


def tokens_per_second(step, tokens, state=None, fill=0, inputs=lambda: ()):
    """`step(state, *inputs())` returns the next state; its first `fill`
    calls (filling a memory) and the WARM after them are not timed."""
    times, i = [], 0
    while True:
        args = inputs()
        t = time.perf_counter()
        state = step(state, *args)
        elapsed = time.perf_counter() - t
        if i >= fill + WARM:
            times.append(elapsed)
            if len(times) >= STEPS and sum(times) >= MIN_SECONDS:
                return tokens / statistics.median(times)
        i += 1
