"""Monitoring and alerting: the Alertmanager webhook receiver that turns drift alerts into
retraining runs, and helpers that render loopback Prometheus/Alertmanager configurations and
run the Debian ``prometheus``/``prometheus-alertmanager`` binaries for tests and local use.

The production configuration lives outside the package, in ``monitoring/`` at the repository
root (Prometheus rules, Alertmanager routing, Grafana dashboards); ``docs/MONITORING.md``
describes every metric, alert and dashboard panel.
"""
