"""Errors a caller of the kernels can cause: bad shapes, dtypes, strides, or an unavailable backend."""


class KernelError(ValueError):
    """The inputs cannot go to this kernel; the message says which input and why."""
