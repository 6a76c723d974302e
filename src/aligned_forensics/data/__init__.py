"""The data phase: sources of real photos, downloads, archives, the fetch and manifest stages."""
