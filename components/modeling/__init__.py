"""Models and how they learn: architectures, checkpoints, the training loop, knowledge
distillation (loss, teacher table, teacher weighting) and teacher loading."""
