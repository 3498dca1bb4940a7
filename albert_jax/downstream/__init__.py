"""Fine-tuning tasks: readers, features, heads and metrics for downstream evaluation."""
