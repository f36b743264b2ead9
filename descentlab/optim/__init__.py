"""The ``torch.optim.Optimizer`` classes of descentlab."""
