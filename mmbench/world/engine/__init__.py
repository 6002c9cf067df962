"""The inference engine stand-in: a separate process serving POST /inference/v1/generate."""
