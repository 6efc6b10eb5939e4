"""Training: condition dropout, the per-model training steps (and later trainers, distillation, ReFL)."""
