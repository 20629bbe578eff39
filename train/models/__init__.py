"""Networks: one self-contained file per model."""
