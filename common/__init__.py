"""Small layers every package uses (configuration, command-line conventions, model-hub reachability)."""
