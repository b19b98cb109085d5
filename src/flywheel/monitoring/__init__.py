"""Monitoring and governance: drift, notifications, the approval gate, the health report.

    drift.py          the drift statistics (MMD with a permutation p-value, KS, chi-square)
    drift_check.py    one drift check: prediction log vs the champion's training set ->
                      HTML report, MLflow run, "drift review" tags in Label Studio
    drift_report.py   the drift report page (matplotlib figures inlined)
    notify.py         settings-driven webhooks (Slack-compatible), retried, in the background
    approval.py       FLYWHEEL_PROMOTION=approve: the winning challenger waits for a person
    report.py         `flywheel report`: one static HTML page of the loop's health
    cli.py            `flywheel monitor ...`

Model and dataset cards are in flywheel.cards; server metrics in flywheel.serving.metrics.
"""
