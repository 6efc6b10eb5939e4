"""Segments and the two generation stages, shared by the live session, `ihuman render` and the
evaluations: the algorithm without a clock."""
