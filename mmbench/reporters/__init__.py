"""Reporters turn results into tables, markdown and plots; they never run anything."""
