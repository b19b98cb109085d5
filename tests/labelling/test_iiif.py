"""IIIF Presentation v2 and v3 manifests, served with their images (a static IIIF Image API,
level 0) by a loopback HTTP server the test starts."""

import functools
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from flywheel.errors import InputError
from flywheel.labelling.collection import read_catalogue
from flywheel.labelling.iiif import add_manifest, canvases, load_manifest

COLOURS = [(200, 30, 30), (30, 160, 30), (30, 30, 200)]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _images(root, base, size):
    """Three images behind Image API services (the size the card asks for), and the third
    canvas's service answers 404 for nothing was written for it."""
    services = []
    for n, colour in enumerate(COLOURS, start=1):
        service = f"{base}/iiif/img{n}"
        if n < 3:
            path = root / "iiif" / f"img{n}" / "full" / f"!{size},{size}" / "0" / "default.jpg"
            path.parent.mkdir(parents=True)
            Image.new("RGB", (size, size * 3 // 4), colour).save(path, quality=95)
        services.append(service)
    return services


def _v2(services):
    return {
        "@context": "http://iiif.io/api/presentation/2/context.json",
        "@id": "http://example.org/manifest/v2",
        "@type": "sc:Manifest",
        "label": "Letters of 1850",
        "license": "https://creativecommons.org/publicdomain/mark/1.0/",
        "attribution": "Example Archive",
        "sequences": [
            {
                "canvases": [
                    {
                        "@id": f"http://example.org/canvas/{n}",
                        "@type": "sc:Canvas",
                        "label": f"folio {n}r",
                        "metadata": [{"label": "Date", "value": f"1850-0{n}-01"}],
                        "images": [
                            {
                                "resource": {
                                    "@id": f"{svc}/full/full/0/default.jpg",
                                    "service": {
                                        "@context": "http://iiif.io/api/image/2/context.json",
                                        "@id": svc,
                                    },
                                }
                            }
                        ],
                    }
                    for n, svc in enumerate(services, start=1)
                ]
            }
        ],
    }


def _v3(services):
    return {
        "@context": "http://iiif.io/api/presentation/3/context.json",
        "id": "http://example.org/manifest/v3",
        "type": "Manifest",
        "label": {"en": ["Postcards"]},
        "rights": "http://rightsstatements.org/vocab/NoC-US/1.0/",
        "items": [
            {
                "id": f"http://example.org/v3/canvas/{n}",
                "type": "Canvas",
                "label": {"en": [f"postcard {n}"]},
                "metadata": [{"label": {"en": ["Place"]}, "value": {"none": [f"town {n}"]}}],
                "items": [
                    {
                        "type": "AnnotationPage",
                        "items": [
                            {
                                "type": "Annotation",
                                "motivation": "painting",
                                "body": {
                                    "id": f"{svc}/full/max/0/default.jpg",
                                    "type": "Image",
                                    "service": [{"id": svc, "type": "ImageService3"}],
                                },
                            }
                        ],
                    }
                ],
            }
            for n, svc in enumerate(services, start=1)
        ],
    }


def _check(settings, result, name):
    assert [o.status for o in result.outcomes] == ["added", "added", "rejected"]
    assert "HTTP 404" in result.outcomes[2].reason
    cat = read_catalogue(settings).set_index("item_id")
    assert list(cat.index) == [f"{name}-0001", f"{name}-0002"]
    for (item_id, row), colour in zip(cat.iterrows(), COLOURS, strict=False):
        card = np.asarray(Image.open(row.image_path).convert("RGB"))
        assert max(card.shape[:2]) <= settings.card_size
        assert np.abs(card[5, 5].astype(int) - colour).max() < 12, item_id
    return cat


def test_v2_manifest_from_a_url(settings, server):
    root, base = server
    (root / "v2.json").write_text(json.dumps(_v2(_images(root, base, settings.card_size))))
    result = add_manifest(settings, f"{base}/v2.json", register=False)
    cat = _check(settings, result, "Letters-of-1850")
    row = cat.loc["Letters-of-1850-0001"]
    assert row.title == "folio 1r" and row.source == "http://example.org/canvas/1"
    assert json.loads(row.metadata) == {"Date": "1850-01-01"}
    assert "publicdomain" in row.rights and "Example Archive" in row.rights
    again = add_manifest(settings, f"{base}/v2.json", register=False)
    assert [o.status for o in again.outcomes] == ["unchanged", "unchanged", "rejected"]


def test_v3_manifest_from_a_file(settings, server, tmp_path):
    root, base = server
    path = tmp_path / "v3.json"
    path.write_text(json.dumps(_v3(_images(root, base, settings.card_size))))
    result = add_manifest(settings, str(path), collection="cards", register=False)
    cat = _check(settings, result, "cards")
    row = cat.loc["cards-0002"]
    assert row.title == "postcard 2" and json.loads(row.metadata) == {"Place": "town 2"}
    assert row.rights == "http://rightsstatements.org/vocab/NoC-US/1.0/"
    assert [c["service"] for c in canvases(json.loads(path.read_text()))][0].endswith("img1")


def test_bad_manifests_are_named(tmp_path, server):
    _, base = server
    with pytest.raises(InputError, match="not a file or an http"):
        load_manifest(str(tmp_path / "none.json"))
    (tmp_path / "x.json").write_text("{oops")
    with pytest.raises(InputError, match="is not JSON"):
        load_manifest(str(tmp_path / "x.json"))
    with pytest.raises(InputError, match="HTTP 404"):
        load_manifest(f"{base}/missing.json")
    (tmp_path / "y.json").write_text(json.dumps({"label": "no canvases"}))
    with pytest.raises(InputError, match="not a IIIF Presentation manifest"):
        canvases(load_manifest(str(tmp_path / "y.json")))
