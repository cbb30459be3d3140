"""Training xLSTM models with MLX: data, schedule, init, checkpoints, loss plot. The loop is ../train.py."""
