"""What runs inside a worker: the step runner, the control operators, the run store."""
