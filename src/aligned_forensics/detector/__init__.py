"""What a detector is, shared by training and evaluation: models, checkpoints, preprocessing, metrics."""
