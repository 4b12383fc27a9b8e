"""Closed-loop evaluation: batched rollouts, success statistics with confidence intervals, videos."""
