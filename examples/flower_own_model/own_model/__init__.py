"""A Flower app guarding the client's own PyTorch model with gradguard (stock FedAvg)."""
