"""Training and sampling of the image-to-sounding-video models (JointDiT)."""
