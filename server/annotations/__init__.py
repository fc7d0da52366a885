"""Annotations: the landmarks of one set on one study, versioned; each study's frozen split per set."""
