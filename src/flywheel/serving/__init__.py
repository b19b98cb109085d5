"""Serving: the KServe predictor (the MLflow champion) and the Feast transformer.

    predictor.py    kserve.Model serving models:/<name>@champion (v1 + v2), reload on promotion
    transformer.py  kserve.Model: item ids -> Feast online features / base64 images ->
                    flywheel.features.representation -> predictor; logs every prediction
    predlog.py      the prediction log (JSON lines under <home>/data/predictions/)
    server.py       what both servers share: KServe args, loopback binding, JSON errors
    service.py      the `predictor` and `transformer` dev-box services (`flywheel up`)
    cli.py          `flywheel serve predictor|transformer|reload|predict`
    client.py       a small HTTP client for the two servers (used by the CLI and the loop)

Nothing here is imported by `import flywheel.serving` itself: kserve parses sys.argv on
import and takes a second to load, so import the module you need.
"""
