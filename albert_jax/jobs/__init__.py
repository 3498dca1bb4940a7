"""The job modules (train, eval, finetune, ...) and the `albert-jax` command line."""
