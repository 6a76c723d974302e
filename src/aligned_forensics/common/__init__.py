"""Shared by every stage: params, atomic io, errors, progress, image decoding, figures, devices."""
