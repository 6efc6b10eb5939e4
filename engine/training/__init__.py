"""Training: the task registry (registry.TASKS), the tasks, the per-model training steps, condition
dropout, the shared trainer and its weight average."""
