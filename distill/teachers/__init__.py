"""Teachers: where they come from (`sources`: run directories, checkpoints, predictions files, a
teacher section), what they give the loss (`signals`: cached or online logits, ensemble
combination; `features`: white-box hooks), and how close a student came (`fidelity`)."""
