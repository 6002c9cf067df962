"""The simulated system: images, renderer pool, sidecars, engine and the rollout driver."""
