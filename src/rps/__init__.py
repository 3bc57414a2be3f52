"""RPS: the Real-Time Predictive System."""
