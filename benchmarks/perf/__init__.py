"""Speed, throughput and variance, each measured side by side with its reference and judged against a goal."""
