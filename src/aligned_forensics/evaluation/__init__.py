"""The evaluation phase: scoring, the threshold, evaluate and report stages, predict."""
