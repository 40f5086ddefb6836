"""The "poly" learning-rate policy of DeepLab, as a pure function of the iteration.

Computing the rate from the iteration number (rather than mutating it step by
step) is what makes ``--resume`` exact: a resumed run sets the same rate for
iteration k as the uninterrupted run did.
"""


def poly_lr(base_lr, iteration, max_iter, power, step):
    """Learning rate for ``iteration`` (1-based), refreshed every ``step`` iterations.

    ``base * (1 - s / max_iter) ** power`` where ``s`` is the last multiple of
    ``step`` not after ``iteration - 1``: iterations 1..10 use s=0, 11..20 use
    s=10, and so on (the original's ``lr_decay_iter``).
    """
    if not 1 <= iteration <= max_iter:
        raise ValueError(f"iteration {iteration} outside 1..{max_iter}")
    s = ((iteration - 1) // step) * step
    return base_lr * (1.0 - s / max_iter) ** power


def set_learning_rates(optimizer, base_lr, iteration, max_iter, power, step):
    """Give every parameter group ``poly_lr * group["lr_mult"]``; returns the base rate."""
    lr = poly_lr(base_lr, iteration, max_iter, power, step)
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]
    return lr
