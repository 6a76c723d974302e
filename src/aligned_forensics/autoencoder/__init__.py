"""The autoencoder phase: loading autoencoders, one round trip, the reconstruct stage."""
