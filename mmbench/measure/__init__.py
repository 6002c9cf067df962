"""The instrument: probes, the worker process, the harness around it, and the analytic model."""
