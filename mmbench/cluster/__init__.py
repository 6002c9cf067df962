"""Sweeps on a dask.distributed cluster (`mmbench sweep --cluster`).

address.py parses what --cluster names; connect.py opens (or starts) the cluster and checks its
workers; placement.py decides which worker may take a point; runner.py is the sweep's client side;
task.py is what a worker runs. Only connect.py and runner.py import distributed, and only once a
sweep asks for a cluster: a sweep on one machine never loads it.
"""
