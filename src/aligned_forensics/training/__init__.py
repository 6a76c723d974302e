"""The training phase: augmentation, datasets, the train loop and the stay_positive stage."""
