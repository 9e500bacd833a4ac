"""Training, evaluation and prediction (Lightning for the loop; the rest is plain PyTorch)."""
